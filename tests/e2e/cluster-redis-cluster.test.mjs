// Three roomcast nodes on a Redis Cluster (3 masters with a replica each, lib/redis-cluster.mjs)
// behind Debian's haproxy (lib/cluster.mjs, engine 'redis-cluster'): the kill -9 /
// rolling-restart / reset scenarios every engine passes (lib/cluster-scenarios.mjs), published
// with `FCALL roomcast_publish` through a cluster client, and a graceful `CLUSTER FAILOVER` of
// the shard owning a room in the middle of a run. A room's ids are its own on a cluster, so
// each SSE and Socket.IO client of the runs is in one room (one id to resume from; Socket.IO's
// session is in the cluster, so it recovers on any node), and a stream or session in two rooms
// whose node dies is told what it cannot get back.
import { describeClusterRecovery } from './lib/cluster-scenarios.mjs';

describeClusterRecovery('redis-cluster', { roomsPerId: 1, failover: true, idsPerRoom: true });
