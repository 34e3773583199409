// Shared set-up for the browser tests: the Go tests in cmd/quanyu start the lab (agents, mix,
// analysis) and run these scripts with their inputs in environment variables, so the scripts
// never guess ports or figures.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// env returns a required environment variable, failing with its name when it is missing.
export function env(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (fallback !== undefined) return fallback;
    throw new Error(`${name} is not set: the Go test passes it (see cmd/quanyu/ui_test.go)`);
  }
  return v;
}

export function expectations() {
  try {
    return JSON.parse(env('QUANYU_UI_EXPECT', '{}'));
  } catch (err) {
    throw new Error(`reading QUANYU_UI_EXPECT: ${err.message}`);
  }
}

// launch starts Debian's chromium with a fresh profile, so no cache, cookie or service worker
// from an earlier run can make a broken page look right. Every request any page makes is
// recorded: the UI must work on an air-gapped network, so anything not on 127.0.0.1 is a bug.
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'quanyu-ui-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: env('QUANYU_UI_CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    // Root in a VM: no sandbox; no GPU; no component updates or safe-browsing pings, which would
    // be requests to other hosts that are the browser's, not the page's.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    viewport: { width: 1400, height: 900 },
  });
  const requests = [];
  context.on('request', (r) => requests.push(r.url()));
  const consoleErrors = [];
  const watch = (page) => {
    page.on('pageerror', (err) => consoleErrors.push(`page error: ${err.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(`console: ${m.text()}`);
    });
  };
  context.on('page', watch);
  context.pages().forEach(watch);
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    requests,
    consoleErrors,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

// foreignRequests lists the requests that left 127.0.0.1 (data: and blob: URLs stay in the page).
export function foreignRequests(urls) {
  return urls.filter((u) => {
    const url = new URL(u);
    if (['data:', 'blob:', 'about:'].includes(url.protocol)) return false;
    return url.hostname !== '127.0.0.1';
  });
}

export function screenshotDir() {
  const dir = env('QUANYU_UI_SCREENSHOTS');
  mkdirSync(dir, { recursive: true });
  return dir;
}

export async function shot(page, name) {
  await page.screenshot({ path: join(screenshotDir(), `${name}.png`), fullPage: true });
}

export const byTestId = (id) => `[data-testid="${id}"]`;

// route loads a hash route of the UI; the base URL is analysis's HTTP address.
export function routeURL(base, hash) {
  const u = new URL(base);
  u.hash = hash.replace(/^#/, '');
  return u.toString();
}

// firstNumber reads the figure a detail shows ("1,234 req" → 1234), whatever the unit around it.
export function firstNumber(text) {
  const m = /-?\d[\d,\u00a0\u202f ]*(\.\d+)?/.exec(text ?? '');
  if (!m) return NaN;
  return Number(m[0].replace(/[,\u00a0\u202f ]/g, ''));
}

// waitMapSettled waits until cytoscape has at least minNodes nodes (whose labels match
// labelPattern, when given: the level asked for, not the one shown before it) and their positions
// have not moved for a few animation frames (an animated layout has finished). It returns
// performance.now() at that point, measured in the page from the navigation's start.
export async function waitMapSettled(page, minNodes, timeout, labelPattern = '') {
  await page.waitForFunction(
    ([n, pat]) => {
      const cy = window.__quanyu && window.__quanyu.cy;
      if (!cy) return false;
      const re = pat ? new RegExp(pat) : null;
      const nodes = re ? cy.nodes().filter((x) => re.test(String(x.data('label') ?? ''))) : cy.nodes();
      return nodes.length >= n;
    },
    [minNodes, labelPattern],
    { timeout, polling: 'raf' },
  );
  return page.evaluate(
    () =>
      new Promise((resolve) => {
        const cy = window.__quanyu.cy;
        const sig = () => {
          let s = '';
          cy.nodes().slice(0, 50).forEach((n) => {
            const p = n.position();
            s += `${Math.round(p.x)},${Math.round(p.y)};`;
          });
          const pan = cy.pan();
          return `${s}|${cy.zoom().toFixed(3)}|${Math.round(pan.x)},${Math.round(pan.y)}`;
        };
        let last = sig();
        let still = 0;
        const frame = () => {
          const now = sig();
          still = now === last ? still + 1 : 0;
          last = now;
          if (still >= 3) {
            // Idle: nothing left for the main thread to do once the layout has stopped.
            requestIdleCallback(() => resolve(performance.now()), { timeout: 5000 });
          } else {
            requestAnimationFrame(frame);
          }
        };
        requestAnimationFrame(frame);
      }),
  );
}

// clickEdge clicks, with the real mouse, the middle of an edge as cytoscape draws it, bringing
// the edge into view first if the layout left it outside the canvas.
export async function clickEdge(page, edgeId) {
  const canvas = page.locator(byTestId('map-canvas'));
  const box = await canvas.boundingBox();
  if (!box) throw new Error('map-canvas has no bounding box (not displayed)');
  let mid = await page.evaluate((id) => window.__quanyu.cy.$id(id).renderedMidpoint(), edgeId);
  const inside = (m) => m.x > 2 && m.y > 2 && m.x < box.width - 2 && m.y < box.height - 2;
  if (!inside(mid)) {
    mid = await page.evaluate((id) => {
      const cy = window.__quanyu.cy;
      cy.center(cy.$id(id));
      return cy.$id(id).renderedMidpoint();
    }, edgeId);
  }
  await page.mouse.click(box.x + mid.x, box.y + mid.y);
  return { x: box.x + mid.x, y: box.y + mid.y };
}
