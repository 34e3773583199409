// The demo as a newcomer sees it: TestUpLab in cmd/quanyu/up_test.go runs `quanyu up --lab` and
// this script opens its UI, waits for the service map to show every lab application with its
// owner (QUANYU_UI_EXPECT: {"apps": {"web": "Storefront team", …}, "edges": [["client","web"], …]}),
// checks the edges, and keeps a screenshot of the map (demo-map.png) as the run's artifact.
import { env, expectations, launch, foreignRequests, shot, routeURL, waitMapSettled } from './lib.mjs';

const base = env('QUANYU_UI_URL');
const want = expectations();
const apps = Object.entries(want.apps ?? {});
const b = await launch();
const page = b.page;
page.setDefaultTimeout(30_000);
const failures = [];
const notFound = [];
page.on('response', (r) => { if (r.status() >= 400) notFound.push(`${r.status()} ${r.url()}`); });
try {
  await page.goto(routeURL(base, '#/map'));
  await waitMapSettled(page, apps.length, 45_000);
  const seen = await page.evaluate(() => {
    const cy = window.__quanyu.cy;
    return {
      nodes: cy.nodes().map((n) => ({ id: n.id(), label: String(n.data('label') ?? '') })),
      edges: cy.edges().map((e) => [e.source().id(), e.target().id()]),
    };
  });
  for (const [app, owner] of apps) {
    const node = seen.nodes.find((n) => n.id === `app:${app}`);
    if (!node) failures.push(`no node for ${app} on the map`);
    else if (!node.label.includes(app) || !node.label.includes(owner)) failures.push(`node ${app} is labelled ${JSON.stringify(node.label)}, without ${owner}`);
  }
  for (const [src, dst] of want.edges ?? []) {
    if (!seen.edges.some(([s, t]) => s === `app:${src}` && t === `app:${dst}`)) failures.push(`no edge ${src} → ${dst} on the map`);
  }
  await shot(page, 'demo-map');
  const foreign = foreignRequests(b.requests);
  if (foreign.length) failures.push(`requests left 127.0.0.1: ${foreign.join(', ')}`);
  if (b.consoleErrors.length) failures.push(`console errors: ${b.consoleErrors.join('; ')} (failed requests: ${notFound.join(', ')})`);
  console.log(JSON.stringify({ nodes: seen.nodes.length, edges: seen.edges.length, failures }));
} finally {
  await b.close();
}
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
