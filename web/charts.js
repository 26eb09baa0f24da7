// roomcast web page: live line charts of numeric telemetry.
// A message whose payload is a JSON object with numeric fields ({"temp":21.5,"hum":40})
// adds one point per field to that room's chart for the field; each chart shows the last
// WINDOW_MS. Plain SVG written here, no library. Field names and values are untrusted: they
// are only ever set with textContent or as attribute values.
// Used by app.js through window.roomcastCharts.create(container).
'use strict';

window.roomcastCharts = (() => {
  const WINDOW_MS = 5 * 60 * 1000; // what a chart shows: the last five minutes
  const MIN_SPAN_MS = 30 * 1000;   // a younger chart spans from its first reading, at least this
  const MAX_POINTS = 600;          // per chart, oldest dropped first
  const MAX_CHARTS = 24;           // more fields than this are counted, not drawn
  const SLIDE_MS = 2000;           // how often the time axis moves while nothing arrives
  const SVG = 'http://www.w3.org/2000/svg';
  // viewBox geometry: the plot area leaves room for the value labels (left) and time labels (below)
  const W = 320, H = 130, LEFT = 46, RIGHT = 8, TOP = 8, BOTTOM = 20;

  const numberFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

  /** The finite numeric top-level fields of a payload, or [] (text, arrays, other values). */
  function numericFields(data) {
    if (!data || typeof data !== 'object' || Array.isArray(data)) return [];
    return Object.entries(data).filter(([, v]) => typeof v === 'number' && Number.isFinite(v));
  }

  function svg(name, attrs = {}) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  let uid = 0;

  /** One chart: a figure with a caption and an SVG line of (time, value) points. */
  function makeChart(room, field) {
    const id = `chart-${++uid}`;
    const figure = document.createElement('figure');
    figure.className = 'chart-card';
    figure.dataset.room = room;
    figure.dataset.field = field;

    const caption = document.createElement('figcaption');
    const name = document.createElement('span');
    name.className = 'chart-field';
    name.textContent = field;
    const where = document.createElement('span');
    where.className = 'chart-room';
    where.textContent = room;
    const latest = document.createElement('span');
    latest.className = 'chart-latest';
    caption.append(name, where, latest);

    const plot = svg('svg', {
      viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg',
      'aria-labelledby': `${id}-title ${id}-desc`,
    });
    const title = svg('title', { id: `${id}-title` });
    title.textContent = `${field} in room ${room}, last 5 minutes`;
    const desc = svg('desc', { id: `${id}-desc` });
    const grid = svg('g', { class: 'chart-grid', 'aria-hidden': 'true' });
    const line = svg('polyline', { class: 'chart-line', fill: 'none' });
    const dot = svg('circle', { class: 'chart-dot', r: 3 });
    plot.append(title, desc, grid, line, dot);
    figure.append(caption, plot);

    return { figure, latest, desc, grid, line, dot, room, field, points: [] };
  }

  function ago(ms) {
    return ms < 120_000 ? `${Math.round(ms / 1000)} s ago` : `${Math.round(ms / 60_000)} min ago`;
  }

  function label(x, y, text, anchor) {
    const t = svg('text', { x, y, 'text-anchor': anchor, class: 'chart-label' });
    t.textContent = text;
    return t;
  }

  /** Redraws one chart for the window ending at `now`. */
  function draw(chart, now) {
    const pts = chart.points.filter((p) => p.t >= now - WINDOW_MS);
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - (pts[0]?.t ?? now)));
    const from = now - span;
    let min = Math.min(...pts.map((p) => p.v));
    let max = Math.max(...pts.map((p) => p.v));
    if (min === max) {
      const pad = Math.abs(min) * 0.1 || 1;
      min -= pad;
      max += pad;
    }
    const x = (t) => LEFT + ((t - from) / span) * (W - LEFT - RIGHT);
    const y = (v) => TOP + (1 - (v - min) / (max - min)) * (H - TOP - BOTTOM);
    const coords = pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    chart.line.setAttribute('points', coords.join(' '));
    chart.line.dataset.points = String(pts.length);
    const last = pts[pts.length - 1];
    if (last) {
      chart.dot.setAttribute('cx', x(last.t).toFixed(1));
      chart.dot.setAttribute('cy', y(last.v).toFixed(1));
    }
    chart.dot.setAttribute('visibility', last ? 'visible' : 'hidden');

    const bottom = H - BOTTOM;
    chart.grid.replaceChildren(
      svg('line', { x1: LEFT, y1: TOP, x2: W - RIGHT, y2: TOP, class: 'chart-rule' }),
      svg('line', { x1: LEFT, y1: bottom, x2: W - RIGHT, y2: bottom, class: 'chart-axis' }),
      label(LEFT - 5, TOP + 4, numberFmt.format(max), 'end'),
      label(LEFT - 5, bottom, numberFmt.format(min), 'end'),
      label(LEFT, H - 4, ago(span), 'start'),
      label(W - RIGHT, H - 4, 'now', 'end'),
    );

    const values = pts.map((p) => p.v);
    chart.latest.textContent = last ? numberFmt.format(last.v) : '';
    chart.desc.textContent = pts.length
      ? `${pts.length} reading${pts.length === 1 ? '' : 's'}; latest ${numberFmt.format(last.v)}, ` +
        `lowest ${numberFmt.format(Math.min(...values))}, highest ${numberFmt.format(Math.max(...values))}.`
      : 'No readings in the last 5 minutes.';
  }

  /**
   * Charts inside `container` (a section holding a `.charts` list and a `.charts-note`).
   * -> { add(room, data, t), removeRoom(room), clear() }
   */
  function create(container) {
    const list = container.querySelector('.charts');
    const note = container.querySelector('.charts-note');
    const charts = new Map(); // `${room}\n${field}` -> chart
    let skipped = new Set();  // fields beyond MAX_CHARTS
    let frame = 0;
    let slider = 0;

    function render() {
      frame = 0;
      const now = Date.now();
      for (const chart of charts.values()) draw(chart, now);
      container.hidden = charts.size === 0;
      container.closest('.board')?.classList.toggle('has-charts', charts.size > 0);
      note.hidden = skipped.size === 0;
      note.textContent = note.hidden ? '' : `${skipped.size} more numeric field(s) not charted (at most ${MAX_CHARTS} charts).`;
      // Slide the time axis while charts are shown; stop when there are none.
      if (charts.size && !slider) slider = setInterval(schedule, SLIDE_MS);
      if (!charts.size && slider) {
        clearInterval(slider);
        slider = 0;
      }
    }
    function schedule() {
      if (!frame) frame = requestAnimationFrame(render);
    }

    function add(room, data, t = Date.now()) {
      const fields = numericFields(data);
      for (const [field, value] of fields) {
        const key = `${room}\n${field}`;
        let chart = charts.get(key);
        if (!chart) {
          if (charts.size >= MAX_CHARTS) {
            skipped.add(key);
            continue;
          }
          chart = makeChart(room, field);
          charts.set(key, chart);
          list.append(chart.figure);
        }
        chart.points.push({ t, v: value });
        const from = t - WINDOW_MS;
        while (chart.points.length > MAX_POINTS || (chart.points.length && chart.points[0].t < from)) chart.points.shift();
      }
      if (fields.length) schedule();
    }

    function removeRoom(room) {
      for (const [key, chart] of charts) {
        if (chart.room !== room) continue;
        chart.figure.remove();
        charts.delete(key);
      }
      skipped = new Set([...skipped].filter((key) => !key.startsWith(`${room}\n`)));
      schedule();
    }

    function clear() {
      for (const chart of charts.values()) chart.figure.remove();
      charts.clear();
      skipped.clear();
      schedule();
    }

    return { add, removeRoom, clear };
  }

  return { create, numericFields };
})();
