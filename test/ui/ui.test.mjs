// The web UI's acceptance scenarios, against the three-tier lab that TestWebUI in
// cmd/quanyu/ui_test.go starts: the map names the lab's applications and owners and clicking an
// edge shows the figures analysis counted; the map lays its nodes out apart, with no node on an
// edge's midpoint, and in the same places on every load of the same graph; the flows table filters by port and opens a
// conversation's trace; a subscription that mix refuses shows mix's error beside the field it
// names; the alerts page lists the firing and resolved alerts and the new edge analysis holds,
// with both ends' owners, and an alert's page shows its fields and evidence; the edge details
// draw the forecast rule's band; the page never asks anything of a host other than 127.0.0.1;
// each view is photographed.
//
// Inputs (environment): QUANYU_UI_URL (analysis's HTTP address), QUANYU_UI_SCREENSHOTS (a
// directory), QUANYU_UI_EXPECT (JSON: nodes, edges, click, flows, subscription, alerts; see
// ui_test.go).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  env, expectations, launch, foreignRequests, shot, byTestId, routeURL, firstNumber,
  waitMapSettled, clickEdge,
} from './lib.mjs';

const base = env('QUANYU_UI_URL');
const want = expectations();
const T = 20_000; // per wait: the lab's data is already in analysis, so this is generous
let b;

before(async () => {
  b = await launch();
  b.page.setDefaultTimeout(T);
});

after(async () => {
  if (b.consoleErrors.length) console.error(`browser console errors:\n  ${b.consoleErrors.join('\n  ')}`);
  await b?.close();
});

// scenario photographs the page when a step fails, so the artifact shows what the browser saw.
function scenario(name, fn) {
  test(name, async () => {
    try {
      await fn(b.page);
    } catch (err) {
      await shot(b.page, `FAILED-${name.split(':')[0]}`).catch(() => {});
      throw err;
    }
  });
}

// cyGraph reads the map as cytoscape holds it: each node's application and owner (from its data,
// or its "app\nowner" label) and each edge's ends.
async function cyGraph(page) {
  return page.evaluate(() => {
    const cy = window.__quanyu.cy;
    const label = (n) => String(n.data('label') ?? n.style('label') ?? '');
    const nodes = cy.nodes().map((n) => {
      const [lApp, lOwner] = label(n).split('\n');
      return { id: n.id(), app: n.data('app') ?? lApp, owner: n.data('owner') ?? lOwner, label: label(n) };
    });
    const edges = cy.edges().map((e) => ({ id: e.id(), source: e.source().id(), target: e.target().id() }));
    return { nodes, edges };
  });
}

// mapLayout reads how cytoscape laid the map out: each node's position in model coordinates
// (which pan and zoom leave alone), the graph as one string of node and edge ids, the pairs of
// nodes whose boxes (labels included) overlap, and the edges whose midpoint lies on a node other
// than their own ends, where a click meant for the edge would open the node.
async function mapLayout(page) {
  return page.evaluate(() => {
    const cy = window.__quanyu.cy;
    const nodes = cy.nodes().toArray();
    const inside = (p, b) => p.x >= b.x1 && p.x <= b.x2 && p.y >= b.y1 && p.y <= b.y2;
    const overlap = (a, b) => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
    const overlaps = [];
    for (let i = 0; i < nodes.length; i++) {
      for (let j = i + 1; j < nodes.length; j++) {
        const a = nodes[i].boundingBox(), b = nodes[j].boundingBox();
        if (overlap(a, b)) overlaps.push(`${nodes[i].id()} ${JSON.stringify(a)} and ${nodes[j].id()} ${JSON.stringify(b)}`);
      }
    }
    const onNode = [];
    cy.edges().forEach((e) => {
      const m = e.midpoint();
      for (const n of nodes) {
        if (n.same(e.source()) || n.same(e.target())) continue;
        if (inside(m, n.boundingBox({ includeLabels: false }))) onNode.push(`${e.id()} (midpoint ${Math.round(m.x)},${Math.round(m.y)}) on ${n.id()}`);
      }
    });
    const graph = [...nodes.map((n) => n.id()).sort(), '|', ...cy.edges().map((e) => e.id()).sort()].join(' ');
    const positions = Object.fromEntries(nodes.map((n) => [n.id(), n.position()]));
    return { graph, positions, overlaps, onNode };
  });
}

