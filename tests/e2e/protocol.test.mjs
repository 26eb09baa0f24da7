// A. Protocol layer: the official socket.io-client majors 1, 2 and 4 over polling, websocket and
// polling→websocket upgrade, against examples/protocol-conformance (official test-suite server:
// pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000, connectTimeout 1000 ms).
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { startConformance, waitFor } from './lib/server.mjs';
import { connect, closeAll, VERSIONS, TRANSPORTS, packageVersion, toBuffer } from './lib/clients.mjs';
import { rawEngine } from './lib/raw.mjs';

const CHILD = fileURLToPath(new URL('./lib/child-client.mjs', import.meta.url));
const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;

let srv;
before(async () => {
  srv = await startConformance();
});
after(async () => {
  await srv?.stop();
});

function bytes(n, seed = 1) {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    b[i] = i < 256 ? i : x & 0xff; // every byte value first, then pseudo-random
  }
  return b;
}

function assertSameBytes(got, want, what) {
  const buf = toBuffer(got);
  assert.ok(buf, `${what}: expected binary, got ${typeof got} ${JSON.stringify(got)?.slice(0, 80)}`);
  assert.equal(buf.length, want.length, `${what}: length`);
  assert.ok(buf.equals(want), `${what}: bytes differ`);
}

for (const version of VERSIONS) {
  for (const [mode, transports] of Object.entries(TRANSPORTS)) {
    describe(`socket.io-client ${packageVersion(version)} over ${mode}`, () => {
      const clients = [];
      const open = (opts = {}) => {
        const c = connect(version, srv.url, { transports, ...opts });
        clients.push(c);
        return c;
      };
      afterEach(() => closeAll(clients.splice(0)));

      it('connects (query on all majors, auth on 4) and receives the auth event sent right after CONNECT', async () => {
        const auth = { token: `t-${version}-${mode}`, n: 42 };
        const c = open({ query: { room: 'q1', v: version }, auth });
        await c.connected();
        const [got] = await c.first('auth');
        if (version === '4') assert.deepEqual(got, auth);
        else assert.ok(got == null || (typeof got === 'object' && Object.keys(got).length === 0), `auth ${JSON.stringify(got)}`);
        assert.equal(c.events('auth').length, 1, 'exactly one auth event');
        const expect = mode === 'polling' ? 'polling' : 'websocket';
        await waitFor(() => c.socket.io.engine.transport.name === expect, { message: `transport ${expect}` });
      });

      it('echoes message as message-back with the same args, in order', async () => {
        const c = open();
        await c.connected();
        const sent = [];
        for (let i = 0; i < 20; i++) {
          const args = [i, `s${i}`, { nested: { i, arr: [1, 'two', null, true] } }, 'ünïcødé 🚀 你好'];
          sent.push(args);
          c.emit('message', ...args);
        }
        const got = await c.waitEvents('message-back', 20);
        assert.deepEqual(got, sent);
        assert.equal(c.events('message-back').length, 20, 'no duplicates');
      });

      it('acks client→server (message-with-ack returns its arguments)', async () => {
        const c = open();
        await c.connected();
        assert.deepEqual(await c.emitWithAck('message-with-ack', 1, '2', { three: [3] }), [1, '2', { three: [3] }]);
        assert.deepEqual(await c.emitWithAck('message-with-ack'), []);
        // several acks in flight resolve to their own requests
        const many = await Promise.all([...Array(10).keys()].map((i) => c.emitWithAck('message-with-ack', i)));
        assert.deepEqual(many, [...Array(10).keys()].map((i) => [i]));
      });

      it('acks server→client (request-ack → ack-request with callback → ack-received)', async () => {
        const c = open();
        await c.connected();
        const req = c.once('ack-request');
        c.emit('request-ack', 'a', 2, { b: true });
        const args = await req;
        const ack = args.pop();
        assert.equal(typeof ack, 'function', 'server asked for an ack');
        assert.deepEqual(args, ['a', 2, { b: true }]);
        const received = c.once('ack-received');
        ack('answer', 7, { ok: 1 });
        assert.deepEqual(await received, ['answer', 7, { ok: 1 }]);
      });

      it('round-trips binary attachments byte-exact via message-back and via ack', async () => {
        const c = open();
        await c.connected();
        const small = bytes(256);
        const big = bytes(100 * 1024, 7);
        const back = c.once('message-back');
        c.emit('message', small, 'text', { inner: big, list: [bytes(3, 3)] });
        const [b0, b1, b2] = await back;
        assertSameBytes(b0, small, 'message-back arg 0');
        assert.equal(b1, 'text');
        assertSameBytes(b2.inner, big, 'message-back nested buffer');
        assertSameBytes(b2.list[0], bytes(3, 3), 'message-back buffer in array');

        const [a0, a1] = await c.emitWithAck('message-with-ack', big, { x: small });
        assertSameBytes(a0, big, 'ack arg 0');
        assertSameBytes(a1.x, small, 'ack nested buffer');

        // and the server→client ack direction with binary
        const req = c.once('ack-request');
        c.emit('request-ack', small);
        const args = await req;
        const ack = args.pop();
        assertSameBytes(args[0], small, 'ack-request arg');
        const rec = c.once('ack-received');
        ack(big);
        const [r0] = await rec;
        assertSameBytes(r0, big, 'ack-received arg');
      });

      it('connects to the second namespace /custom (own socket, and multiplexed on one connection)', async () => {
        const auth = { ns: 'custom' };
        const c = open({ nsp: '/custom', auth });
        await c.connected();
        const [got] = await c.first('auth');
        if (version === '4') assert.deepEqual(got, auth);
        assert.equal(c.socket.nsp, '/custom');

        // main namespace first, then /custom over the same Engine.IO connection
        const m = open();
        await m.connected();
        const engine = m.socket.io.engine;
        const sub = version === '4' ? m.socket.io.socket('/custom', { auth }) : m.socket.io.socket('/custom');
        try {
          const subAuth = waitFor(sub, 'auth');
          if (!sub.connected) await waitFor(sub, 'connect');
          const [a] = await subAuth;
          if (version === '4') assert.deepEqual(a, auth);
          assert.equal(sub.io.engine, engine, 'same engine connection');
          // the main namespace still works beside it
          assert.deepEqual(await m.emitWithAck('message-with-ack', 'still'), ['still']);
        } finally {
          sub.disconnect();
        }
      });

      it('gets a connect error for the unknown namespace /nope', async () => {
        const c = open({ nsp: '/nope' });
        await assert.rejects(c.connected(), /invalid namespace/i);
        assert.equal(c.isConnected, false);
        // the server is fine afterwards
        const ok = open();
        await ok.connected();
        assert.deepEqual(await ok.emitWithAck('message-with-ack', 1), [1]);
      });

      it('is disconnected by the server on disconnect-me, and reconnects by connecting again', async () => {
        const c = open();
        await c.connected();
        const other = open();
        await other.connected();
        const engine = c.socket.io.engine;
        const disc = c.once('disconnect');
        c.emit('disconnect-me');
        const [reason] = await disc;
        assert.equal(reason, 'io server disconnect');
        assert.equal(c.isConnected, false);
        // the client closes its Engine.IO connection when its last namespace is gone; 1.x/2.x lose
        // a connect() issued before that close completes (client-side race), so wait for it
        await waitFor(() => engine.readyState === 'closed', { message: 'old engine to close' });
        // reconnect the same socket by hand (socket.io does not auto-reconnect after a server disconnect)
        const again = c.once('connect');
        c.socket.connect();
        await again;
        assert.deepEqual(await c.emitWithAck('message-with-ack', 'back'), ['back']);
        assert.equal(c.events('connect').length, 2);
        // a fresh socket with the reconnection manager on works too
        const fresh = open({ reconnection: true });
        await fresh.connected();
        assert.deepEqual(await fresh.emitWithAck('message-with-ack', 'fresh'), ['fresh']);
        // the bystander saw nothing of it
        assert.equal(other.events('disconnect').length, 0);
        assert.deepEqual(await other.emitWithAck('message-with-ack', 'ok'), ['ok']);
      });

      it('survives a client process killed mid-connection; the other client keeps working', async () => {
        const other = open();
        await other.connected();
        const child = spawn(process.execPath, [CHILD, version, srv.url, JSON.stringify(transports)], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        try {
          let out = '';
          child.stdout.on('data', (d) => (out += d));
          await waitFor(() => out.includes('connected'), { timeout: 10000, message: 'child client to connect' });
          child.kill('SIGKILL');
          await once(child, 'exit');
          // let the server's heartbeat (300 + 200 ms) run out for the dead client: the bystander sees
          // 3 more heartbeats of its own (~900 ms) and is still connected
          await other.heartbeats(3, { timeout: 3000 });
          assert.equal(other.isConnected, true);
          assert.equal(other.events('disconnect').length, 0);
          const back = other.once('message-back');
          other.emit('message', 'after-kill');
          assert.deepEqual(await back, ['after-kill']);
        } finally {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        }
      });

      if (mode === 'upgrade') {
        it('upgrades from polling to websocket and keeps the session', async () => {
          const c = open();
          await c.connected();
          const engine = c.socket.io.engine;
          const sid = engine.id;
          await waitFor(() => engine.transport.name === 'websocket', { message: 'upgrade to websocket' });
          assert.equal(engine.id, sid, 'same Engine.IO session after upgrade');
          assert.deepEqual(await c.emitWithAck('message-with-ack', 'upgraded'), ['upgraded']);
        });
      }
    });
  }
}

describe('reconnection manager after the server restarts', () => {
  for (const version of VERSIONS) {
    it(`socket.io-client ${packageVersion(version)} reconnects by itself (websocket)`, async () => {
      const port = srv.port;
      const c = connect(version, srv.url, { transports: TRANSPORTS.websocket, reconnection: true });
      try {
        await c.connected();
        const disc = c.once('disconnect');
        await srv.stop();
        await disc;
        srv = await startConformance({ port });
        await c.waitEvents('connect', 2, { timeout: 5000 });
        assert.deepEqual(await c.emitWithAck('message-with-ack', 'reconnected'), ['reconnected']);
      } finally {
        c.close();
      }
    });
  }
});

describe('Engine.IO heartbeat (raw websocket clients)', () => {
  for (const eio of [3, 4]) {
    for (const path of ['/engine.io/', '/socket.io/']) {
      it(`EIO${eio} ${path}: open packet carries the configured timings`, async () => {
        const r = await rawEngine(srv.url, { eio, path, heartbeat: true });
        try {
          assert.equal(r.open.pingInterval, PING_INTERVAL);
          assert.equal(r.open.pingTimeout, PING_TIMEOUT);
          assert.equal(typeof r.open.sid, 'string');
          assert.ok(r.open.sid.length > 0);
          if (eio === 4) assert.equal(r.open.maxPayload, 1000000);
        } finally {
          r.close();
        }
      });

      it(`EIO${eio} ${path}: a client that stops answering heartbeats is closed within pingInterval+pingTimeout`, async () => {
        const r = await rawEngine(srv.url, { eio, path, heartbeat: false });
        const { at } = await waitFor(r.closed, { timeout: 3000, message: 'server to close the silent client' });
        const elapsed = at - r.openedAt;
        assert.ok(elapsed < 2000, `closed after ${elapsed} ms`);
        assert.ok(elapsed >= PING_INTERVAL - 50, `closed too early (${elapsed} ms): not a heartbeat timeout`);
        if (eio === 4) assert.ok(r.pings >= 1, 'EIO4 server pinged before giving up');
      });

      it(`EIO${eio} ${path}: a client that answers heartbeats stays open`, async () => {
        const r = await rawEngine(srv.url, { eio, path, heartbeat: true });
        try {
          // EIO4 socket.io: CONNECT to '/' before connectTimeout (1000 ms); EIO3 is connected implicitly
          if (eio === 4 && path === '/socket.io/') r.send('40');
          if (eio === 4) await waitFor(() => r.pings >= 4, { timeout: 3000, message: '4 server pings' });
          else {
            let pongs = 0;
            for (; pongs < 4; pongs++) await r.next((f) => f === '3', { timeout: 2000 });
          }
          assert.equal(r.isClosed, false, 'still open after 4 heartbeats (> pingInterval+pingTimeout)');
        } finally {
          r.close();
        }
      });
    }

    if (eio === 4) {
      it('EIO4 /socket.io/: a client that never sends CONNECT is closed after connectTimeout (1000 ms)', async () => {
        const r = await rawEngine(srv.url, { eio, path: '/socket.io/', heartbeat: true });
        const { at } = await waitFor(r.closed, { timeout: 3000, message: 'server to close the client that never connected' });
        const elapsed = at - r.openedAt;
        assert.ok(elapsed >= 800 && elapsed < 2000, `closed after ${elapsed} ms`);
        assert.ok(r.pings >= 2, 'it was answering heartbeats, so only connectTimeout explains the close');
      });
    }

    it(`EIO${eio} /engine.io/ echoes messages`, async () => {
      const r = await rawEngine(srv.url, { eio, path: '/engine.io/', heartbeat: true });
      try {
        r.send('4hello ✓');
        assert.equal(await r.next((f) => typeof f === 'string' && f.startsWith('4')), '4hello ✓');
      } finally {
        r.close();
      }
    });
  }
});

describe('garbage from one client does not hurt another', () => {
  const GARBAGE = ['4garbage{', '42["message"', '9'];
  for (const eio of [3, 4]) {
    for (const g of GARBAGE) {
      it(`EIO${eio} client sending ${JSON.stringify(g)} is disconnected; a bystander keeps receiving`, async () => {
        const bystander = connect(eio === 4 ? '4' : '2', srv.url, { transports: TRANSPORTS.websocket });
        const r = await rawEngine(srv.url, { eio, path: '/socket.io/', heartbeat: true });
        try {
          await bystander.connected();
          if (eio === 4) r.send('40');
          await r.next((f) => typeof f === 'string' && f.startsWith('40'));
          const t0 = Date.now();
          r.send(g);
          const { at } = await waitFor(r.closed, { timeout: 2000, message: `server to close after ${JSON.stringify(g)}` });
          assert.ok(at - t0 < 2000);
          const back = bystander.once('message-back');
          bystander.emit('message', 'still here', Buffer.from([1, 2]));
          const [s, b] = await back;
          assert.equal(s, 'still here');
          assertSameBytes(b, Buffer.from([1, 2]), 'bystander binary');
          assert.equal(bystander.events('disconnect').length, 0);
        } finally {
          r.close();
          bystander.close();
        }
      });
    }
  }
});
