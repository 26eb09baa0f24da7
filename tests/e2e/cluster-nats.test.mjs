// Three roomcast nodes on one `nats-server -js` behind Debian's haproxy (lib/cluster.mjs): the
// kill -9 / rolling-restart / reset scenarios every engine passes (lib/cluster-scenarios.mjs),
// published the way any NATS client does: a plain publish to `roomcast.<room>`, which the room
// log's JetStream stream keeps. Socket.IO sessions are in the JetStream key-value bucket, so the
// stock client recovers on whichever node haproxy gives it. Each SSE and Socket.IO client of the
// runs is in one room: a node reads each room on its own subscription, so on a loaded machine
// two rooms' messages can reach a client out of id order, and one id for two rooms is exact only
// for a room with no entry near it (docs/RECOVERY.md); a stream or session in two rooms whose
// node dies is told what it cannot get back, never a silent gap (idsPerRoom).
import { describeClusterRecovery } from './lib/cluster-scenarios.mjs';

describeClusterRecovery('nats', { roomsPerId: 1, idsPerRoom: true });
