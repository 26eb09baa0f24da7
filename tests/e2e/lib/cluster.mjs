// A roomcast cluster for the e2e tests: one private broker (`engine`: a redis-server, a Redis
// Cluster, or a nats-server with JetStream), N roomcast nodes on it (each on its own free port) and Debian's
// haproxy in front of them on another free port, with a generated config in a temp dir:
//
// - `/ws` and `/sse`: round robin, each its own backend (its own rotation, so N clients of one
//   transport spread evenly over N nodes);
// - `/socket.io/`: round robin with a cookie (`RCNODE`) that pins a client to its node once it has
//   one: Engine.IO polling needs every request of a session on the node that holds it (a client
//   without cookies, e.g. websocket-only, is spread like `/ws`);
// - anything else (the HTTP API, /metrics): round robin;
// - one health check per node, on `/readyz` every 250 ms, out after one failure, in after one
//   success (a killed node refuses the check at once; a draining node answers 503), which the
//   other backends `track`. `option redispatch` and `retries` send a connection that a node
//   refused (killed, or not yet known to be down) to another node.
//
// const c = await startCluster({ engine: 'redis', nodes: 3, args: ['--history-size', '1000'] });
// c.url (haproxy), c.nodes[i] (startRoomcast handles), c.engine (the broker's handle), c.apiKey,
// await c.publish(room, payload) (the way a back end publishes on that engine)
// await c.killNode(i); await c.drainNode(i); await c.restartNode(i); await c.stop();
//
// Each helper returns once haproxy agrees: killNode/drainNode when it has taken the node out,
// restartNode when it has put it back in, so a test never races the health checks.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { connect as natsConnect } from 'nats';
import { createClient, createCluster } from 'redis';

import {
  capture,
  exited,
  freePort,
  startNats,
  startRedis,
  startRoomcast,
  stopProcess,
  track,
  waitForPort,
  waitUntil,
} from './server.mjs';
import { startRedisCluster } from './redis-cluster.mjs';

export const API_KEY = 'cluster-key';
const BACKENDS = ['nodes', 'ws', 'sse', 'sio'];

/**
 * The brokers a cluster runs on: each starts its server and gives the nodes' flags, how a back
 * end publishes a logged message there (`publish(room, payload)`, resolved once the engine has
 * it) and `stop()`.
 */
const ENGINES = {
  /**
   * One redis-server; a back end runs `FCALL roomcast_publish 1 <room> <payload>` (the `redis`
   * npm client), answered with the log's entry id.
   */
  async redis() {
    const server = await startRedis();
    let client = null;
    return {
      server,
      args: ['--broker', 'redis', '--redis-url', server.url],
      async publish(room, payload) {
        client ??= createClient({ url: server.url }).on('error', () => {});
        if (!client.isOpen) await client.connect();
        return fcallPublish((args) => client.sendCommand(args), room, payload);
      },
      async stop() {
        await client?.quit().catch(() => {});
        await server.stop();
      },
    };
  },
  /**
   * A Redis Cluster (lib/redis-cluster.mjs: 3 masters, a replica each, so a shard can fail
   * over); a back end runs the same `FCALL` through a cluster client (the `redis` npm client's
   * `createCluster`: the room, KEYS[1], routes it to its slot's master, and a `MOVED` is
   * followed). `server.failover(room)`: a graceful `CLUSTER FAILOVER` of the shard owning the
   * room (its log is in the room's slot).
   */
  async 'redis-cluster'() {
    const server = await startRedisCluster({ masters: 3, replicas: 1 });
    let client = null;
    return {
      server,
      args: ['--broker', 'redis-cluster', '--redis-url', server.urls],
      async publish(room, payload) {
        client ??= createCluster({ rootNodes: server.nodes.map((n) => ({ url: n.url })) }).on('error', () => {});
        if (!client.isOpen) await client.connect();
        return fcallPublish((args) => client.sendCommand(room, false, args), room, payload);
      },
      async stop() {
        await client?.quit().catch(() => {});
        await server.stop();
      },
    };
  },
  /**
   * One `nats-server -js`; a back end publishes plainly to `<prefix>.<room>` (the `nats` npm
   * client, no JetStream API), which the room log's stream keeps (the nodes make it before they
   * are ready). Each publish is flushed (a PING/PONG after it) before the next.
   */
  async nats() {
    const server = await startNats();
    const prefix = 'roomcast';
    let client = null;
    return {
      server,
      args: ['--broker', 'nats', '--nats-url', server.url, '--nats-prefix', prefix],
      async publish(room, payload) {
        client ??= await natsConnect({ servers: server.url, reconnect: false });
        client.publish(`${prefix}.${room}`, payload);
        await client.flush();
      },
      async stop() {
        await client?.close().catch(() => {});
        await server.stop();
      },
    };
  },
};