function assertApart(layout, when) {
  assert.deepEqual(layout.overlaps, [], `${when}: nodes overlap; positions ${JSON.stringify(layout.positions)}`);
  assert.deepEqual(layout.onNode, [], `${when}: a node lies on an edge's midpoint; positions ${JSON.stringify(layout.positions)}`);
}

scenario('a: map shows the applications, owners and edges; clicking an edge shows its figures', async (page) => {
  await page.goto(routeURL(base, '#/map'));
  await page.locator(byTestId('view-map')).waitFor();
  await waitMapSettled(page, want.nodes.length, T);
  await shot(page, 'map');
  // The click below aims at an edge's midpoint: a node there, or nodes on top of each other, would
  // take it.
  assertApart(await mapLayout(page), 'first load');

  const g = await cyGraph(page);
  const appOf = Object.fromEntries(g.nodes.map((n) => [n.id, n.app]));
  for (const n of want.nodes) {
    const got = g.nodes.find((x) => x.app === n.app);
    assert.ok(got, `no map node for ${n.app}; nodes: ${JSON.stringify(g.nodes)}`);
    assert.equal(got.owner, n.owner, `owner of ${n.app} (label ${JSON.stringify(got.label)})`);
    assert.ok(got.label.includes(n.app) && got.label.includes(n.owner),
      `label of ${n.app} should be "app\\nowner", is ${JSON.stringify(got.label)}`);
  }
  for (const e of want.edges) {
    assert.ok(g.edges.some((x) => appOf[x.source] === e.sourceApp && appOf[x.target] === e.targetApp),
      `no map edge ${e.sourceApp} → ${e.targetApp}; edges: ${JSON.stringify(g.edges)}`);
  }
  // The edge list names the same edges, by node id or application.
  const rows = await page.locator(byTestId('edge-row')).evaluateAll((els) =>
    els.map((el) => ({ source: el.dataset.source, target: el.dataset.target })));
  for (const e of want.edges) {
    const end = (v, id, app) => v === id || v === app;
    assert.ok(rows.some((r) => end(r.source, e.source, e.sourceApp) && end(r.target, e.target, e.targetApp)),
      `no edge-row for ${e.sourceApp} → ${e.targetApp}; rows: ${JSON.stringify(rows)}`);
  }

  const c = want.click;
  const edge = g.edges.find((x) => appOf[x.source] === c.sourceApp && appOf[x.target] === c.targetApp);
  assert.ok(edge, `no map edge ${c.sourceApp} → ${c.targetApp} to click`);
  const at = await clickEdge(page, edge.id);
  const details = page.locator(byTestId('details'));
  await details.waitFor().catch((err) => {
    throw new Error(`clicking edge ${edge.id} at (${at.x}, ${at.y}) opened no details: ${err.message}`);
  });
  const req = page.locator(byTestId('detail-requests'));
  // The figure can arrive after the panel: wait for it rather than read it once.
  await page.waitForFunction(
    ([sel, n]) => {
      const el = document.querySelector(sel);
      if (!el) return false;
      const m = /-?\d[\d,\u00a0\u202f ]*/.exec(el.textContent);
      return !!m && Number(m[0].replace(/[,\u00a0\u202f ]/g, '')) === n;
    },
    [byTestId('detail-requests'), c.requests],
    { timeout: T },
  ).catch(async () => {
    throw new Error(`detail-requests shows ${JSON.stringify(await req.textContent())}, want ${c.requests} for ${c.sourceApp} → ${c.targetApp}`);
  });
  for (const id of ['detail-errors', 'detail-latency-p95', 'detail-bytes', 'detail-flows', 'detail-client-owner', 'detail-server-owner']) {
    await page.locator(byTestId(id)).waitFor();
  }
  assert.equal(firstNumber(await page.locator(byTestId('detail-errors')).textContent()), 0, 'detail-errors');
  assert.ok(firstNumber(await page.locator(byTestId('detail-bytes')).textContent()) > 0, 'detail-bytes should be > 0');
  assert.ok(firstNumber(await page.locator(byTestId('detail-flows')).textContent()) > 0, 'detail-flows should be > 0');
  assert.match(await page.locator(byTestId('detail-client-owner')).textContent(), new RegExp(c.clientOwner));
  assert.match(await page.locator(byTestId('detail-server-owner')).textContent(), new RegExp(c.serverOwner));
  // Both ends' contacts come from mix's catalog, asked for once for the two of them.
  for (const [id, contact] of [['detail-client-owner', c.clientContact], ['detail-server-owner', c.serverContact]]) {
    const link = page.locator(`${byTestId(id)} a.owner-contact`);
    await link.waitFor().catch(async () => {
      throw new Error(`${id} has no contact link: ${JSON.stringify(await page.locator(byTestId(id)).textContent())}`);
    });
    assert.equal(await link.getAttribute('href'), `mailto:${contact}`, `${id} contact`);
  }
  // The edge's top L7 endpoints hold the one the client called, with its request count, and the
  // time series are drawn (uPlot renders each chart into a canvas).
  const ep = page.locator(byTestId('endpoint-row')).filter({ hasText: 'GET' }).filter({ hasText: '/orders' });
  await ep.first().waitFor();
  assert.match(await ep.first().textContent(), new RegExp(String(c.requests)), 'endpoint-row GET /orders');
  await page.locator(`${byTestId('detail-charts')} canvas`).first().waitFor();
  await shot(page, 'map-details');

  // The forecast rule on this edge is drawn with its points (observed, forecast, band), titled
  // with the rule, the metric and the series analysis named.
  const f = want.alerts.forecast;
  const fc = page.locator(`${byTestId('forecast-chart')}[data-rule="${f.rule}"]`);
  await fc.waitFor().catch(async () => {
    const shown = await page.locator(byTestId('forecast-chart')).evaluateAll((els) => els.map((e) => ({ ...e.dataset })));
    throw new Error(`no forecast-chart for rule ${f.rule} on ${c.sourceApp} → ${c.targetApp}; charts ${JSON.stringify(shown)}`);
  });
  const title = await fc.locator(byTestId('forecast-chart-title')).textContent();
  for (const part of [f.rule, f.metric, f.series]) assert.ok(title.includes(part), `forecast-chart-title ${JSON.stringify(title)} should name ${part}`);
  assert.equal(await fc.getAttribute('data-metric'), f.metric, 'forecast-chart data-metric');
  assert.ok(Number(await fc.getAttribute('data-points')) >= 2, `forecast-chart has ${await fc.getAttribute('data-points')} points, analysis had at least 2`);
  await fc.locator('canvas').first().waitFor();
  await fc.scrollIntoViewIfNeeded();
  await shot(page, 'map-forecast');
});

