// The live service map: /api/v1/graph polled every 2 s into one long-lived cytoscape instance.
// Updates are applied in place (positions kept); only a change of level or filters, or the first
// data, lays the graph out again. Large graphs get a cheap layout and a lighter style so that the
// first render of 500 nodes / 2,000 edges stays well under 3 s.
import cytoscape from 'cytoscape';
import { h, api, qs, reportError, clearError, fmtNum, fmtBytes, fmtMs, poller } from './util.js';
import { openEdge, openNode, closeDetails, refreshDetails, detailsPanel } from './details.js';

const LARGE = 150; // nodes above which layout and style turn cheap

let state = null; // the map view survives route changes so the graph and positions stay

export function mountMap(container, _arg, params) {
  if (!state) state = createMap();
  // A link can choose the level (#/map?level=l3): set before the first poll, so the map is laid
  // out once, at that level.
  const level = params && params.get('level');
  if (level && ['app', 'l3', 'l4'].includes(level) && level !== state.level) {
    state.level = level;
    state.levelSelect.value = level;
    state.needLayout = true;
  }
  container.replaceChildren(state.root);
  // cytoscape measures its container when created, so it is made once the view is in the page.
  if (!state.cy) initCy(state);
  else state.cy.resize();
  state.poll = poller(() => refresh(state), 2000);
  return () => { state.poll.stop(); };
}

function createMap() {
  const s = {
    level: 'app', app: '', owner: '', protocol: '', widthBy: 'bytes',
    nodes: new Map(), edges: new Map(), history: new Map(), needLayout: true, rows: new Map(),
  };
  const input = (id, ph, key) => h('input', {
    'data-testid': id, placeholder: ph, type: 'search', 'aria-label': ph,
    onchange: (e) => { s[key] = e.target.value.trim(); s.needLayout = true; s.poll && s.poll.now(); },
  });
  s.levelSelect = h('select', {
    'data-testid': 'level-select', 'aria-label': 'level',
    onchange: (e) => { s.level = e.target.value; s.needLayout = true; closeDetails(); s.poll && s.poll.now(); },
  }, h('option', { value: 'app' }, 'applications'), h('option', { value: 'l3' }, 'addresses (L3)'), h('option', { value: 'l4' }, 'ports (L4)'));
  s.widthSelect = h('select', {
    'data-testid': 'width-select', 'aria-label': 'edge width by',
    onchange: (e) => { s.widthBy = e.target.value; applyEdgeStyle(s); },
  }, h('option', { value: 'bytes' }, 'width: bytes'), h('option', { value: 'requests' }, 'width: requests'));
  s.status = h('span', { class: 'muted', 'data-testid': 'map-status' });
  s.canvas = h('div', { 'data-testid': 'map-canvas', class: 'map-canvas' });
  s.empty = h('div', { 'data-testid': 'map-empty', class: 'empty', hidden: true },
    h('h2', null, 'no traffic yet — are agents sending to this analysis?'),
    h('p', null, 'The map shows conversations that began in the last 5 minutes. Point an agent (or an OpenTelemetry Collector) at this analysis\'s OTLP endpoint, check the Agents page for when each agent was last seen, and clear the filters above if any are set.'));
  s.edgeBody = h('tbody');
  s.edgeList = h('table', { 'data-testid': 'edge-list', class: 'grid edge-list' },
    h('thead', null, h('tr', null, ['source', 'target', 'port', 'protocol', 'requests', 'errors', 'p95', 'bytes'].map((t) => h('th', null, t)))),
    s.edgeBody);
  s.root = h('section', { 'data-testid': 'view-map', class: 'view view-map' },
    h('div', { class: 'toolbar' }, s.levelSelect,
      input('filter-app', 'application', 'app'), input('filter-owner', 'owner', 'owner'), input('filter-protocol', 'protocol (HTTP, DNS…)', 'protocol'),
      s.widthSelect, s.status),
    h('div', { class: 'map-main' },
      h('div', { class: 'map-left' }, h('div', { class: 'map-wrap' }, s.canvas, s.empty),
        h('details', { class: 'edge-list-wrap', open: true }, h('summary', null, 'edges'), s.edgeList)),
      detailsPanel()));
  return s;
}

function initCy(s) {
  s.cy = cytoscape({
    container: s.canvas,
    layout: { name: 'preset' },
    style: baseStyle(false),
    minZoom: 0.05,
    maxZoom: 4,
  });
  s.cy.on('tap', 'edge', (e) => openEdge(s, e.target.id()));
  s.cy.on('tap', 'node', (e) => openNode(s, e.target.id()));
  window.__quanyu = Object.assign(window.__quanyu || {}, { cy: s.cy });
}

