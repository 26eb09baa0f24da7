// B. Product, migrating from Socket.IO: a Node back end publishes with the real
// @socket.io/redis-emitter (node-redis client) into a private redis-server; roomcast delivers to
// socket.io-client 1.3.7, 2.x and 4.x (websocket and polling) as a Node.js Socket.IO server would, and to
// /ws and /sse subscribers of the target rooms as JSON (binary as {"$base64": ...}).
//
// "Nothing else arrived" is shown with a sentinel event emitted through the same emitter after the
// events under test: one Redis connection in, one PSUBSCRIBE connection out, so order is kept.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { createClient } from 'redis';
import { Emitter } from '@socket.io/redis-emitter';
import { startRedis, startRoomcast, publishRedis, waitFor, waitForStatus, httpRequest } from './lib/server.mjs';
import { connect, closeAll, toBuffer } from './lib/clients.mjs';
import { join } from './lib/rooms.mjs';
import { openSse } from './lib/sse.mjs';

let redis;
let rc;
let publisher;
let io;
before(async () => {
  redis = await startRedis();
  rc = await startRoomcast({ args: ['--broker', 'redis', '--redis-url', redis.url] });
  await waitForStatus(rc, '/readyz', 200);
  // /readyz 200: roomcast's subscriptions are confirmed (per room, each join waits for its own).
  publisher = createClient({ url: redis.url });
  await publisher.connect();
  io = new Emitter(publisher);
});
after(async () => {
  await publisher?.quit().catch(() => {});
  await rc?.stop();
  await redis?.stop();
});

const CLIENTS = [
  ['1', ['websocket']],
  ['1', ['polling']],
  ['2', ['websocket']],
  ['2', ['polling']],
  ['4', ['websocket']],
  ['4', ['polling']],
];

/** A /ws client subscribed to `rooms`; .frames is every JSON frame received. */
async function wsClient(rooms) {
  const ws = new WebSocket(`${rc.url.replace(/^http/, 'ws')}/ws`);
  const frames = [];
  ws.on('message', (data) => frames.push(JSON.parse(String(data))));
  await waitFor(ws, 'open');
  for (const [i, channel] of rooms.entries()) {
    ws.send(JSON.stringify({ op: 'subscribe', channel, id: i + 1 }));
    await waitFor(() => frames.some((f) => f.type === 'ok' && f.id === i + 1), { message: `/ws subscribe ${channel}` });
  }
  return { frames, events: () => frames.filter((f) => f.type === 'event'), close: () => ws.close() };
}

/** Socket.IO clients of every CLIENTS kind, each joined to `rooms`. */
async function sockets(rooms) {
  const list = CLIENTS.map(([version, transports]) => connect(version, rc.url, { transports }));
  for (const c of list) {
    await c.connected();
    if (rooms.length) await join(c, rooms);
  }
  return list;
}

const label = (c) => `socket.io-client ${c.version} ${c.socket.io?.opts?.transports ?? ''}`;

/** Emit a sentinel to `room` (or to everyone) and wait until each of `waiters` has it. */
async function sentinel({ room, socketsIn = [], wsIn = [], sseIn = [] }) {
  const mark = randomUUID();
  (room ? io.to(room) : io).emit('sentinel', mark);
  for (const c of socketsIn) await waitFor(() => c.events('sentinel').some(([m]) => m === mark), { message: `sentinel at ${label(c)}` });
  for (const w of wsIn) await waitFor(() => w.events().some((f) => f.event === 'sentinel' && f.args[0] === mark), { message: 'sentinel at /ws' });
  for (const s of sseIn) await s.next((e) => e.json?.event === 'sentinel' && e.json.args[0] === mark);
}

