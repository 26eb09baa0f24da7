// Three roomcast nodes on one `nats-server -js` behind Debian's haproxy (lib/cluster.mjs): the
// kill -9 / rolling-restart / reset scenarios every engine passes (lib/cluster-scenarios.mjs),
// published the way any NATS client does: a plain publish to `roomcast.<room>`, which the room
// log's JetStream stream keeps. Socket.IO sessions are in the JetStream key-value bucket, so the
// stock client recovers on whichever node haproxy gives it.
import { describeClusterRecovery } from './lib/cluster-scenarios.mjs';

describeClusterRecovery('nats');