/**
 * `FCALL roomcast_publish 1 <room> <payload>` through `send(args)` -> the log's entry id; waits
 * for the library the nodes load when they start (or connect to a master).
 */
function fcallPublish(send, room, payload) {
  return waitUntil(
    async () => {
      try {
        return await send(['FCALL', 'roomcast_publish', '1', room, payload]);
      } catch (e) {
        if (!/function not found/i.test(e.message)) throw e;
        return false;
      }
    },
    { timeout: 10000, interval: 20, message: 'the roomcast library to be loaded' },
  );
}

function haproxyConfig({ port, nodePorts, socket }) {
  const servers = (extra) =>
    nodePorts.map((p, i) => `  server n${i} 127.0.0.1:${p} ${extra(i)}`).join('\n');
  const tracked = (i) => `track nodes/n${i}`;
  return `global
  maxconn 4096
  stats socket ${socket} mode 600 level admin

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  timeout check 2s
  retries 3
  option redispatch 1

frontend front
  bind 127.0.0.1:${port}
  use_backend ws if { path /ws }
  use_backend sse if { path /sse }
  use_backend sio if { path_beg /socket.io/ }
  default_backend nodes

backend nodes
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
${servers(() => 'check inter 250ms fall 1 rise 1')}

backend ws
  balance roundrobin
${servers(tracked)}

backend sse
  balance roundrobin
${servers(tracked)}

backend sio
  balance roundrobin
  cookie RCNODE insert indirect nocache
${servers((i) => `${tracked(i)} cookie n${i}`)}
`;
}

/** One command on haproxy's admin socket -> its answer. */
function adminCommand(socket, command) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path: socket });
    let out = '';
    s.setTimeout(2000, () => s.destroy(new Error(`haproxy admin socket: no answer to ${command}`)));
    s.once('connect', () => s.write(`${command}\n`));
    s.on('data', (d) => (out += d));
    s.once('end', () => resolve(out));
    s.once('error', reject);
  });
}

/**
 * Starts the `engine`'s server (see ENGINES), `nodes` roomcast nodes (the engine's flags,
 * `--api-key API_KEY` + `args`) and haproxy; resolves once haproxy sees every node up.
 */
