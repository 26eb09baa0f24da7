// A private Redis Cluster for the e2e tests: `masters` masters with `replicas` replicas each,
// redis-servers (lib/server.mjs's startRedis) on free client and cluster-bus ports, a 1 s node
// timeout, created with `redis-cli --cluster create`; resolves once every node agrees the
// cluster is ok and every replica is in sync.
//
// const rc = await startRedisCluster({ masters: 3, replicas: 1 });
// rc.urls (the seeds: every node, comma-separated), await rc.ownerOf(key) (the port of the
// master serving the key's slot), await rc.failover(key) (a graceful CLUSTER FAILOVER of that
// shard; resolves once the replica serves the slot and the cluster is settled), await rc.stop()

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { freePort, startRedis, waitUntil } from './server.mjs';

const run = promisify(execFile);

/** `redis-cli -p port args...` -> its output (raw). */
async function cli(port, ...args) {
  return (await run('redis-cli', ['-p', String(port), ...args])).stdout;
}

/** The masters in `CLUSTER NODES` as one node sees them: [{ port, slots: [[start, end]...] }]. */
async function masters(port) {
  const out = [];
  for (const line of (await cli(port, 'CLUSTER', 'NODES')).split('\n')) {
    const f = line.split(' ');
    if (f.length < 8 || !f[2].includes('master') || f[2].includes('fail')) continue;
    const slots = f.slice(8).filter((r) => /^\d/.test(r)).map((r) => r.split('-').map(Number));
    out.push({ port: Number(f[1].split(/[:@]/)[1]), slots: slots.map(([s, e]) => [s, e ?? s]) });
  }
  return out;
}

export async function startRedisCluster({ masters: count = 3, replicas = 1 } = {}) {
  const nodes = [];
  const stop = () => Promise.all(nodes.map((n) => n.stop()));
  try {
    // Client and bus ports, all distinct (the kernel may hand out a port again once it is closed).
    const used = new Set();
    const distinctPort = async () => {
      let port;
      do port = await freePort();
      while (used.has(port));
      used.add(port);
      return port;
    };
    for (let i = 0; i < count * (1 + replicas); i++) {
      const [port, bus] = [await distinctPort(), await distinctPort()];
      const args = ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '1000',
        '--cluster-port', String(bus)];
      nodes.push(await startRedis({ port, args }));
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`),
      '--cluster-replicas', String(replicas), '--cluster-yes']);
    const settled = async () => {
      for (const n of nodes) {
        const info = await cli(n.port, 'CLUSTER', 'INFO');
        const replication = await cli(n.port, 'INFO', 'replication');
        if (!info.includes('cluster_state:ok') || !info.includes(`cluster_size:${count}`)) return false;
        if (!replication.includes('role:master') && !replication.includes('master_link_status:up')) return false;
      }
      return true;
    };
    await waitUntil(settled, { timeout: 20000, interval: 100, message: 'the Redis Cluster to settle' });

    const ownerOf = async (key) => {
      const slot = Number((await cli(nodes[0].port, 'CLUSTER', 'KEYSLOT', key)).trim());
      const owner = (await masters(nodes[0].port)).find((m) => m.slots.some(([s, e]) => s <= slot && slot <= e));
      if (!owner) throw new Error(`no master serves slot ${slot} of ${key}`);
      return owner.port;
    };
    return {
      nodes,
      urls: nodes.map((n) => n.url).join(','),
      ownerOf,
      async failover(key) {
        const master = await ownerOf(key);
        let replica;
        for (const n of nodes) {
          if ((await cli(n.port, 'INFO', 'replication')).includes(`master_port:${master}`)) replica = n.port;
        }
        if (!replica) throw new Error(`no replica of ${master}`);
        const answer = (await cli(replica, 'CLUSTER', 'FAILOVER')).trim();
        if (answer !== 'OK') throw new Error(`CLUSTER FAILOVER on ${replica}: ${answer}`);
        await waitUntil(async () => (await ownerOf(key)) === replica && (await settled()), {
          timeout: 20000,
          interval: 100,
          message: `${replica} to take over ${key}'s slot from ${master}`,
        });
        return { from: master, to: replica };
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
