// Connection tokens with the official clients: roomcast with `--auth jwt` and a rules file, every
// socket.io-client major over websocket and polling. 1.x/2.x carry the token as `?token=`, 4.x as
// `auth: {token}`. A valid token joins what it grants and receives; a join it does not grant gets
// `forbidden` naming the room and changes nothing else; an expired or forged token is refused at
// connect with its specific code.
//
// Tokens are signed here by hand (HS256 with node:crypto), so the test depends on no JWT library.
import { describe, it, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startRoomcast, httpPublish } from './lib/server.mjs';
import { connect, closeAll, VERSIONS, packageVersion } from './lib/clients.mjs';
import { payloadsIn, join, sentinel, assertPayloads } from './lib/rooms.mjs';

const SECRET = `e2e-jwt-secret-${randomUUID()}`; // ≥ 32 bytes, as roomcast requires
const KEY = `e2e-key-${randomUUID()}`;

const RULES = `
[[rules]]
match = "device:*"
subscribe = "token"

[[rules]]
match = "admin:*"
subscribe = "nobody"
`;

const b64url = (data) => Buffer.from(data).toString('base64url');

/** An HS256 JWT over `claims`, signed with `secret`. */
function sign(claims, secret = SECRET) {
  const head = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);
// `{sub}` in a grant becomes the subject: this token may join user:u1 and device:d1-*.
const claims = (extra = {}) => ({ sub: 'u1', channels: ['user:{sub}', 'device:d1-*'], exp: now() + 600, ...extra });

/** Connection options carrying `token` (if any) the way each major does. */
function withToken(version, token) {
  if (token === undefined) return {};
  return version === '4' ? { auth: { token } } : { query: { token } };
}

let rc;
let dir;
before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-e2e-auth-'));
  const rules = path.join(dir, 'rules.toml');
  writeFileSync(rules, RULES);
  rc = await startRoomcast({ args: ['--auth', 'jwt', '--jwt-secret', SECRET, '--config', rules, '--api-key', KEY] });
});
after(async () => {
  await rc?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const publish = async (channel, data) => {
  const res = await httpPublish(rc, KEY, channel, data);
  assert.equal(res.status, 200, `publish ${channel} -> ${res.status} ${JSON.stringify(res.body)}`);
};

/** The refusal a client saw at connect: its code, whichever way the major reports it. */
async function refusal(client) {
  const error = await client.connected().then(
    () => assert.fail('connected with a bad token'),
    (e) => e,
  );
  assert.ok(!client.isConnected);
  return error;
}

for (const version of VERSIONS) {
  for (const mode of ['websocket', 'polling']) {
    describe(`socket.io-client ${packageVersion(version)} over ${mode} with --auth jwt`, () => {
      const clients = [];
      const open = (token) => {
        const c = connect(version, rc.url, { transports: [mode], ...withToken(version, token) });
        clients.push(c);
        return c;
      };
      afterEach(() => closeAll(clients.splice(0)));

      it('a valid token joins the rooms it grants and receives what is published', async () => {
        const c = open(sign(claims()));
        await c.connected();
        const mine = 'user:u1';
        const device = `device:d1-${version}-${mode}-${randomUUID()}`;
        await join(c, [mine, device]);
        const sent = ['for u1 ✓', '{"n":1}'];
        for (const d of sent) await publish(mine, d);
        await publish(device, 'for the device');
        await sentinel(c, mine, (p) => publish(mine, p));
        // Other tests publish to user:u1 too: only this test's payloads are compared.
        assertPayloads(payloadsIn(c, mine).filter((p) => sent.includes(p)), sent);
        assertPayloads(payloadsIn(c, device), ['for the device']);
      });

      it('a join its token does not grant gets forbidden naming the room; nothing else changes', async () => {
        const c = open(sign(claims()));
        await c.connected();
        const mine = `device:d1-${version}-${mode}-${randomUUID()}`;
        await join(c, mine);
        const other = `device:d2-${randomUUID()}`;
        for (const room of [other, 'admin:x', 'user:u2']) {
          const [ack] = await c.emitWithAck('channel', room);
          assert.equal(ack?.ok, false, `join ${room} -> ${JSON.stringify(ack)}`);
          assert.equal(ack.code, 'forbidden', `join ${room} -> ${JSON.stringify(ack)}`);
          assert.ok(ack.error.includes(JSON.stringify(room)), `the error names ${room}: ${ack.error}`);
        }
        await publish(other, 'not for u1');
        await publish(mine, 'still mine');
        await sentinel(c, mine, (p) => publish(mine, p));
        assertPayloads(payloadsIn(c, mine).slice(0, -1), ['still mine']);
        assert.deepEqual(payloadsIn(c, other), [], 'the refused room delivers nothing');
        assert.ok(c.isConnected, 'the connection stays');
        assert.equal(c.events('disconnect').length, 0);
      });

      const refused = {
        'an expired token': [() => sign(claims({ exp: now() - 600 })), 'token_expired'],
        'a token signed with another secret': [() => sign(claims(), `${SECRET}-forged`), 'token_bad_signature'],
        'no token': [() => undefined, 'token_missing'],
      };
      for (const [what, [token, code]] of Object.entries(refused)) {
        it(`${what} is refused at connect with ${code}`, async () => {
          const c = open(token());
          const error = await refusal(c);
          assert.equal(error.message, code, `connect error ${JSON.stringify(error.message)}`);
          // 4.x gets {message: code, data: {code, message}}; earlier majors the bare code.
          if (version === '4') assert.equal(error.data?.code, code);
          assert.equal(c.events('message').length, 0);
        });
      }
    });
  }
}
