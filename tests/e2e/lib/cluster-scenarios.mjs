// The cluster scenarios every engine must pass (lib/cluster.mjs, one file per engine calls
// describeClusterRecovery): three roomcast nodes behind Debian's haproxy, with clients that
// reconnect through it and resume from the last id they saw (lib/ws.mjs, lib/sse.mjs, the stock
// socket.io-client 4.8 with connection state recovery): a publisher at ~200 msg/s (the engine's
// documented way to publish a logged message) while one node is killed (SIGKILL) or all three
// are restarted in turn (SIGTERM, drain, start again); every client must end with every message
// of its rooms exactly once and in order, counted by payload. A client away longer than the log
// holds gets the reset signal instead of a silent gap.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import { publisher, startCluster } from './cluster.mjs';
import { connect } from './clients.mjs';
import { join } from './rooms.mjs';
import { httpRequest, notify, waitFor } from './server.mjs';
import { resumingSse } from './sse.mjs';
import { resumingWs } from './ws.mjs';

let seq = 0;
/** A room name of its own for each test (`cluster-<tag>-<n>`). */
export const room = (tag) => `cluster-${tag}-${++seq}`;

/**
 * The stock socket.io-client 4.8 in `rooms`: it reconnects by itself and, with the CONNECT's
 * `pid` and the last message's offset, asks to recover its session; shaped as the resuming /ws
 * and SSE clients: a reconnect with `recovered === false` counts as a reset of its rooms (it
 * joins them again and goes on).
 */
function recoveringSio(cluster, rooms, transports) {
  const c = connect('4', cluster.url, { transports, reconnection: true, withCredentials: true, timeout: 10000 });
  const s = {
    messages: Object.fromEntries(rooms.map((r) => [r, []])),
    resets: [],
    sessions: 0,
    live: false,
    ready: () => waitFor(() => s.live, { timeout: 10000, message: `Socket.IO client in ${rooms}` }),
    close: () => c.close(),
  };
  c.socket.on('message', (payload, meta) => {
    if (meta?.room in s.messages) s.messages[meta.room].push({ data: payload, id: meta.id });
    notify();
  });
  c.socket.on('connect', async () => {
    s.sessions++;
    if (!c.socket.recovered) {
      if (s.sessions > 1) s.resets.push(...rooms);
      await join(c, rooms);
    }
    s.live = true;
    notify();
  });
  c.socket.on('disconnect', () => {
    s.live = false;
    notify();
  });
  return s;
}

/** Members of `r` on each node (0 where the room does not exist). */
export async function membersPerNode(cluster, r) {
  return Promise.all(
    cluster.nodes.map(async (node) => {
      const res = await httpRequest(node, `/api/rooms/${encodeURIComponent(r)}`, {
        headers: { authorization: `Bearer ${cluster.apiKey}` },
      });
      return res.status === 200 ? res.body.members : 0;
    }),
  );
}

/** Rooms a resuming client is in. */
const roomsOf = (c) => Object.keys(c.messages);
/** The publisher's counter in a payload `m-<n>`. */
const counterOf = (payload) => Number(String(payload).split('-').pop());
/** The counter of the newest message `c` got in room `r` (-1: none yet). */
function newest(c, r) {
  const m = c.messages[r].at(-1);
  return m ? counterOf(m.data) : -1;
}

/**
 * What the clients of one transport got in their rooms against what was published: every
 * payload once (lost, duplicated), in the published order (outOfOrder: a payload arriving after
 * one published later), no reset; reconnects = streams/sockets opened beyond the first.
 */
function tally(clients, sent) {
  const t = { clients: clients.length, expected: 0, received: 0, lost: 0, duplicated: 0, outOfOrder: 0, resets: 0, reconnects: 0 };
  for (const c of clients) {
    t.resets += c.resets.length;
    t.reconnects += c.sessions - 1;
    for (const r of roomsOf(c)) {
      const got = c.messages[r].map((m) => m.data);
      const want = sent[r];
      const seen = new Set(got);
      const position = new Map(want.map((p, i) => [p, i]));
      t.expected += want.length;
      t.received += got.length;
      t.lost += want.filter((p) => !seen.has(p)).length;
      t.duplicated += got.length - seen.size;
      let last = -1;
      for (const p of got) {
        const i = position.get(p) ?? -1;
        if (i <= last) t.outOfOrder++;
        last = Math.max(last, i);
      }
    }
  }
  return t;
}

