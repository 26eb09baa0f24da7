// A /ws client that survives its node (npm `ws`): it subscribes to its rooms and, whenever its
// socket dies (the node killed or drained, a proxy error, a refused subscribe), connects again
// to the same URL (through a load balancer: possibly another node) and subscribes to each room
// with `since` = the id of the last message it got in that room, as a /ws application would.
//
// const c = resumingWs('ws://127.0.0.1:PORT/ws', ['a', 'b']);
// await c.ready();                      // every room subscribed (the `ok`s arrived)
// c.messages.a -> [{ data, id }] in arrival order; c.resets -> ['a', ...] (`{"type":"reset"}`)
// c.sessions (subscribed connections so far), c.live, c.errors (error frames); c.close()
//
// A room in which no message has arrived yet is subscribed again without `since`; `since`
// ({ room: id }) gives the first connection a position, as a page that stored its ids would.

import WebSocket from 'ws';

import { notify, waitFor } from './server.mjs';

export function resumingWs(url, rooms, { since = {}, retryMs = 100 } = {}) {
  const c = {
    rooms,
    messages: Object.fromEntries(rooms.map((r) => [r, []])),
    lastId: { ...since },
    resets: [],
    errors: [],
    sessions: 0,
    live: false,
    closed: false,
    socket: null,
    /** Resolves once the client is subscribed to every room (now, or after its next reconnect). */
    ready(opts = {}) {
      return waitFor(() => c.live, { timeout: 10000, message: `/ws client subscribed to ${rooms}`, ...opts });
    },
    close() {
      c.closed = true;
      c.socket?.terminate();
    },
  };
  const run = () => {
    if (c.closed) return;
    const ws = new WebSocket(url);
    c.socket = ws;
    const pending = new Set();
    ws.on('open', () => {
      rooms.forEach((room, i) => {
        const request = { op: 'subscribe', channel: room, id: i + 1 };
        if (c.lastId[room] !== undefined) request.since = c.lastId[room];
        pending.add(request.id);
        ws.send(JSON.stringify(request));
      });
    });
    ws.on('message', (raw) => {
      const frame = JSON.parse(String(raw));
      if (frame.type === 'message' && frame.channel in c.messages) {
        c.messages[frame.channel].push({ data: frame.data, id: frame.id });
        c.lastId[frame.channel] = frame.id;
      } else if (frame.type === 'reset') {
        c.resets.push(frame.channel);
      } else if (frame.type === 'ok' && pending.delete(frame.id) && pending.size === 0) {
        c.live = true;
        c.sessions++;
      } else if (frame.type === 'error') {
        // e.g. broker_unavailable from a node that is starting or stopping: try again.
        c.errors.push(frame);
        ws.terminate();
      }
      notify();
    });
    ws.on('error', () => {}); // 'close' follows
    ws.on('close', () => {
      c.live = false;
      notify();
      if (!c.closed) setTimeout(run, retryMs);
    });
  };
  run();
  return c;
}
