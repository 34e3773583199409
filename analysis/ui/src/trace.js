// Trace: one conversation (community id) with its flow records, events and L7 records in time order.
import { h, api, reportError, clearError, fmtTime, endpoint, hexdump, fmtBytes } from './util.js';

export function mountTrace(container, cid) {
  const list = h('ol', { class: 'trace' });
  const status = h('p', { class: 'muted' }, 'loading…');
  container.replaceChildren(h('section', { 'data-testid': 'view-trace', class: 'view' },
    h('div', { class: 'toolbar' }, h('a', { href: '#/flows', 'data-testid': 'trace-back' }, '← flows'), h('h2', null, 'conversation ', h('code', { 'data-testid': 'trace-cid' }, cid))),
    status, list));
  let stopped = false;
  (async () => {
    let conv;
    try {
      conv = await api('/api/v1/flows/' + encodeURIComponent(cid));
      clearError('trace');
    } catch (err) {
      if (stopped) return;
      if (err.status === 404) { status.textContent = 'This conversation is not (or no longer) kept by analysis: its records may have aged out of the retention window.'; status.dataset.testid = 'trace-empty'; return; }
      reportError('trace', err);
      status.textContent = 'could not load the conversation';
      return;
    }
    if (stopped) return;
    const items = (conv && conv.items) || [];
    status.textContent = items.length ? `${items.length} records` : 'no records in this conversation';
    list.replaceChildren(...traceItems(items));
  })();
  return () => { stopped = true; };
}

// traceItems renders a conversation's items (as GET /api/v1/flows/{community_id} gives them) in
// time order, as <li>s for an <ol class="trace">: the trace page and an alert's evidence share it.
export function traceItems(items) {
  return (items || []).slice().sort((a, b) => new Date(a.time) - new Date(b.time)).map(item);
}

function item(it) {
  const body = it[it.kind] || {};
  const frames = [];
  for (const f of ['l3_frame', 'l4_frame', 'l7_frame']) if (body[f]) frames.push(h('details', { class: 'frame', open: true }, h('summary', null, f.replace('_', ' ') + ` (${atobLen(body[f])} bytes)`), h('pre', { 'data-testid': 'trace-frame', 'data-frame': f, class: 'hex' }, hexdump(body[f]))));
  return h('li', { 'data-testid': 'trace-item', 'data-kind': it.kind, class: 'trace-item kind-' + it.kind },
    h('div', { class: 'trace-head' }, h('span', { class: 'badge' }, it.kind), h('span', { class: 'mono' }, fmtTime(it.time)), h('span', { class: 'muted' }, it.agent ? 'agent ' + it.agent : ''), h('span', null, summary(it.kind, body))),
    frames,
    h('details', { class: 'raw' }, h('summary', null, 'JSON'), h('pre', null, JSON.stringify(body, (k, v) => (k.endsWith('_frame') ? '…' : v), 2))));
}

function atobLen(b64) { try { return atob(b64).length; } catch { return '?'; } }

function summary(kind, b) {
  const ends = `${endpoint(b.client)} → ${endpoint(b.server)}`;
  if (kind === 'flow') {
    const c = b.client_to_server || {}, s = b.server_to_client || {};
    return `${b.transport || ''} ${ends} · ${c.packets || 0}/${s.packets || 0} pkts · ${fmtBytes((c.ip_bytes || 0) + (s.ip_bytes || 0))}` + (b.tcp_flags && b.tcp_flags.length ? ` · ${b.tcp_flags.join(',')}` : '') + (b.final ? ` · ended${b.end_reason ? ' (' + b.end_reason + ')' : ''}` : '');
  }
  if (kind === 'event') return `${b.kind || 'event'} · ${b.transport || ''} ${ends}`;
  if (kind === 'l7') {
    const what = b.protocol === 'DNS' ? `${b.qtype || ''} ${b.query || ''} → ${b.rcode || ''} ${(b.answers || []).join(', ')}` : `${b.method || ''} ${b.host || ''}${b.path || ''} → ${b.status || ''}`;
    return `${b.protocol || ''} ${what} · ${b.latency_us ? (b.latency_us / 1000).toFixed(1) + ' ms' : ''}${b.error ? ' · ' + b.error : ''}`;
  }
  return '';
}
