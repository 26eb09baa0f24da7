// Measures the time from `PUBLISH device01 ...` on Redis to the message appearing in the
// web page's list, in headless Chromium. Not a test (speed goals are not asserted):
//
//   node tests/e2e/tools/page-latency.mjs [count=200]
//
// Starts its own redis-server and roomcast (ROOMCAST_BIN, default target/debug/roomcast;
// use target/release/roomcast for real numbers) on free loopback ports. Each sample: the
// page's MutationObserver stamps the insertion with Date.now(); Node stamps Date.now() just
// before writing PUBLISH to a raw Redis socket. Prints p50/p90/p99/max in milliseconds.
import net from 'node:net';
import { chromium } from 'playwright-core';
import { startRedis, startRoomcast, freePort } from '../lib/server.mjs';

const COUNT = Number(process.argv[2] || 200);
const redis = await startRedis();
const server = await startRoomcast({ args: ['--redis-url', redis.url], port: await freePort() });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  await page.goto(`${server.url}/?room=device01`);
  await page.waitForSelector('#status[data-state="live"]');
  await page.evaluate(() => {
    window.__seen = {};
    new MutationObserver((records) => {
      const now = Date.now();
      for (const r of records) for (const n of r.addedNodes) {
        const m = /latency-(\d+)/.exec(n.textContent || '');
        if (m) window.__seen[m[1]] = now;
      }
    }).observe(document.getElementById('messages'), { childList: true });
  });
  const sock = net.connect(redis.port, '127.0.0.1');
  await new Promise((resolve) => sock.once('connect', resolve));
  sock.on('data', () => {});
  const publish = (text) => {
    const args = ['PUBLISH', 'device01', text];
    sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  };
  const sent = {};
  for (let i = 0; i < COUNT; i++) {
    sent[i] = Date.now();
    publish(`latency-${i}`);
    await page.waitForFunction((i) => window.__seen[i] !== undefined, i, { polling: 'raf' });
  }
  const seen = await page.evaluate(() => window.__seen);
  const ms = Object.keys(sent).map((i) => seen[i] - sent[i]).sort((a, b) => a - b);
  const q = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
  console.log(`page latency over ${ms.length} messages (ms): p50 ${q(0.5)} p90 ${q(0.9)} p99 ${q(0.99)} max ${ms.at(-1)}`);
  sock.end();
} finally {
  await browser.close();
  await server.stop();
  await redis.stop();
}
