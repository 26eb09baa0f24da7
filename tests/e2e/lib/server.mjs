// Process helpers for the e2e tests: free ports, a private redis-server and nats-server, the roomcast binary,
// the protocol-conformance example, publishing, and a small signal-based waitFor.
//
// Every process started here is registered and SIGKILLed when the test process exits, so a
// failing test never leaves a server behind. Nothing here touches a process it did not start.

import { spawn, execFile } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

// ---------------------------------------------------------------------------------------------
// signals

/**
 * Process-wide "something changed" signal. The client wrapper (clients.mjs) calls notify() on
 * every event it records; waitFor(predicate) re-checks its predicate on each notification, so a
 * test waiting for "3 messages received" wakes on the event itself, not on a timer.
 */
export const changes = new EventEmitter();
changes.setMaxListeners(0);
export function notify() {
  changes.emit('change');
}

export class TimeoutError extends Error {
  constructor(message) {
    super(message);
    this.name = 'TimeoutError';
  }
}

const isEmitter = (x) =>
  x != null && (typeof x.once === 'function' || typeof x.addEventListener === 'function') &&
  typeof x.then !== 'function';

/**
 * Wait for something to happen, with a deadline (default 5 s). Three forms:
 *
 *   await waitFor(emitter, 'event', { timeout, filter })  -> args[] of the first matching event
 *       (Node EventEmitter, socket.io-client socket, EventTarget; filter(...args) -> bool)
 *   await waitFor(() => cond, { timeout, interval, message }) -> the first truthy value
 *       (message: string or () => string, evaluated at timeout)
 *       predicate may be async; re-evaluated on every notify() (client events) and, for state
 *       outside this process (HTTP, redis), every `interval` ms (default 25)
 *   await waitFor(promise, { timeout, message })            -> the promise's value, or TimeoutError
 *
 * Rejects with TimeoutError naming what was awaited.
 */
export function waitFor(target, ...rest) {
  if (typeof target === 'function') return waitPredicate(target, rest[0] || {});
  if (isEmitter(target) && typeof rest[0] === 'string') return waitEvent(target, rest[0], rest[1] || {});
  if (target && typeof target.then === 'function') return withTimeout(target, rest[0] || {});
  throw new TypeError('waitFor(emitter, event, opts) | waitFor(predicate, opts) | waitFor(promise, opts)');
}

export function withTimeout(promise, { timeout = 5000, message = 'promise' } = {}) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`timed out after ${timeout} ms waiting for ${message}`)), timeout);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function waitEvent(emitter, event, { timeout = 5000, filter, message } = {}) {
  return new Promise((resolve, reject) => {
    const useTarget = typeof emitter.on !== 'function' && typeof emitter.addEventListener === 'function';
    const handler = (...args) => {
      if (filter && !filter(...args)) return;
      cleanup();
      resolve(args);
    };
    const cleanup = () => {
      clearTimeout(timer);
      if (useTarget) emitter.removeEventListener(event, handler);
      else (emitter.off || emitter.removeListener).call(emitter, event, handler);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new TimeoutError(`timed out after ${timeout} ms waiting for ${message || `event '${event}'`}`));
    }, timeout);
    if (useTarget) emitter.addEventListener(event, handler);
    else emitter.on(event, handler);
  });
}

function waitPredicate(predicate, { timeout = 5000, interval = 25, message } = {}) {
  return new Promise((resolve, reject) => {
    let done = false;
    let running = false;
    let again = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(poll);
      changes.off('change', check);
      if (err) reject(err);
      else resolve(value);
    };
    let lastError;
    const check = async () => {
      if (done) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          try {
            const v = await predicate();
            if (v) return finish(null, v);
          } catch (e) {
            lastError = e;
          }
        } while (again && !done);
      } finally {
        running = false;
      }
    };
    const timer = setTimeout(() => {
      const what = (typeof message === 'function' ? message() : message) || predicate.toString().slice(0, 160);
      const extra = lastError ? ` (last error: ${lastError.message})` : '';
      finish(new TimeoutError(`timed out after ${timeout} ms waiting for ${what}${extra}`));
    }, timeout);
    const poll = setInterval(check, interval);
    changes.on('change', check);
    check();
  });
}

// ---------------------------------------------------------------------------------------------
// process bookkeeping

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
});

/** Registers `proc` to be SIGKILLed when the test process exits. */
export function track(proc) {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

export function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** SIGTERM, wait, SIGKILL after `grace` ms. Resolves when the process has exited. */
export async function stopProcess(proc, grace = 5000) {
  if (!proc || exited(proc)) return;
  const gone = once(proc, 'exit');
  proc.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (!exited(proc)) proc.kill('SIGKILL');
  }, grace);
  try {
    await gone;
  } finally {
    clearTimeout(timer);
  }
}