scenario('g: the map lays its nodes out apart, and the same graph in the same places on every load', async (page) => {
  await page.goto(routeURL(base, '#/map'));
  await page.locator(byTestId('view-map')).waitFor();
  await waitMapSettled(page, want.nodes.length, T);
  let before = await mapLayout(page);
  assertApart(before, 'before reloading');
  // The lab's graph is complete before the browser starts, but an edge could still appear between
  // two loads: positions are compared between two loads of the same graph.
  let after;
  for (let i = 0; i < 3; i++) {
    await page.reload();
    await page.locator(byTestId('view-map')).waitFor();
    await waitMapSettled(page, want.nodes.length, T);
    after = await mapLayout(page);
    if (after.graph === before.graph) break;
    before = after;
  }
  assert.equal(after.graph, before.graph, 'the graph changed on each of 3 reloads, so no two loads can be compared');
  assertApart(after, 'after reloading');
  for (const [id, p] of Object.entries(before.positions)) {
    const q = after.positions[id];
    assert.ok(q && Math.abs(p.x - q.x) <= 1 && Math.abs(p.y - q.y) <= 1,
      `${id} was at ${JSON.stringify(p)} and is at ${JSON.stringify(q)} after a reload of the same graph (${before.graph})`);
  }
  console.error(`map layout: ${Object.keys(after.positions).length} nodes, none overlapping, the same after a reload`);
});

