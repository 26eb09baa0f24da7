// A uniform wrapper over the three official socket.io-client majors:
//   '1' = socket.io-client 1.3.7 (the seed's page; Engine.IO v3, Socket.IO protocol v3)
//   '2' = socket.io-client 2.5.0 (Engine.IO v3, Socket.IO protocol v4)
//   '4' = socket.io-client 4.8.x (Engine.IO v4, Socket.IO protocol v5)
//
// const c = connect('2', server.url, { transports: TRANSPORTS.websocket });
// await c.connected();                       // resolves on connect, rejects on connect error
// const [ack] = await c.emitWithAck('channel', 'room-1');
// const [payload, meta] = await c.once('message');
// c.events('message')                        // every `message` received since connect, in order
// c.close();

import Module, { createRequire } from 'node:module';
import path from 'node:path';
import { notify, TimeoutError } from './server.mjs';

const require = createRequire(import.meta.url);

export const VERSIONS = ['1', '2', '4'];
export const TRANSPORTS = { polling: ['polling'], websocket: ['websocket'], upgrade: ['polling', 'websocket'] };

const LIBS = { 1: 'sio1', 2: 'sio2', 4: 'sio4' };
const cache = {};
export function ioFor(version) {
  const name = LIBS[version];
  if (!name) throw new Error(`unknown socket.io-client major ${version}; use one of ${VERSIONS}`);
  if (version === '1' && !cache[version]) installSio1Xhr();
  return (cache[version] ??= require(name));
}

/**
 * socket.io-client 1.3.7 (engine.io-client 1.5.4) in a browser polls with XHR2
 * (responseType 'arraybuffer'), so it omits `b64=1` and expects EIO3 payloads as
 * application/octet-stream; that is how the seed's page talks to a server. In Node its
 * `xmlhttprequest` dependency (a git URL, overridden by xmlhttprequest-ssl, which has no
 * responseType) would instead put it in base64/text mode, where engine.io-parser 1.2.2 also
 * UTF-8-decodes every text packet: a mode no browser uses and no current server speaks for
 * non-ASCII text. So by default we give it XHR2 (npm xhr2) like a browser; Node's engine.io-parser
 * wants Buffers, so 'arraybuffer' responses are handed over as Buffers.
 * ROOMCAST_E2E_SIO1_XHR=text keeps the text mode (for comparing with Node's socket.io server,
 * which cannot serve 1.x binary polling).
 */
export const SIO1_XHR = process.env.ROOMCAST_E2E_SIO1_XHR === 'text' ? 'text' : 'xhr2';
function installSio1Xhr() {
  if (SIO1_XHR !== 'xhr2') return;
  const sioDir = path.dirname(require.resolve('sio1/package.json'));
  const eioDir = path.dirname(require.resolve('engine.io-client/package.json', { paths: [sioDir] }));
  const target = require.resolve('xmlhttprequest', { paths: [eioDir] });
  const XHR2 = require('xhr2');
  class BrowserLikeXHR extends XHR2 {
    constructor() {
      super(); // engine.io-client passes { xdomain, ... }; XHR2 takes no options
    }
    get responseType() {
      return this._rcType ?? '';
    }
    set responseType(v) {
      this._rcType = v;
    }
    _parseResponse() {
      const wanted = this._rcType;
      if (wanted === 'arraybuffer') this._rcType = 'buffer';
      try {
        return super._parseResponse();
      } finally {
        this._rcType = wanted;
      }
    }
  }
  const m = new Module(target);
  m.filename = target;
  m.loaded = true;
  m.exports = BrowserLikeXHR;
  require.cache[target] = m;
}

/** Major version string -> installed package version (e.g. '1' -> '1.3.7'). */
export function packageVersion(version) {
  return require(`${LIBS[version]}/package.json`).version;
}

// lifecycle events of the socket itself (not server events)
const LIFECYCLE = ['connect', 'disconnect', 'connect_error', 'reconnect'];

/** Turn whatever a client major hands back for binary data into a Buffer (null if not binary). */
export function toBuffer(x) {
  if (Buffer.isBuffer(x)) return x;
  if (x instanceof ArrayBuffer) return Buffer.from(x);
  if (ArrayBuffer.isView(x)) return Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  return null;
}