describe('@socket.io/redis-emitter → roomcast', () => {
  it('to(room).emit with several arguments and binary reaches Socket.IO 2.x/4.x, /ws and /sse of that room only', async () => {
    const room = `emit-${randomUUID()}`;
    const other = `other-${randomUUID()}`;
    const inRoom = await sockets([room]);
    const outside = await sockets([other]);
    const ws = await wsClient([room]);
    const sse = await openSse(rc, [room]);
    try {
      const image = Buffer.from([0, 1, 2, 253, 254, 255]);
      const when = new Date('2026-01-02T03:04:05.678Z');
      io.to(room).emit('price', 1, 'two ✓', { three: [3, null, true], when }, image, { nested: { raw: Buffer.from('hi') } });
      await sentinel({ room, socketsIn: inRoom, wsIn: [ws], sseIn: [sse] });
      await sentinel({ room: other, socketsIn: outside });

      for (const c of inRoom) {
        const got = c.events('price');
        assert.equal(got.length, 1, `${label(c)}: exactly once`);
        const [one, two, three, bin, nested] = got[0];
        assert.equal(one, 1);
        assert.equal(two, 'two ✓');
        assert.deepEqual(three, { three: [3, null, true], when: when.toISOString() }, label(c));
        assert.deepEqual(toBuffer(bin), image, `${label(c)}: binary attachment`);
        assert.deepEqual(toBuffer(nested.nested.raw), Buffer.from('hi'), `${label(c)}: nested attachment`);
        assert.equal(c.events('message').length, 0, 'an event, not a roomcast message');
      }
      for (const c of outside) assert.equal(c.events('price').length, 0, `${label(c)} is not in the room`);

      const expected = {
        type: 'event',
        rooms: [room],
        event: 'price',
        args: [1, 'two ✓', { three: [3, null, true], when: when.toISOString() }, { $base64: image.toString('base64') }, { nested: { raw: { $base64: 'aGk=' } } }],
      };
      const wsGot = ws.events().filter((f) => f.event === 'price');
      assert.equal(wsGot.length, 1);
      const { id, ts, ...rest } = wsGot[0];
      assert.deepEqual(rest, expected);
      assert.match(id, /^\d+$/);
      assert.ok(Math.abs(ts - Date.now()) < 60_000);
      const sseGot = sse.events.filter((e) => e.json?.event === 'price');
      assert.equal(sseGot.length, 1);
      assert.equal(sseGot[0].event, 'message', 'SSE type message: onmessage gets it');
      assert.equal(sseGot[0].id, sseGot[0].json.id);
      const { id: _i, ts: _t, ...sseRest } = sseGot[0].json;
      assert.deepEqual(sseRest, expected);
    } finally {
      closeAll([...inRoom, ...outside]);
      ws.close();
      sse.close();
    }
  });

  it('emit to everyone reaches every Socket.IO client, not /ws or /sse; except() leaves rooms out', async () => {
    const a = `a-${randomUUID()}`;
    const b = `b-${randomUUID()}`;
    const inA = await sockets([a]);
    const inB = await sockets([b]);
    const inNone = await sockets([]);
    const ws = await wsClient([a]);
    const sse = await openSse(rc, [a]);
    try {
      io.emit('everyone', { n: 1 });
      io.except(b).emit('not-b', 2);
      io.to([a, b]).except(b).emit('a-minus-b', 3);
      io.to([a, b]).emit('a-and-b', 4);
      await sentinel({ socketsIn: [...inA, ...inB, ...inNone] });
      await sentinel({ room: a, wsIn: [ws], sseIn: [sse] });

      for (const c of [...inA, ...inB, ...inNone]) assert.deepEqual(c.events('everyone'), [[{ n: 1 }]], label(c));
      for (const c of [...inA, ...inNone]) assert.deepEqual(c.events('not-b'), [[2]], label(c));
      for (const c of inB) assert.deepEqual(c.events('not-b'), [], `${label(c)} is excepted`);
      for (const c of inA) assert.deepEqual(c.events('a-minus-b'), [[3]], label(c));
      for (const c of [...inB, ...inNone]) assert.deepEqual(c.events('a-minus-b'), [], label(c));
      for (const c of [...inA, ...inB]) assert.deepEqual(c.events('a-and-b'), [[4]], label(c));
      for (const c of inNone) assert.deepEqual(c.events('a-and-b'), [], label(c));

      const names = (events) => events.map((e) => e.event).filter((n) => n !== 'sentinel');
      assert.deepEqual(names(ws.events()), ['a-minus-b', 'a-and-b'], '/ws: room events only');
      assert.deepEqual(names(sse.events.map((e) => e.json).filter((j) => j?.type === 'event')), ['a-minus-b', 'a-and-b'], '/sse: room events only');
    } finally {
      closeAll([...inA, ...inB, ...inNone]);
      ws.close();
      sse.close();
    }
  });

  it('a second namespace: roomcast serves only "/", so clients cannot join /admin and its events reach no one', async () => {
    const room = `nsp-${randomUUID()}`;
    const inRoom = await sockets([room]);
    const ws = await wsClient([room]);
    const admin = connect('4', rc.url, { nsp: '/admin', transports: ['websocket'] });
    try {
      await assert.rejects(admin.connected(), /Invalid namespace/);
      io.of('/admin').to(room).emit('secret', 1);
      io.of('/admin').emit('secret', 2);
      io.of('/admin').in(room).disconnectSockets();
      await sentinel({ room, socketsIn: inRoom, wsIn: [ws] });
      for (const c of inRoom) {
        assert.deepEqual(c.events('secret'), [], label(c));
        assert.ok(c.isConnected, `${label(c)} stays connected`);
      }
      assert.equal(ws.events().filter((f) => f.event === 'secret').length, 0);
    } finally {
      closeAll([...inRoom, admin]);
      ws.close();
    }
  });

  it('socketsJoin, socketsLeave and disconnectSockets act on the Socket.IO clients they target', async () => {
    const a = `a-${randomUUID()}`;
    const b = `b-${randomUUID()}`;
    const extra = `extra-${randomUUID()}`;
    const inA = await sockets([a]);
    const inB = await sockets([b]);
    const ws = await wsClient([a]);
    try {
      io.in(a).socketsJoin(extra);
      io.to(extra).emit('via-extra', 1);
      await sentinel({ room: extra, socketsIn: inA });
      for (const c of inA) assert.deepEqual(c.events('via-extra'), [[1]], `${label(c)} joined ${extra}`);
      for (const c of inB) assert.deepEqual(c.events('via-extra'), [], label(c));
      assert.equal(ws.events().length, 0, '/ws subscribers are not sockets: not joined');

      io.in(a).socketsLeave(extra);
      io.to(extra).emit('via-extra', 2);
      io.socketsJoin(extra); // everyone
      io.to(extra).emit('via-extra', 3);
      await sentinel({ room: extra, socketsIn: [...inA, ...inB] });
      for (const c of inA) assert.deepEqual(c.events('via-extra'), [[1], [3]], label(c));
      for (const c of inB) assert.deepEqual(c.events('via-extra'), [[3]], label(c));

      io.in(b).disconnectSockets();
      for (const c of inB) {
        const [reason] = await c.first('disconnect');
        assert.equal(reason, 'io server disconnect', label(c));
      }
      await sentinel({ socketsIn: inA });
      for (const c of inA) assert.ok(c.isConnected, `${label(c)} is not in ${b}`);
      await sentinel({ room: a, wsIn: [ws] });
    } finally {
      closeAll([...inA, ...inB]);
      ws.close();
    }
  });

  it('malformed messages on the emitter channels are counted and dropped; nothing reaches anyone', async () => {
    const room = `bad-${randomUUID()}`;
    const inRoom = await sockets([room]);
    const ws = await wsClient([room, 'socket.io#/#']);
    try {
      for (const garbage of ['not msgpack', '\x93\xa1x\x01\x02']) {
        assert.ok((await publishRedis(redis, 'socket.io#/#', garbage)) >= 1);
        assert.ok((await publishRedis(redis, `socket.io#/#${room}#`, garbage)) >= 1);
      }
      assert.ok((await publishRedis(redis, 'socket.io-request#/#', '{"type":2}')) >= 1);
      io.to(room).emit('after', 'still fine');
      await sentinel({ room, socketsIn: inRoom, wsIn: [ws] });
      for (const c of inRoom) {
        assert.deepEqual(c.log.map(([e]) => e).filter((e) => !['sentinel', 'hello'].includes(e)), ['after'], label(c));
        assert.ok(c.isConnected);
      }
      assert.deepEqual(ws.frames.filter((f) => f.type === 'message'), [], 'no room named socket.io#/#');
      const metrics = String((await httpRequest(rc, '/metrics')).body);
      const count = (kind) => Number(metrics.match(new RegExp(`roomcast_emitter_messages_total\\{kind="${kind}",result="malformed"\\} (\\d+)`))?.[1]);
      assert.equal(count('broadcast'), 4, metrics.split('\n').filter((l) => l.includes('emitter')).join('\n'));
      assert.equal(count('request'), 1);
    } finally {
      closeAll(inRoom);
      ws.close();
    }
  });
});
