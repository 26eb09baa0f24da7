// A Server-Sent Events reader over fetch's body stream (no EventSource polyfill).
//
// const s = await openSse(server, ['a', 'b']);          // resolves when the response headers arrive
// s.status, s.headers; s.events -> [{ event, id, data, json }] in order (json: data parsed, or undefined)
// const ev = await s.next((e) => e.json?.channel === 'a');  // next matching event (recorded or future)
// s.close();

import { notify, TimeoutError, waitFor } from './server.mjs';

export async function openSse(server, channels = [], { headers = {}, timeout = 5000, query = '' } = {}) {
  const qs = channels.map((c) => `channel=${encodeURIComponent(c)}`).join('&') + (query ? `&${query}` : '');
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), timeout);
  let res;
  try {
    res = await fetch(`${server.url}/sse?${qs}`, { headers: { accept: 'text/event-stream', ...headers }, signal: ac.signal });
  } finally {
    clearTimeout(t);
  }
  const events = [];
  const comments = [];
  const listeners = new Set();
  let ended = false;
  let endError = null;
  const s = {
    status: res.status,
    headers: res.headers,
    events,
    comments,
    get ended() {
      return ended;
    },
    next(match = () => true, { timeout: to = timeout, from = 0 } = {}) {
      return new Promise((resolve, reject) => {
        const found = events.slice(from).find(match);
        if (found) return resolve(found);
        const l = (ev) => {
          if (!ev || !match(ev)) return;
          done();
          resolve(ev);
        };
        const onEnd = () => {
          done();
          reject(new Error(`SSE stream ended${endError ? ` (${endError.message})` : ''} while waiting`));
        };
        const done = () => {
          clearTimeout(timer);
          listeners.delete(l);
          listeners.delete(endL);
        };
        const endL = (ev) => ev === null && onEnd();
        const timer = setTimeout(() => {
          done();
          reject(new TimeoutError(`SSE: no matching event within ${to} ms (got ${events.length} events)`));
        }, to);
        if (ended) return onEnd();
        listeners.add(l);
        listeners.add(endL);
      });
    },
    close() {
      ac.abort();
    },
  };
  if (!res.body) {
    ended = true;
    return s;
  }
  // parse the stream in the background (text/event-stream: lines, blank line ends an event)
  (async () => {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let cur = { event: 'message', id: undefined, data: [] };
    let hasData = false;
    const dispatch = () => {
      if (hasData) {
        const data = cur.data.join('\n');
        let json;
        try {
          json = JSON.parse(data);
        } catch {}
        const ev = { event: cur.event, id: cur.id, data, json };
        events.push(ev);
        for (const l of [...listeners]) l(ev);
        notify();
      }
      cur = { event: 'message', id: undefined, data: [] };
      hasData = false;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + (buf.startsWith('\r\n', i) ? 2 : 1));
          if (line === '') {
            dispatch();
            continue;
          }
          if (line.startsWith(':')) {
            comments.push(line.slice(1));
            continue;
          }
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? '' : line.slice(c + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') cur.event = val;
          else if (field === 'id') cur.id = val;
          else if (field === 'data') {
            cur.data.push(val);
            hasData = true;
          }
        }
      }
    } catch (e) {
      if (e.name !== 'AbortError') endError = e;
    } finally {
      ended = true;
      for (const l of [...listeners]) l(null);
      notify();
    }
  })();
  return s;
}

/**
 * An SSE client that survives its node, as EventSource does: when its stream ends or cannot be
 * opened (the node killed or drained, a proxy error, a 503), it opens `/sse` on the same server
 * again (through a load balancer: possibly another node) with `Last-Event-ID` = the `id:` of the
 * last event it got.
 *
 * const c = resumingSse(server, ['a', 'b']);   // server: { url }
 * await c.ready();                              // a stream is open (its rooms joined)
 * c.messages.a -> [{ data, id }] in arrival order; c.resets -> ['a', ...] (event `reset`)
 * c.sessions (streams opened so far), c.live, c.lastId; c.close()
 * `lastEventId` gives the first stream a position, as a page that stored it would.
 */
export function resumingSse(server, channels, { lastEventId, retryMs = 100 } = {}) {
  const c = {
    channels,
    messages: Object.fromEntries(channels.map((r) => [r, []])),
    lastId: lastEventId,
    resets: [],
    sessions: 0,
    live: false,
    closed: false,
    stream: null,
    ready(opts = {}) {
      return waitFor(() => c.live, { timeout: 10000, message: `SSE client on ${channels}`, ...opts });
    },
    close() {
      c.closed = true;
      c.stream?.close();
    },
  };
  const record = (ev) => {
    if (ev.id !== undefined) c.lastId = ev.id;
    if (ev.event === 'reset') c.resets.push(ev.json?.channel);
    else if (ev.json?.type === 'message' && ev.json.channel in c.messages) {
      c.messages[ev.json.channel].push({ data: ev.json.data, id: ev.id });
    }
    notify();
  };
  (async () => {
    while (!c.closed) {
      const headers = c.lastId === undefined ? {} : { 'last-event-id': c.lastId };
      try {
        const s = await openSse(server, channels, { headers });
        c.stream = s;
        if (s.status === 200) {
          c.sessions++;
          c.live = true;
          notify();
          // next() resolves with the first event at or after `from`, recorded or future
          for (let from = 0; ; from++) record(await s.next(() => true, { from, timeout: 2 ** 31 - 1 }));
        }
        s.close();
      } catch {
        // the stream ended or could not be opened: open it again
      }
      c.live = false;
      notify();
      if (!c.closed) await new Promise((r) => setTimeout(r, retryMs));
    }
  })();
  return c;
}