function baseStyle(large) {
  return [
    { selector: 'node', style: {
      'background-color': '#4a6fa5', label: 'data(label)', 'text-wrap': 'wrap', 'font-size': 10,
      color: '#223', 'text-valign': 'bottom', 'text-margin-y': 3, width: 18, height: 18,
      'min-zoomed-font-size': large ? 9 : 4,
    } },
    { selector: 'node[kind = "address"]', style: { 'background-color': '#8a94a6', shape: 'round-rectangle' } },
    { selector: 'edge', style: {
      width: 'data(w)', 'line-color': 'data(color)', 'curve-style': large ? 'haystack' : 'bezier',
      'target-arrow-shape': large ? 'none' : 'triangle', 'target-arrow-color': 'data(color)', 'arrow-scale': 0.8, opacity: 0.85,
    } },
    { selector: ':selected', style: { 'border-width': 3, 'border-color': '#f2b705', 'line-color': '#f2b705', 'target-arrow-color': '#f2b705', opacity: 1 } },
  ];
}

export function edgeKey(e) { return `${e.source}>${e.target}/${e.transport || ''}/${e.port || 0}`; }

export function nodeLabel(n) {
  if (!n) return '';
  if (n.app) return n.owner ? `${n.app}\n${n.owner}` : n.app;
  return (n.addresses && n.addresses[0]) || n.id.replace(/^ip:/, '');
}

// health: red above 5 % errors, amber above 1 % or when p95 is far above the edge's own median.
export function health(s, key, e) {
  const ratio = e.requests ? e.errors / e.requests : 0;
  if (ratio > 0.05) return 'red';
  if (ratio > 0.01) return 'amber';
  const hist = s.history.get(key);
  if (hist && hist.length >= 5 && e.latency_p95_ms > 0) {
    const sorted = [...hist].sort((a, b) => a - b);
    const median = sorted[sorted.length >> 1];
    if (median > 0 && e.latency_p95_ms > 3 * median) return 'amber';
  }
  return 'green';
}
const COLORS = { red: '#d62728', amber: '#f0a202', green: '#2ca02c' };

function widthOf(s, e) {
  const v = s.widthBy === 'requests' ? e.requests : e.bytes;
  return Math.min(12, 1 + Math.log10(1 + (v || 0)) * (s.widthBy === 'requests' ? 1.6 : 1.1));
}

