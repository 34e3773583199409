// The details panel of the map: an edge's numbers, owners, charts (with the forecast rules'
// bands, when a rule covers the edge) and endpoints, or a node's addresses, owner and edges. It
// lives beside the map and follows its polls.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h, api, qs, fmtNum, fmtBytes, fmtMs, contactLink, scaleMetric, metricUnit } from './util.js';

let panel = null;
let current = null; // {kind: 'edge'|'node', id, chartsAt, forecastsAt, forecastCharts, …elements}
let catalog = { at: 0, byApp: null, error: '', loading: null };

export function detailsPanel() {
  if (!panel) panel = h('aside', { 'data-testid': 'details', class: 'details', hidden: true });
  return panel;
}

export function closeDetails() {
  current = null;
  if (panel) { panel.hidden = true; panel.replaceChildren(); }
}

function header(title, s) {
  return h('div', { class: 'details-head' }, h('h2', null, title),
    h('button', { 'data-testid': 'details-close', class: 'icon', title: 'close', onclick: () => { s.cy.elements().unselect(); closeDetails(); } }, '×'));
}

// Owners' contacts live in mix's catalog; the graph only has owner and team. Both ends' owner
// blocks ask at once: the second waits for the first's request rather than reading the catalog
// before it has arrived.
async function loadCatalog() {
  if (catalog.loading) return catalog.loading;
  if (Date.now() - catalog.at < 60000) return catalog;
  catalog.loading = fetchCatalog().finally(() => { catalog.loading = null; });
  return catalog.loading;
}

async function fetchCatalog() {
  catalog.at = Date.now();
  try {
    const body = await api('/api/v1/mix/catalog');
    const byApp = new Map();
    for (const o of (body && body.objects) || []) {
      const app = o.object || {};
      if (app.app) byApp.set(app.app, app.owner || {});
    }
    catalog.byApp = byApp; catalog.error = '';
  } catch (e) {
    catalog.byApp = null; catalog.error = e.status === 502 ? 'mix is unreachable' : e.message;
  }
  return catalog;
}

function ownerBlock(testid, role, node) {
  const el = h('div', { 'data-testid': testid, class: 'owner' });
  const fill = () => {
    const n = node || {};
    const parts = [h('span', { class: 'muted' }, role + ': '), h('b', null, n.app || (n.addresses && n.addresses[0]) || n.id || '?')];
    if (n.owner || n.team) parts.push(' — owner ', h('span', { class: 'owner-name' }, n.owner || '–'), n.team ? [' · team ', h('span', { class: 'owner-team' }, n.team)] : null);
    else parts.push(h('span', { class: 'muted' }, ' — no owner in the catalog'));
    const c = catalog.byApp && n.app ? catalog.byApp.get(n.app) : null;
    if (c && c.contact) parts.push(' · ', contactLink(c.contact, { class: 'owner-contact' }));
    else if (!catalog.byApp && catalog.at && !catalog.loading && (n.owner || n.team)) parts.push(h('span', { class: 'muted', title: catalog.error }, ' (contact unavailable: mix catalog not reachable)'));
    el.replaceChildren(...parts.flat().filter(Boolean));
  };
  fill();
  loadCatalog().then(fill);
  return el;
}

function metric(testid, label, value) {
  return h('div', { class: 'metric' }, h('div', { class: 'muted' }, label), h('div', { 'data-testid': testid, class: 'metric-value' }, value));
}

