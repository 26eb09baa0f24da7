// Latest value on join (README "Latest value on join"): a room with `cache = "last"` greets every
// socket.io-client major, over websocket and polling, with its newest message as the `message`
// event right after the join; the next live message follows once.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startRoomcast, httpRequest, waitFor } from './lib/server.mjs';
import { connect, closeAll, VERSIONS, packageVersion } from './lib/clients.mjs';
import { payloadsIn, join } from './lib/rooms.mjs';

const KEY = 'e2e-latest-key';
let rc;
let dir;
before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'roomcast-latest-'));
  const config = path.join(dir, 'roomcast.toml');
  writeFileSync(config, '[[rules]]\nmatch = "device-*"\ncache = "last"\n');
  rc = await startRoomcast({ args: ['--config', config, '--api-key', KEY] });
});
after(async () => {
  await rc?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function publish(channel, data) {
  const res = await httpRequest(rc, '/api/publish', {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
}

let seq = 0;
for (const version of VERSIONS) {
  for (const [mode, transports] of Object.entries({ websocket: ['websocket'], polling: ['polling'] })) {
    describe(`socket.io-client ${packageVersion(version)} over ${mode}`, () => {
      it('gets a cached room\'s newest message on join, then live messages once', async () => {
        const room = `device-${version}-${mode}-${++seq}`;
        await publish(room, 'old');
        await publish(room, 'newest');
        const client = connect(version, rc.url, { transports });
        try {
          await client.connected();
          await join(client, [room]);
          await waitFor(() => payloadsIn(client, room).length >= 1, { message: `the value in ${room}` });
          await publish(room, 'live');
          await waitFor(() => payloadsIn(client, room).includes('live'), { message: `live in ${room}` });
          assert.deepEqual(payloadsIn(client, room), ['newest', 'live']);
        } finally {
          closeAll(client);
        }
      });
    });
  }
}
