// Small helpers shared by the views: an element builder, the JSON fetcher and the error banner.

// h builds an element: h('td', {class: 'num', 'data-testid': 'x', onclick: f}, 'text', child).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// HTTPError is a failed request: status is 0 when the server could not be reached at all.
export class HTTPError extends Error {
  constructor(what, status, message, body) {
    super(`${what} failed: ${status ? 'HTTP ' + status + ' — ' : ''}${message}`);
    this.status = status;
    this.body = body;
  }
}

// api fetches a same-origin JSON API. Errors carry what was asked and what the server said.
export async function api(path, opts = {}) {
  const what = `${opts.method || 'GET'} ${path}`;
  let res;
  try {
    res = await fetch(path, { headers: { Accept: 'application/json', ...(opts.body ? { 'Content-Type': 'application/json' } : {}) }, ...opts });
  } catch (e) {
    throw new HTTPError(what, 0, `the server did not answer (${e.message})`);
  }
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!res.ok) {
    const msg = (body && body.error) || text.trim().slice(0, 300) || res.statusText;
    throw new HTTPError(what, res.status, msg, body);
  }
  return body;
}

// The banner lists every failing fetch by a key; a later success for the same key clears it.
const failures = new Map();
export function reportError(key, err) {
  failures.set(key, err.message || String(err));
  renderBanner();
}
export function clearError(key) {
  if (failures.delete(key)) renderBanner();
}
export function clearAllErrors() {
  failures.clear();
  renderBanner();
}
function renderBanner() {
  const el = document.getElementById('error-banner');
  if (!el) return;
  el.replaceChildren(...[...failures.values()].map((m) => h('div', null, m)));
  el.hidden = failures.size === 0;
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const s = u.toString();
  return s ? '?' + s : '';
}

export function fmtNum(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1) + 'G';
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

export function fmtBytes(n) {
  if (!n) return '0 B';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}

export function fmtMs(n) {
  if (!n) return '–';
  return n >= 1000 ? (n / 1000).toFixed(2) + ' s' : n.toFixed(n < 10 ? 2 : 0) + ' ms';
}

// fmtMetric formats an alert metric's value in the unit people read it in: ratios (fractions in
// the API) as percentages, latencies and RTT (seconds in the API) in ms, the rest per second.
export function fmtMetric(metric, v) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–';
  const unit = metricUnit(metric);
  return scaleMetric(metric, v).toFixed(metricDigits(metric, v)) + (unit === '/s' ? '' : ' ') + unit;
}

// scaleMetric converts an API value to the unit of metricUnit (for charts).
export function scaleMetric(metric, v) {
  if (v === undefined || v === null) return null;
  if (RATIOS.has(metric)) return v * 100;
  if (SECONDS.has(metric)) return v * 1000;
  return v;
}

export function metricUnit(metric) {
  if (RATIOS.has(metric)) return '%';
  if (SECONDS.has(metric)) return 'ms';
  if (metric === 'bytes_per_second') return 'B/s';
  return '/s';
}

const RATIOS = new Set(['error_ratio', 'retransmission_ratio']);
const SECONDS = new Set(['latency_p50', 'latency_p95', 'latency_p99', 'rtt_p95']);

function metricDigits(metric, v) {
  const x = Math.abs(scaleMetric(metric, v));
  if (x === 0 || x >= 100) return 0;
  return x >= 10 ? 1 : 2;
}

// fmtDuration formats a span in ms: "45 s", "12 min", "3 h 5 min", "2 d 4 h".
export function fmtDuration(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms) || ms < 0) return '–';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min' + (s % 60 && s < 600 ? ' ' + (s % 60) + ' s' : '');
  if (s < 86400) return Math.floor(s / 3600) + ' h' + (s % 3600 >= 60 ? ' ' + Math.floor((s % 3600) / 60) + ' min' : '');
  return Math.floor(s / 86400) + ' d' + (s % 86400 >= 3600 ? ' ' + Math.floor((s % 86400) / 3600) + ' h' : '');
}

// contactLink makes a contact clickable when it is an email address (mailto:) or an http(s) URL;
// anything else (a phone number, a chat handle, or a javascript: URL) stays text.
export function contactLink(contact, attrs = {}) {
  if (!contact) return null;
  if (/^[^@\s:/]+@[^@\s]+$/.test(contact)) return h('a', { href: 'mailto:' + contact, ...attrs }, contact);
  if (/^https?:\/\/[^\s]+$/i.test(contact)) return h('a', { href: contact, target: '_blank', rel: 'noopener noreferrer', ...attrs }, contact);
  return h('span', attrs, contact);
}

export function fmtTime(s) {
  if (!s) return '';
  const d = new Date(s);
  if (Number.isNaN(d.getTime()) || d.getFullYear() < 1971) return '';
  return d.toLocaleString(undefined, { hour12: false });
}

export function ago(s) {
  const d = new Date(s);
  if (Number.isNaN(d.getTime()) || d.getFullYear() < 1971) return 'never';
  const sec = Math.round((Date.now() - d.getTime()) / 1000);
  if (sec < 60) return sec + ' s ago';
  if (sec < 3600) return Math.round(sec / 60) + ' min ago';
  if (sec < 86400) return Math.round(sec / 3600) + ' h ago';
  return Math.round(sec / 86400) + ' d ago';
}

export function endpoint(e) {
  if (!e) return '';
  const a = e.addr || '?';
  return (a.includes(':') ? `[${a}]` : a) + (e.port ? ':' + e.port : '');
}

// hexdump renders bytes as offset, hex and printable ASCII, 16 to a line.
export function hexdump(b64) {
  let bin;
  try { bin = atob(b64); } catch { return '(not base64)'; }
  const lines = [];
  for (let off = 0; off < bin.length; off += 16) {
    const chunk = bin.slice(off, off + 16);
    let hex = '', asc = '';
    for (let i = 0; i < 16; i++) {
      if (i < chunk.length) {
        const c = chunk.charCodeAt(i);
        hex += c.toString(16).padStart(2, '0') + ' ';
        asc += c >= 32 && c < 127 ? chunk[i] : '.';
      } else hex += '   ';
      if (i === 7) hex += ' ';
    }
    lines.push(off.toString(16).padStart(4, '0') + '  ' + hex + ' ' + asc);
  }
  return lines.join('\n');
}

// poller calls fn now and then every ms while the page is visible; now() runs it again at once
// (after the call in flight, if any) and stop() ends it.
export function poller(fn, ms) {
  let timer = null, stopped = false, running = false, again = false;
  const tick = async () => {
    clearTimeout(timer);
    if (stopped) return;
    if (running) { again = true; return; }
    if (!document.hidden) {
      running = true;
      try { await fn(); } catch (e) { console.error(e); } finally { running = false; }
    }
    if (stopped) return;
    if (again) { again = false; tick(); return; }
    clearTimeout(timer);
    timer = setTimeout(tick, ms);
  };
  tick();
  return { stop() { stopped = true; clearTimeout(timer); }, now: tick };
}
