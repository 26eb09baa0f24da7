// The soak: roomcast on a real redis-server for a long while, with everything that goes wrong
// in production happening at once, and every acknowledged message accounted for. Not a test
// file (node --test does not pick it up); run it through scripts/soak:
//
//   node tests/e2e/tools/soak.mjs [--minutes 30] [--rooms 20] [--rate 200] [--out FILE]
//
// Starts its own redis-server and roomcast (ROOMCAST_BIN; scripts/soak builds a release one) on
// free loopback ports, then for the whole run:
// - steady members: in every room one /ws, one /sse, one Socket.IO 4 websocket and one
//   Socket.IO 4 polling client, joined before the first publish and never expected to leave;
// - publishes through the HTTP API at --rate msg/s in all, each carrying {room, seq}: a 200 is
//   an acknowledgement (it must reach every steady member of its room exactly once), a 503 a
//   refusal (Redis down; counted, not expected to arrive);
// - churn: short-lived clients of every transport connecting, joining, leaving, all the time;
// - slow consumers: every 30 s a few /ws and /sse clients join the firehose room (16 KiB
//   messages) and stop reading; roomcast must close them (write deadline) and go on;
// - Redis: killed with SIGKILL every 5 minutes and started again 3 s later.
// Every 10 s it samples roomcast's RSS, open fds and connections. At the end: per transport the
// acknowledged messages lost and duplicated (both must be 0), unexpected disconnects of steady
// members (must be 0), stuck readers closed, and the RSS/fd series. Exit status 1 on any loss,
// duplicate or steady disconnect.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';
import { io } from 'sio4';
import { startRedis, startRoomcast, httpPublish } from '../lib/server.mjs';

const opt = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const MINUTES = Number(opt('minutes', 30));
const ROOMS = Number(opt('rooms', 20));
const RATE = Number(opt('rate', 200));
const OUT = opt('out', null);
const KEY = 'soak';
const RUN_MS = MINUTES * 60_000;
const REDIS_EVERY_MS = Math.min(5 * 60_000, RUN_MS / 2);
const log = (...a) => console.log(`[soak ${((Date.now() - T0) / 1000).toFixed(0)}s]`, ...a);

const T0 = Date.now();
const redis = await startRedis();
const server = await startRoomcast({
  args: ['--redis-url', redis.url, '--api-key', KEY, '--log', 'warn', '--max-connections-per-ip', '0'],
});
const rooms = Array.from({ length: ROOMS }, (_, i) => `soak-${i}`);
const wsUrl = `ws://127.0.0.1:${server.port}`;

// --- steady members -----------------------------------------------------------------------
/** One steady member: what it received per room, and whether it ever left. */
function member(transport, room) {
  return { transport, room, seqs: [], disconnects: 0, close: () => {} };
}
const record = (m, data) => {
  const msg = typeof data === 'string' ? JSON.parse(data) : data;
  if (msg && msg.room === m.room && Number.isInteger(msg.seq)) m.seqs.push(msg.seq);
};