scenario('b: flows table filters by port and opens a trace', async (page) => {
  const f = want.flows;
  await page.goto(routeURL(base, '#/flows'));
  await page.locator(byTestId('view-flows')).waitFor();
  const rows = page.locator(byTestId('flow-row'));
  await rows.first().waitFor();
  // The server endpoint cell reads ADDR:PORT; innerText keeps cells apart (textContent runs the
  // port into the next cell's figure).
  const port = new RegExp(`:${f.port}(?!\\d)`);
  const all = await rows.allInnerTexts();
  assert.ok(all.some((t) => !port.test(t)),
    `before filtering, the table should list conversations on other ports than ${f.port} too: ${JSON.stringify(all)}`);
  await shot(page, 'flows');

  await page.locator(byTestId('flows-filter-port')).fill(String(f.port));
  await page.locator(byTestId('flows-apply')).click();
  // Narrowed: every row is on the port, and there is at least one.
  await page.waitForFunction(
    ([sel, p]) => {
      const rs = [...document.querySelectorAll(sel)];
      return rs.length > 0 && rs.every((r) => new RegExp(`:${p}(?!\\d)`).test(r.innerText));
    },
    [byTestId('flow-row'), f.port],
    { timeout: T },
  ).catch(async () => {
    throw new Error(`after filtering on port ${f.port} the rows are ${JSON.stringify(await rows.allInnerTexts())}`);
  });
  const narrowed = await rows.allInnerTexts();
  assert.ok(narrowed.length <= all.length, 'filtering added rows');
  await shot(page, 'flows-filtered');

  const row = rows.first();
  const cid = await row.getAttribute('data-cid');
  assert.ok(cid, 'flow-row has no data-cid');
  await row.click();
  await page.locator(byTestId('view-trace')).waitFor();
  await page.locator(byTestId('trace-item')).first().waitFor();
  const hash = decodeURIComponent(new URL(page.url()).hash);
  assert.equal(hash, `#/trace/${cid}`, 'the trace route names the conversation clicked');
  const kinds = await page.locator(byTestId('trace-item')).evaluateAll((els) => els.map((e) => e.dataset.kind));
  assert.ok(kinds.length > 0 && kinds.every(Boolean), `trace-items need a data-kind: ${JSON.stringify(kinds)}`);
  console.error(`trace ${cid}: ${kinds.length} items (${[...new Set(kinds)].join(', ')})`);
  await shot(page, 'trace');
});

scenario('agents view loads with mix reachable', async (page) => {
  await page.goto(routeURL(base, '#/agents'));
  await page.locator(byTestId('view-agents')).waitFor();
  await page.locator(`${byTestId('agents-table')}, ${byTestId('agents-empty')}`).first().waitFor();
  assert.equal(await page.locator(byTestId('mix-unreachable')).count(), 0,
    'mix-unreachable is shown, but analysis proxies a running mix');
  // Both agents that send to this analysis are listed.
  for (const id of want.agents ?? []) {
    await page.locator(`${byTestId('agent-row')}[data-id="${id}"]`).waitFor();
  }
  await shot(page, 'agents');
});

