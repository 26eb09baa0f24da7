// B. Product, HTTP side, on the default memory broker: POST /api/publish (auth and errors),
// /healthz, /readyz, /sse, and the `roomcast publish` CLI.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startRoomcast, httpPublish, httpRequest, runRoomcast, waitFor } from './lib/server.mjs';
import { connect, closeAll, VERSIONS, packageVersion } from './lib/clients.mjs';
import { payloadsIn, join, sentinel, assertPayloads } from './lib/rooms.mjs';
import { openSse } from './lib/sse.mjs';

const KEY = `e2e-key-${randomUUID()}`;

function assertJsonError(res, status, what) {
  assert.equal(res.status, status, `${what}: status ${res.status} body ${JSON.stringify(res.body)}`);
  assert.match(res.headers.get('content-type') || '', /application\/json/, `${what}: JSON content-type`);
  assert.equal(typeof res.body, 'object', `${what}: JSON body`);
  assert.equal(typeof res.body.error, 'string', `${what}: body.error`);
  assert.ok(res.body.error.length > 0);
  assert.equal(typeof res.body.message, 'string', `${what}: body.message`);
  assert.ok(res.body.message.length > 0);
}

describe('memory broker with --api-key', () => {
  let rc;
  const clients = [];
  before(async () => {
    rc = await startRoomcast({ args: ['--api-key', KEY] });
  });
  after(async () => {
    await rc?.stop();
  });
  afterEach(() => closeAll(clients.splice(0)));
  const publish = async (channel, data) => {
    const res = await httpPublish(rc, KEY, channel, data);
    assert.ok(res.status >= 200 && res.status < 300, `publish -> ${res.status} ${JSON.stringify(res.body)}`);
    return res;
  };

  it('GET /healthz and /readyz answer 200', async () => {
    assert.equal((await httpRequest(rc, '/healthz')).status, 200);
    assert.equal((await httpRequest(rc, '/readyz')).status, 200);
  });

  for (const version of VERSIONS) {
    for (const mode of ['websocket', 'polling']) {
      it(`HTTP publish reaches socket.io-client ${packageVersion(version)} over ${mode} exactly once`, async () => {
        const c = connect(version, rc.url, { transports: [mode] });
        clients.push(c);
        await c.connected();
        const room = `http-${version}-${mode}-${randomUUID()}`;
        await join(c, room);
        const sent = ['from http ✓ 🚀', 'x'.repeat(10 * 1024)];
        for (const d of sent) await publish(room, d);
        await sentinel(c, room, (p) => publish(room, p));
        assertPayloads(payloadsIn(c, room).slice(0, -1), sent);
        const [, meta] = c.events('message')[0];
        assert.equal(meta.room, room);
        assert.equal(typeof meta.id, 'string');
        assert.equal(typeof meta.ts, 'number');
      });
    }
  }

  it('rejects a wrong or missing API key with 401 JSON {error,message}', async () => {
    assertJsonError(await httpPublish(rc, `${KEY}-wrong`, 'room', 'x'), 401, 'wrong key');
    assertJsonError(await httpPublish(rc, null, 'room', 'x'), 401, 'missing key');
    const basic = await httpRequest(rc, '/api/publish', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`u:${KEY}`).toString('base64')}` },
      body: JSON.stringify({ channel: 'room', data: 'x' }),
    });
    assertJsonError(basic, 401, 'Basic instead of Bearer');
  });

  it('rejects malformed JSON with 400 JSON {error,message}', async () => {
    const res = await httpRequest(rc, '/api/publish', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: '{"channel": "room", "data": ',
    });
    assertJsonError(res, 400, 'malformed JSON');
    for (const body of [JSON.stringify({ data: 'no channel' }), JSON.stringify({ channel: '', data: 'x' }), JSON.stringify({ channel: 5, data: 'x' }), '[]']) {
      const r = await httpRequest(rc, '/api/publish', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
        body,
      });
      assert.ok(r.status >= 400 && r.status < 500, `${body} -> ${r.status}`);
      assert.equal(typeof r.body?.error, 'string', `${body}: JSON error body`);
      assert.equal(typeof r.body?.message, 'string', `${body}: JSON error message`);
    }
  });

  it('GET /sse?channel=a&channel=b streams message events of those channels only', async () => {
    const a = `sse-a-${randomUUID()}`;
    const b = `sse-b-${randomUUID()}`;
    const other = `sse-other-${randomUUID()}`;
    const s = await openSse(rc, [a, b]);
    try {
      assert.equal(s.status, 200);
      assert.match(s.headers.get('content-type') || '', /^text\/event-stream/);
      // the subscription is live once a probe comes through (publishing earlier could be lost)
      await waitFor(
        async () => {
          await publish(a, 'probe');
          return s.next((e) => e.json?.data === 'probe', { timeout: 200 }).then(() => true, () => false);
        },
        { timeout: 5000, message: 'SSE subscription to be live' },
      );
      const from = s.events.length;
      await publish(other, 'not for this stream');
      await publish(a, 'plain text ✓');
      await publish(b, '{"k":[1,2],"s":"v"}');
      await publish(a, 'end');
      await s.next((e) => e.json?.data === 'end', { from });
      const evs = s.events.slice(from);
      assert.deepEqual(
        evs.map((e) => [e.json.channel, e.json.data]),
        [
          [a, 'plain text ✓'],
          [b, { k: [1, 2], s: 'v' }],
          [a, 'end'],
        ],
      );
      for (const e of evs) {
        assert.equal(e.event, 'message');
        assert.equal(e.json.type, 'message');
        assert.equal(typeof e.json.id, 'string');
        assert.equal(e.id, e.json.id, 'SSE id: line equals data.id');
        assert.equal(typeof e.json.ts, 'number');
      }
    } finally {
      s.close();
    }
  });

  it('`roomcast publish CHANNEL DATA --url --api-key` publishes', async () => {
    const c = connect('4', rc.url, { transports: ['websocket'] });
    clients.push(c);
    await c.connected();
    const room = `cli-${randomUUID()}`;
    await join(c, room);
    const res = await runRoomcast(['publish', room, 'from the cli ✓', '--url', rc.url, '--api-key', KEY]);
    assert.equal(res.code, 0, `exit ${res.code}\n${res.stdout}\n${res.stderr}`);
    await waitFor(() => payloadsIn(c, room).includes('from the cli ✓'), { message: 'CLI message' });
    const bad = await runRoomcast(['publish', room, 'nope', '--url', rc.url, '--api-key', `${KEY}-wrong`]);
    assert.notEqual(bad.code, 0, 'a refused publish exits non-zero');
    await sentinel(c, room, (p) => publish(room, p));
    assert.deepEqual(payloadsIn(c, room).slice(0, -1), ['from the cli ✓']);
  });
});

describe('memory broker without an API key', () => {
  let rc;
  before(async () => {
    rc = await startRoomcast();
  });
  after(async () => {
    await rc?.stop();
  });

  it('refuses HTTP publish with 403 JSON {error,message}', async () => {
    assertJsonError(await httpPublish(rc, 'anything', 'room', 'x'), 403, 'no key configured, Bearer sent');
    assertJsonError(await httpPublish(rc, null, 'room', 'x'), 403, 'no key configured, none sent');
  });
});