async function refresh(s) {
  const params = { since: '5m', level: s.level, app: s.app, owner: s.owner, protocol: s.protocol };
  let g;
  try {
    g = await api('/api/v1/graph' + qs(params));
    clearError('graph');
  } catch (err) {
    reportError('graph', err);
    s.status.textContent = 'not updated: see above';
    return;
  }
  const t0 = performance.now();
  apply(s, g || { nodes: [], edges: [] });
  s.status.dataset.renderMs = Math.round(performance.now() - t0); // for tests: time to apply one poll
  s.status.textContent = `${s.nodes.size} nodes, ${s.edges.size} edges · updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
  refreshDetails(s);
}

function apply(s, g) {
  const cy = s.cy;
  const nodes = g.nodes || [], edges = (g.edges || []).filter((e) => e.source && e.target);
  const large = nodes.length > LARGE;
  if (large !== s.large) { s.large = large; cy.style(baseStyle(large)); }
  if (s.needLayout) {
    // A new question (level or filters): start from scratch.
    cy.elements().remove();
    s.nodes.clear(); s.edges.clear(); s.history.clear();
    for (const tr of s.rows.values()) tr.remove();
    s.rows.clear();
  }
  const newNodes = [];
  const nodeIds = new Set(nodes.map((n) => n.id));
  for (const e of edges) { // an edge may name a node the answer left out
    for (const id of [e.source, e.target]) if (!nodeIds.has(id)) { nodeIds.add(id); nodes.push({ id, kind: id.startsWith('ip:') ? 'address' : 'app', addresses: [] }); }
  }
  const edgeMap = new Map();
  for (const e of edges) {
    const k = edgeKey(e);
    const prev = edgeMap.get(k);
    if (prev) { // several protocols on one port pair come as one edge here
      for (const f of ['flows', 'bytes', 'packets', 'requests', 'errors', 'retransmits']) prev[f] += e[f] || 0;
      prev.latency_p95_ms = Math.max(prev.latency_p95_ms || 0, e.latency_p95_ms || 0);
    } else edgeMap.set(k, { ...e });
  }
  let layout = false;
  cy.batch(() => {
    for (const [id] of s.nodes) if (!nodeIds.has(id)) { cy.getElementById(id).remove(); s.nodes.delete(id); }
    for (const [k] of s.edges) if (!edgeMap.has(k)) { cy.getElementById(k).remove(); s.edges.delete(k); const tr = s.rows.get(k); if (tr) tr.remove(); s.rows.delete(k); }
    for (const n of nodes) {
      const data = { id: n.id, label: nodeLabel(n), kind: n.kind || '' };
      const el = cy.getElementById(n.id);
      if (el.nonempty()) { if (el.data('label') !== data.label) el.data(data); } else newNodes.push(data);
      s.nodes.set(n.id, n);
    }
    // Place newcomers next to a neighbour already on the map so existing positions stay.
    const added = cy.add(newNodes.map((d) => ({ group: 'nodes', data: d, position: s.needLayout ? { x: 0, y: 0 } : placeNear(s, d.id, edgeMap) })));
    const newEdges = [];
    for (const [k, e] of edgeMap) {
      const hist = s.history.get(k) || [];
      e.health = health(s, k, e);
      const color = COLORS[e.health];
      if (e.latency_p95_ms > 0) { hist.push(e.latency_p95_ms); if (hist.length > 60) hist.shift(); s.history.set(k, hist); }
      const data = { id: k, source: e.source, target: e.target, color, w: widthOf(s, e) };
      const el = cy.getElementById(k);
      if (el.nonempty()) { if (el.data('color') !== color || el.data('w') !== data.w) el.data({ color, w: data.w }); } else newEdges.push({ group: 'edges', data });
      s.edges.set(k, e);
    }
    cy.add(newEdges);
    layout = s.needLayout && added.nonempty();
  });
  // With nothing to show yet, the first data to arrive is laid out from scratch.
  if (layout) runLayout(cy, large);
  if (nodes.length) s.needLayout = false;
  s.empty.hidden = nodes.length > 0;
  renderEdgeList(s);
}

function placeNear(s, id, edgeMap) {
  const cy = s.cy;
  for (const e of edgeMap.values()) {
    const other = e.source === id ? e.target : e.target === id ? e.source : null;
    if (!other) continue;
    const o = cy.getElementById(other);
    if (o.nonempty()) { const p = o.position(); return { x: p.x + 60 * (Math.random() - 0.5) + 30, y: p.y + 60 * (Math.random() - 0.5) + 30 }; }
  }
  const bb = cy.elements().boundingBox();
  if (!isFinite(bb.x2)) return { x: 0, y: 0 };
  return { x: bb.x2 + 40, y: bb.y1 + Math.random() * Math.max(bb.h, 100) };
}

function runLayout(cy, large) {
  const n = cy.nodes().length;
  const opts = large
    ? { name: 'concentric', animate: false, fit: true, padding: 20, minNodeSpacing: 6, concentric: (nd) => nd.degree(), levelWidth: () => 3 }
    : n > 40
      ? { name: 'cose', animate: false, fit: true, padding: 30, numIter: 400, randomize: true, nodeRepulsion: () => 8000, idealEdgeLength: () => 70 }
      : { name: 'cose', animate: false, fit: true, padding: 40, numIter: 1000, randomize: true, nodeRepulsion: () => 12000, idealEdgeLength: () => 90 };
  cy.layout(opts).run();
}

function applyEdgeStyle(s) {
  s.cy.batch(() => { for (const [k, e] of s.edges) s.cy.getElementById(k).data('w', widthOf(s, e)); });
}

function nodeName(s, id) {
  const n = s.nodes.get(id);
  return n ? nodeLabel(n).replace('\n', ' · ') : id;
}

// The edge list mirrors the map as a table (keyed rows, updated in place).
function renderEdgeList(s) {
  const frag = document.createDocumentFragment();
  for (const [k, e] of s.edges) {
    let tr = s.rows.get(k);
    const cells = [nodeName(s, e.source), nodeName(s, e.target), e.port ? `${e.transport || ''} ${e.port}`.trim() : (e.transport || ''),
      e.protocol || '', fmtNum(e.requests), fmtNum(e.errors), fmtMs(e.latency_p95_ms), fmtBytes(e.bytes)];
    if (!tr) {
      tr = h('tr', { 'data-testid': 'edge-row', 'data-source': e.source, 'data-target': e.target, 'data-port': e.port || 0, class: 'clickable', tabindex: 0,
        onclick: () => openEdge(s, k), onkeydown: (ev) => { if (ev.key === 'Enter') openEdge(s, k); } },
      cells.map((c, i) => h('td', { class: i >= 4 ? 'num' : null }, c)));
      s.rows.set(k, tr);
      frag.append(tr);
    } else {
      const tds = tr.children;
      for (let i = 0; i < cells.length; i++) if (tds[i].textContent !== cells[i]) tds[i].textContent = cells[i];
    }
    if (tr.dataset.health !== e.health) tr.dataset.health = e.health;
  }
  s.edgeBody.append(frag);
}
