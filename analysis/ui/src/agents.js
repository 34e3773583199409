// Agents: mix's view (sync status, applied version, backend, counters) merged with analysis's
// (when each agent last sent, how many records). Either side may be missing an agent.
import { h, api, reportError, clearError, fmtNum, ago, poller } from './util.js';

export function mountAgents(container) {
  const body = h('tbody');
  const notes = h('div');
  const status = h('span', { class: 'muted' });
  container.replaceChildren(h('section', { 'data-testid': 'view-agents', class: 'view' },
    h('div', { class: 'toolbar' }, h('h2', null, 'agents'), status), notes,
    h('table', { 'data-testid': 'agents-table', class: 'grid' },
      h('thead', null, h('tr', null, ['agent', 'host', 'status', 'applied version', 'backend', 'CPU time', 'drops', 'last seen (mix)', 'last record (analysis)', 'records', 'last error'].map((t) => h('th', null, t)))),
      body)));
  const load = async () => {
    const [mine, mix] = await Promise.allSettled([api('/api/v1/agents'), api('/api/v1/mix/agents')]);
    const n = [];
    if (mine.status === 'rejected') reportError('agents', mine.reason); else clearError('agents');
    if (mix.status === 'rejected') {
      const e = mix.reason;
      n.push(h('div', { 'data-testid': 'mix-unreachable', class: 'notice' },
        e.status === 502 || e.status === 503 || e.status === 504
          ? 'mix is unreachable (HTTP ' + e.status + '): ' + ((e.body && e.body.error) || 'analysis could not reach mix') + '. Sync status, versions and counters are missing. '
          : e.status === 404 ? 'mix is not connected: this analysis has no mix to ask (HTTP 404), so only what analysis has received is shown. '
            : 'mix could not be asked: ' + e.message + '. ',
        h('span', { class: 'muted' }, 'Showing what analysis has received only.')));
    }
    const rows = merge(mine.status === 'fulfilled' ? (mine.value && mine.value.agents) || [] : [], mix.status === 'fulfilled' ? (mix.value && mix.value.agents) || [] : []);
    if (!rows.length && mine.status === 'fulfilled') {
      n.push(h('div', { 'data-testid': 'agents-empty', class: 'empty' },
        'No agents yet. An agent appears here once it connects to mix or sends its first record to this analysis (quanyu agent --mix ADDR, with an OTLP sink pointing here).'));
    }
    notes.replaceChildren(...n);
    body.replaceChildren(...rows.map(row));
    status.textContent = `${rows.length} agents · updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
  };
  const poll = poller(load, 5000);
  return () => poll.stop();
}

function merge(mine, mix) {
  const out = new Map();
  for (const m of mix) out.set(m.id || m.host, { id: m.id || m.host, host: m.host, mix: m });
  for (const a of mine) {
    let r = out.get(a.id);
    if (!r) for (const v of out.values()) if (!v.mine && v.host && v.host === a.host) { r = v; break; }
    if (!r) { r = { id: a.id, host: a.host }; out.set(a.id, r); }
    r.mine = a;
    r.host = r.host || a.host;
  }
  return [...out.values()].sort((a, b) => String(a.id).localeCompare(String(b.id)));
}

// counter sums the counters whose names contain any of words (counter names vary by backend).
function counter(counters, words) {
  let found = false, sum = 0;
  for (const [k, v] of Object.entries(counters || {})) {
    if (words.some((w) => k.toLowerCase().includes(w))) { found = true; sum += Number(v) || 0; }
  }
  return found ? sum : null;
}

function row(r) {
  const m = r.mix || {}, a = r.mine;
  const st = m.status || (r.mix ? '' : 'unknown to mix');
  const cpu = counter(m.counters, ['cpu']);
  const drops = counter(m.counters, ['drop']);
  const counters = Object.entries(m.counters || {}).map(([k, v]) => `${k}: ${v}`).join('\n');
  const lastSeenMix = m.last_seen_unix_ns && m.last_seen_unix_ns !== '0' ? new Date(Number(m.last_seen_unix_ns) / 1e6).toISOString() : '';
  return h('tr', { 'data-testid': 'agent-row', 'data-id': r.id, 'data-status': m.status || '' },
    h('td', null, r.id), h('td', null, r.host || ''),
    h('td', null, h('span', { class: 'status status-' + (m.status || 'none').toLowerCase() }, st)),
    h('td', { class: 'mono' }, m.applied_version || '', m.pending_version && m.pending_version !== m.applied_version ? h('span', { class: 'muted' }, ` (pending ${m.pending_version})`) : null),
    h('td', { title: m.fallback_reason || '' }, m.backend || '', m.fallback_reason ? ' ⚠' : ''),
    h('td', { class: 'num', title: counters }, cpu === null ? '–' : `${(cpu / 1000).toFixed(1)} s`),
    h('td', { class: 'num', title: counters }, drops === null ? '–' : fmtNum(drops)),
    h('td', null, lastSeenMix ? ago(lastSeenMix) : '–'),
    h('td', { 'data-testid': 'agent-last-seen' }, a ? ago(a.last_seen) : 'nothing received'),
    h('td', { class: 'num' }, a ? fmtNum(a.records) : '–'),
    h('td', { class: 'error small' }, m.last_error || ''));
}