/** Keeps the tail (4 MiB) of `proc`'s stdout and stderr; -> () => the text so far. */
export function capture(proc) {
  const chunks = [];
  let size = 0;
  const add = (b) => {
    chunks.push(b);
    size += b.length;
    while (size > 4 * 1024 * 1024 && chunks.length > 1) size -= chunks.shift().length; // keep the tail
  };
  proc.stdout?.on('data', add);
  proc.stderr?.on('data', add);
  return () => Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// ports

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice, never a default). */
export async function freePort() {
  const srv = net.createServer();
  srv.unref();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

function tryConnect(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Resolves when 127.0.0.1:port accepts TCP connections; fails early if `proc` exits. */
export function waitForPort(port, { timeout = 15000, proc, output = () => '', name = 'server' } = {}) {
  return waitUntil(
    async () => {
      if (proc && exited(proc)) throw new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before listening:\n${output()}`);
      return tryConnect(port);
    },
    { timeout, message: `${name} to accept TCP on port ${port}`, onTimeout: () => `\n--- ${name} output ---\n${output()}` },
  );
}

// The predicate form swallows thrown errors (to retry); this variant rethrows "fatal" ones.
export async function waitUntil(check, { timeout, interval = 50, message, onTimeout = () => '' }) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await check(); // a throw ends the wait
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message}${onTimeout()}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ---------------------------------------------------------------------------------------------
// redis

function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    s.setTimeout(1000, () => {
      s.destroy();
      resolve(false);
    });
    s.once('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) {
        s.destroy();
        resolve(buf.startsWith('+PONG'));
      }
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * A private redis-server on a free port (or `port`), own temp dir, no persistence, loopback only,
 * with `args` added to its command line (e.g. cluster mode).
 * -> { port, url, stop(), restart({ whileDown }), output() }
 * restart() stops the server and starts it again on the SAME port; `whileDown` (optional async
 * callback) runs while it is down, e.g. to observe /readyz going 503.
 */
export async function startRedis({ port, args = [] } = {}) {
  port ??= await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-redis-'));
  let proc = null;
  let output = () => '';
  const launch = async () => {
    proc = track(
      spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
          '--daemonize', 'no', '--protected-mode', 'yes', '--loglevel', 'warning', ...args],
        { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir },
      ),
    );
    output = capture(proc);
    const p = proc;
    await waitUntil(
      async () => {
        if (exited(p)) throw new Error(`redis-server exited (${p.exitCode ?? p.signalCode}):\n${output()}`);
        return redisPing(port);
      },
      { timeout: 10000, message: `redis-server on ${port}`, onTimeout: () => `\n${output()}` },
    );
  };
  await launch();
  const handle = {
    port,
    url: `redis://127.0.0.1:${port}`,
    output: () => output(),
    get proc() {
      return proc;
    },
    async stop() {
      await stopProcess(proc);
      rmSync(dir, { recursive: true, force: true });
    },
    async restart({ whileDown } = {}) {
      await stopProcess(proc);
      if (whileDown) await whileDown();
      // the port was ours a moment ago; retry briefly in case the kernel still holds it
      let lastErr;
      for (let i = 0; i < 20; i++) {
        try {
          await launch();
          return;
        } catch (e) {
          lastErr = e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      throw lastErr;
    },
  };
  return handle;
}

/** redis-cli -p PORT PUBLISH channel message -> number of receivers (redis subscriber connections). */
export function publishRedis(redis, channel, message) {
  const port = typeof redis === 'number' ? redis : redis.port;
  return new Promise((resolve, reject) => {
    execFile(
      'redis-cli',
      ['-h', '127.0.0.1', '-p', String(port), 'PUBLISH', channel, message],
      { timeout: 5000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`redis-cli PUBLISH failed: ${err.message}\n${stderr}`));
        const n = Number.parseInt(String(stdout).trim().replace(/^\(integer\)\s*/, ''), 10);
        if (Number.isNaN(n)) return reject(new Error(`redis-cli PUBLISH: unexpected output ${JSON.stringify(stdout)}`));
        resolve(n);
      },
    );
  });
}

// ---------------------------------------------------------------------------------------------
// nats

/**
 * A private `nats-server -js` (JetStream, its store in an own temp dir) on a free port, loopback
 * only; Debian installs it in /usr/sbin. -> { port, url, stop(), output() }
 */
export async function startNats() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-nats-'));
  const proc = track(
    spawn(process.env.NATS_SERVER_BIN || 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: dir,
      env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin` },
    }),
  );
  const output = capture(proc);
  proc.once('error', () => {}); // reported by waitForPort (it exits)
  try {
    await waitForPort(port, { proc, output, name: 'nats-server' });
  } catch (e) {
    await stopProcess(proc, 1000);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    output,
    proc,
    async stop() {
      await stopProcess(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// roomcast and the conformance example

const DROP_ENV = /^(REDIS_URL|REDISHOST|NATS_URL|RTHOST|RUST_LOG|ROOMCAST_.*)$/;

function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!DROP_ENV.test(k)) env[k] = v;
  return { ...env, ...extra };
}

export function roomcastBin() {
  return process.env.ROOMCAST_BIN || path.join(REPO_ROOT, 'target/debug/roomcast');
}

export function conformanceBin() {
  return process.env.ROOMCAST_CONFORMANCE_BIN || path.join(REPO_ROOT, 'target/debug/examples/protocol-conformance');
}

function serverHandle(proc, port, output) {
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    proc,
    output,
    stop: () => stopProcess(proc),
  };
}

/**
 * Spawn roomcast with `--listen 127.0.0.1:PORT` + args; env = parent env without
 * REDIS_URL/REDISHOST/NATS_URL/RTHOST/ROOMCAST_* , with `env` merged over it.
 * Resolves once GET /healthz answers 200 (15 s, else fails with the server's output).
 */
export async function startRoomcast({ args = [], env = {}, port } = {}) {
  port ??= await freePort();
  const bin = roomcastBin();
  const proc = track(
    spawn(bin, ['--listen', `127.0.0.1:${port}`, ...args], {
      env: cleanEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const output = capture(proc);
  const spawnError = once(proc, 'error').then(([e]) => e);
  const url = `http://127.0.0.1:${port}`;
  await waitUntil(
    async () => {
      if (exited(proc)) throw new Error(`roomcast exited (${proc.exitCode ?? proc.signalCode}) before /healthz:\n${output()}`);
      const err = await Promise.race([spawnError, Promise.resolve(null)]);
      if (err) throw new Error(`cannot spawn ${bin}: ${err.message} (build it with cargo build, or set ROOMCAST_BIN)`);
      try {
        const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
        await r.arrayBuffer();
        return r.status === 200;
      } catch {
        return false;
      }
    },
    { timeout: 15000, message: `roomcast /healthz on ${port}`, onTimeout: () => `\n--- roomcast output ---\n${output()}` },
  ).catch(async (e) => {
    await stopProcess(proc, 1000);
    throw e;
  });
  return serverHandle(proc, port, output);
}

/** Spawn the protocol-conformance example with `--listen 127.0.0.1:PORT`; resolves once it accepts TCP. */
export async function startConformance({ port } = {}) {
  port ??= await freePort();
  const bin = conformanceBin();
  const proc = track(
    spawn(bin, ['--listen', `127.0.0.1:${port}`], { env: cleanEnv({}), stdio: ['ignore', 'pipe', 'pipe'] }),
  );
  const output = capture(proc);
  let spawnErr = null;
  proc.once('error', (e) => (spawnErr = e));
  await waitUntil(
    async () => {
      if (spawnErr) throw new Error(`cannot spawn ${bin}: ${spawnErr.message} (cargo build --all-targets, or set ROOMCAST_CONFORMANCE_BIN)`);
      if (exited(proc)) throw new Error(`protocol-conformance exited (${proc.exitCode ?? proc.signalCode}):\n${output()}`);
      return tryConnect(port);
    },
    { timeout: 15000, message: `protocol-conformance on ${port}`, onTimeout: () => `\n${output()}` },
  ).catch(async (e) => {
    await stopProcess(proc, 1000);
    throw e;
  });
  return serverHandle(proc, port, output);
}

/**
 * Spawn `roomcast <args...>` (e.g. the publish CLI) to completion, clean env.
 * -> { code, signal, stdout, stderr }
 */
export function runRoomcast(args, { env = {}, timeout = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(roomcastBin(), args, { env: cleanEnv(env), timeout }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number' && !err.signal) return reject(err);
      resolve({ code: err ? err.code ?? null : 0, signal: err?.signal ?? null, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP

async function bodyOf(r) {
  const text = await r.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * POST /api/publish {"channel","data"} with `Authorization: Bearer apiKey` (omitted when apiKey is
 * null/undefined). -> { status, body (parsed JSON, or the text), headers }
 */
export async function httpPublish(server, apiKey, channel, data) {
  const headers = { 'content-type': 'application/json' };
  if (apiKey != null) headers.authorization = `Bearer ${apiKey}`;
  const r = await fetch(`${server.url}/api/publish`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ channel, data }),
    signal: AbortSignal.timeout(5000),
  });
  return { status: r.status, body: await bodyOf(r), headers: r.headers };
}

/** fetch with a 5 s timeout -> { status, body, headers } (body parsed as JSON when it is JSON). */
export async function httpRequest(server, pathname, init = {}) {
  const r = await fetch(`${server.url}${pathname}`, { signal: AbortSignal.timeout(5000), ...init });
  return { status: r.status, body: await bodyOf(r), headers: r.headers };
}

/** Wait until GET `pathname` answers `status` (e.g. /readyz 503 then 200); -> the last response. */
export function waitForStatus(server, pathname, status, { timeout = 10000 } = {}) {
  let last;
  return waitFor(
    async () => {
      try {
        last = await httpRequest(server, pathname, { signal: AbortSignal.timeout(1000) });
      } catch (e) {
        last = { error: e.message };
        return false;
      }
      return last.status === status && last;
    },
    { timeout, interval: 50, message: () => `GET ${pathname} -> ${status} (last: ${JSON.stringify(last?.status ?? last)})` },
  );
}