scenario('c: a subscription mix refuses shows the field error; a valid one is saved', async (page) => {
  const s = want.subscription;
  await page.goto(routeURL(base, '#/subscriptions'));
  await page.locator(byTestId('view-subscriptions')).waitFor();
  await page.locator(byTestId('subs-table')).waitFor();
  await shot(page, 'subscriptions');

  const editor = page.locator(byTestId('sub-editor'));
  await editor.fill(s.bad);
  await page.locator(byTestId('sub-save')).click();
  const fieldErr = page.locator(`${byTestId('field-error')}[data-path*="${s.badPath}"]`);
  await fieldErr.first().waitFor().catch(async () => {
    const shown = await page.locator(byTestId('field-error')).evaluateAll((els) =>
      els.map((e) => ({ path: e.dataset.path, text: e.textContent })));
    const banner = await page.locator(`${byTestId('sub-error')}, ${byTestId('error-banner')}`).allTextContents();
    throw new Error(`no field-error for ${s.badPath}; field errors ${JSON.stringify(shown)}, other errors ${JSON.stringify(banner)}`);
  });
  assert.ok((await fieldErr.first().textContent()).trim().length > 0, 'the field error says nothing');
  assert.equal(await page.locator(byTestId('sub-saved')).count(), 0, 'a refused subscription is reported saved');
  assert.equal(await page.locator(`${byTestId('sub-row')}[data-id="${s.badId}"]`).count(), 0,
    'the refused subscription is listed');
  await shot(page, 'subscription-error');

  await editor.fill(s.good);
  await page.locator(byTestId('sub-save')).click();
  await page.locator(byTestId('sub-saved')).waitFor();
  await page.locator(`${byTestId('sub-row')}[data-id="${s.goodId}"]`).waitFor();
  assert.equal(await page.locator(byTestId('field-error')).count(), 0, 'field errors outlive a successful save');
  await shot(page, 'subscription-saved');
});

// cell reads one column of a row, by its data-col.
const cell = (row, col) => row.locator(`[data-col="${col}"]`);