export function openEdge(s, key) {
  const e = s.edges.get(key);
  if (!e) return;
  s.cy.elements().unselect();
  s.cy.getElementById(key).select();
  current = { kind: 'edge', id: key, chartsAt: 0, forecastsAt: 0, forecastCharts: new Map() };
  const p = detailsPanel();
  p.hidden = false;
  const name = (id) => { const n = s.nodes.get(id); return n ? (n.app || (n.addresses && n.addresses[0]) || id) : id; };
  current.metrics = h('div', { class: 'metrics' });
  current.charts = h('div', { 'data-testid': 'detail-charts', class: 'charts' });
  current.forecasts = h('div', { 'data-testid': 'forecast-charts', class: 'charts' });
  current.forecastWrap = h('div', { hidden: true }, h('h3', null, 'forecasts (last 15 min)'), current.forecasts);
  current.endpoints = h('div', { 'data-testid': 'detail-endpoints', class: 'endpoints' }, h('p', { class: 'muted' }, 'loading endpoints…'));
  p.replaceChildren(
    header(`${name(e.source)} → ${name(e.target)}`, s),
    h('p', { class: 'muted' }, [e.transport, e.port ? 'port ' + e.port : '', e.protocol].filter(Boolean).join(' · ') || 'all ports'),
    current.metrics,
    ownerBlock('detail-client-owner', 'client', s.nodes.get(e.source)),
    ownerBlock('detail-server-owner', 'server', s.nodes.get(e.target)),
    h('h3', null, 'last hour'), current.charts,
    current.forecastWrap,
    h('h3', null, 'top endpoints'), current.endpoints);
  fillEdgeMetrics(e);
  loadCharts(s, e);
  loadForecasts(e);
  loadEndpoints(s, e);
}

function fillEdgeMetrics(e) {
  const ratio = e.requests ? (100 * e.errors / e.requests).toFixed(1) + ' %' : '';
  current.metrics.replaceChildren(
    metric('detail-requests', 'requests (5 min)', fmtNum(e.requests)),
    metric('detail-errors', 'errors' + (ratio ? ` (${ratio})` : ''), fmtNum(e.errors)),
    metric('detail-latency-p95', 'latency p95', fmtMs(e.latency_p95_ms)),
    metric('detail-latency-p50', 'latency p50', fmtMs(e.latency_p50_ms)),
    metric('detail-bytes', 'bytes', fmtBytes(e.bytes)),
    metric('detail-flows', 'flows', fmtNum(e.flows)),
    metric('detail-rtt', 'handshake RTT', fmtMs(e.rtt_ms)),
    metric('detail-retransmits', 'retransmits', fmtNum(e.retransmits)));
}

const CHARTS = [
  { metric: 'requests', label: 'requests', color: '#4a6fa5' },
  { metric: 'errors', label: 'errors', color: '#d62728' },
  { metric: 'latency_p95_ms', label: 'latency p95 (ms)', color: '#f0a202' },
  { metric: 'bytes', label: 'bytes', color: '#2ca02c' },
];

async function loadCharts(s, e) {
  const mine = current;
  mine.chartsAt = Date.now();
  const width = Math.max(240, (panel.clientWidth || 380) - 24);
  const results = await Promise.all(CHARTS.map((c) =>
    api('/api/v1/series' + qs({ metric: c.metric, level: s.level, source: e.source, target: e.target, port: s.level === 'l4' ? e.port : '', from: '1h' }))
      .then((r) => ({ c, r }), (err) => ({ c, err }))));
  if (current !== mine) return;
  const boxes = results.map(({ c, r, err }) => {
    const box = h('div', { class: 'chart', 'data-metric': c.metric }, h('div', { class: 'chart-title' }, c.label + (r && r.resolution ? ` · per ${r.resolution}` : '')));
    if (err) { box.append(h('p', { class: 'error' }, err.message)); return { box }; }
    const pts = (r && r.points) || [];
    if (!pts.length) { box.append(h('p', { class: 'muted' }, 'no data in the last hour')); return { box }; }
    const xs = pts.map((p) => new Date(p.time).getTime() / 1000), ys = pts.map((p) => p.value);
    return { box, opts: { width, height: 110, legend: { show: false }, cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } }, axes: [{ size: 24, font: '10px sans-serif' }, { size: 44, font: '10px sans-serif' }],
      series: [{}, { label: c.label, stroke: c.color, fill: c.color + '22', width: 1.5 }] }, data: [xs, ys] };
  });
  mine.charts.replaceChildren(...boxes.map((b) => b.box));
  for (const b of boxes) if (b.opts) new uPlot(b.opts, b.data, b.box);
}

