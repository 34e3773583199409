// The live service map: /api/v1/graph polled every 2 s into one long-lived cytoscape instance.
// Updates are applied in place (positions kept); only a change of level or filters, or the first
// data, lays the graph out again. Large graphs get a cheap layout and a lighter style so that the
// first render of 500 nodes / 2,000 edges stays well under 3 s.
//
// Small graphs are laid out in columns by call direction (see layeredPositions), computed here and
// applied as a 'preset' layout, and nodes that arrive later are put in the nearest free place
// (placeNewcomers). Both are deterministic and measure each node with its label, so the same graph
// always looks the same and no two nodes overlap.
import cytoscape from 'cytoscape';
import { h, api, qs, reportError, clearError, fmtNum, fmtBytes, fmtMs, poller } from './util.js';
import { openEdge, openNode, closeDetails, refreshDetails, detailsPanel } from './details.js';

const LARGE = 150; // nodes above which layout and style turn cheap
const LAYERED = 40; // nodes up to which the map is laid out in columns (see layeredPositions)
const GAP_X = 90; // model px between the boxes (labels included) of neighbouring columns: room to see and click an edge
const GAP_Y = 24; // model px between boxes stacked in a column
const FIT_ZOOM = 1.5; // a small graph is centred at most this large rather than zoomed to fill the canvas

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
  let added = cy.collection();
  cy.batch(() => {
    for (const [id] of s.nodes) if (!nodeIds.has(id)) { cy.getElementById(id).remove(); s.nodes.delete(id); }
    for (const [k] of s.edges) if (!edgeMap.has(k)) { cy.getElementById(k).remove(); s.edges.delete(k); const tr = s.rows.get(k); if (tr) tr.remove(); s.rows.delete(k); }
    for (const n of nodes) {
      const data = { id: n.id, label: nodeLabel(n), kind: n.kind || '' };
      const el = cy.getElementById(n.id);
      if (el.nonempty()) { if (el.data('label') !== data.label) el.data(data); } else newNodes.push(data);
      s.nodes.set(n.id, n);
    }
    // Newcomers start at the origin: the layout, or placeNewcomers once their labels are measured,
    // moves them.
    added = cy.add(newNodes.map((d) => ({ group: 'nodes', data: d, position: { x: 0, y: 0 } })));
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
    // With nothing kept from before (the first data, a new question, or a map that had emptied),
    // there are no places to keep: lay out from scratch.
    layout = added.nonempty() && (s.needLayout || cy.nodes().not(added).empty());
  });
  // Newcomers to a map already drawn are fitted around the nodes there, which keep their places.
  if (layout) runLayout(cy, large);
  else if (added.nonempty()) placeNewcomers(cy, added, edgeMap);
  if (nodes.length) s.needLayout = false;
  s.empty.hidden = nodes.length > 0;
  renderEdgeList(s);
}

function runLayout(cy, large) {
  const n = cy.nodes().length;
  if (!large && n <= LAYERED) {
    cy.layout({ name: 'preset', positions: layeredPositions(cy), fit: false, animate: false }).run();
    fitCapped(cy);
    return;
  }
  // Between LAYERED and LARGE nodes cose stays: columns of a hundred nodes would be far taller
  // than the canvas. It can still pack nodes together (see layeredPositions); the large layout
  // and the layered one cannot.
  const opts = large
    ? { name: 'concentric', animate: false, fit: true, padding: 20, minNodeSpacing: 6, concentric: (nd) => nd.degree(), levelWidth: () => 3 }
    : { name: 'cose', animate: false, fit: true, padding: 30, numIter: 400, randomize: true, nodeRepulsion: () => 8000, idealEdgeLength: () => 70 };
  cy.layout(opts).run();
}

// fitCapped shows the whole graph without blowing a handful of nodes up to the canvas's size.
function fitCapped(cy) {
  cy.fit(undefined, 40);
  if (cy.zoom() > FIT_ZOOM) { cy.zoom(FIT_ZOOM); cy.center(); }
}

const byId = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

// nodeBox is a node's extent with its label, relative to its position: the label hangs below the
// node and can be wider than it, so spacing by the node alone would let labels overlap.
function nodeBox(node) {
  const bb = node.boundingBox({ includeLabels: true, includeOverlays: false });
  const p = node.position();
  return { w: bb.w, h: bb.h, top: p.y - bb.y1 };
}

