// Quanyu analysis UI: a hash router over five views. Only the active view is in the document, so
// every data-testid is unique on the page.
import './app.css';
import { clearAllErrors } from './util.js';
import { mountMap } from './map.js';
import { mountFlows } from './flows.js';
import { mountTrace } from './trace.js';
import { mountAgents } from './agents.js';
import { mountSubs } from './subs.js';

const routes = {
  map: mountMap,
  flows: mountFlows,
  trace: mountTrace,
  agents: mountAgents,
  subscriptions: mountSubs,
};

let unmount = null;

function route() {
  // #/view, #/view/arg, and either with ?key=value settings (#/map?level=l3).
  const m = /^#\/([a-z]+)(?:\/([^?]*))?(?:\?(.*))?$/.exec(location.hash);
  if (!m || !routes[m[1]]) { location.replace('#/map'); return; }
  const [, name, arg, query] = m;
  if (unmount) unmount();
  clearAllErrors();
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === (name === 'trace' ? 'flows' : name));
  const main = document.getElementById('main');
  unmount = routes[name](main, arg ? decodeURIComponent(arg) : '', new URLSearchParams(query || '')) || null;
  document.title = `Quanyu · ${name}`;
}

window.addEventListener('hashchange', route);
route();
