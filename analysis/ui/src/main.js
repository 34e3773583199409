// Quanyu analysis UI: a hash router over six views. Only the active view is in the document, so
// every data-testid outside table rows and lists is unique on the page.
import './app.css';
import { api, clearAllErrors, poller } from './util.js';
import { mountMap } from './map.js';
import { mountFlows } from './flows.js';
import { mountTrace } from './trace.js';
import { mountAgents } from './agents.js';
import { mountSubs } from './subs.js';
import { mountAlerts, setBadge } from './alerts.js';

const routes = {
  map: mountMap,
  flows: mountFlows,
  trace: mountTrace,
  agents: mountAgents,
  subscriptions: mountSubs,
  alerts: mountAlerts,
};

let unmount = null;
let listingAlerts = false; // the alerts list is showing: it keeps the badge up to date itself

function route() {
  // #/view, #/view/arg, and either with ?key=value settings (#/map?level=l3).
  const m = /^#\/([a-z]+)(?:\/([^?]*))?(?:\?(.*))?$/.exec(location.hash);
  if (!m || !routes[m[1]]) { location.replace('#/map'); return; }
  const [, name, arg, query] = m;
  listingAlerts = name === 'alerts' && !arg;
  if (unmount) unmount();
  clearAllErrors();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === (name === 'trace' ? 'flows' : name));
  const main = document.getElementById('main');
  unmount = routes[name](main, arg ? decodeURIComponent(arg) : '', new URLSearchParams(query || '')) || null;
  document.title = `Quanyu · ${name}`;
}

window.addEventListener('hashchange', route);
route();

// The navigation's count of firing alerts: the alerts list sets it on each of its 2 s polls;
// on every other page it is asked for every 10 s. A failure only leaves the count as it was (the page's
// own requests report a server that is down), with the reason in the badge's tooltip.
poller(async () => {
  if (listingAlerts) return;
  const badge = document.querySelector('[data-testid="nav-alerts-count"]');
  try {
    const body = await api('/api/v1/alerts?limit=1');
    setBadge(body && body.active);
    if (badge) badge.title = '';
  } catch (err) {
    if (badge) badge.title = err.message;
  }
}, 10000);