// loadForecasts draws, for each forecast rule's series on this edge, the observed value with the
// forecast (dashed) and its band (filled) over the last 15 minutes, one point per 10 s
// evaluation. The band is left out where the model is still learning (ready false), since its
// numbers mean nothing yet. A chart already drawn gets the new points in place.
async function loadForecasts(e) {
  const mine = current;
  mine.forecastsAt = Date.now();
  let body;
  try {
    body = await api('/api/v1/forecasts' + qs({ source: e.source, target: e.target }));
  } catch (err) {
    if (current !== mine) return;
    mine.forecastWrap.hidden = false;
    mine.forecasts.replaceChildren(h('p', { class: 'error' }, err.message));
    mine.forecastCharts.clear();
    return;
  }
  if (current !== mine) return;
  const list = ((body && body.forecasts) || []).filter((f) => (f.points || []).length);
  mine.forecastWrap.hidden = list.length === 0;
  const width = Math.max(240, (panel.clientWidth || 380) - 24);
  const seen = new Set();
  const fresh = []; // charts to make once their boxes are in the page, as loadCharts does
  const boxes = list.map((f) => {
    const key = `${f.rule}\u0000${f.series && f.series.name}`;
    seen.add(key);
    const pts = f.points;
    const ready = pts.filter((p) => p.ready).length;
    const band = (v, p) => (p.ready ? scaleMetric(f.metric, v) : null);
    const data = [pts.map((p) => p.t / 1000), pts.map((p) => scaleMetric(f.metric, p.value)),
      pts.map((p) => band(p.forecast, p)), pts.map((p) => band(p.upper, p)), pts.map((p) => band(p.lower, p))];
    const title = `${f.rule} · ${f.metric} (${metricUnit(f.metric)})` + (f.series && f.series.name ? ` · ${f.series.name}` : '');
    const note = ready ? '' : ' · learning: no band yet';
    let c = mine.forecastCharts.get(key);
    if (!c) {
      c = { title: h('div', { class: 'chart-title', 'data-testid': 'forecast-chart-title' }), box: null, u: null };
      c.box = h('div', { class: 'chart', 'data-testid': 'forecast-chart' }, c.title,
        h('div', { class: 'chart-title' }, 'solid: observed · dashed: forecast · shaded: band'));
      fresh.push([c, { width, height: 120, legend: { show: false }, cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true } }, axes: [{ size: 24, font: '10px sans-serif' }, { size: 44, font: '10px sans-serif' }],
        series: [{},
          { label: 'observed', stroke: '#4a6fa5', width: 1.5 },
          { label: 'forecast', stroke: '#6b7280', width: 1.2, dash: [5, 4] },
          { label: 'upper', stroke: '#f0a20288', width: 1, points: { show: false } },
          { label: 'lower', stroke: '#f0a20288', width: 1, points: { show: false } }],
        bands: [{ series: [3, 4], fill: '#f0a20226' }] }, data]);
      mine.forecastCharts.set(key, c);
    } else c.u.setData(data);
    c.title.textContent = title + note;
    Object.assign(c.box.dataset, { rule: f.rule, metric: f.metric, series: (f.series && f.series.name) || '', points: pts.length, ready });
    return c.box;
  });
  for (const [k, c] of mine.forecastCharts) if (!seen.has(k)) { c.u.destroy(); mine.forecastCharts.delete(k); }
  if (boxes.some((b, i) => mine.forecasts.children[i] !== b) || mine.forecasts.children.length !== boxes.length) mine.forecasts.replaceChildren(...boxes);
  for (const [c, opts, data] of fresh) c.u = new uPlot(opts, data, c.box);
}