/**
 * connect(version, url, { transports, nsp, auth, query, reconnection, forceNew, timeout, withCredentials })
 *   url: server base URL (http://127.0.0.1:PORT); nsp: namespace ('/' or '/custom' ...)
 *   auth: only sent by major 4 (the CONNECT payload does not exist before 3.x)
 *   timeout: connect timeout and default timeout of once()/emitWithAck() (ms, default 5000)
 *   withCredentials: 4.x only; in Node it then keeps cookies (a load balancer's sticky cookie)
 * Returns a wrapper:
 *   .socket          the raw socket.io-client socket
 *   .version         '1' | '2' | '4'
 *   .connected()     Promise: resolves when connected (at once if already), rejects with an Error
 *                    on a connect error (4.x 'connect_error', 1.x/2.x 'error' before connect)
 *   .isConnected     boolean
 *   .once(event, {timeout, filter}) Promise<args[]>; when the server asked for an ack, the last
 *                    arg is the ack function (as socket.io-client hands it to listeners)
 *   .next(event)     alias of once(): only an event received after this call
 *   .first(event, {timeout}) Promise<args[]>: the first `event` recorded since connect, or the
 *                    next one (use it for events the server sends right after CONNECT, e.g. auth)
 *   .emit(event, ...args)
 *   .emitWithAck(event, ...args)  Promise<ackArgs[]> (rejects with TimeoutError after `timeout`)
 *   .events(event)   array of args[] of every `event` received since connect (server events and
 *                    connect/disconnect/connect_error/reconnect), without ack functions
 *   .log             [[event, ...args], ...] every server event in arrival order
 *   .waitEvents(event, n, {timeout}) Promise<args[][]> once at least n were recorded
 *   .heartbeats(n, {timeout}) Promise: n more Engine.IO heartbeats seen by this client
 *                    (EIO4: server ping, EIO3: pong to the client's ping)
 *   .close()         disconnect, stop reconnecting, close the engine
 */
