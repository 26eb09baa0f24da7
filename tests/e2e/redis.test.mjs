// B. Product, Redis broker lifecycle: the seed's REDISHOST env, Redis down at start, and a Redis
// restart while clients stay connected (/readyz 503 → 200, delivery resumes).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startRedis, startRoomcast, publishRedis, waitFor, waitForStatus, httpRequest, freePort } from './lib/server.mjs';
import { connect, closeAll } from './lib/clients.mjs';
import { payloadsIn, join, sentinel } from './lib/rooms.mjs';

const stops = [];
after(async () => {
  for (const s of stops.reverse()) await s().catch(() => {});
});

// /readyz 200 means roomcast's subscription is live: per room (the default) every room is
// subscribed again after a reconnect before it is ready, and each join is acknowledged only once
// Redis confirmed the room's subscription.

describe('seed environment', () => {
  it('REDISHOST=host:port alone (no flags) selects the Redis broker', async () => {
    const redis = await startRedis();
    stops.push(() => redis.stop());
    const rc = await startRoomcast({ env: { REDISHOST: `127.0.0.1:${redis.port}` } });
    stops.push(() => rc.stop());
    await waitForStatus(rc, '/readyz', 200);
    const c = connect('1', rc.url, { transports: ['polling'] }); // the seed page's client
    try {
      await c.connected();
      const room = 'device01';
      await join(c, room);
      assert.ok((await publishRedis(redis, room, 'seed says hi')) >= 1);
      await sentinel(c, room, (p) => publishRedis(redis, room, p));
      assert.deepEqual(payloadsIn(c, room).slice(0, -1), ['seed says hi']);
    } finally {
      c.close();
      await rc.stop();
      await redis.stop();
    }
  });
});

describe('Redis availability', () => {
  it('starts while Redis is down: /healthz 200, /readyz 503, then 200 once Redis is up', async () => {
    const port = await freePort();
    const rc = await startRoomcast({ args: ['--broker', 'redis', '--redis-url', `redis://127.0.0.1:${port}`] });
    stops.push(() => rc.stop());
    assert.equal((await httpRequest(rc, '/healthz')).status, 200);
    await waitForStatus(rc, '/readyz', 503);
    const redis = await startRedis({ port });
    stops.push(() => redis.stop());
    await waitForStatus(rc, '/readyz', 200, { timeout: 15000 });
    const c = connect('4', rc.url, { transports: ['websocket'] });
    try {
      await c.connected();
      const room = `late-${randomUUID()}`;
      await join(c, room);
      await publishRedis(redis, room, 'late but here');
      await waitFor(() => payloadsIn(c, room).includes('late but here'), { message: 'delivery once Redis is up' });
    } finally {
      c.close();
      await rc.stop();
      await redis.stop();
    }
  });

  it('Redis restart while clients stay connected: /readyz 503 then 200, delivery resumes exactly once', async () => {
    const redis = await startRedis();
    stops.push(() => redis.stop());
    const rc = await startRoomcast({ args: ['--broker', 'redis', '--redis-url', redis.url] });
    stops.push(() => rc.stop());
    await waitForStatus(rc, '/readyz', 200);
    const room = `restart-${randomUUID()}`;
    const clients = [
      connect('1', rc.url, { transports: ['polling'] }),
      connect('2', rc.url, { transports: ['websocket'] }),
      connect('4', rc.url, { transports: ['websocket'] }),
      connect('4', rc.url, { transports: ['polling'] }),
    ];
    try {
      for (const c of clients) {
        await c.connected();
        await join(c, room);
      }
      await publishRedis(redis, room, 'before restart');
      for (const c of clients) await waitFor(() => payloadsIn(c, room).includes('before restart'), { message: 'before restart' });

      await redis.restart({ whileDown: () => waitForStatus(rc, '/readyz', 503, { timeout: 10000 }) });
      await waitForStatus(rc, '/readyz', 200, { timeout: 15000 });
  
      assert.ok((await publishRedis(redis, room, 'after restart ✓')) >= 1);
      const end = `sentinel-${randomUUID()}`;
      await publishRedis(redis, room, end);
      for (const c of clients) await waitFor(() => payloadsIn(c, room).includes(end), { message: `sentinel at client ${c.version}` });
      for (const c of clients) {
        assert.deepEqual(payloadsIn(c, room).filter((p) => !p.startsWith('sentinel-')), ['before restart', 'after restart ✓'], `client ${c.version}`);
        assert.equal(c.events('disconnect').length, 0, `client ${c.version} stayed connected`);
      }
    } finally {
      closeAll(clients);
      await rc.stop();
      await redis.stop();
    }
  });
});
