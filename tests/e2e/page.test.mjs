// Browser test of roomcast's own web page (web/index.html, app.js, style.css),
// served by the real roomcast binary at `/`, reading rooms over GET /sse.
// Runs Debian's chromium through playwright-core (no downloaded browsers).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { createClient } from 'redis';
import { Emitter } from '@socket.io/redis-emitter';
import { startRoomcast, startRedis, httpPublish, publishRedis, waitFor } from './lib/server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const KEY = 'page-test-key';
const WAIT = 15_000; // deadline for anything the page should do by itself
const RECONNECT_WAIT = 30_000; // browser reconnect backoff + server start
const skip = existsSync(CHROMIUM) ? false : `no chromium at ${CHROMIUM}`;

let browser;

before(async () => {
  if (skip) return;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
});

// A fresh roomcast (with an API key) and a fresh page for each test; both are
// closed by the returned cleanup, and the page must not have thrown anything.
async function setup(t, { path = '/', port, viewport, clock = false, args = [] } = {}) {
  const server = await startRoomcast({ args: ['--api-key', KEY, ...args], port });
  const context = await browser.newContext({ viewport: viewport || { width: 1100, height: 800 } });
  const page = await context.newPage();
  // a page clock the test can move forward (it ticks with real time otherwise)
  if (clock) await page.clock.install();
  const pageErrors = [];
  const sseRequests = [];
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  page.on('request', (req) => {
    const u = new URL(req.url());
    if (u.pathname === '/sse') sseRequests.push(u.search);
  });
  const state = { server };
  t.after(async () => {
    await context.close();
    await state.server.stop();
  });
  await page.goto(server.url + path);
  return { page, state, pageErrors, sseRequests };
}

async function publish(server, channel, data) {
  const res = await httpPublish(server, KEY, channel, data);
  assert.ok(res.status >= 200 && res.status < 300,
    `publish to ${channel} answered ${res.status} ${JSON.stringify(res.body)}`);
}

const status = (page) => page.locator('#status').getAttribute('data-state');
const waitStatus = (page, state, timeout = WAIT) =>
  page.waitForSelector(`#status[data-state="${state}"]`, { timeout });
const messages = (page) => page.locator('#messages > li');
const messageWith = (page, text) => messages(page).filter({ hasText: text });
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
// the message whose payload is exactly `text`
const messageExact = (page, text) =>
  messages(page).filter({ has: page.locator('.payload', { hasText: new RegExp(`^${escapeRe(text)}$`) }) });
const texts = (page, sel) => page.locator(sel).allTextContents();

test('joins device01, shows text and JSON payloads with the room, counts them', { skip, timeout: 60_000 }, async (t) => {
  const { page, state, pageErrors } = await setup(t);
  assert.equal(await page.inputValue('#room'), 'device01');
  assert.equal(await status(page), 'idle', 'no room joined yet: no stream');
  assert.equal(await page.textContent('#count'), '0');

  await page.click('#join');
  await page.locator('#rooms li[data-room="device01"]').waitFor({ timeout: WAIT });
  await waitStatus(page, 'live');
  assert.match(page.url(), /[?&]room=device01(&|$)/, 'joined rooms are kept in the address');

  const json = { sensor: 'temp', value: 21.5, tags: ['a', 'b'] };
  await publish(state.server, 'device01', 'hello from the api');
  await messageExact(page, 'hello from the api').waitFor({ timeout: WAIT });
  await publish(state.server, 'device01', JSON.stringify(json));
  await messageWith(page, '"sensor"').waitFor({ timeout: WAIT });

  assert.equal(await messages(page).count(), 2);
  assert.equal(await page.textContent('#count'), '2');
  assert.deepEqual(await texts(page, '#messages > li .room'), ['device01', 'device01']);
  // newest on top; JSON pretty-printed; text shown as it was sent
  const first = messages(page).nth(0);
  const second = messages(page).nth(1);
  assert.equal(await first.locator('.payload').textContent(), JSON.stringify(json, null, 2));
  assert.ok(await first.locator('.payload.json').count(), 'JSON payload is marked as JSON');
  assert.equal(await second.locator('.payload').textContent(), 'hello from the api');
  assert.ok(await second.locator('.payload.text').count(), 'text payload is marked as text');
  // local time is shown, with a machine-readable timestamp
  const dt = await first.locator('time').getAttribute('datetime');
  assert.ok(Math.abs(Date.parse(dt) - Date.now()) < 60_000, `timestamp ${dt} is recent`);
  assert.ok((await first.locator('time').textContent()).trim().length > 0);

  // the list is announced to assistive technology
  assert.equal(await page.getAttribute('#messages', 'aria-live'), 'polite');

  // clear empties the list and the counter
  await page.click('#clear');
  assert.equal(await messages(page).count(), 0);
  assert.equal(await page.textContent('#count'), '0');
  assert.deepEqual(pageErrors, []);
});