function wsMember(room) {
  const m = member('ws', room);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${wsUrl}/ws`);
    ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', channel: room, id: 1 })));
    ws.on('message', (raw) => {
      const f = JSON.parse(raw);
      if (f.type === 'ok') resolve(m);
      else if (f.type === 'message') record(m, f.data);
    });
    ws.on('close', () => m.disconnects++);
    ws.on('error', reject);
    m.close = () => ws.terminate();
  });
}

async function sseMember(room) {
  const m = member('sse', room);
  const ac = new AbortController();
  const res = await fetch(`${server.url}/sse?channel=${room}`, { signal: ac.signal });
  if (res.status !== 200) throw new Error(`sse ${res.status}`);
  m.close = () => ac.abort();
  (async () => {
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const event = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          if (data) record(m, JSON.parse(data).data);
        }
      }
    } catch {}
    if (!stopping) m.disconnects++;
  })();
  return m;
}

function sioMember(room, transport) {
  const m = member(`socket.io ${transport}`, room);
  return new Promise((resolve, reject) => {
    const s = io(server.url, { transports: [transport], reconnection: false, forceNew: true });
    s.on('message', (payload, meta) => meta?.room === room && record(m, payload));
    s.on('connect', () => s.emit('channel', room, (ack) => (ack?.ok ? resolve(m) : reject(new Error(JSON.stringify(ack))))));
    s.on('disconnect', () => !stopping && m.disconnects++);
    s.on('connect_error', reject);
    m.close = () => s.close();
  });
}

let stopping = false;
const steady = [];
for (const room of rooms) {
  steady.push(await wsMember(room), await sseMember(room), await sioMember(room, 'websocket'), await sioMember(room, 'polling'));
}
log(`${steady.length} steady members in ${ROOMS} rooms`);

// --- publishing -----------------------------------------------------------------------------
const acked = new Map(rooms.map((r) => [r, []]));
const counts = { acked: 0, refused: 0, failed: 0 };
let seq = 0;
async function publishLoop() {
  const interval = 1000 / RATE;
  let next = Date.now();
  while (!stopping) {
    const room = rooms[seq % ROOMS];
    const s = ++seq;
    try {
      const { status } = await httpPublish(server, KEY, room, JSON.stringify({ room, seq: s }));
      if (status === 200) {
        acked.get(room).push(s);
        counts.acked++;
      } else if (status === 503) counts.refused++;
      else counts.failed++;
    } catch {
      counts.failed++;
    }
    next += interval;
    const wait = next - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    else next = Date.now();
  }
}

// --- churn ----------------------------------------------------------------------------------
const churn = { opened: 0, failed: 0 };
async function churnOne() {
  const room = rooms[Math.floor(Math.random() * ROOMS)];
  const kind = churn.opened % 4;
  churn.opened++;
  try {
    const m = await (kind === 0 ? wsMember(room) : kind === 1 ? sseMember(room) : sioMember(room, kind === 2 ? 'websocket' : 'polling'));
    await new Promise((r) => setTimeout(r, Math.random() * 2000));
    m.close();
  } catch {
    churn.failed++;
  }
}
async function churnLoop() {
  while (!stopping) {
    await Promise.all(Array.from({ length: 10 }, churnOne));
  }
}

// --- slow consumers -------------------------------------------------------------------------
// Raw sockets that send their request (a /ws upgrade, or a /sse GET), then stop reading: the
// kernel buffers fill and roomcast's write blocks until its deadline closes them. Counted from
// roomcast's own metric at the end; each one is dropped here after a minute either way.
const stuck = { opened: 0 };
const FIREHOSE = 'soak-firehose';
async function firehoseLoop() {
  const big = 'x'.repeat(16 * 1024);
  while (!stopping) {
    await httpPublish(server, KEY, FIREHOSE, big).catch(() => {});
    await new Promise((r) => setTimeout(r, 50));
  }
}
function stuckReader(kind) {
  stuck.opened++;
  const socket = net.connect(server.port, '127.0.0.1');
  socket.on('error', () => {});
  socket.on('connect', () => {
    if (kind === 'sse') {
      socket.write(`GET /sse?channel=${FIREHOSE} HTTP/1.1\r\nHost: soak\r\n\r\n`);
    } else {
      const key = Buffer.from(String(Math.random())).toString('base64');
      socket.write(`GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      // A masked client frame: {"op":"subscribe","channel":FIREHOSE,"id":1}
      const body = Buffer.from(JSON.stringify({ op: 'subscribe', channel: FIREHOSE, id: 1 }));
      const mask = Buffer.from([1, 2, 3, 4]);
      const head = Buffer.from([0x81, 0x80 | body.length]);
      socket.write(Buffer.concat([head, mask, body.map((b, i) => b ^ mask[i % 4])]));
    }
    setTimeout(() => socket.pause(), 100);
  });
  setTimeout(() => socket.destroy(), 60_000).unref();
}
async function stuckLoop() {
  while (!stopping) {
    for (const kind of ['ws', 'ws', 'sse', 'sse']) stuckReader(kind);
    await new Promise((r) => setTimeout(r, 30_000));
  }
}
async function slowConsumerCloses() {
  const { body } = await fetch(`${server.url}/metrics`).then(async (r) => ({ body: await r.text() }));
  return body
    .split('\n')
    .filter((l) => l.startsWith('roomcast_disconnects_total{') && l.includes('reason="slow_consumer"'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

// --- Redis failures -------------------------------------------------------------------------
let redisRestarts = 0;
async function redisLoop() {
  while (!stopping) {
    await new Promise((r) => setTimeout(r, REDIS_EVERY_MS));
    if (stopping) break;
    log('redis: SIGKILL, back in 3 s');
    redis.proc.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 3000));
    await redis.restart();
    redisRestarts++;
  }
}

// --- sampling -------------------------------------------------------------------------------
const samples = [];
function sample() {
  const pid = server.proc.pid;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  samples.push({ t: Math.round((Date.now() - T0) / 1000), rssKiB, fds, ...counts });
}

// --- run ------------------------------------------------------------------------------------
const sampler = setInterval(sample, 10_000);
sample();
const loops = [publishLoop(), churnLoop(), firehoseLoop(), stuckLoop(), redisLoop()];
await new Promise((r) => setTimeout(r, RUN_MS));
stopping = true;
log('stopping; letting the last messages arrive');
await Promise.allSettled(loops.slice(0, 3));
await new Promise((r) => setTimeout(r, 5000));
clearInterval(sampler);
sample();

// --- accounting -----------------------------------------------------------------------------
const byTransport = {};
for (const m of steady) {
  const want = acked.get(m.room);
  const got = new Set(m.seqs);
  const t = (byTransport[m.transport] ??= { members: 0, lost: 0, duplicated: 0, disconnects: 0 });
  t.members++;
  t.lost += want.filter((s) => !got.has(s)).length;
  t.duplicated += m.seqs.length - got.size;
  t.disconnects += m.disconnects;
}
stuck.closedBySlowConsumer = await slowConsumerCloses();
const first = samples.find((s) => s.t >= 60) ?? samples[0];
const last = samples[samples.length - 1];
const result = {
  minutes: MINUTES, rooms: ROOMS, rate: RATE, publishes: counts, redisRestarts, churn, stuck,
  byTransport, rss: { afterFirstMinuteKiB: first.rssKiB, endKiB: last.rssKiB, maxKiB: Math.max(...samples.map((s) => s.rssKiB)) },
  fds: { afterFirstMinute: first.fds, end: last.fds, max: Math.max(...samples.map((s) => s.fds)) },
  samples,
};
for (const m of steady) m.close();
await server.stop();
await redis.stop();
if (OUT) writeFileSync(OUT, JSON.stringify(result, null, 1));
console.log(JSON.stringify({ ...result, samples: `${samples.length} samples` }, null, 1));
const bad = Object.values(byTransport).some((t) => t.lost || t.duplicated || t.disconnects);
console.log(bad ? 'soak: FAILED (loss, duplicate or steady disconnect)' : 'soak: every acknowledged message delivered exactly once');
process.exit(bad ? 1 : 0);
