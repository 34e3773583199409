// Flows: the flow records analysis keeps, filtered and paged, refreshed while on the first page.
import { h, api, qs, reportError, clearError, fmtNum, fmtBytes, fmtTime, endpoint, poller } from './util.js';

const filters = { nic: '', addr: '', cidr: '', transport: '', port: '', method: '', since: '1h' };

export function mountFlows(container) {
  let cursors = ['']; // cursor of each page visited; the last is the current page
  let next = '';
  let force = true;
  const field = (key, ph, attrs = {}) => h('input', { 'data-testid': 'flows-filter-' + key, placeholder: ph, 'aria-label': ph, value: filters[key], ...attrs });
  const inputs = {
    nic: field('nic', 'interface'), addr: field('addr', 'address'), cidr: field('cidr', 'CIDR'),
    transport: h('select', { 'data-testid': 'flows-filter-transport', 'aria-label': 'transport' },
      ['', 'TCP', 'UDP', 'ICMP', 'ICMPv6', 'SCTP'].map((t) => h('option', { value: t, selected: filters.transport === t }, t || 'any transport'))),
    port: field('port', 'port', { type: 'number', min: 0, max: 65535 }), method: field('method', 'L7 method (GET…)'),
    since: h('select', { 'data-testid': 'flows-filter-since', 'aria-label': 'since' },
      ['5m', '15m', '1h', '6h', '24h', '168h'].map((t) => h('option', { value: t, selected: filters.since === t }, 'last ' + t.replace('168h', '7d')))),
  };
  const auto = h('input', { type: 'checkbox', 'data-testid': 'flows-auto', checked: true });
  const status = h('span', { class: 'muted', 'data-testid': 'flows-status' });
  const body = h('tbody');
  const empty = h('div', { 'data-testid': 'flows-empty', class: 'empty', hidden: true });
  const prevBtn = h('button', { 'data-testid': 'flows-prev', onclick: () => { if (cursors.length > 1) { cursors.pop(); force = true; poll.now(); } } }, '← newer');
  const nextBtn = h('button', { 'data-testid': 'flows-next', onclick: () => { if (next) { cursors.push(next); force = true; poll.now(); } } }, 'older →');
  const apply = (ev) => {
    if (ev) ev.preventDefault();
    for (const [k, el] of Object.entries(inputs)) filters[k] = el.value.trim();
    cursors = [''];
    force = true;
    poll.now();
  };
  const form = h('form', { class: 'toolbar', onsubmit: apply },
    inputs.nic, inputs.addr, inputs.cidr, inputs.transport, inputs.port, inputs.method, inputs.since,
    h('button', { type: 'submit', 'data-testid': 'flows-apply', class: 'primary' }, 'apply'),
    h('label', { class: 'muted' }, auto, ' auto-refresh'), status);
  container.replaceChildren(h('section', { 'data-testid': 'view-flows', class: 'view' },
    form,
    h('table', { 'data-testid': 'flows-table', class: 'grid flows' },
      h('thead', null, h('tr', null, ['start', 'end', 'agent', 'nic', 'transport', 'client', 'server', 'packets', 'bytes', 'L7', 'community id'].map((t) => h('th', null, t)))),
      body),
    empty,
    h('div', { class: 'pager' }, prevBtn, nextBtn)));

  const load = async () => {
    const page = cursors.length === 1;
    // Only the first page refreshes by itself; older pages and a paused table load when asked.
    if (!force && !(page && auto.checked)) return;
    force = false;
    const params = { from: filters.since, nic: filters.nic, addr: filters.addr, cidr: filters.cidr, transport: filters.transport,
      port: filters.port, method: filters.method, limit: 100, cursor: cursors[cursors.length - 1] };
    let res;
    try {
      res = await api('/api/v1/flows' + qs(params));
      clearError('flows');
    } catch (err) {
      reportError('flows', err);
      status.textContent = 'not updated: see above';
      return;
    }
    const flows = (res && res.flows) || [];
    next = (res && res.next) || '';
    body.replaceChildren(...flows.map(row));
    empty.hidden = flows.length > 0;
    empty.textContent = cursors.length > 1 ? 'no older flows' : 'No flows match in this window. Widen the time range or clear the filters; if nothing ever shows, check on the Agents page that agents are sending.';
    nextBtn.disabled = !next;
    prevBtn.disabled = cursors.length <= 1;
    status.textContent = `page ${cursors.length} · ${flows.length} flows` + (page && auto.checked ? ' · refreshing every 5 s' : '');
  };
  const poll = poller(load, 5000);
  return () => poll.stop();
}

function row(rec) {
  const f = rec.flow || {};
  const cid = f.community_id || '';
  const c2s = f.client_to_server || {}, s2c = f.server_to_client || {};
  const l7 = f.l7 ? `${f.l7.protocol} ×${f.l7.transactions}${f.l7.errors ? ` (${f.l7.errors} err)` : ''}` : '';
  const open = () => { if (cid) location.hash = '#/trace/' + encodeURIComponent(cid); };
  return h('tr', { 'data-testid': 'flow-row', 'data-cid': cid, 'data-id': rec.id, class: cid ? 'clickable' : null, tabindex: 0, title: cid ? 'open the conversation' : 'no community id',
    onclick: open, onkeydown: (e) => { if (e.key === 'Enter') open(); } },
  h('td', null, fmtTime(f.start)), h('td', null, fmtTime(f.end)), h('td', null, rec.agent || f.host || ''), h('td', null, f.nic || ''),
  h('td', null, f.transport || ''), h('td', { class: 'mono' }, endpoint(f.client)), h('td', { class: 'mono' }, endpoint(f.server)),
  h('td', { class: 'num' }, fmtNum((c2s.packets || 0) + (s2c.packets || 0))), h('td', { class: 'num' }, fmtBytes((c2s.ip_bytes || 0) + (s2c.ip_bytes || 0))),
  h('td', null, l7), h('td', { class: 'mono small' }, cid));
}
