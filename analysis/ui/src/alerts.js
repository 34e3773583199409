// Alerts: what analysis's evaluator makes of mix's alert rules. The list shows the active alerts
// (pending and firing), the history of those that fired and the events (new edges); #/alerts/<id>
// shows one alert whole: its fields, labels and annotations, both ends' owners, and the evidence a
// firing alert asks for (a flow trace captured after it fired). Both poll every 2 s and update the
// rows and sections that changed, so hover, focus and open details survive a refresh.
import { h, api, qs, reportError, clearError, fmtTime, ago, fmtMetric, fmtDuration, contactLink, poller } from './util.js';
import { traceItems } from './trace.js';

export function mountAlerts(container, id) {
  return id ? mountAlert(container, id) : mountList(container);
}

// setBadge shows beside "Alerts" in the navigation how many alerts are firing.
export function setBadge(active) {
  const el = document.querySelector('[data-testid="nav-alerts-count"]');
  if (!el) return;
  const n = (active || []).filter((a) => a.state === 'firing').length;
  el.textContent = String(n);
  el.dataset.count = String(n);
  el.hidden = n === 0;
}

function mountList(container) {
  const status = h('span', { class: 'muted', 'data-testid': 'alerts-status' });
  const active = h('tbody'), history = h('tbody'), events = h('ul', { 'data-testid': 'events-list', class: 'events' });
  const activeEmpty = h('div', { 'data-testid': 'alerts-active-empty', class: 'empty', hidden: true },
    'No alert is pending or firing. Rules are kept in mix (quanyu rule apply -f FILE); analysis evaluates them every 10 s.');
  const historyEmpty = h('p', { 'data-testid': 'alerts-history-empty', class: 'muted', hidden: true }, 'No alert fired in the last 24 hours.');
  const eventsEmpty = h('p', { 'data-testid': 'events-empty', class: 'muted', hidden: true },
    'No new edge in the last 24 hours (edges seen in the first minutes after analysis starts are not counted as new).');
  container.replaceChildren(h('section', { 'data-testid': 'view-alerts', class: 'view alerts' },
    h('div', { class: 'toolbar' }, h('h2', null, 'alerts'), status),
    h('h3', null, 'active'),
    h('table', { 'data-testid': 'alerts-active', class: 'grid' },
      h('thead', null, h('tr', null, ['state', 'severity', 'rule', 'series', 'value', 'condition', 'since', 'client', 'server'].map((t) => h('th', null, t)))),
      active),
    activeEmpty,
    h('h3', null, 'history (last 24 h)'),
    h('table', { 'data-testid': 'alerts-history', class: 'grid' },
      h('thead', null, h('tr', null, ['state', 'severity', 'rule', 'series', 'value', 'fired', 'resolved', 'duration'].map((t) => h('th', null, t)))),
      history),
    historyEmpty,
    h('h3', null, 'events (last 24 h)'),
    events, eventsEmpty));
  const activeRows = keyed(active), historyRows = keyed(history), eventRows = keyed(events);

  const load = async () => {
    const [al, ev] = await Promise.allSettled([api('/api/v1/alerts' + qs({ since: '24h', limit: 200 })), api('/api/v1/events' + qs({ since: '24h', limit: 200 }))]);
    if (al.status === 'fulfilled') {
      clearError('alerts');
      const act = (al.value && al.value.active) || [], hist = (al.value && al.value.history) || [];
      activeRows.update(act.map((a) => [a.id, activeRow(a)]));
      historyRows.update(hist.map((a) => [a.id, historyRow(a)]));
      activeEmpty.hidden = act.length > 0;
      historyEmpty.hidden = hist.length > 0;
      setBadge(act);
      const firing = act.filter((a) => a.state === 'firing').length;
      status.textContent = `${firing} firing, ${act.length - firing} pending · updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
    } else {
      reportError('alerts', al.reason);
      status.textContent = 'not updated: see above';
    }
    if (ev.status === 'fulfilled') {
      clearError('events');
      const list = (ev.value && ev.value.events) || [];
      eventRows.update(list.map((e) => [e.id, eventRow(e)]));
      eventsEmpty.hidden = list.length > 0;
    } else reportError('events', ev.reason);
  };
  const poll = poller(load, 2000);
  return () => poll.stop();
}

// keyed keeps a list's children by key. update takes [key, freshly built element] pairs in
// order: a child whose rendering is unchanged stays as it is, a changed one is replaced cell by
// cell (so a row under the mouse keeps its hover), and the order is restored only when it moved.
function keyed(parent) {
  const byKey = new Map();
  return {
    update(items) {
      const want = new Set(items.map(([k]) => k));
      for (const [k, el] of byKey) if (!want.has(k)) { el.remove(); byKey.delete(k); }
      const order = [];
      for (const [k, fresh] of items) {
        const old = byKey.get(k);
        if (!old) { byKey.set(k, fresh); order.push(fresh); continue; }
        if (old.outerHTML !== fresh.outerHTML) patch(old, fresh);
        order.push(old);
      }
      if (order.some((el, i) => parent.children[i] !== el)) parent.append(...order);
    },
  };
}

// patch makes old look like fresh: its attributes, then each child that differs.
function patch(old, fresh) {
  for (const a of [...old.attributes]) if (!fresh.hasAttribute(a.name)) old.removeAttribute(a.name);
  for (const a of fresh.attributes) if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
  const oc = old.children, fc = [...fresh.children];
  if (oc.length !== fc.length) { old.replaceChildren(...fc); return; }
  fc.forEach((c, i) => { if (oc[i].outerHTML !== c.outerHTML) oc[i].replaceWith(c); });
}

function openAlert(id) { location.hash = '#/alerts/' + encodeURIComponent(id); }

function clickable(a) {
  return {
    class: 'clickable', tabindex: 0, title: 'open the alert',
    onclick: (ev) => { if (!ev.target.closest('a')) openAlert(a.id); },
    onkeydown: (ev) => { if (ev.key === 'Enter') openAlert(a.id); },
  };
}

function activeRow(a) {
  const since = a.state === 'firing' && a.fired_at ? a.fired_at : a.active_at;
  return h('tr', { 'data-testid': 'alert-row', 'data-id': a.id, 'data-rule': a.rule, 'data-state': a.state, 'data-severity': a.severity, ...clickable(a) },
    h('td', { 'data-col': 'state' }, stateBadge(a.state)),
    h('td', { 'data-col': 'severity' }, sevBadge(a.severity)),
    h('td', { 'data-col': 'rule' }, h('a', { href: '#/alerts/' + encodeURIComponent(a.id) }, a.rule)),
    h('td', { 'data-col': 'series', title: a.summary || '' }, seriesName(a)),
    h('td', { 'data-col': 'value', class: 'num' }, alertValue(a)),
    h('td', { 'data-col': 'condition' }, condition(a)),
    h('td', { 'data-col': 'since', title: fmtTime(since) }, ago(since)),
    h('td', { 'data-col': 'client' }, ownerInline(a.client)),
    h('td', { 'data-col': 'server' }, ownerInline(a.server)));
}

function historyRow(a) {
  return h('tr', { 'data-testid': 'history-row', 'data-id': a.id, 'data-rule': a.rule, 'data-state': a.state, ...clickable(a) },
    h('td', { 'data-col': 'state' }, stateBadge(a.state)),
    h('td', { 'data-col': 'severity' }, sevBadge(a.severity)),
    h('td', { 'data-col': 'rule' }, h('a', { href: '#/alerts/' + encodeURIComponent(a.id) }, a.rule)),
    h('td', { 'data-col': 'series', title: a.summary || '' }, seriesName(a)),
    h('td', { 'data-col': 'value', class: 'num' }, alertValue(a)),
    h('td', { 'data-col': 'fired' }, fmtTime(a.fired_at)),
    h('td', { 'data-col': 'resolved' }, a.resolved_at ? fmtTime(a.resolved_at) : h('span', { class: 'muted' }, 'still firing')),
    h('td', { 'data-col': 'duration', class: 'num' }, a.resolved_at && a.fired_at ? fmtDuration(new Date(a.resolved_at) - new Date(a.fired_at)) : ''));
}

function eventRow(e) {
  const who = [e.client && e.client.owner, e.server && e.server.owner].filter(Boolean);
  return h('li', { 'data-testid': 'event-row', 'data-id': e.id, 'data-kind': e.kind, title: e.summary || '' },
    h('span', { class: 'mono' }, fmtTime(e.time)), ' ',
    h('span', { class: 'badge' }, (e.kind || 'event').replace('_', ' ')), ' ',
    h('b', { 'data-col': 'series' }, (e.series && e.series.name) || ''),
    who.length ? h('span', { class: 'muted' }, ' · owners ', who.join(' → ')) : null);
}

// alertValue is the value an alert names; a new-edge alert has none: the edge itself is news.
function alertValue(a) { return a.kind === 'new_edge' ? 'new edge' : fmtMetric(a.metric, a.value); }

function stateBadge(state) { return h('span', { class: 'state state-' + state }, state); }
function sevBadge(sev) { return h('span', { class: 'sev sev-' + sev }, sev); }
function seriesName(a) { return (a.series && a.series.name) || ''; }

// condition is what the value is compared with: a threshold rule's op and value, or a forecast
// rule's band (and the forecast in its middle).
function condition(a) {
  if (a.kind === 'new_edge') return 'never seen before';
  if (a.threshold !== undefined && a.threshold !== null) return `${a.op || ''} ${fmtMetric(a.metric, a.threshold)}`.trim();
  if (a.band) return `band ${fmtMetric(a.metric, a.band.lower)} – ${fmtMetric(a.metric, a.band.upper)} (forecast ${fmtMetric(a.metric, a.band.forecast)})`;
  return '';
}

function ownerInline(e) {
  if (!e) return h('span', { class: 'muted' }, '–');
  return h('span', { class: 'owner-inline' },
    h('span', { class: 'end-name' }, e.app || e.node), ' · ',
    e.owner ? h('span', { class: 'owner-name' }, e.owner) : h('span', { class: 'muted' }, 'no owner'),
    e.contact ? [' · ', contactLink(e.contact, { class: 'owner-contact' })] : null);
}

function mountAlert(container, id) {
  const status = h('span', { class: 'muted', 'data-testid': 'alert-status' }, 'loading…');
  const missing = h('div', { 'data-testid': 'alert-missing', class: 'empty', hidden: true });
  const summary = h('p', { 'data-testid': 'alert-summary', class: 'alert-summary' });
  const fields = h('table', { 'data-testid': 'alert-fields', class: 'grid kv' });
  const owners = h('div', { class: 'alert-owners' });
  const labels = h('div');
  const annotations = h('div');
  const evidence = h('div', { 'data-testid': 'alert-evidence', class: 'evidence' });
  const detail = h('div', { 'data-testid': 'alert-detail', class: 'alert-detail', hidden: true },
    summary,
    h('div', { class: 'alert-columns' },
      h('div', null, h('h3', null, 'alert'), fields),
      h('div', null, h('h3', null, 'owners'), owners, h('h3', null, 'labels'), labels, h('h3', null, 'annotations'), annotations)),
    h('h3', null, 'evidence'), evidence);
  container.replaceChildren(h('section', { 'data-testid': 'view-alert', class: 'view' },
    h('div', { class: 'toolbar' }, h('a', { href: '#/alerts', 'data-testid': 'alert-back' }, '← alerts'),
      h('h2', null, 'alert ', h('code', { 'data-testid': 'alert-id' }, id)), status),
    missing, detail));

  // Each section is rebuilt only when its part of the alert changed.
  const drawn = new Map();
  const section = (key, data, draw) => {
    const sig = JSON.stringify(data);
    if (drawn.get(key) === sig) return;
    drawn.set(key, sig);
    draw();
  };
  const load = async () => {
    let a;
    try {
      a = await api('/api/v1/alerts/' + encodeURIComponent(id));
      clearError('alert');
    } catch (err) {
      if (err.status === 404) {
        missing.textContent = `There is no alert ${id}: it may be older than the history analysis keeps, or the link is wrong.`;
        missing.hidden = false;
        detail.hidden = true;
        status.textContent = '';
        return;
      }
      reportError('alert', err);
      status.textContent = 'not updated: see above';
      return;
    }
    missing.hidden = true;
    detail.hidden = false;
    detail.dataset.state = a.state;
    detail.dataset.rule = a.rule;
    status.textContent = `${a.state} · updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
    const { evidence: ev, ...rest } = a;
    section('summary', [a.summary, a.state, a.severity], () => { summary.replaceChildren(stateBadge(a.state), ' ', sevBadge(a.severity), ' ', a.summary || ''); });
    section('fields', rest, () => fields.replaceChildren(...fieldRows(a)));
    section('owners', [a.client, a.server], () => owners.replaceChildren(ownerBlock('alert-client-owner', 'client', a.client), ownerBlock('alert-server-owner', 'server', a.server)));
    section('labels', a.labels, () => labels.replaceChildren(kvTable('alert-labels', a.labels)));
    section('annotations', a.annotations, () => annotations.replaceChildren(kvTable('alert-annotations', a.annotations)));
    section('evidence', ev || null, () => {
      evidence.dataset.state = ev ? ev.state : 'absent';
      evidence.replaceChildren(...evidenceBlock(ev));
    });
  };
  const poll = poller(load, 2000);
  return () => poll.stop();
}

function fieldRows(a) {
  const s = a.series || {};
  const where = [['source', s.source], ['target', s.target], ['address', s.address], ['transport', s.transport], ['port', s.port], ['method', s.method], ['path', s.path]]
    .filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(' · ');
  const row = (field, label, ...value) => h('tr', { 'data-field': field }, h('th', null, label), h('td', null, ...value));
  const rows = [
    row('state', 'state', stateBadge(a.state)),
    row('severity', 'severity', sevBadge(a.severity)),
    row('rule', 'rule', h('b', null, a.rule), h('span', { class: 'muted' }, ` (${a.kind})`)),
    a.metric ? row('metric', 'metric', a.metric, h('span', { class: 'muted' }, ` per ${a.level}`)) : null,
    row('series', 'series', a.series ? a.series.name : ''),
    where ? row('series-keys', 'series keys', h('span', { class: 'mono small' }, where)) : null,
    row('value', 'value', alertValue(a)),
  ];
  if (a.kind === 'new_edge') rows.push(row('condition', 'condition', condition(a)));
  if (a.threshold !== undefined && a.threshold !== null) rows.push(row('threshold', 'threshold', condition(a)));
  if (a.band) rows.push(row('band', 'band', `${fmtMetric(a.metric, a.band.lower)} – ${fmtMetric(a.metric, a.band.upper)}`,
    h('span', { class: 'muted' }, ` (forecast ${fmtMetric(a.metric, a.band.forecast)}, ±${a.band.deviations} deviations)`)));
  rows.push(
    a.kind === 'new_edge' ? null : row('for', 'for', a.for || '0s'),
    row('active_at', 'active since', fmtTime(a.active_at)),
    row('fired_at', 'fired', a.fired_at ? fmtTime(a.fired_at) : h('span', { class: 'muted' }, 'not yet (pending)')),
    row('resolved_at', 'resolved', a.resolved_at ? fmtTime(a.resolved_at) : h('span', { class: 'muted' }, a.fired_at ? 'still firing' : '–')),
    a.fired_at && a.resolved_at ? row('duration', 'fired for', fmtDuration(new Date(a.resolved_at) - new Date(a.fired_at))) : null,
    row('updated_at', 'last evaluated', fmtTime(a.updated_at)),
    row('fingerprint', 'fingerprint', h('code', null, a.fingerprint)),
    row('id', 'id', h('code', null, a.id)));
  return rows.filter(Boolean);
}

function ownerBlock(testid, role, e) {
  if (!e) return h('div', { 'data-testid': testid, class: 'owner' }, h('span', { class: 'muted' }, role + ': '), h('span', { class: 'muted' }, 'not known for this series'));
  return h('div', { 'data-testid': testid, class: 'owner' },
    h('span', { class: 'muted' }, role + ': '), h('b', null, e.app || e.node),
    e.app && e.node ? h('span', { class: 'muted small' }, ` (${e.node})`) : null,
    e.owner ? [' — owner ', h('span', { class: 'owner-name' }, e.owner)] : h('span', { class: 'muted' }, ' — no owner in the catalog'),
    e.team ? [' · team ', h('span', { class: 'owner-team' }, e.team)] : null,
    e.contact ? [' · ', contactLink(e.contact, { class: 'owner-contact' })] : null);
}

function kvTable(testid, obj) {
  const entries = Object.entries(obj || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return h('p', { 'data-testid': testid, class: 'muted' }, 'none');
  return h('table', { 'data-testid': testid, class: 'grid kv' }, h('tbody', null, entries.map(([k, v]) =>
    h('tr', { 'data-key': k }, h('th', { class: 'mono' }, k), h('td', { class: 'wrap' }, /^https?:\/\//i.test(v) ? contactLink(v) : v)))));
}

const EVIDENCE = {
  requested: 'mix was asked for a narrow subscription with frames; waiting for a flow that matches it',
  seen: 'a flow matched the subscription; its trace is being read',
  captured: 'a flow trace captured after the alert fired is attached',
  none: 'the subscription expired with no matching flow',
  failed: 'no evidence could be captured',
};

function evidenceBlock(ev) {
  if (!ev) {
    return [h('p', { class: 'muted', 'data-testid': 'evidence-absent' },
      'No evidence for this alert: it is asked for when an alert fires, if analysis can reach mix\'s admin API (mix.http_address, mix.admin_token) and alerts.evidence is on.')];
  }
  const row = (field, label, ...value) => h('tr', { 'data-field': field }, h('th', null, label), h('td', null, ...value));
  const out = [h('table', { class: 'grid kv' }, h('tbody', null,
    row('state', 'state', h('b', { 'data-testid': 'evidence-state' }, ev.state), h('span', { class: 'muted' }, ' — ' + (EVIDENCE[ev.state] || ''))),
    ev.error ? row('error', 'error', h('span', { class: 'error', 'data-testid': 'evidence-error' }, ev.error)) : null,
    ev.subscription ? row('subscription', 'subscription', h('code', { 'data-testid': 'evidence-subscription' }, ev.subscription)) : null,
    ev.expires ? row('expires', 'expires', fmtTime(ev.expires)) : null,
    ev.community_id ? row('community_id', 'conversation', h('code', null, ev.community_id)) : null,
    ev.agent ? row('agent', 'agent', ev.agent) : null,
    ev.captured_at ? row('captured_at', 'captured', fmtTime(ev.captured_at)) : null))];
  const cid = ev.community_id || (ev.trace && ev.trace.community_id);
  if (ev.trace) {
    const items = ev.trace.items || [];
    out.push(h('p', null, `${items.length} records · `,
      cid ? h('a', { href: '#/trace/' + encodeURIComponent(cid), 'data-testid': 'evidence-trace-link' }, 'open the conversation') : null));
    out.push(h('ol', { class: 'trace', 'data-testid': 'evidence-trace' }, traceItems(items)));
  }
  return out;
}