export async function startCluster({ engine = 'redis', nodes = 3, args = [], env = {} } = {}) {
  if (!(engine in ENGINES)) throw new Error(`startCluster: no engine ${engine} (${Object.keys(ENGINES)})`);
  // What is started so far (stop functions), stopped again if a later step fails (a child left running would
  // keep the test process alive).
  const started = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-haproxy-'));
  const undo = async () => {
    await Promise.all(started.map((stop) => stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    return await launch({ engine, nodes, args, env, dir, started });
  } catch (e) {
    await undo();
    throw e;
  }
}

async function launch({ engine, nodes, args, env, dir, started }) {
  const broker = await ENGINES[engine]();
  started.push(() => broker.stop());
  const nodeArgs = [...broker.args, '--api-key', API_KEY, ...args];
  const handles = await Promise.all(
    Array.from({ length: nodes }, async () => {
      const h = await startRoomcast({ args: nodeArgs, env });
      started.push(() => h.stop());
      return h;
    }),
  );
  const port = await freePort();
  const socket = path.join(dir, 'admin.sock');
  const config = path.join(dir, 'haproxy.cfg');
  writeFileSync(config, haproxyConfig({ port, nodePorts: handles.map((h) => h.port), socket }));
  // Debian installs haproxy in /usr/sbin, which is not on every user's PATH.
  const bin = process.env.HAPROXY_BIN || 'haproxy';
  const haproxyEnv = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin` };
  const haproxy = track(spawn(bin, ['-f', config, '-db'], { cwd: dir, env: haproxyEnv, stdio: ['ignore', 'pipe', 'pipe'] }));
  started.push(() => stopProcess(haproxy));
  const haproxyOutput = capture(haproxy);
  haproxy.once('error', () => {}); // reported by waitForPort (it exits)
  await waitForPort(port, { proc: haproxy, output: haproxyOutput, name: 'haproxy' });

  /** { n0: 'UP' | 'DOWN' | ..., ... } of the health-checked backend (the others track it). */
  async function states() {
    const csv = await adminCommand(socket, 'show stat');
    const [header, ...rows] = csv.trim().split('\n');
    const cols = header.replace(/^# /, '').split(',');
    const [px, sv, st] = ['pxname', 'svname', 'status'].map((n) => cols.indexOf(n));
    const out = {};
    for (const row of rows) {
      const f = row.split(',');
      if (f[px] === 'nodes' && /^n\d+$/.test(f[sv])) out[f[sv]] = f[st];
    }
    return out;
  }
  /** Resolves when haproxy has node i in (`up`) or out (`!up`) of rotation. */
  const waitState = (i, up, timeout = 15000) => {
    let last;
    return waitUntil(
      async () => {
        try {
          last = (await states())[`n${i}`];
        } catch (e) {
          last = e.message; // the admin socket not there yet, or busy: ask again
          return false;
        }
        return up ? last === 'UP' : last?.startsWith('DOWN');
      },
      {
        timeout,
        message: `haproxy to see node ${i} ${up ? 'UP' : 'DOWN'}`,
        onTimeout: () => ` (last: ${last})\n--- haproxy output ---\n${haproxyOutput()}`,
      },
    );
  };
  for (let i = 0; i < nodes; i++) await waitState(i, true);

  const cluster = {
    engine: broker.server,
    nodes: handles,
    nodeArgs,
    apiKey: API_KEY,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    haproxyOutput,
    backends: BACKENDS,
    states,
    waitState,
    isRunning: (i) => !exited(handles[i].proc),
    /** SIGKILL node i (by its pid); resolves once it is gone and haproxy has taken it out. */
    async killNode(i) {
      const proc = handles[i].proc;
      if (!exited(proc)) {
        const gone = once(proc, 'exit');
        proc.kill('SIGKILL');
        await gone;
      }
      await waitState(i, false);
    },
    /**
     * SIGTERM node i and wait for it to drain and exit (haproxy takes it out as soon as its
     * /readyz answers 503 or its listener closes); -> its exit code (0 for a clean drain).
     */
    async drainNode(i) {
      const proc = handles[i].proc;
      await stopProcess(proc, 30000);
      await waitState(i, false);
      return proc.exitCode ?? proc.signalCode;
    },
    /** Starts node i again on its port, same args; resolves once haproxy has it in again. */
    async restartNode(i) {
      if (!exited(handles[i].proc)) throw new Error(`node ${i} is still running`);
      const { port: nodePort } = handles[i];
      // The port was the node's a moment ago; retry briefly in case the kernel still holds it.
      for (let attempt = 0; ; attempt++) {
        try {
          handles[i] = await startRoomcast({ args: nodeArgs, env, port: nodePort });
          break;
        } catch (e) {
          if (attempt >= 20) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      await waitState(i, true);
      return handles[i];
    },
    /** What a back end runs to publish a logged message on this engine (ENGINES). */
    publish: (room, payload) => broker.publish(room, payload),
    async stop() {
      await stopProcess(haproxy);
      await Promise.all(handles.map((h) => h.stop()));
      await broker.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return cluster;
}

/**
 * Publishes through `cluster.publish` at `rate` messages per second until stop(), the rooms in
 * turn, one at a time (each awaited, so a room's order is the order of its payloads); each
 * payload is `<tag>-<n>`, n counting every publish. -> { stop() -> { room: [payload...] },
 * count(), sent }
 */
export function publisher(cluster, rooms, { rate = 200, tag = 'm' } = {}) {
  const sent = Object.fromEntries(rooms.map((r) => [r, []]));
  let running = true;
  let n = 0;
  const start = Date.now();
  const done = (async () => {
    while (running) {
      const due = Math.floor(((Date.now() - start) * rate) / 1000);
      while (running && n < due) {
        const room = rooms[n % rooms.length];
        const payload = `${tag}-${n++}`;
        await cluster.publish(room, payload);
        sent[room].push(payload);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    return sent;
  })();
  return { stop: () => ((running = false), done), count: () => n, sent };
}