test('?room=a&room=b joins both on one stream; other rooms stay out; leaving a stops it', { skip, timeout: 60_000 }, async (t) => {
  const { page, state, pageErrors, sseRequests } = await setup(t, { path: '/?room=a&room=b' });
  await waitStatus(page, 'live');
  assert.deepEqual(await texts(page, '#rooms li .chip-name'), ['a', 'b']);
  assert.deepEqual(sseRequests, ['?channel=a&channel=b'], 'one EventSource for all joined rooms');

  // c first: if c leaked it would arrive before the later messages to a and b
  await publish(state.server, 'c', 'to-c-1');
  await publish(state.server, 'a', 'to-a-1');
  await publish(state.server, 'b', 'to-b-1');
  await messageExact(page, 'to-a-1').waitFor({ timeout: WAIT });
  await messageExact(page, 'to-b-1').waitFor({ timeout: WAIT });
  assert.equal(await messageExact(page, 'to-c-1').count(), 0, 'a message to c must not appear');
  assert.deepEqual(await texts(page, '#messages > li .room'), ['b', 'a']);

  // leave a with the × on its chip: the stream is reopened for b only
  await page.click('#rooms li[data-room="a"] .chip-leave');
  assert.deepEqual(await texts(page, '#rooms li .chip-name'), ['b']);
  await waitStatus(page, 'live');
  assert.equal(sseRequests.at(-1), '?channel=b', 'the stream was reopened without a');
  assert.doesNotMatch(page.url(), /room=a/);

  await publish(state.server, 'a', 'to-a-2');
  await publish(state.server, 'b', 'to-b-2');
  await messageExact(page, 'to-b-2').waitFor({ timeout: WAIT });
  assert.equal(await messageExact(page, 'to-a-2').count(), 0, 'a left room must not deliver');
  assert.equal(await page.textContent('#count'), '3');

  // leave b with the Leave button: no room, no stream
  await page.fill('#room', ' b ');
  await page.click('#leave');
  assert.equal(await page.locator('#rooms li').count(), 0);
  assert.equal(await status(page), 'idle');

  // client-side validation of room names, with an inline message
  await page.fill('#room', '   ');
  await page.click('#join');
  await page.locator('#room-error').waitFor({ state: 'visible', timeout: WAIT });
  assert.match(await page.textContent('#room-error'), /enter a room name/i);
  assert.equal(await page.getAttribute('#room', 'aria-invalid'), 'true');
  await page.fill('#room', 'x'.repeat(201));
  await page.press('#room', 'Enter');
  assert.match(await page.textContent('#room-error'), /at most 200/);
  assert.equal(await page.locator('#rooms li').count(), 0, 'invalid names are not joined');
  await page.fill('#room', `  ${'y'.repeat(200)}  `);
  await page.press('#room', 'Enter');
  assert.ok(await page.locator('#room-error').isHidden(), 'a 200-character name is fine');
  assert.deepEqual(await texts(page, '#rooms li .chip-name'), ['y'.repeat(200)], 'names are trimmed');
  await waitStatus(page, 'live');
  assert.deepEqual(pageErrors, []);
});

test('after a server restart the page reconnects, re-joins and receives again', { skip, timeout: 90_000 }, async (t) => {
  const { page, state, pageErrors } = await setup(t, { path: '/?room=restart-room' });
  await waitStatus(page, 'live');
  // one room from the address, one joined by hand after the page loaded
  await page.fill('#room', 'late-room');
  await page.click('#join');
  await waitStatus(page, 'live');
  await publish(state.server, 'restart-room', 'before-restart');
  await messageExact(page, 'before-restart').waitFor({ timeout: WAIT });

  const port = state.server.port;
  await state.server.stop();
  await waitStatus(page, 'reconnecting');
  assert.match(await page.textContent('#status'), /reconnecting/i);

  state.server = await startRoomcast({ args: ['--api-key', KEY], port });
  await waitStatus(page, 'live', RECONNECT_WAIT);
  assert.deepEqual(await texts(page, '#rooms li .chip-name'), ['restart-room', 'late-room'], 'still in both rooms');

  // the new process numbers its messages from the start again: the page must
  // not take a reused id for a duplicate
  await publish(state.server, 'restart-room', 'first-after-restart');
  await publish(state.server, 'late-room', 'late-room-after-restart');
  await messageExact(page, 'first-after-restart').waitFor({ timeout: WAIT });
  await messageExact(page, 'late-room-after-restart').waitFor({ timeout: WAIT });
  assert.equal(await page.textContent('#count'), '3');
  assert.deepEqual(await texts(page, '#messages > li .room'), ['late-room', 'restart-room', 'restart-room']);
  assert.equal(await messageExact(page, 'before-restart').count(), 1, 'nothing duplicated');
  assert.deepEqual(pageErrors, []);
});

