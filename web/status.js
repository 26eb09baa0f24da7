// roomcast status page: polls /api/stats every second, shows the live numbers and draws the
// message rate of the last two minutes on a canvas. Plain JS, no third-party code.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const HISTORY = 120;                  // seconds kept on the chart
  const KEY_STORE = 'roomcast-api-key'; // sessionStorage: gone when the tab closes
  const samples = [];                   // {t, in, out} rates per second
  let previous = null;                  // last /api/stats answer, for rates
  let key = sessionStorage.getItem(KEY_STORE) || '';

  function setStatus(state, text) {
    $('status').dataset.state = state;
    $('status-text').textContent = text;
  }

  const number = (n) => Number(n).toLocaleString();
  const uptime = (s) => {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
  };

  async function poll() {
    let res;
    try {
      res = await fetch('/api/stats', {
        cache: 'no-store',
        headers: key ? { Authorization: `Bearer ${key}` } : {},
      });
    } catch {
      setStatus('reconnecting', 'server unreachable');
      return;
    }
    if (res.status === 401) {
      $('key-panel').hidden = false;
      if (key) {
        $('key-error').hidden = false;
        $('key-error').textContent = 'That key was refused.';
      }
      setStatus('error', 'API key needed');
      return;
    }
    if (!res.ok) {
      setStatus('error', `HTTP ${res.status}`);
      return;
    }
    $('key-panel').hidden = true;
    show(await res.json());
  }

  function show(body) {
    const s = body.stats;
    const now = performance.now() / 1000;
    const c = s.connections;
    $('connections').textContent = number((c.socketio || 0) + (c.ws || 0) + (c.sse || 0));
    $('by-transport').textContent = `${number(c.socketio || 0)} / ${number(c.ws || 0)} / ${number(c.sse || 0)}`;
    $('rooms').textContent = number(s.rooms);
    $('received').textContent = number(s.messages_received);
    $('slow').textContent = number(s.slow_consumer_disconnects);
    $('uptime').textContent = uptime(s.uptime_s);
    $('broker').textContent = `${body.broker.name}: ${body.broker.ready ? 'connected' : 'disconnected'}`;
    if (previous) {
      const dt = Math.max(0.001, now - previous.t);
      const rateIn = Math.max(0, (s.messages_received - previous.s.messages_received) / dt);
      const rateOut = Math.max(0, (s.deliveries - previous.s.deliveries) / dt);
      $('rate-in').textContent = number(Math.round(rateIn));
      $('rate-out').textContent = number(Math.round(rateOut));
      samples.push({ t: now, in: rateIn, out: rateOut });
      while (samples.length && samples[0].t < now - HISTORY) samples.shift();
      draw(now);
    }
    previous = { t: now, s };
    if (body.draining) setStatus('reconnecting', 'draining');
    else if (!body.broker.ready) setStatus('reconnecting', 'broker disconnected');
    else setStatus('live', 'live');
  }

  function draw(now) {
    const canvas = $('chart');
    const ctx = canvas.getContext('2d');
    const scale = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== width * scale) { canvas.width = width * scale; canvas.height = height * scale; }
    ctx.setTransform(scale, 0, 0, scale, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(document.documentElement);
    const muted = style.getPropertyValue('--muted').trim() || '#888';
    const pad = { left: 56, right: 8, top: 8, bottom: 20 };
    const max = Math.max(1, ...samples.map((p) => Math.max(p.in, p.out)));
    const x = (t) => pad.left + ((t - (now - HISTORY)) / HISTORY) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
    ctx.strokeStyle = muted; ctx.fillStyle = muted; ctx.lineWidth = 1; ctx.font = '11px system-ui, sans-serif';
    for (const frac of [0, 0.5, 1]) {
      const v = max * frac;
      ctx.globalAlpha = 0.3;
      ctx.beginPath(); ctx.moveTo(pad.left, y(v)); ctx.lineTo(width - pad.right, y(v)); ctx.stroke();
      ctx.globalAlpha = 1;
      ctx.fillText(number(Math.round(v)), 4, y(v) + 4);
    }
    ctx.fillText('-2 min', pad.left, height - 4);
    ctx.fillText('now', width - pad.right - 22, height - 4);
    for (const [field, color] of [['in', style.getPropertyValue('--accent').trim()], ['out', style.getPropertyValue('--ok').trim()]]) {
      ctx.strokeStyle = color || '#36c'; ctx.lineWidth = 2;
      ctx.beginPath();
      samples.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[field])) : ctx.moveTo(x(p.t), y(p[field]))));
      ctx.stroke();
    }
  }

  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    key = $('key').value.trim();
    sessionStorage.setItem(KEY_STORE, key);
    $('key-error').hidden = true;
    poll();
  });

  poll();
  setInterval(poll, 1000);
})();