export function connect(
  version,
  url,
  { transports = TRANSPORTS.websocket, nsp = '/', auth, query, reconnection = false, forceNew = true, timeout = 5000, withCredentials } = {},
) {
  version = String(version);
  const io = ioFor(version);
  const opts = {
    transports,
    forceNew,
    reconnection,
    timeout,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
  };
  if (version === '1') {
    // 1.3.7: forceNew exists, but also set the older spellings so a fresh Manager is certain
    opts['force new connection'] = forceNew;
    if (forceNew) opts.multiplex = false;
  }
  if (query !== undefined) opts.query = query;
  // 4.x in Node keeps cookies only with withCredentials (e.g. a load balancer's sticky cookie)
  if (withCredentials !== undefined) opts.withCredentials = withCredentials;
  if (auth !== undefined) {
    if (version === '4') opts.auth = auth;
    // 1.x/2.x have no CONNECT payload: auth is silently not sent (tests assert on it only for 4)
  }
  const target = url.replace(/\/+$/, '') + (nsp === '/' ? '' : nsp);
  const socket = io(target, opts);

  const store = new Map();
  const log = [];
  const record = (event, args) => {
    if (!store.has(event)) store.set(event, []);
    store.get(event).push(args);
    notify();
  };

  // every server event passes through onevent in all three majors; copy the args before the
  // client appends its ack function
  const origOnevent = socket.onevent;
  socket.onevent = function (packet) {
    const args = (packet.data || []).slice();
    const [event, ...rest] = args;
    log.push(args);
    record(event, rest);
    return origOnevent.call(this, packet);
  };
  for (const ev of LIFECYCLE) socket.on(ev, (...args) => record(ev, args));

  // a connect error: 4.x 'connect_error'; 1.x/2.x 'error' (packet ERROR, e.g. "Invalid namespace")
  // or 'connect_error' (engine could not open)
  let connectState = null; // null | 'ok' | Error
  let settle;
  const connectPromise = new Promise((resolve, reject) => {
    settle = (err) => {
      if (connectState) return;
      connectState = err || 'ok';
      if (err) reject(err);
      else resolve();
    };
  });
  connectPromise.catch(() => {}); // avoid unhandled rejections when nobody asks
  const asError = (e) => {
    if (e instanceof Error) return e;
    if (e && typeof e === 'object' && e.message) return Object.assign(new Error(e.message), { data: e.data });
    return new Error(typeof e === 'string' ? e : JSON.stringify(e));
  };
  socket.on('connect', () => settle());
  socket.on('connect_error', (e) => settle(asError(e)));
  if (version !== '4') {
    socket.on('error', (e) => {
      if (!connectState) settle(asError(e));
    });
  }
  const connectTimer = setTimeout(() => settle(new TimeoutError(`socket.io-client ${version}: no connect within ${timeout} ms to ${target}`)), timeout);
  connectPromise.finally(() => clearTimeout(connectTimer)).catch(() => {});

  const onceEvent = (event, { timeout: t = timeout, filter } = {}) =>
    new Promise((resolve, reject) => {
      const handler = (...args) => {
        if (filter && !filter(...args)) return;
        clearTimeout(timer);
        socket.off(event, handler);
        resolve(args);
      };
      const timer = setTimeout(() => {
        socket.off(event, handler);
        reject(new TimeoutError(`socket.io-client ${version}: no '${event}' within ${t} ms`));
      }, t);
      socket.on(event, handler);
    });

  let closed = false;
  const wrapper = {
    socket,
    version,
    url: target,
    log,
    get isConnected() {
      return !!socket.connected;
    },
    connected() {
      if (socket.connected) return Promise.resolve();
      if (connectState && connectState !== 'ok') return Promise.reject(connectState);
      if (connectState === 'ok') {
        // connected once, now disconnected: wait for the next connect
        return onceEvent('connect').then(() => undefined);
      }
      return connectPromise;
    },
    once: onceEvent,
    next: onceEvent,
    emit(event, ...args) {
      socket.emit(event, ...args);
      return wrapper;
    },
    emitWithAck(event, ...args) {
      const t = timeout;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new TimeoutError(`socket.io-client ${version}: no ack for '${event}' within ${t} ms`)), t);
        socket.emit(event, ...args, (...ackArgs) => {
          clearTimeout(timer);
          resolve(ackArgs);
        });
      });
    },
    events(event) {
      return store.get(event) || [];
    },
    waitEvents(event, n, { timeout: t = timeout } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const list = store.get(event) || [];
          if (list.length >= n) {
            cleanup();
            resolve(list);
          }
        };
        const cleanup = () => {
          clearTimeout(timer);
          socket.off(event, onEv);
          for (const ev of LIFECYCLE) socket.off(ev, onEv);
        };
        const onEv = () => queueMicrotask(check);
        const timer = setTimeout(() => {
          cleanup();
          reject(new TimeoutError(`socket.io-client ${version}: ${(store.get(event) || []).length}/${n} '${event}' events within ${t} ms`));
        }, t);
        socket.on(event, onEv);
        check();
      });
    },
    first(event, opts) {
      return wrapper.waitEvents(event, 1, opts).then((list) => list[0]);
    },
    heartbeats(n = 1, { timeout: t = timeout } = {}) {
      const engine = socket.io && socket.io.engine;
      if (!engine) return Promise.reject(new Error('no engine'));
      return new Promise((resolve, reject) => {
        let seen = 0;
        const onPacket = (p) => {
          if (p && (p.type === 'ping' || p.type === 'pong') && ++seen >= n) {
            cleanup();
            resolve(seen);
          }
        };
        const cleanup = () => {
          clearTimeout(timer);
          engine.off ? engine.off('packet', onPacket) : engine.removeListener('packet', onPacket);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new TimeoutError(`socket.io-client ${version}: ${seen}/${n} heartbeats within ${t} ms`));
        }, t);
        engine.on('packet', onPacket);
      });
    },
    close() {
      if (closed) return;
      closed = true;
      clearTimeout(connectTimer);
      const manager = socket.io;
      try {
        if (manager && typeof manager.reconnection === 'function') manager.reconnection(false);
      } catch {}
      try {
        socket.disconnect();
      } catch {}
      try {
        if (manager) {
          manager.skipReconnect = true;
          if (manager.engine) manager.engine.close();
        }
      } catch {}
    },
  };
  return wrapper;
}

/** Close every wrapper given (ignores null/undefined). */
export function closeAll(...clients) {
  for (const c of clients.flat()) c?.close();
}