scenario('e: the alerts page lists active and resolved alerts with both owners, and new edges', async (page) => {
  const w = want.alerts;
  const f = w.firing;
  await page.goto(routeURL(base, '#/alerts'));
  await page.locator(byTestId('view-alerts')).waitFor();
  await page.locator(byTestId('alerts-active')).waitFor();
  const row = page.locator(`${byTestId('alert-row')}[data-id="${f.id}"]`);
  await row.waitFor().catch(async () => {
    throw new Error(`no alert-row ${f.id}; rows ${JSON.stringify(await page.locator(byTestId('alert-row')).allInnerTexts())}`);
  });
  assert.equal(await row.getAttribute('data-state'), 'firing', 'alert-row data-state');
  assert.equal((await cell(row, 'state').textContent()).trim(), 'firing');
  assert.equal((await cell(row, 'rule').textContent()).trim(), f.rule);
  assert.equal((await cell(row, 'series').textContent()).trim(), f.series);
  assert.equal((await cell(row, 'severity').textContent()).trim(), 'warning');
  // api calls db five times a second: the rate shows per second, above the threshold of 0.
  const value = (await cell(row, 'value').textContent()).trim();
  assert.match(value, /^\d+(\.\d+)?\/s$/, 'value of a request rate');
  assert.ok(firstNumber(value) > 0, `value ${value} should be above the threshold`);
  assert.equal((await cell(row, 'condition').textContent()).trim(), '> 0/s');
  for (const [col, owner, contact] of [['client', f.clientOwner, f.clientContact], ['server', f.serverOwner, f.serverContact]]) {
    assert.match(await cell(row, col).textContent(), new RegExp(owner), `${col} owner`);
    assert.equal(await cell(row, col).locator('a.owner-contact').getAttribute('href'), `mailto:${contact}`, `${col} contact link`);
  }
  // The navigation's badge counts the firing alerts the table shows (both come from one poll).
  await page.waitForFunction(
    ([badge, rows]) => {
      const b = document.querySelector(badge);
      const n = document.querySelectorAll(rows).length;
      return b && !b.hidden && n > 0 && Number(b.textContent) === n;
    },
    [byTestId('nav-alerts-count'), `${byTestId('alert-row')}[data-state="firing"]`],
    { timeout: T },
  ).catch(async () => {
    throw new Error(`nav-alerts-count shows ${JSON.stringify(await page.locator(byTestId('nav-alerts-count')).textContent())}, firing rows ${await page.locator(`${byTestId('alert-row')}[data-state="firing"]`).count()}`);
  });

  // The 2 s poll updates rows in place: the same element is there after the next update (a
  // property, not an attribute, marks it: an update in place may rewrite attributes).
  await row.evaluate((el) => { el.quanyuKept = true; });
  const before = await page.locator(byTestId('alerts-status')).textContent();
  await page.waitForFunction(([sel, t]) => document.querySelector(sel).textContent !== t, [byTestId('alerts-status'), before], { timeout: T });
  assert.equal(await row.evaluate((el) => el.quanyuKept === true), true, 'the alert row was rebuilt by a poll instead of updated in place');

  // History: the client's burst fired the rule on client → api, which resolved when it ended.
  const hist = page.locator(`${byTestId('alerts-history')} ${byTestId('history-row')}[data-id="${w.resolved.id}"]`);
  await hist.waitFor();
  assert.equal(await hist.getAttribute('data-state'), 'resolved');
  assert.equal((await cell(hist, 'series').textContent()).trim(), w.resolved.series);
  assert.ok((await cell(hist, 'fired').textContent()).trim(), 'history row without a fired time');
  assert.doesNotMatch(await cell(hist, 'resolved').textContent(), /still firing|^\s*$/, 'history row resolved time');
  assert.match((await cell(hist, 'duration').textContent()).trim(), /^\d+ (s|min)/, 'history row duration');

  // Events: the client's burst came after analysis's first bucket, so client → api is a new edge.
  const evRow = page.locator(`${byTestId('events-list')} ${byTestId('event-row')}[data-kind="new_edge"]`).filter({ hasText: w.event });
  await evRow.first().waitFor();
  assert.equal((await cell(evRow.first(), 'series').textContent()).trim(), w.event);
  // A new_edge rule made that event an alert: firing, with no metric to show but the news.
  const ne = page.locator(`${byTestId('alert-row')}[data-id="${w.newEdge.id}"]`);
  await ne.waitFor();
  assert.equal(await ne.getAttribute('data-state'), 'firing', 'new-edge alert-row data-state');
  assert.equal((await cell(ne, 'series').textContent()).trim(), w.newEdge.series);
  assert.equal((await cell(ne, 'value').textContent()).trim(), 'new edge');
  assert.equal((await cell(ne, 'condition').textContent()).trim(), 'never seen before');
  await shot(page, 'alerts');

  // The alert's page: every field, the owners, the labels and annotations, the evidence.
  await cell(row, 'rule').locator('a').click();
  const detail = page.locator(byTestId('alert-detail'));
  await detail.waitFor();
  assert.equal(decodeURIComponent(new URL(page.url()).hash), `#/alerts/${f.id}`, 'the alert route names the alert clicked');
  const field = (name) => detail.locator(`${byTestId('alert-fields')} tr[data-field="${name}"] td`);
  assert.match(await field('rule').textContent(), new RegExp(`^${f.rule} \\(threshold\\)$`));
  assert.equal((await field('series').textContent()).trim(), f.series);
  assert.equal((await field('state').textContent()).trim(), 'firing');
  assert.equal((await field('threshold').textContent()).trim(), '> 0/s');
  assert.equal((await field('id').textContent()).trim(), f.id);
  assert.match(await page.locator(byTestId('alert-client-owner')).textContent(), new RegExp(`${f.clientOwner}.*${f.clientContact}`));
  assert.match(await page.locator(byTestId('alert-server-owner')).textContent(), new RegExp(`${f.serverOwner}.*${f.serverContact}`));
  const label = (k) => page.locator(`${byTestId('alert-labels')} tr[data-key="${k}"] td`);
  assert.equal((await label('alertname').textContent()).trim(), f.rule);
  assert.equal((await label('client_owner').textContent()).trim(), f.clientOwner);
  assert.equal((await label('server_owner').textContent()).trim(), f.serverOwner);
  const runbook = page.locator(`${byTestId('alert-annotations')} tr[data-key="runbook"] td a`);
  assert.equal(await runbook.getAttribute('href'), f.runbook, 'the runbook annotation is a link');
  const evidence = page.locator(byTestId('alert-evidence'));
  assert.equal(await evidence.getAttribute('data-state'), f.evidenceState, 'alert-evidence data-state');
  assert.equal((await page.locator(byTestId('evidence-state')).textContent()).trim(), f.evidenceState);
  assert.equal((await page.locator(byTestId('evidence-subscription')).textContent()).trim(), f.evidenceSubscription);
  await shot(page, 'alert');
});

