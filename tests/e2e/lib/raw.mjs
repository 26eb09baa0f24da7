// A raw Engine.IO websocket client (npm `ws`) for protocol tests that official clients cannot
// express: a client that never answers heartbeats, a client that sends garbage.
//
// const r = await rawEngine(server.url, { eio: 4, path: '/socket.io/' });
// r.open                  the parsed open packet ({ sid, pingInterval, pingTimeout, ... })
// await r.next(p => p.startsWith('40'))   next text frame matching (frames are recorded in r.frames)
// r.send('40'); r.pings   number of pings seen; r.closed -> Promise<{ code, reason, at }>
// heartbeat: true answers pings (EIO4) / sends pings (EIO3) like a live client; false never does

import WebSocket from 'ws';
import { TimeoutError } from './server.mjs';

export async function rawEngine(baseUrl, { eio = 4, path = '/socket.io/', heartbeat = false, timeout = 5000 } = {}) {
  const url = `${baseUrl.replace(/^http/, 'ws')}${path}?EIO=${eio}&transport=websocket`;
  const ws = new WebSocket(url);
  const frames = [];
  const pending = []; // frames no next() has claimed yet
  const waiters = new Set();
  let pingTimer = null;
  let closeInfo = null;
  const closed = new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      closeInfo = { code, reason: String(reason), at: Date.now() };
      clearInterval(pingTimer);
      for (const w of waiters) w.fail(new Error(`raw EIO${eio} socket closed (${code}) while waiting`));
      resolve(closeInfo);
    });
  });
  ws.on('error', () => {}); // a close follows
  const r = {
    ws,
    frames,
    pings: 0,
    open: null,
    openedAt: null,
    closed,
    get isClosed() {
      return closeInfo !== null;
    },
    send(data) {
      ws.send(data);
    },
    next(match = () => true, { timeout: t = timeout } = {}) {
      return new Promise((resolve, reject) => {
        const w = {
          check: (f) => {
            if (!match(f)) return false;
            done();
            resolve(f);
            return true;
          },
          fail: (e) => {
            done();
            reject(e);
          },
        };
        const done = () => {
          clearTimeout(timer);
          waiters.delete(w);
        };
        const timer = setTimeout(() => w.fail(new TimeoutError(`raw EIO${eio}: no matching frame within ${t} ms`)), t);
        const i = pending.findIndex((f) => match(f));
        if (i >= 0) {
          const [f] = pending.splice(i, 1);
          clearTimeout(timer);
          return resolve(f);
        }
        waiters.add(w);
        if (closeInfo) w.fail(new Error(`raw EIO${eio} socket already closed (${closeInfo.code})`));
      });
    },
    close() {
      clearInterval(pingTimer);
      ws.terminate();
    },
  };
  ws.on('message', (data, isBinary) => {
    const f = isBinary ? data : String(data);
    frames.push(f);
    if (typeof f === 'string') {
      // EIO4: the server pings ("2"), the client must pong ("3").
      if (f === '2' || f === '2probe') {
        r.pings++;
        if (heartbeat && eio === 4) ws.send('3' + f.slice(1));
      }
    }
    let claimed = false;
    for (const w of [...waiters]) if (w.check(f)) {
      claimed = true;
      break;
    }
    if (!claimed) pending.push(f);
  });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new TimeoutError(`raw EIO${eio}: no websocket open on ${url}`)), timeout);
    ws.once('open', () => {
      clearTimeout(t);
      resolve();
    });
    ws.once('close', (code) => {
      clearTimeout(t);
      reject(new Error(`raw EIO${eio}: websocket closed (${code}) before open on ${url}`));
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(t);
      reject(new Error(`raw EIO${eio}: HTTP ${res.statusCode} on ${url}`));
    });
  });
  const openFrame = await r.next((f) => typeof f === 'string' && f.startsWith('0'));
  r.open = JSON.parse(openFrame.slice(1));
  r.openedAt = Date.now();
  // EIO3: the client pings ("2") every pingInterval, the server pongs ("3")
  if (heartbeat && eio === 3) pingTimer = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('2'), r.open.pingInterval);
  return r;
}