/**
 * The kill -9, rolling-restart and reset scenarios on a cluster of `engine` (lib/cluster.mjs's
 * engines), in a describe block of their own; `engine` and the cluster's way of publishing are
 * all that differ between the engine files that call this, beside three options:
 * - `roomsPerId`: the rooms of each SSE and Socket.IO client, which resume all their rooms from
 *   one id (Last-Event-ID, the Socket.IO offset): 2, or 1 where one id does not say where the
 *   client was in every room: Redis Cluster, whose ids are per room, and NATS, whose node reads
 *   each room on its own subscription, so two rooms' messages can reach a client out of id
 *   order (docs/RECOVERY.md);
 * - `idsPerRoom`: an id is exact only for its own room (Redis Cluster; NATS, where another
 *   room's entries near the id are told reset): a client with two rooms whose node dies must be
 *   told what it cannot get back;
 * - `failover`: the engine's broker fails over (`cluster.engine.failover(room)`): the same run
 *   with the shard owning a room failing over in the middle.
 */
export function describeClusterRecovery(engine, { roomsPerId = 2, failover = false, idsPerRoom = false } = {}) {
  describe(`${engine}: kill -9 and rolling restart behind haproxy, /ws, SSE and Socket.IO, counted by payload`, () => {
    // --history-size: what a room's log keeps; a client away for less than that many messages of
    // its room resumes (here ~70 per room per second), one away longer gets a reset.
    const HISTORY = 1000;
    let cluster;
    const clients = [];
    before(async () => {
      cluster = await startCluster({ engine, nodes: 3, args: ['--history-size', String(HISTORY)] });
    });
    after(() => cluster?.stop());
    afterEach(async () => {
      clients.splice(0).forEach((c) => c.close());
      // The next test starts with every node up again.
      for (let i = 0; i < cluster.nodes.length; i++) if (!cluster.isRunning(i)) await cluster.restartNode(i);
    });

    /**
     * Six /ws, six SSE and six Socket.IO clients (websocket, or polling then websocket), two
     * rooms each out of three (SSE and Socket.IO: `roomsPerId`; round robin: two of each per node),
     * a publisher at 200 msg/s; `disrupt(rooms)` runs once every client has messages in every
     * room (an id to resume from); then publishing goes on until every client is back and has
     * live messages, stops, and each client must end with exactly what was published (and,
     * unless `reconnects` is false, the clients of a stopped node have reconnected).
     */
    async function survives(t, disrupt, { reconnects = true } = {}) {
      const rooms = [room('a'), room('b'), room('c')];
      const pairs = [0, 1, 2, 3, 4, 5].map((i) => [rooms[i % 3], rooms[(i + 1) % 3]]);
      const ws = pairs.map((rs) => resumingWs(cluster.wsUrl, rs));
      const sse = pairs.map((rs) => resumingSse(cluster, rs.slice(0, roomsPerId)));
      const sio = pairs.map((rs, i) =>
        recoveringSio(cluster, rs.slice(0, roomsPerId), i % 2 ? ['polling', 'websocket'] : ['websocket']),
      );
      const all = [...ws, ...sse, ...sio];
      clients.push(...all);
      await Promise.all(all.map((c) => c.ready()));

      const pub = publisher(cluster, rooms, { rate: 200 });
      try {
        // (the newest message only: this runs on every message of every client)
        const hasAll = (c, from) => roomsOf(c).every((r) => newest(c, r) >= from);
        // A second of traffic before and after the disruption.
        await waitFor(() => pub.count() >= 200 && all.every((c) => hasAll(c, 0)), {
          timeout: 10000,
          message: 'a message in every room of every client',
        });
        await disrupt(rooms);
        // Back: every client has a live message published after the disruption in each room.
        const mark = pub.count();
        await waitFor(() => pub.count() >= mark + 200 && all.every((c) => c.live && hasAll(c, mark)), {
          timeout: 30000,
          message: () => `every client live again with messages after ${mark} (${all.filter((c) => !(c.live && hasAll(c, mark))).length} not)`,
        });
      } finally {
        await pub.stop();
      }
      const sent = pub.sent;
      const lastOf = Object.fromEntries(rooms.map((r) => [r, counterOf(sent[r].at(-1))]));
      const caughtUp = (c) => roomsOf(c).every((r) => newest(c, r) >= lastOf[r]);
      await waitFor(() => all.every(caughtUp), {
        timeout: 20000,
        message: 'the last message of each room at every client',
      });

      const totals = { ws: tally(ws, sent), sse: tally(sse, sent), socketio: tally(sio, sent) };
      t.diagnostic(`published ${pub.count()} messages to ${rooms.length} rooms`);
      for (const [name, n] of Object.entries(totals)) t.diagnostic(`${name}: ${JSON.stringify(n)}`);
      for (const [name, n] of Object.entries(totals)) {
        assert.equal(n.lost, 0, `${name}: lost`);
        assert.equal(n.duplicated, 0, `${name}: duplicated`);
        assert.equal(n.outOfOrder, 0, `${name}: out of order`);
        assert.equal(n.resets, 0, `${name}: no reset (the log holds the gap)`);
        assert.equal(n.received, n.expected, `${name}: received`);
        if (reconnects) assert.ok(n.reconnects >= 2, `${name}: the clients of a stopped node reconnected (${n.reconnects})`);
      }
    }

    it('kill -9 of one node: its clients reconnect through haproxy and get every message once, in order', (t) =>
      survives(t, () => cluster.killNode(0)));

    it('rolling restart (SIGTERM, drain, start again, one node at a time): every message once, in order', (t) =>
      survives(t, async () => {
        for (let i = 0; i < cluster.nodes.length; i++) {
          assert.equal(await cluster.drainNode(i), 0, `node ${i} drained cleanly`);
          await cluster.restartNode(i);
        }
      }));

    if (failover) {
      it('graceful failover of the shard owning a room during the run: every message once, in order', (t) =>
        survives(t, (rooms) => cluster.engine.failover(rooms[0]), { reconnects: false }));

      it('kill -9 of one node while the shard owning a room fails over: every message once, in order', (t) =>
        survives(t, (rooms) => Promise.all([cluster.engine.failover(rooms[0]), cluster.killNode(0)])));
    }

    if (idsPerRoom) {
      it('an SSE stream and a Socket.IO session in two rooms whose node is killed are told what they cannot get back, never a silent gap', async () => {
        const rs = [room('x'), room('y')];
        const sse = resumingSse(cluster, rs);
        const sio = recoveringSio(cluster, rs, ['websocket']);
        clients.push(sse, sio);
        await Promise.all([sse.ready(), sio.ready()]);
        const pub = publisher(cluster, rs, { rate: 100 });
        try {
          await waitFor(() => [sse, sio].every((c) => rs.every((r) => newest(c, r) >= 0)), { message: 'a message in both rooms' });
          // Their nodes (one or two of the three) killed.
          const members = await membersPerNode(cluster, rs[0]);
          await Promise.all(members.map((m, i) => m > 0 && cluster.killNode(i)));
          const mark = pub.count();
          await waitFor(() => [sse, sio].every((c) => c.live && rs.every((r) => newest(c, r) >= mark)), {
            timeout: 30000,
            message: 'both back, with live messages in both rooms',
          });
        } finally {
          await pub.stop();
        }
        // Socket.IO: a new session (recovered === false), both rooms joined again.
        assert.deepEqual([...new Set(sio.resets)].sort(), [...rs].sort(), 'Socket.IO told: a new session');
        // SSE: its id is exact for its own room, a reset for the other.
        assert.ok(sse.resets.length >= 1, 'SSE told');
        for (const c of [sse, sio]) {
          const { duplicated, outOfOrder } = tally([c], pub.sent);
          assert.deepEqual({ duplicated, outOfOrder }, { duplicated: 0, outOfOrder: 0 });
          for (const r of rs.filter((r) => !c.resets.includes(r))) {
            const got = new Set(c.messages[r].map((m) => m.data));
            assert.deepEqual(pub.sent[r].filter((p) => !got.has(p)), [], `${r}: nothing lost where not told`);
          }
        }
      });
    }

    it('a client away longer than the log holds gets the reset signal, then live messages, never a silent gap', async () => {
      const r = room('away');
      const ws = resumingWs(cluster.wsUrl, [r]);
      const sse = resumingSse(cluster, [r]);
      clients.push(ws, sse);
      await Promise.all([ws.ready(), sse.ready()]);
      await cluster.publish(r, 'before');
      await waitFor(() => ws.messages[r].length === 1 && sse.messages[r].length === 1, { message: 'before' });
      ws.close();
      sse.close();
      // Away while more than the log keeps is published (Redis's MAXLEN ~ trims whole nodes: half
      // again).
      const flood = Array.from({ length: HISTORY * 1.5 }, (_, i) => cluster.publish(r, `m-${i}`));
      await Promise.all(flood);

      const back = [
        resumingWs(cluster.wsUrl, [r], { since: { [r]: ws.messages[r][0].id } }),
        resumingSse(cluster, [r], { lastEventId: sse.lastId }),
      ];
      clients.push(...back);
      await Promise.all(back.map((c) => c.ready()));
      await cluster.publish(r, 'after');
      await waitFor(() => back.every((c) => c.messages[r].some((m) => m.data === 'after')), { message: 'after' });
      for (const c of back) {
        assert.deepEqual(c.resets, [r], 'told: reset');
        assert.deepEqual(c.messages[r].map((m) => m.data), ['after'], 'then live messages only');
      }
    });
  });
}
