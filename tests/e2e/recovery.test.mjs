// Socket.IO connection state recovery with the stock socket.io-client 4.8 (protocol v5): the
// CONNECT answer carries a `pid`, each `message` its offset as the last argument; after a lost
// transport the client sends {pid, offset} and, within --recovery-window-s, gets
// `socket.recovered === true`, its rooms back and every message it missed, once and in order.
//
// The transport is cut with `socket.io.engine.close()` (the manager reconnects by itself) while a
// publisher keeps publishing; what the client ends with is compared with what was published.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, startRoomcast, httpPublish, httpRequest, waitFor } from './lib/server.mjs';
import { connect, closeAll } from './lib/clients.mjs';
import { payloadsIn, join, sentinel, assertPayloads } from './lib/rooms.mjs';

const KEY = 'recovery-key';
let seq = 0;
const room = (tag) => `recovery-${tag}-${++seq}`;

async function publish(server, r, payload) {
  const res = await httpPublish(server, KEY, r, payload);
  assert.equal(res.status, 200, `publish to ${r}: ${JSON.stringify(res.body)}`);
}

/** Members of `r` on the server (0 when the room does not exist). */
async function members(server, r) {
  const res = await httpRequest(server, `/api/rooms/${encodeURIComponent(r)}`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.members;
}

/** The value of `roomcast_socketio_recoveries_total{outcome}` (0 when absent). */
async function recoveries(server, outcome) {
  const res = await httpRequest(server, '/metrics');
  const line = String(res.body)
    .split('\n')
    .find((l) => l.startsWith(`roomcast_socketio_recoveries_total{outcome="${outcome}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

/**
 * Publishes `<tag>-<n>` to the rooms in turn, one at a time, until stop() is called; resolves
 * to what it published per room, in order.
 */
function publisher(server, rooms, tag) {
  const sent = Object.fromEntries(rooms.map((r) => [r, []]));
  let running = true;
  let n = 0;
  const done = (async () => {
    while (running) {
      const r = rooms[n % rooms.length];
      const payload = `${tag}-${n++}`;
      await publish(server, r, payload);
      sent[r].push(payload);
    }
    return sent;
  })();
  return { stop: () => ((running = false), done), count: () => n };
}

/**
 * A roomcast with `args` for the enclosing describe block; `open(opts)` connects a 4.x client
 * that reconnects by itself (closed after each test).
 */
function server(args, { redis = false } = {}) {
  const ctx = { rc: null, redis: null, clients: [] };
  before(async () => {
    const broker = [];
    if (redis) {
      ctx.redis = await startRedis();
      broker.push('--broker', 'redis', '--redis-url', ctx.redis.url);
    }
    ctx.rc = await startRoomcast({ args: ['--api-key', KEY, ...broker, ...args] });
  });
  after(async () => {
    await ctx.rc?.stop();
    await ctx.redis?.stop();
  });
  afterEach(() => closeAll(ctx.clients.splice(0)));
  ctx.open = async (opts = {}) => {
    const c = connect('4', (opts.url ?? ctx.rc.url), { transports: ['websocket'], reconnection: true, ...opts });
    ctx.clients.push(c);
    await c.connected();
    return c;
  };
  return ctx;
}

/**
 * A 4.x client in two rooms loses its transport while a publisher keeps publishing; it comes
 * back recovered, in both rooms without joining again, with every message once and in order.
 */
async function recoversAfterCut(ctx, transports) {
  const c = await ctx.open({ transports });
  const recoveredBefore = await recoveries(ctx.rc, 'recovered');
  const [a, b] = [room('a'), room('b')];
  await join(c, [a, b]);
  assert.equal(c.socket.recovered, false, 'a first connection is not recovered');
  const firstPid = c.socket._pid;
  assert.equal(typeof firstPid, 'string', 'the CONNECT answer carries a pid');

  const pub = publisher(ctx.rc, [a, b], 'm');
  await waitFor(() => payloadsIn(c, a).length >= 10, { message: '10 messages before the cut' });
  const reconnected = waitFor(() => c.events('connect').length === 2, { timeout: 10000, message: 'reconnect' });
  c.socket.io.engine.close();
  await waitFor(() => c.events('disconnect').length === 1, { message: 'disconnect' });
  const atCut = pub.count();
  await reconnected;
  assert.ok(pub.count() > atCut, 'messages were published while the client was away');
  // Keep publishing a while after the reconnect: live messages follow the replay.
  await waitFor(() => pub.count() >= atCut + 20, { message: '20 more publishes' });
  const sent = await pub.stop();

  assert.equal(c.socket.recovered, true, 'recovered');
  assert.equal(c.socket._pid, firstPid, 'same session');
  for (const r of [a, b]) {
    // The rooms are back without joining again: the sentinel reaches the client.
    await sentinel(c, r, (s) => publish(ctx.rc, r, s));
    const got = payloadsIn(c, r).filter((p) => !p.startsWith('sentinel-'));
    assertPayloads(got, sent[r], `room ${r}`);
  }
  assert.equal(await members(ctx.rc, a), 1, 'one member: the recovered client');
  assert.equal(await recoveries(ctx.rc, 'recovered'), recoveredBefore + 1, 'counted');
}

describe('connection state recovery (socket.io-client 4.8.x, memory broker)', () => {
  const ctx = server(['--recovery-window-s', '30']);
  const open = ctx.open;

  for (const transports of [['websocket'], ['polling'], ['polling', 'websocket']]) {
    it(`over ${transports.join(' → ')}: after a cut, recovered === true, rooms back, every missed message once and in order`, () =>
      recoversAfterCut(ctx, transports));
  }

  it('the offset is the last argument of each message and equals meta.id', async () => {
    const c = await open();
    const r = room('offset');
    await join(c, r);
    await publish(ctx.rc, r, 'x');
    const [[payload, meta, offset]] = await c.waitEvents('message', 1);
    assert.equal(payload, 'x');
    assert.equal(meta.room, r);
    assert.equal(offset, meta.id);
    assert.equal(c.socket._lastOffset, meta.id, 'the client keeps it as its position');
  });

  it('a hello after its last message (someone joined) leaves the client its position: recovered after a cut', async () => {
    const c = await open();
    const r = room('hello');
    await join(c, r);
    await publish(ctx.rc, r, 'before');
    const [[, meta]] = await c.waitEvents('message', 1);
    const other = await open();
    await join(other, r);
    const [[helloRoom]] = await c.waitEvents('hello', 1);
    assert.equal(helloRoom, r, 'a (room) listener gets the room');
    assert.equal(c.socket._lastOffset, meta.id, 'the hello did not become the position');
    const reconnected = waitFor(() => c.events('connect').length === 2, { timeout: 10000, message: 'reconnect' });
    c.socket.io.engine.close();
    await waitFor(() => c.events('disconnect').length === 1, { message: 'disconnect' });
    await publish(ctx.rc, r, 'missed');
    await reconnected;
    assert.equal(c.socket.recovered, true, 'recovered');
    await waitFor(() => payloadsIn(c, r).includes('missed'), { message: 'the missed message' });
    assert.deepEqual(payloadsIn(c, r), ['before', 'missed']);
  });

  it('a client that sends a pid or offset we never gave gets a new session, not an error', async () => {
    const bad = [
      { pid: 'not-a-session-id', offset: '1' },
      { pid: 'AAAAAAAAAAAAAAAAAAAA', offset: 'room-name' },
      { pid: 'AAAAAAAAAAAAAAAAAAAA', offset: '12' },
      { pid: 12, offset: { x: 1 } },
    ];
    const before = await recoveries(ctx.rc, 'malformed');
    for (const auth of bad) {
      const c = await open({ auth });
      assert.equal(c.socket.recovered, false, JSON.stringify(auth));
      assert.equal(typeof c.socket._pid, 'string');
      assert.notEqual(c.socket._pid, auth.pid);
      const r = room('fresh');
      await join(c, r);
      await sentinel(c, r, (s) => publish(ctx.rc, r, s));
    }
    // The third is well formed: a session that does not exist (counted as expired).
    assert.equal(await recoveries(ctx.rc, 'malformed'), before + bad.length - 1);
  });

  it('a client that said goodbye leaves no session behind', async () => {
    const c = await open();
    const r = room('bye');
    await join(c, r);
    await sentinel(c, r, (s) => publish(ctx.rc, r, s));
    const { _pid: pid, _lastOffset: offset } = c.socket;
    c.socket.disconnect();
    await waitFor(async () => (await members(ctx.rc, r)) === 0, { message: 'left' });
    const again = await open({ auth: { pid, offset } });
    assert.equal(again.socket.recovered, false);
    assert.equal(await members(ctx.rc, r), 0, 'rooms not given back');
  });
});

describe('connection state recovery: an expired session', () => {
  const ctx = server(['--recovery-window-s', '1']);

  it('past --recovery-window-s: recovered === false and the rooms are not given back', async () => {
    const c = await ctx.open();
    const r = room('expired');
    await join(c, r);
    await sentinel(c, r, (s) => publish(ctx.rc, r, s));
    // Come back only after the 1 s window.
    c.socket.io.reconnectionDelay(2500);
    c.socket.io.reconnectionDelayMax(2500);
    c.socket.io.randomizationFactor(0);
    c.socket.io.engine.close();
    await waitFor(() => c.events('disconnect').length === 1, { message: 'disconnect' });
    await publish(ctx.rc, r, 'missed');
    await waitFor(() => c.events('connect').length === 2, { timeout: 10000, message: 'reconnect' });
    assert.equal(c.socket.recovered, false);
    assert.equal(await members(ctx.rc, r), 0, 'rooms not given back');
    assert.ok(!payloadsIn(c, r).includes('missed'), 'nothing replayed into a new session');
    assert.equal(await recoveries(ctx.rc, 'expired'), 1);
  });
});

describe('connection state recovery off (--recovery-window-s 0)', () => {
  const ctx = server(['--recovery-window-s', '0']);

  it('no pid is given, so the client never asks; messages are as before, without an offset', async () => {
    const c = await ctx.open();
    assert.equal(c.socket._pid, undefined);
    const r = room('off');
    await join(c, r);
    await publish(ctx.rc, r, 'x');
    const [args] = await c.waitEvents('message', 1);
    const [payload, meta] = args;
    assert.equal(payload, 'x');
    assert.equal(meta.room, r);
    assert.equal(args.length, 2, 'the listener gets (payload, meta) only');
    c.socket.io.engine.close();
    await waitFor(() => c.events('connect').length === 2, { timeout: 10000, message: 'reconnect' });
    assert.ok(!c.socket.recovered, 'not recovered (no pid: the client compares undefined)');
    assert.equal(await members(ctx.rc, r), 0);
  });
});

describe('connection state recovery on the Redis broker (per-room subscriptions)', () => {
  const ctx = server(['--recovery-window-s', '30'], { redis: true });

  it('after a cut, recovered === true, rooms back, every missed message once and in order', () =>
    recoversAfterCut(ctx, ['websocket']));

  describe('a client that comes back to another node (sessions in Redis, resumed from the room log)', () => {
    // The node the client moves to; the one it leaves is started per test (it is killed or drained).
    let other;
    const args = () => ['--api-key', KEY, '--broker', 'redis', '--redis-url', ctx.redis.url, '--recovery-window-s', '30'];
    before(async () => {
      other = await startRoomcast({ args: args() });
    });
    after(async () => {
      await other?.stop();
    });

    /**
     * A 4.x client in two rooms on `from` while a publisher publishes through `other`; `cut(from)`
     * takes its transport away and it reconnects to `other`: recovered, in both rooms there without
     * joining again, every message once and in order.
     */
    async function movesTo(from, cut) {
      const c = await ctx.open({ url: from.url });
      const [a, b] = [room('a'), room('b')];
      await join(c, [a, b]);
      const firstPid = c.socket._pid;
      const recoveredBefore = await recoveries(other, 'recovered');
      const pub = publisher(other, [a, b], 'm');
      await waitFor(() => payloadsIn(c, a).length >= 10, { message: '10 messages before the cut' });
      c.socket.io.uri = other.url; // the next transport goes to the other node
      const reconnected = waitFor(() => c.events('connect').length === 2, { timeout: 15000, message: 'reconnect' });
      await cut(from, c);
      await waitFor(() => c.events('disconnect').length === 1, { message: 'disconnect' });
      const atCut = pub.count();
      await reconnected;
      await waitFor(() => pub.count() >= atCut + 20, { message: '20 more publishes' });
      const sent = await pub.stop();

      assert.equal(c.socket.recovered, true, 'recovered on the other node');
      assert.equal(c.socket._pid, firstPid, 'same session');
      for (const r of [a, b]) {
        await sentinel(c, r, (s) => publish(other, r, s));
        const got = payloadsIn(c, r).filter((p) => !p.startsWith('sentinel-'));
        assertPayloads(got, sent[r], `room ${r}`);
      }
      assert.equal(await members(other, a), 1, 'in the room on the other node');
      assert.equal(await recoveries(other, 'recovered'), recoveredBefore + 1, 'counted');
    }

    it('after a cut: recovered === true, rooms back, every missed message once and in order', async () => {
      await movesTo(ctx.rc, (_from, c) => c.socket.io.engine.close());
      assert.equal(await members(ctx.rc, room('a')), 0);
    });

    it('after its node is killed (kill -9): the same', async () => {
      const doomed = await startRoomcast({ args: args() });
      await movesTo(doomed, async (from) => {
        from.proc.kill('SIGKILL');
      });
    });

    it('after its node is drained (SIGTERM): the same', async () => {
      const drained = await startRoomcast({ args: args() });
      await movesTo(drained, (from) => from.stop());
    });
  });
});
