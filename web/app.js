// roomcast web page: join rooms, list their messages live, chart their numeric fields
// (charts.js). Plain JS, no framework, no third-party code. Transport: one EventSource on
// GET /sse?channel=a&channel=b for all joined rooms, reopened when the set changes.
// Payloads are untrusted: they are only ever written with textContent.
'use strict';

(() => {
  const MAX_KEPT = 500;           // messages kept in the list
  const MAX_ROOM_LEN = 200;       // characters, after trimming
  const MAX_ROOMS = 64;           // rooms per stream (the server refuses more)
  const DEFAULT_ROOM = 'device01';
  const RETRY_MIN_MS = 1000;      // our own retry, when the browser gives up
  const RETRY_MAX_MS = 15000;

  const $ = (id) => document.getElementById(id);
  const el = {
    form: $('room-form'), room: $('room'), leave: $('leave'), roomError: $('room-error'),
    rooms: $('rooms'), noRooms: $('no-rooms'),
    serverError: $('server-error'), serverErrorText: $('server-error-text'),
    serverErrorClose: $('server-error-close'),
    status: $('status'), statusText: $('status-text'),
    list: $('messages'), empty: $('empty'), count: $('count'), kept: $('kept'), clear: $('clear'),
  };

  const charts = window.roomcastCharts.create($('charts-panel'));
  const rooms = [];               // joined rooms, in join order
  let es = null;                  // the one EventSource
  let retryTimer = 0;
  let retryDelay = RETRY_MIN_MS;
  let everLive = false;           // a stream was live since the room set last changed
  let received = 0;

  // ---------- status ----------
  const STATUS_TEXT = {
    idle: 'not connected', connecting: 'connecting…', live: 'live',
    reconnecting: 'reconnecting…', error: 'error',
  };
  function setStatus(state, detail) {
    el.status.dataset.state = state;
    el.statusText.textContent = detail ? `${STATUS_TEXT[state]} (${detail})` : STATUS_TEXT[state];
  }

  // ---------- room names ----------
  // Returns an error sentence, or '' when the (trimmed) name is acceptable.
  // Same rule as the server (src/hub/rooms.rs): 1..=200 chars, no control characters.
  function roomProblem(name) {
    if (name === '') return 'Enter a room name.';
    const len = [...name].length;
    if (len > MAX_ROOM_LEN) return `Room names are at most ${MAX_ROOM_LEN} characters (this one has ${len}).`;
    if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'Room names cannot contain control characters.';
    return '';
  }
  function showFieldError(text) {
    el.roomError.textContent = text;
    el.roomError.hidden = !text;
    el.room.setAttribute('aria-invalid', text ? 'true' : 'false');
  }

  function showServerError(text) {
    el.serverErrorText.textContent = text;
    el.serverError.hidden = !text;
  }

  // ---------- joined rooms ----------
  function renderRooms() {
    el.rooms.replaceChildren(...rooms.map((name) => {
      const li = document.createElement('li');
      li.className = 'chip';
      li.dataset.room = name;
      const label = document.createElement('span');
      label.className = 'chip-name';
      label.textContent = name;
      const x = document.createElement('button');
      x.type = 'button';
      x.className = 'chip-leave';
      x.textContent = '×';
      x.setAttribute('aria-label', `Leave room ${name}`);
      x.title = `Leave ${name}`;
      x.addEventListener('click', () => {
        const i = rooms.indexOf(name);
        leave(name);
        // keep keyboard focus somewhere sensible
        const next = el.rooms.querySelectorAll('.chip-leave')[Math.min(i, rooms.length - 1)];
        (next || el.room).focus();
      });
      li.append(label, x);
      return li;
    }));
    el.noRooms.hidden = rooms.length > 0;
  }

  function syncUrl() {
    const params = new URLSearchParams(location.search);
    params.delete('room');
    for (const r of rooms) params.append('room', r);
    const q = params.toString();
    history.replaceState(null, '', location.pathname + (q ? `?${q}` : '') + location.hash);
  }

  function join(name) {
    if (rooms.includes(name)) return false;
    rooms.push(name);
    roomsChanged();
    return true;
  }
  function leave(name) {
    const i = rooms.indexOf(name);
    if (i < 0) return false;
    rooms.splice(i, 1);
    charts.removeRoom(name);
    roomsChanged();
    return true;
  }
  function roomsChanged() {
    renderRooms();
    syncUrl();
    showServerError('');
    connect();
  }

  // ---------- transport ----------
  function sseUrl() {
    const p = new URLSearchParams();
    for (const r of rooms) p.append('channel', r);
    return `/sse?${p}`;
  }

  function disconnect() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    if (es) {
      es.close();
      es = null;
    }
  }

  function connect() {
    disconnect();
    everLive = false;
    retryDelay = RETRY_MIN_MS;
    if (rooms.length === 0) {
      setStatus('idle');
      return;
    }
    open();
  }

  function open() {
    const source = new EventSource(sseUrl());
    es = source;
    setStatus(everLive ? 'reconnecting' : 'connecting');

    source.addEventListener('open', () => {
      if (es !== source) return;
      everLive = true;
      retryDelay = RETRY_MIN_MS;
      setStatus('live');
    });

    source.addEventListener('message', (e) => {
      if (es !== source) return;
      onMessage(e);
    });

    // 'error' is both the server's `event: error` (a MessageEvent with data)
    // and the browser's own connection-error event (no data).
    source.addEventListener('error', (e) => {
      if (es !== source) return;
      if (typeof e.data === 'string') {
        onServerError(e.data);
        return;
      }
      if (source.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself, with the same URL (so the same rooms)
        // and Last-Event-ID; 'open' fires again when it is back.
        setStatus('reconnecting');
        return;
      }
      // CLOSED: the browser gave up (HTTP error status, wrong content type...).
      // Find out why, then retry ourselves unless the server refused the request.
      source.close();
      es = null;
      setStatus('reconnecting');
      diagnose(sseUrl()).then((refusal) => {
        if (es !== null || retryTimer || rooms.length === 0) return; // rooms changed meanwhile
        if (refusal) {
          setStatus('error');
          showServerError(refusal);
          return;
        }
        scheduleRetry();
      });
    });
  }

  function scheduleRetry() {
    const delay = retryDelay;
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
    retryTimer = setTimeout(() => {
      retryTimer = 0;
      everLive = true; // show "reconnecting", not "connecting"
      open();
    }, delay + Math.floor(Math.random() * 250));
  }

  // Ask the server once with fetch why the stream was refused. Returns an error
  // sentence for a 4xx answer (retrying will not help), '' otherwise.
  async function diagnose(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const res = await fetch(url, { headers: { Accept: 'text/event-stream' }, signal: ctl.signal, cache: 'no-store' });
      if (res.status < 400 || res.status >= 500 || res.status === 408 || res.status === 429) return '';
      let text = `The server refused the stream (HTTP ${res.status}).`;
      try {
        const body = await res.json();
        if (body && (body.message || body.error)) {
          text = `The server refused the stream: ${body.message || body.error}` +
            (body.error && body.message ? ` (${body.error})` : '');
        }
      } catch (_) { /* not JSON */ }
      return text;
    } catch (_) {
      return ''; // network error: the server is down, keep retrying
    } finally {
      clearTimeout(timer);
      ctl.abort();
    }
  }

  // `event: error` from the server: {"type":"error","code":"...","message":"...", "channel"?}
  function onServerError(raw) {
    let code = '';
    let message = raw;
    let channel = '';
    try {
      const v = JSON.parse(raw);
      if (v && typeof v === 'object') {
        code = typeof v.code === 'string' ? v.code : '';
        message = typeof v.message === 'string' ? v.message : raw;
        channel = typeof v.channel === 'string' ? v.channel : '';
      }
    } catch (_) { /* plain text */ }
    showServerError(`Server error${channel ? ` for room “${channel}”` : ''}: ${message}${code ? ` (${code})` : ''}`);
    if (channel) {
      for (const chip of el.rooms.children) {
        if (chip.dataset.room === channel) chip.classList.add('bad');
      }
    }
  }

  // ---------- messages ----------
  function onMessage(e) {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch (_) {
      msg = { channel: '', data: e.data };
    }
    if (!msg || typeof msg !== 'object') msg = { channel: '', data: msg };
    if (msg.type === 'event') {
      // A Socket.IO emitter's event: shown under the first of its rooms we are in.
      const to = Array.isArray(msg.rooms) ? msg.rooms.filter((r) => rooms.includes(r)) : [];
      if (!to.length) return;
      msg = { ...msg, channel: to[0], data: { event: msg.event, args: msg.args } };
    }
    const channel = typeof msg.channel === 'string' ? msg.channel : '';
    // A late event from a room we just left: drop it.
    if (channel && !rooms.includes(channel)) return;
    // No de-duplication by id: ids are per server process (they start again
    // after a restart), and resuming with Last-Event-ID is the server's job.
    const id = msg.id != null ? String(msg.id) : e.lastEventId;
    addMessage(channel, msg.data, typeof msg.ts === 'number' ? msg.ts : Date.now(), id);
    // Charted at the time the page got it: the axis is this browser's clock.
    if (channel && msg.type !== 'event') charts.add(channel, msg.data);
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

  function addMessage(channel, data, ts, id) {
    const li = document.createElement('li');
    li.className = 'msg';
    li.dataset.room = channel;
    if (id) li.dataset.id = id;

    const meta = document.createElement('div');
    meta.className = 'meta';
    const when = new Date(ts);
    const time = document.createElement('time');
    time.className = 'time';
    time.dateTime = when.toISOString();
    time.title = when.toString();
    time.textContent = timeFmt.format(when);
    const room = document.createElement('span');
    room.className = 'room';
    room.textContent = channel || '?';
    meta.append(time, room);

    const body = document.createElement('pre');
    body.className = 'payload';
    if (typeof data === 'string') {
      body.classList.add('text');
      body.textContent = data;
    } else {
      body.classList.add('json');
      body.textContent = JSON.stringify(data, null, 2);
    }
    li.append(meta, body);

    el.list.prepend(li);
    while (el.list.childElementCount > MAX_KEPT) el.list.lastElementChild.remove();
    received += 1;
    renderCount();
  }

  function renderCount() {
    el.count.textContent = String(received);
    const shown = el.list.childElementCount;
    el.kept.hidden = shown >= received;
    el.kept.textContent = el.kept.hidden ? '' : `showing the latest ${shown}`;
    el.empty.hidden = shown > 0;
  }

  // ---------- wiring ----------
  el.form.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = el.room.value.trim();
    const problem = roomProblem(name);
    if (problem) {
      showFieldError(problem);
      el.room.focus();
      return;
    }
    el.room.value = name;
    if (rooms.includes(name)) showFieldError(`You are already in “${name}”.`);
    else if (rooms.length >= MAX_ROOMS) showFieldError(`At most ${MAX_ROOMS} rooms at once: leave one first.`);
    else {
      join(name);
      showFieldError('');
    }
  });

  el.leave.addEventListener('click', () => {
    const name = el.room.value.trim();
    const problem = roomProblem(name);
    if (problem) {
      showFieldError(problem);
      el.room.focus();
      return;
    }
    showFieldError(leave(name) ? '' : `You are not in “${name}”.`);
  });

  el.room.addEventListener('input', () => {
    if (!el.roomError.hidden) showFieldError('');
  });

  el.clear.addEventListener('click', () => {
    el.list.replaceChildren();
    charts.clear();
    received = 0;
    renderCount();
  });

  el.serverErrorClose.addEventListener('click', () => {
    showServerError('');
    el.room.focus();
  });

  // Back online: do not wait for the next retry.
  window.addEventListener('online', () => {
    if (rooms.length && (!es || es.readyState !== EventSource.OPEN)) {
      const wasLive = everLive;
      disconnect();
      everLive = wasLive;
      open();
    }
  });

  // ---------- start ----------
  const initial = [];
  const problems = [];
  for (const raw of new URLSearchParams(location.search).getAll('room')) {
    const name = raw.trim();
    const problem = roomProblem(name);
    if (problem) problems.push(name ? `“${name.slice(0, 40)}”: ${problem}` : problem);
    else if (initial.length >= MAX_ROOMS) problems.push(`“${name.slice(0, 40)}”: at most ${MAX_ROOMS} rooms at once.`);
    else if (!initial.includes(name)) initial.push(name);
  }
  el.room.value = initial[0] || DEFAULT_ROOM;
  rooms.push(...initial);
  renderRooms();
  renderCount();
  if (problems.length) showFieldError(`Ignored a room from the address: ${problems.join(' ')}`);
  if (rooms.length) syncUrl();
  connect();
})();
