// The details panel of the map: an edge's numbers, owners, charts and endpoints, or a node's
// addresses, owner and edges. It lives beside the map and follows its polls.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h, api, qs, fmtNum, fmtBytes, fmtMs } from './util.js';

let panel = null;
let current = null; // {kind: 'edge'|'node', id, chartsAt}
let catalog = { at: 0, byApp: null, error: '' };

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

// Owners' contacts live in mix's catalog; the graph only has owner and team.
async function loadCatalog() {
  if (Date.now() - catalog.at < 60000) return catalog;
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
    if (c && c.contact) parts.push(' · ', /^[^@\s]+@[^@\s]+$/.test(c.contact) ? h('a', { href: 'mailto:' + c.contact, class: 'owner-contact' }, c.contact) : h('span', { class: 'owner-contact' }, c.contact));
    else if (!catalog.byApp && catalog.at && (n.owner || n.team)) parts.push(h('span', { class: 'muted', title: catalog.error }, ' (contact unavailable: mix catalog not reachable)'));
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
  current = { kind: 'edge', id: key, chartsAt: 0 };
  const p = detailsPanel();
  p.hidden = false;
  const name = (id) => { const n = s.nodes.get(id); return n ? (n.app || (n.addresses && n.addresses[0]) || id) : id; };
  current.metrics = h('div', { class: 'metrics' });
  current.charts = h('div', { 'data-testid': 'detail-charts', class: 'charts' });
  current.endpoints = h('div', { 'data-testid': 'detail-endpoints', class: 'endpoints' }, h('p', { class: 'muted' }, 'loading endpoints…'));
  p.replaceChildren(
    header(`${name(e.source)} → ${name(e.target)}`, s),
    h('p', { class: 'muted' }, [e.transport, e.port ? 'port ' + e.port : '', e.protocol].filter(Boolean).join(' · ') || 'all ports'),
    current.metrics,
    ownerBlock('detail-client-owner', 'client', s.nodes.get(e.source)),
    ownerBlock('detail-server-owner', 'server', s.nodes.get(e.target)),
    h('h3', null, 'last hour'), current.charts,
    h('h3', null, 'top endpoints'), current.endpoints);
  fillEdgeMetrics(e);
  loadCharts(s, e);
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

// refreshDetails follows a poll: new numbers for the open edge, charts every 15 s.
export function refreshDetails(s) {
  if (!current) return;
  if (current.kind === 'edge') {
    const e = s.edges.get(current.id);
    if (!e) return; // gone from the window: keep the last numbers
    fillEdgeMetrics(e);
    if (Date.now() - current.chartsAt > 15000) loadCharts(s, e);
  }
}