scenario('f: an alert with captured evidence shows the flow trace and links to it', async (page) => {
  // The lab's agents take their subscriptions from files, so no evidence is ever captured in it:
  // this answers the alert's request with the real alert plus a real conversation of the lab as
  // its evidence, the way analysis attaches one.
  const f = want.alerts.firing;
  const get = async (path) => {
    const res = await fetch(new URL(path, base));
    assert.equal(res.status, 200, `GET ${path}`);
    return res.json();
  };
  const { flows } = await get('/api/v1/flows?limit=1');
  const cid = flows?.[0]?.flow?.community_id;
  assert.ok(cid, `the lab has no flow with a community id: ${JSON.stringify(flows)}`);
  const conv = await get(`/api/v1/flows/${encodeURIComponent(cid)}`);
  const alert = await get(`/api/v1/alerts/${encodeURIComponent(f.id)}`);
  alert.evidence = { ...alert.evidence, state: 'captured', community_id: cid, agent: conv.items?.[0]?.agent ?? '',
    captured_at: new Date().toISOString(), trace: conv };
  const pattern = `**/api/v1/alerts/${encodeURIComponent(f.id)}`;
  await page.route(pattern, (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(alert) }));
  try {
    await page.goto(routeURL(base, `#/alerts/${encodeURIComponent(f.id)}`));
    await page.locator(`${byTestId('alert-evidence')}[data-state="captured"]`).waitFor();
    const items = page.locator(`${byTestId('evidence-trace')} ${byTestId('trace-item')}`);
    await items.first().waitFor();
    assert.equal(await items.count(), conv.items.length, 'evidence trace items');
    const kinds = await items.evaluateAll((els) => els.map((e) => e.dataset.kind));
    assert.deepEqual(kinds.slice().sort(), conv.items.map((i) => i.kind).sort(), 'evidence trace item kinds');
    const link = page.locator(byTestId('evidence-trace-link'));
    assert.equal(await link.getAttribute('href'), `#/trace/${encodeURIComponent(cid)}`);
    await shot(page, 'alert-evidence');
    await link.click();
    await page.locator(byTestId('view-trace')).waitFor();
    assert.equal((await page.locator(byTestId('trace-cid')).textContent()).trim(), cid, 'the evidence link opens the conversation');
  } finally {
    await page.unroute(pattern);
  }
});

scenario('d: every request stays on 127.0.0.1', async () => {
  assert.ok(b.requests.some((u) => new URL(u).pathname.startsWith('/api/')), `the page made no API request: ${JSON.stringify(b.requests)}`);
  assert.deepEqual(foreignRequests(b.requests), [], 'requests to hosts other than 127.0.0.1');
  console.error(`${b.requests.length} requests, all to 127.0.0.1`);
});