test('HTML in payloads is shown as text, never parsed', { skip, timeout: 60_000 }, async (t) => {
  const { page, state, pageErrors } = await setup(t, { path: '/?room=xss' });
  await waitStatus(page, 'live');
  const evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>';
  await publish(state.server, 'xss', evil);
  await publish(state.server, 'xss', JSON.stringify({ html: evil }));
  await messageWith(page, 'html').waitFor({ timeout: WAIT });
  await messageWith(page, 'onerror').first().waitFor({ timeout: WAIT });

  assert.equal(await messages(page).nth(1).locator('.payload').textContent(), evil);
  assert.equal(await messages(page).nth(0).locator('.payload').textContent(), JSON.stringify({ html: evil }, null, 2));
  const created = await page.evaluate(() => ({
    img: document.querySelectorAll('img').length,
    script: document.querySelectorAll('#messages script').length,
    b: document.querySelectorAll('#messages b').length,
    pwned: window.__pwned ?? null,
  }));
  assert.deepEqual(created, { img: 0, script: 0, b: 0, pwned: null });
  assert.deepEqual(pageErrors, []);
});

test('a busy room cannot grow the page forever: 500 messages are kept', { skip, timeout: 120_000 }, async (t) => {
  const { page, state, pageErrors } = await setup(t, { path: '/?room=busy' });
  await waitStatus(page, 'live');
  const total = 520;
  for (let i = 0; i < total; i += 40) {
    await Promise.all(Array.from({ length: Math.min(40, total - i) }, (_, j) =>
      publish(state.server, 'busy', JSON.stringify({ n: i + j }))));
  }
  await page.waitForFunction((n) => document.querySelector('#count').textContent === String(n),
    total, { timeout: 30_000 });
  assert.equal(await messages(page).count(), 500);
  assert.match(await page.textContent('#kept'), /latest 500/);
  assert.deepEqual(pageErrors, []);
});

test('screenshots (light, dark, narrow) render', { skip, timeout: 60_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'roomcast-page-'));
  const { page, state, pageErrors } = await setup(t, { path: '/?room=device01&room=kitchen' });
  await waitStatus(page, 'live');
  await publish(state.server, 'device01', 'door opened');
  await publish(state.server, 'kitchen', JSON.stringify({ temp: 21.5, humidity: 40, ok: true }));
  await publish(state.server, 'device01', JSON.stringify({ event: 'motion', zone: 'hall', at: [1, 2] }));
  await publish(state.server, 'kitchen', 'a plain text payload that is long enough to wrap on a small screen, to check the layout');
  await page.waitForFunction(() => document.querySelectorAll('#messages > li').length === 4, null, { timeout: WAIT });

  const shots = {};
  shots.light = join(dir, 'page-light.png');
  await page.screenshot({ path: shots.light, fullPage: true });
  await page.emulateMedia({ colorScheme: 'dark' });
  shots.dark = join(dir, 'page-dark.png');
  await page.screenshot({ path: shots.dark, fullPage: true });
  await page.setViewportSize({ width: 380, height: 760 });
  shots.narrow = join(dir, 'page-narrow-dark.png');
  await page.screenshot({ path: shots.narrow, fullPage: true });

  // nothing overflows sideways on a phone-sized screen
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than a 380px screen`);
  for (const [name, file] of Object.entries(shots)) {
    const head = (await readFile(file)).subarray(0, 8);
    assert.deepEqual([...head], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${name} is a PNG`);
    assert.ok((await stat(file)).size > 5_000, `${name} screenshot is not blank`);
    t.diagnostic(`screenshot ${name}: ${file}`);
  }
  assert.deepEqual(pageErrors, []);
});