async function loadEndpoints(s, e) {
  const mine = current;
  let body;
  try {
    body = await api('/api/v1/l7/endpoints' + qs({ source: e.source, target: e.target, since: '1h' }));
  } catch (err) {
    if (current === mine) mine.endpoints.replaceChildren(h('p', { class: 'error' }, err.message));
    return;
  }
  if (current !== mine) return;
  const eps = (body && body.endpoints) || [];
  if (!eps.length) { mine.endpoints.replaceChildren(h('p', { class: 'muted' }, 'no L7 records on this edge in the last hour (L7 decoding is turned on by a subscription\'s L7 tokens)')); return; }
  mine.endpoints.replaceChildren(h('table', { class: 'grid' },
    h('thead', null, h('tr', null, ['protocol', 'method', 'path', 'req', 'err', 'p95'].map((t) => h('th', null, t)))),
    h('tbody', null, eps.map((x) => h('tr', { 'data-testid': 'endpoint-row' },
      h('td', null, x.protocol), h('td', null, x.method), h('td', { class: 'path', title: x.path }, x.path),
      h('td', { class: 'num' }, fmtNum(x.requests)), h('td', { class: 'num' }, fmtNum(x.errors)), h('td', { class: 'num' }, fmtMs(x.latency_p95_ms)))))));
}

export function openNode(s, id) {
  const n = s.nodes.get(id);
  if (!n) return;
  s.cy.elements().unselect();
  s.cy.getElementById(id).select();
  current = { kind: 'node', id };
  const p = detailsPanel();
  p.hidden = false;
  current.body = h('div');
  p.replaceChildren(header(n.app || (n.addresses && n.addresses[0]) || id, s), current.body);
  fillNode(s, n);
}

function fillNode(s, n) {
  const name = (nid) => { const m = s.nodes.get(nid); return m ? (m.app || (m.addresses && m.addresses[0]) || nid) : nid; };
  const edgeTable = (list, other) => list.length
    ? h('table', { class: 'grid' }, h('tbody', null, list.map(([k, e]) => h('tr', { class: 'clickable', 'data-testid': 'node-edge', onclick: () => openEdge(s, k) },
      h('td', null, name(e[other])), h('td', null, e.port ? `${e.transport || ''} ${e.port}` : e.transport || ''),
      h('td', { class: 'num' }, fmtNum(e.requests) + ' req'), h('td', { class: 'num' }, fmtBytes(e.bytes))))))
    : h('p', { class: 'muted' }, 'none');
  const ins = [], outs = [];
  for (const [k, e] of s.edges) { if (e.target === n.id) ins.push([k, e]); if (e.source === n.id) outs.push([k, e]); }
  current.body.replaceChildren(
    h('p', { class: 'muted' }, `${n.kind || 'node'} · ${n.id}`),
    h('h3', null, 'addresses'),
    h('ul', { 'data-testid': 'detail-addresses', class: 'addresses' }, (n.addresses || []).length ? n.addresses.map((a) => h('li', null, a)) : h('li', { class: 'muted' }, 'none recorded')),
    ownerBlock('detail-owner', 'node', n),
    h('h3', null, `incoming (${ins.length})`), h('div', { 'data-testid': 'detail-in-edges' }, edgeTable(ins, 'source')),
    h('h3', null, `outgoing (${outs.length})`), h('div', { 'data-testid': 'detail-out-edges' }, edgeTable(outs, 'target')));
}

// refreshDetails follows a poll: new numbers for the open edge, charts every 15 s, forecasts
// every 10 s (the evaluator adds a point per 10 s).
export function refreshDetails(s) {
  if (!current) return;
  if (current.kind === 'edge') {
    const e = s.edges.get(current.id);
    if (!e) return; // gone from the window: keep the last numbers
    fillEdgeMetrics(e);
    if (Date.now() - current.chartsAt > 15000) loadCharts(s, e);
    if (Date.now() - current.forecastsAt > 10000) loadForecasts(e);
  }
}
