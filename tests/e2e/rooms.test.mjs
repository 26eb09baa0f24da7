// B. Product, Socket.IO side: roomcast with the Redis broker and a private redis-server; every
// socket.io-client major over websocket and polling joins rooms and receives Redis publishes.
//
// "Exactly once" and "nothing leaked" are asserted without sleeping: after the messages under test,
// a sentinel is published to a room the client is in; Redis → roomcast → client keeps order, so
// when the sentinel has arrived everything published before it has arrived too.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startRedis, startRoomcast, publishRedis, waitFor, waitForStatus } from './lib/server.mjs';
import { connect, closeAll, VERSIONS, packageVersion } from './lib/clients.mjs';
import { payloadsIn, join, sentinel, assertPayloads, ROOM_MAX } from './lib/rooms.mjs';

let redis;
let rc;
before(async () => {
  redis = await startRedis();
  rc = await startRoomcast({ args: ['--broker', 'redis', '--redis-url', redis.url] });
  await waitForStatus(rc, '/readyz', 200);
  // /readyz 200: roomcast's subscriptions are confirmed (per room, each join waits for its own).
});
after(async () => {
  await rc?.stop();
  await redis?.stop();
});

const MODES = { websocket: ['websocket'], polling: ['polling'] };
let seq = 0;

for (const version of VERSIONS) {
  for (const [mode, transports] of Object.entries(MODES)) {
    describe(`socket.io-client ${packageVersion(version)} over ${mode} (redis broker)`, () => {
      const clients = [];
      const open = async () => {
        const c = connect(version, rc.url, { transports });
        clients.push(c);
        await c.connected();
        return c;
      };
      const room = (tag) => `e2e-${version}-${mode}-${tag}-${++seq}`;
      const publish = async (r, payload) => {
        const n = await publishRedis(redis, r, payload);
        assert.ok(n >= 1, `PUBLISH ${r} reached ${n} subscribers`);
      };
      afterEach(() => closeAll(clients.splice(0)));

      it('join → every Redis publish arrives exactly once, payload byte-exact, with {room,id,ts}', async () => {
        const c = await open();
        const r = room('exact');
        await join(c, r);
        const big = Array.from({ length: 10 * 1024 }, (_, i) => String.fromCharCode(33 + ((i * 7) % 94))).join('');
        const sent = [
          'hello',
          'ünïcødé ✓ — 🚀 你好 عربى',
          '{"json":true,"n":[1,2,3]}',
          '  padded\ttab  ',
          'two\nlines',
          big,
        ];
        const t0 = Date.now();
        for (const p of sent) await publish(r, p);
        await sentinel(c, r, (p) => publish(r, p));
        const got = c.events('message').filter(([, m]) => m?.room === r);
        const payloads = got.map(([p]) => p).slice(0, -1); // minus the sentinel
        assertPayloads(payloads, sent, 'each publish exactly once, in order, byte-exact');
        const ids = new Set();
        for (const [, meta] of got) {
          assert.equal(meta.room, r);
          assert.equal(typeof meta.id, 'string');
          assert.ok(meta.id.length > 0);
          ids.add(meta.id);
          assert.equal(typeof meta.ts, 'number');
          assert.ok(meta.ts >= t0 - 5000 && meta.ts <= Date.now() + 5000, `ts ${meta.ts} is a ms timestamp`);
        }
        assert.equal(ids.size, got.length, 'ids are unique');
        assert.equal(c.events('disconnect').length, 0);
      });

      it('does not leak messages across rooms', async () => {
        const a = await open();
        const b = await open();
        const ra = room('a');
        const rb = room('b');
        const rn = room('nobody');
        await join(a, ra);
        await join(b, rb);
        await publish(rb, 'for-b');
        await publish(ra, 'for-a');
        await publishRedis(redis, rn, 'for-nobody');
        await sentinel(a, ra, (p) => publish(ra, p));
        await sentinel(b, rb, (p) => publish(rb, p));
        assert.deepEqual(a.events('message').map(([p, m]) => [m.room, p]).slice(0, 1), [[ra, 'for-a']]);
        assert.deepEqual(b.events('message').map(([p, m]) => [m.room, p]).slice(0, 1), [[rb, 'for-b']]);
        assert.ok(a.events('message').every(([, m]) => m.room === ra), 'a got only its room');
        assert.ok(b.events('message').every(([, m]) => m.room === rb), 'b got only its room');
        assert.equal(a.events('message').length, 2);
        assert.equal(b.events('message').length, 2);
      });

      it('leave → no more messages from that room (ack {ok:true})', async () => {
        const c = await open();
        const r1 = room('leave');
        const r2 = room('stay');
        await join(c, r1);
        await join(c, r2);
        await publish(r1, 'before-leave');
        await waitFor(() => payloadsIn(c, r1).includes('before-leave'), { message: 'before-leave' });
        const [ack] = await c.emitWithAck('leave', r1);
        assert.deepEqual(ack, { ok: true });
        await publish(r1, 'after-leave');
        await publish(r2, 'other-room');
        await sentinel(c, r2, (p) => publish(r2, p));
        assert.deepEqual(payloadsIn(c, r1), ['before-leave']);
        assert.equal(payloadsIn(c, r2)[0], 'other-room');
      });

      it('joins an array of rooms in one emit', async () => {
        const c = await open();
        const rs = [room('arr1'), room('arr2'), room('arr3')];
        await join(c, rs);
        for (const r of rs) await publish(r, `to ${r}`);
        await sentinel(c, rs[2], (p) => publish(rs[2], p));
        for (const r of rs) assert.deepEqual(payloadsIn(c, r)[0], `to ${r}`, `message in ${r}`);
        assert.equal(c.events('message').length, 4);
      });

      it('says hello to the other members of a room, not to the joiner', async () => {
        const a = await open();
        const b = await open();
        const r = room('hello');
        await join(a, r);
        await join(b, r);
        await a.first('hello');
        await sentinel(b, r, (p) => publish(r, p));
        await waitFor(() => payloadsIn(a, r).length === 1, { message: 'sentinel at a' });
        assert.equal(a.events('hello').length, 1, 'a: one hello (b joined)');
        assert.equal(b.events('hello').length, 0, 'b: no hello for its own join');
      });

      it('rejects bad room names with an error ack or error event and keeps the connection', async () => {
        const c = await open();
        const bad = [123, '', 'x'.repeat(ROOM_MAX + 1), { room: 'x' }, null, true];
        for (const name of bad) {
          const [ack] = await c.emitWithAck('channel', name);
          assert.equal(ack?.ok, false, `channel ${JSON.stringify(name)?.slice(0, 40)} -> ${JSON.stringify(ack)}`);
          assert.equal(typeof ack.error, 'string');
          assert.ok(ack.error.length > 0);
        }
        const [leaveAck] = await c.emitWithAck('leave', 42);
        assert.equal(leaveAck?.ok, false, `leave 42 -> ${JSON.stringify(leaveAck)}`);
        // without an ack: an `error` event
        c.emit('channel', 42);
        await c.waitEvents('error', 1);
        c.emit('channel', '');
        await c.waitEvents('error', 2);
        assert.equal(c.isConnected, true);
        assert.equal(c.events('disconnect').length, 0);
        // the longest allowed name works, and so does the connection
        const r = `${room('max')}-`.padEnd(ROOM_MAX, 'm');
        assert.equal(r.length, ROOM_MAX);
        await join(c, r);
        await publish(r, 'still works');
        await waitFor(() => payloadsIn(c, r).includes('still works'), { message: 'delivery after bad names' });
      });
    });
  }
}