test('numeric JSON fields draw one live chart each beside the messages; other messages draw none', { skip, timeout: 60_000 }, async (t) => {
  const { page, state, pageErrors } = await setup(t, { path: '/?room=kitchen&room=notes', clock: true });
  await waitStatus(page, 'live');
  const cards = page.locator('#charts-panel .chart-card');

  // nothing numeric: text, an object without numbers, an array of numbers, a number-like string
  for (const payload of ['door opened', JSON.stringify({ event: 'motion', ok: true }), '[1,2,3]', JSON.stringify({ temp: '21' })]) {
    await publish(state.server, 'notes', payload);
  }
  await page.waitForFunction(() => document.querySelectorAll('#messages > li').length === 4, null, { timeout: WAIT });
  assert.equal(await cards.count(), 0, 'no chart for non-numeric messages');
  assert.ok(await page.locator('#charts-panel').isHidden(), 'no charts panel while there is nothing to draw');

  const readings = [{ temp: 21.5, hum: 40, label: 'k' }, { temp: 21.9, hum: 42 }, { temp: 22.4, hum: 41 }, { temp: 22.1 }];
  // a reading every 20 s of page time (the page's clock moves; nothing sleeps)
  for (const [i, r] of readings.entries()) {
    await publish(state.server, 'kitchen', JSON.stringify(r));
    await page.waitForFunction((n) => document.querySelectorAll('#messages > li').length === n, 5 + i, { timeout: WAIT });
    if (i < readings.length - 1) await page.clock.fastForward(20_000);
  }
  await page.waitForFunction(() => document.querySelector('.chart-card[data-field="temp"] .chart-line')?.dataset.points === '4',
    null, { timeout: WAIT });

  assert.equal(await cards.count(), 2, 'one chart per numeric field');
  assert.deepEqual(await texts(page, '#charts-panel .chart-field'), ['temp', 'hum'], 'field names label the charts');
  assert.deepEqual(await texts(page, '#charts-panel .chart-room'), ['kitchen', 'kitchen']);
  for (const [field, n, latest] of [['temp', 4, '22.1'], ['hum', 3, '41']]) {
    const card = page.locator(`.chart-card[data-field="${field}"]`);
    const line = card.locator('polyline.chart-line');
    assert.equal(await line.getAttribute('data-points'), String(n), `${field}: points`);
    const xs = (await line.getAttribute('points')).trim().split(/\s+/).map((p) => Number(p.split(',')[0]));
    assert.equal(xs.length, n, `${field}: drawn points`);
    assert.ok(xs.every((x, i) => i === 0 || x > xs[i - 1]), `${field}: later readings further right (${xs})`);
    assert.equal((await card.locator('.chart-latest').textContent()).trim(), latest);
    // accessible: an image named by its title and described by its readings
    const svg = card.locator('svg');
    assert.equal(await svg.getAttribute('role'), 'img');
    const [titleId, descId] = (await svg.getAttribute('aria-labelledby')).split(' ');
    assert.match(await page.locator(`[id="${titleId}"]`).textContent(), new RegExp(`^${field} in room kitchen, last 5 minutes$`));
    assert.match(await page.locator(`[id="${descId}"]`).textContent(), new RegExp(`^${n} readings; latest ${latest}`));
  }
  assert.equal(await page.locator('.chart-card[data-room="notes"]').count(), 0, 'notes drew nothing');

  // beside the message list on a wide screen
  const chartsBox = await page.locator('#charts-panel').boundingBox();
  const feedBox = await page.locator('section.feed').boundingBox();
  assert.ok(chartsBox.x + chartsBox.width <= feedBox.x, `charts (${JSON.stringify(chartsBox)}) left of messages (${JSON.stringify(feedBox)})`);
  assert.ok(Math.abs(chartsBox.y - feedBox.y) < 2, 'side by side');

  const dir = await mkdtemp(join(tmpdir(), 'roomcast-charts-'));
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    const file = join(dir, `charts-${scheme}.png`);
    await page.screenshot({ path: file, fullPage: true });
    t.diagnostic(`screenshot ${scheme}: ${file}`);
  }

  // leaving the room removes its charts
  // (cards go at once; the panel is hidden on the next animation frame)
  await page.click('#rooms li[data-room="kitchen"] .chip-leave');
  assert.equal(await cards.count(), 0);
  await page.locator('#charts-panel').waitFor({ state: 'hidden', timeout: WAIT });
  assert.deepEqual(pageErrors, []);
});

test('events from the Socket.IO emitter are listed under their room, and chart nothing', { skip, timeout: 60_000 }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const { page, pageErrors } = await setup(t, { path: '/?room=kitchen', args: ['--redis-url', redis.url] });
  await waitStatus(page, 'live');
  const publisher = createClient({ url: redis.url });
  await publisher.connect();
  try {
    new Emitter(publisher).to(['elsewhere', 'kitchen']).emit('reading', { temp: 21.5 }, 'ok');
    await messageWith(page, 'reading').waitFor({ timeout: WAIT });
  } finally {
    await publisher.quit(); // while redis still runs
  }
  assert.equal(await messages(page).count(), 1);
  const event = messages(page).nth(0);
  assert.equal(await event.locator('.room').textContent(), 'kitchen');
  assert.deepEqual(JSON.parse(await event.locator('.payload').textContent()), { event: 'reading', args: [{ temp: 21.5 }, 'ok'] });
  assert.equal(await page.locator('.chart-card').count(), 0);
  assert.deepEqual(pageErrors, []);
});