// layeredPositions lays a graph out left to right by call direction: callers in the left column,
// the services they call to the right of them, in the manner of Sugiyama's layered drawing.
// cose, used here before, pulled every edge towards its ideal length with a force that attracts
// even when the edge is already shorter, and pushed overlapping nodes apart only weakly: from
// random starting points, nodes that came close stuck together, more often the more edges
// joined them. The layered drawing cannot overlap (each node gets its own slot, sized with its
// label), depends only on the graph (ids are sorted first, whatever the order of the answer), and
// reads the way a service map is read: who calls whom.
//
//  1. Cycles (db → api beside api → db) are broken by a depth-first search from the nodes that
//     only call, then the rest, by id; an edge back to a node on the search's path is turned
//     round for the layout only. Every edge then joins two different columns, so none is drawn
//     along a column through the nodes in it.
//  2. A node's column is its longest path from a caller-only node; a caller-only node then moves
//     right to just before the nearest service it calls, which shortens its edges.
//  3. An edge that spans several columns holds an empty slot in each column it crosses, so the
//     line tends to pass between nodes rather than through one.
//  4. A few sweeps order each column by the mean place of its neighbours in the column before
//     (or after), which uncrosses edges; ties keep the earlier order, so the result is stable.
//  5. Columns are as wide as their widest label plus GAP_X; rows as tall as the tallest label
//     plus GAP_Y. Each column then slides towards its neighbours, keeping its order and its rows
//     apart (the pool-adjacent-violators fit); empty slots weigh more than nodes, so a long edge
//     runs nearly straight through its empty slots instead of across the labels beside them.
function layeredPositions(cy) {
  const ids = cy.nodes().map((n) => n.id()).sort(byId);
  const out = new Map(ids.map((id) => [id, new Set()]));
  cy.edges().forEach((e) => {
    const a = e.source().id(), b = e.target().id();
    if (a !== b) out.get(a).add(b); // a call to itself has no direction to show
  });
  for (const [id, ts] of out) out.set(id, [...ts].sort(byId));
  const calledBy = new Map(ids.map((id) => [id, 0]));
  for (const ts of out.values()) for (const t of ts) calledBy.set(t, calledBy.get(t) + 1);

  // 1. Break cycles.
  const dag = new Map(ids.map((id) => [id, new Set()]));
  const seen = new Map(); // 1: on the search's path; 2: done
  const visit = (u) => {
    seen.set(u, 1);
    for (const v of out.get(u)) {
      if (seen.get(v) === 1) dag.get(v).add(u);
      else { dag.get(u).add(v); if (!seen.has(v)) visit(v); }
    }
    seen.set(u, 2);
  };
  for (const id of [...ids.filter((id) => calledBy.get(id) === 0), ...ids]) if (!seen.has(id)) visit(id);

  // 2. Columns.
  const col = new Map(ids.map((id) => [id, 0]));
  const waiting = new Map(ids.map((id) => [id, 0]));
  for (const ts of dag.values()) for (const t of ts) waiting.set(t, waiting.get(t) + 1);
  const order = ids.filter((id) => waiting.get(id) === 0);
  for (let i = 0; i < order.length; i++) {
    const u = order[i];
    for (const v of dag.get(u)) {
      col.set(v, Math.max(col.get(v), col.get(u) + 1));
      waiting.set(v, waiting.get(v) - 1);
      if (waiting.get(v) === 0) order.push(v);
    }
  }
  const called = new Set([...dag.values()].flatMap((ts) => [...ts]));
  for (const id of ids) {
    if (!called.has(id) && dag.get(id).size) col.set(id, Math.min(...[...dag.get(id)].map((t) => col.get(t))) - 1);
  }

  // 3. Slots, with empty ones along long edges. Every column from 0 to the last holds a node: one
  // in column k > 0 has a caller in column k - 1, and that caller stays put in step 2.
  const columns = Array.from({ length: Math.max(...col.values()) + 1 }, () => []);
  const item = new Map();
  const put = (c, it) => { columns[c].push(it); return it; };
  for (const id of ids) item.set(id, put(col.get(id), { id, up: [], down: [] }));
  for (const u of ids) {
    for (const v of dag.get(u)) {
      let prev = item.get(u);
      for (let c = col.get(u) + 1; c <= col.get(v); c++) {
        const next = c === col.get(v) ? item.get(v) : put(c, { id: null, up: [], down: [] });
        prev.down.push(next); next.up.push(prev);
        prev = next;
      }
    }
  }

  // 4. Order within columns.
  const place = (c) => { const xs = columns[c]; xs.forEach((it, i) => { it.at = i - (xs.length - 1) / 2; }); };
  columns.forEach((_, c) => place(c));
  const sweep = (c, side) => {
    const xs = columns[c];
    const key = new Map(xs.map((it) => [it, it[side].length ? it[side].reduce((sum, o) => sum + o.at, 0) / it[side].length : it.at]));
    xs.sort((a, b) => key.get(a) - key.get(b) || a.at - b.at);
    place(c);
  };
  for (let round = 0; round < 4; round++) {
    for (let c = 1; c < columns.length; c++) sweep(c, 'up');
    for (let c = columns.length - 2; c >= 0; c--) sweep(c, 'down');
  }

  // 5. Coordinates.
  const box = new Map(ids.map((id) => [id, nodeBox(cy.getElementById(id))]));
  const rowH = Math.max(...[...box.values()].map((b) => b.h)) + GAP_Y;
  const colW = columns.map((xs) => Math.max(0, ...xs.filter((it) => it.id).map((it) => box.get(it.id).w)));
  const weight = (it) => (it.id ? 1 : 8);
  for (const xs of columns) for (const it of xs) it.y = it.at * rowH;
  const slide = (xs) => {
    const blocks = [];
    xs.forEach((it, i) => {
      const nb = [...it.up, ...it.down];
      const want = nb.length ? nb.reduce((sum, o) => sum + weight(o) * o.y, 0) / nb.reduce((sum, o) => sum + weight(o), 0) : it.y;
      let b = { sum: weight(it) * (want - i * rowH), w: weight(it), n: 1 };
      while (blocks.length && blocks.at(-1).sum / blocks.at(-1).w > b.sum / b.w) {
        const p = blocks.pop();
        b = { sum: p.sum + b.sum, w: p.w + b.w, n: p.n + b.n };
      }
      blocks.push(b);
    });
    let i = 0;
    for (const b of blocks) for (let k = 0; k < b.n; k++, i++) xs[i].y = b.sum / b.w + i * rowH;
  };
  for (let round = 0; round < 8; round++) {
    for (let c = 0; c < columns.length; c++) slide(columns[c]);
    for (let c = columns.length - 1; c >= 0; c--) slide(columns[c]);
  }
  const pos = {};
  let x = 0;
  columns.forEach((xs, c) => {
    if (c > 0) x += colW[c - 1] / 2 + GAP_X + colW[c] / 2;
    for (const it of xs) if (it.id) pos[it.id] = { x, y: Math.round(it.y) };
  });
  return (node) => pos[node.id()];
}

