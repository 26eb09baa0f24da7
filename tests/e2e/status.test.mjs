// Browser test of the status page (web/status.html, status.js) served by the real roomcast
// binary at /status, reading /api/stats. Debian's chromium through playwright-core.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startRoomcast, httpPublish, httpRequest } from './lib/server.mjs';
import { openSse } from './lib/sse.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || process.env.CHROMIUM || '/usr/bin/chromium';
const KEY = 'status-test-key';
let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => { await browser?.close(); });

test('/api/stats needs the API key when one is set', async () => {
  const server = await startRoomcast({ args: ['--api-key', KEY] });
  try {
    assert.equal((await httpRequest(server, '/api/stats')).status, 401);
    const res = await httpRequest(server, '/api/stats', { headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal(res.status, 200);
    const body = res.body;
    assert.equal(body.broker.name, 'memory');
    assert.equal(body.stats.connections.sse, 0);
  } finally {
    await server.stop();
  }
});

test('the status page asks for the key, then shows live connections and message rates', async () => {
  const server = await startRoomcast({ args: ['--api-key', KEY] });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  const sse = await openSse(server, ['watched']);
  try {
    await page.goto(`${server.url}/status`);
    await page.waitForSelector('#key-panel:not([hidden])');
    await page.fill('#key', 'wrong');
    await page.click('#key-form button');
    await page.waitForFunction(() => document.getElementById('key-error').textContent.includes('refused'));
    await page.fill('#key', KEY);
    await page.click('#key-form button');
    await page.waitForSelector('#status[data-state="live"]');
    await page.waitForFunction(() => document.getElementById('connections').textContent === '1');
    assert.equal(await page.textContent('#by-transport'), '0 / 0 / 1');
    assert.equal(await page.textContent('#rooms'), '1');
    assert.match(await page.textContent('#broker'), /memory: connected/);

    for (let i = 0; i < 5; i++) assert.equal((await httpPublish(server, KEY, 'watched', `m${i}`)).status, 200);
    await page.waitForFunction(() => document.getElementById('received').textContent === '5');
    // A rate was computed from two samples and drawn.
    await page.waitForFunction(() => document.getElementById('rate-in').textContent !== '–');
    assert.deepEqual(errors, []);
  } finally {
    sse.close?.();
    await page.close();
    await server.stop();
  }
});
