// The benchmark peer: a Node.js Socket.IO server that does what the Go seed
// does, so roomcast can be measured against what people already run.
//
//   PORT=8081 REDIS_URL=redis://127.0.0.1:6379 node server.mjs
//   node server.mjs --port 8081 --redis-url redis://127.0.0.1:6379 [--no-hello]
//   node server.mjs ... --tls-cert cert.pem --tls-key key.pem   (HTTPS: its own `https` server)
//
// - Redis PSUBSCRIBE to the pattern (default `*`); a message on channel C is
//   emitted as event `message` (payload, {room, id, ts}) to the room C.
// - Clients join with event `channel` and a room name (or a list), with an
//   optional ack {ok:true} / {ok:false,error}; `leave` leaves.
// - Engine.IO v3 clients (socket.io-client 1.x/2.x) are allowed, as in the seed.
// Stops on SIGTERM/SIGINT.

import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as createSecureServer } from "node:https";
import { Server } from "socket.io";
import { createClient } from "redis";

function option(name, envName, fallback) {
  const flag = process.argv.indexOf(`--${name}`);
  if (flag !== -1 && process.argv[flag + 1] !== undefined) return process.argv[flag + 1];
  return process.env[envName] ?? fallback;
}

const port = Number(option("port", "PORT", "8081"));
const host = option("host", "HOST", "127.0.0.1");
const redisUrl = option("redis-url", "REDIS_URL", "redis://127.0.0.1:6379");
const pattern = option("pattern", "PATTERN", "*");
// `--no-hello` (or HELLO=0): skip the seed's `hello` to the other members on join. Only for
// the fan-out benchmark: 10k joins to one room would otherwise be 50M hello frames.
const hello = !(process.argv.includes("--no-hello") || process.env.HELLO === "0");

// `--tls-cert`/`--tls-key` (PEM files): serve HTTPS and wss:// the way Node.js deployments do,
// so the benchmark's TLS rows compare like with like.
const tlsCert = option("tls-cert", "TLS_CERT", "");
const tlsKey = option("tls-key", "TLS_KEY", "");
if (Boolean(tlsCert) !== Boolean(tlsKey)) {
  console.error("peer: --tls-cert and --tls-key go together");
  process.exit(2);
}
const tls = tlsCert ? { cert: readFileSync(tlsCert), key: readFileSync(tlsKey) } : null;

const handler = (req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    return;
  }
  res.writeHead(404).end();
};
const http = tls ? createSecureServer(tls, handler) : createServer(handler);
const io = new Server(http, { allowEIO3: true, serveClient: false, cors: { origin: "*" } });

const validRoom = (room) => typeof room === "string" && room.length > 0 && room.length <= 200;

io.on("connection", (socket) => {
  socket.on("channel", (rooms, ack) => {
    const list = Array.isArray(rooms) ? rooms : [rooms];
    const bad = list.find((room) => !validRoom(room));
    if (bad !== undefined) {
      if (typeof ack === "function") ack({ ok: false, error: "invalid room name" });
      return;
    }
    for (const room of list) {
      socket.join(room);
      if (hello) socket.to(room).emit("hello", room);
    }
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("leave", (rooms, ack) => {
    for (const room of Array.isArray(rooms) ? rooms : [rooms]) {
      if (validRoom(room)) socket.leave(room);
    }
    if (typeof ack === "function") ack({ ok: true });
  });
});

const subscriber = createClient({ url: redisUrl });
subscriber.on("error", (error) => console.error(`peer: redis: ${error.message}`));
await subscriber.connect();
let nextId = 1;
await subscriber.pSubscribe(pattern, (message, channel) => {
  io.to(channel).emit("message", message, { room: channel, id: String(nextId++), ts: Date.now() });
});

http.listen(port, host, () => {
  console.log(`peer: socket.io listening on ${tls ? "https" : "http"}://${host}:${port}, redis ${redisUrl}, pattern ${pattern}`);
});

function stop() {
  io.close();
  subscriber.quit().catch(() => {}).finally(() => process.exit(0));
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