// placeNewcomers puts nodes that arrive after the layout beside a neighbour already on the map (a
// service to the right of its caller, a caller to the left of its service; the first neighbour by
// id) or, with none, to the right of everything, then moves each down or up a row at a time until
// its box, label included, clears every other node's by GAP_Y. Nothing already on the map moves,
// and the same map and newcomers give the same places (the code before put newcomers at a random
// offset from a neighbour, often on top of another node).
function placeNewcomers(cy, added, edgeMap) {
  const opts = { includeLabels: true, includeOverlays: false };
  const boxes = cy.nodes().not(added).map((n) => n.boundingBox(opts));
  const clear = (b) => boxes.every((o) => b.x2 + GAP_Y <= o.x1 || o.x2 + GAP_Y <= b.x1 || b.y2 + GAP_Y <= o.y1 || o.y2 + GAP_Y <= b.y1);
  const neighbours = new Map();
  const link = (id, other, side) => { if (!neighbours.has(id)) neighbours.set(id, []); neighbours.get(id).push({ id: other, side }); };
  for (const e of edgeMap.values()) {
    if (e.source === e.target) continue;
    link(e.target, e.source, 1);
    link(e.source, e.target, -1);
  }
  const waiting = new Set(added.map((n) => n.id())); // newcomers not placed yet: no anchor
  for (const node of added.toArray().sort((a, b) => byId(a.id(), b.id()))) {
    const own = nodeBox(node);
    const near = (neighbours.get(node.id()) || []).filter((nb) => !waiting.has(nb.id))
      .sort((a, b) => byId(a.id, b.id) || a.side - b.side)[0];
    let x = 0, y = 0;
    if (near) {
      const o = cy.getElementById(near.id);
      x = o.position('x') + near.side * (o.boundingBox(opts).w / 2 + GAP_X + own.w / 2);
      y = o.position('y');
    } else if (boxes.length) {
      x = Math.max(...boxes.map((b) => b.x2)) + GAP_X + own.w / 2;
      y = Math.min(...boxes.map((b) => b.y1)) + own.top;
    }
    // Rows 0, +1, -1, +2, -2 … away: the boxes are finitely many, so a free row is near.
    for (let k = 0; ; k++) {
      const yk = y + (k % 2 ? 1 : -1) * Math.ceil(k / 2) * (own.h + GAP_Y);
      const b = { x1: x - own.w / 2, x2: x + own.w / 2, y1: yk - own.top, y2: yk - own.top + own.h };
      if (clear(b)) { y = yk; boxes.push(b); break; }
    }
    node.position({ x, y });
    waiting.delete(node.id());
  }
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
