// Three roomcast nodes on one Redis behind Debian's haproxy (lib/cluster.mjs): the cluster's
// smoke tests, then the kill -9 / rolling-restart / reset scenarios every engine passes
// (lib/cluster-scenarios.mjs), published with `FCALL roomcast_publish`.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import { startCluster } from './lib/cluster.mjs';
import { describeClusterRecovery, membersPerNode, room } from './lib/cluster-scenarios.mjs';
import { connect } from './lib/clients.mjs';
import { join, payloadsIn } from './lib/rooms.mjs';
import { waitFor } from './lib/server.mjs';
import { resumingWs } from './lib/ws.mjs';

describe('three nodes behind haproxy (smoke)', () => {
  let cluster;
  const closers = [];
  before(async () => {
    cluster = await startCluster({ engine: 'redis', nodes: 3, args: ['--history-size', '1000'] });
  });
  after(() => cluster?.stop());
  afterEach(() => closers.splice(0).forEach((c) => c.close()));

  it('/ws clients are spread over the nodes, and each gets an FCALL-published message with one logged id', async () => {
    const r = room('spread');
    const clients = [0, 1, 2].map(() => resumingWs(cluster.wsUrl, [r]));
    closers.push(...clients);
    await Promise.all(clients.map((c) => c.ready()));
    assert.deepEqual(await membersPerNode(cluster, r), [1, 1, 1], 'round robin: one client per node');
    await cluster.publish(r, 'hello');
    await waitFor(() => clients.every((c) => c.messages[r].length === 1), { message: 'hello on every client' });
    const ids = clients.map((c) => c.messages[r][0].id);
    assert.match(ids[0], /^[0-9a-z]+:\d+$/, 'a logged id');
    assert.deepEqual(ids, [ids[0], ids[0], ids[0]], 'the same id on every node');
  });

  it('a Socket.IO 4.x client over polling stays on its node (sticky cookie) and gets the message', async () => {
    const r = room('sticky');
    const c = connect('4', cluster.url, { transports: ['polling'], withCredentials: true });
    closers.push(c);
    await c.connected();
    await join(c, r);
    assert.equal((await membersPerNode(cluster, r)).reduce((a, b) => a + b), 1);
    await cluster.publish(r, 'polled');
    await waitFor(() => payloadsIn(c, r).length === 1, { message: 'the message over polling' });
    assert.deepEqual(payloadsIn(c, r), ['polled']);
  });

  it('killNode takes a node out of haproxy, restartNode puts it back on its port', async () => {
    const port = cluster.nodes[1].port;
    await cluster.killNode(1);
    assert.equal((await cluster.states()).n1.startsWith('DOWN'), true);
    await cluster.restartNode(1);
    assert.equal(cluster.nodes[1].port, port);
    assert.equal((await cluster.states()).n1, 'UP');
    assert.equal(await cluster.drainNode(2), 0, 'a drained node exits 0');
    await cluster.restartNode(2);
  });
});

describeClusterRecovery('redis');
