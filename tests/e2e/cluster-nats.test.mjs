// Three roomcast nodes on one `nats-server -js` behind Debian's haproxy (lib/cluster.mjs): the
// kill -9 / rolling-restart / reset scenarios every engine passes (lib/cluster-scenarios.mjs),
// published the way any NATS client does: a plain publish to `roomcast.<room>`, which the room
// log's JetStream stream keeps. Socket.IO sessions are in the JetStream key-value bucket, so the
// stock client recovers on whichever node haproxy gives it. Each SSE and Socket.IO client is in
// one room: a node reads each room on its own subscription, so on a loaded machine two rooms'
// messages can reach a client out of id order, and one id for two rooms then repeats or skips
// one around a cut (docs/RECOVERY.md).
import { describeClusterRecovery } from './lib/cluster-scenarios.mjs';

describeClusterRecovery('nats', { roomsPerId: 1 });
