// Subscriptions: mix's list, and a JSON editor that applies one. A 400 from mix names each bad
// field by its JSON path; the reasons are shown beside the paths.
import { h, api, reportError, clearError, fmtTime } from './util.js';

const TEMPLATE = {
  id: 'web',
  owner: 'web-team',
  spec: { L4CLASS: ['TCP'], L4: ['80', '443'], L7: ['HTTP'] },
};

let draft = null; // the editor's text survives leaving the page

export function mountSubs(container) {
  const body = h('tbody');
  const notes = h('div');
  const editor = h('textarea', { 'data-testid': 'sub-editor', spellcheck: 'false', rows: 18, 'aria-label': 'subscription JSON',
    oninput: () => { draft = editor.value; } });
  editor.value = draft || JSON.stringify(TEMPLATE, null, 2);
  const result = h('div', { class: 'sub-result' });
  const saveBtn = h('button', { 'data-testid': 'sub-save', class: 'primary', onclick: () => save() }, 'save');
  container.replaceChildren(h('section', { 'data-testid': 'view-subscriptions', class: 'view subs' },
    h('div', { class: 'subs-list' },
      h('div', { class: 'toolbar' }, h('h2', null, 'subscriptions'), h('button', { 'data-testid': 'sub-new', onclick: () => { setEditor(TEMPLATE); } }, 'new')),
      notes,
      h('table', { 'data-testid': 'subs-table', class: 'grid' },
        h('thead', null, h('tr', null, ['id', 'owner', 'spec', 'expires', 'revision', 'updated', 'author'].map((t) => h('th', null, t)))), body)),
    h('div', { class: 'subs-editor' },
      h('h3', null, 'editor'),
      h('p', { class: 'muted' }, 'One subscription: {"id", "owner", "selector", "expires", "spec": {NIC, L3, L3Match, L3Miss, L4CLASS, L4, L4Range, L7, …}}. Saving applies it through mix to every agent its selector picks.'),
      editor, h('div', { class: 'toolbar' }, saveBtn), result)));

  function setEditor(obj) {
    editor.value = JSON.stringify(obj, null, 2);
    draft = editor.value;
    result.replaceChildren();
  }

  async function load() {
    let res;
    try {
      res = await api('/api/v1/mix/subscriptions');
      clearError('subs');
    } catch (e) {
      body.replaceChildren();
      if (e.status === 502 || e.status === 503 || e.status === 504 || e.status === 404 || e.status === 0) {
        notes.replaceChildren(h('div', { 'data-testid': 'mix-unreachable', class: 'notice' },
          `mix is unreachable (${e.status ? 'HTTP ' + e.status : 'no answer'}): ${(e.body && e.body.error) || 'analysis could not reach mix'}. Subscriptions live in mix, so they cannot be listed or saved until it is reachable.`));
      } else {
        notes.replaceChildren();
        reportError('subs', e);
      }
      return;
    }
    const objs = (res && res.objects) || [];
    notes.replaceChildren(objs.length ? '' : h('div', { 'data-testid': 'subs-empty', class: 'empty' }, 'No subscriptions yet: agents capture with their own configuration. Write one in the editor and save it.'));
    body.replaceChildren(...objs.map((o) => {
      const sub = o.object || {};
      return h('tr', { 'data-testid': 'sub-row', 'data-id': o.id, class: 'clickable', title: 'edit', onclick: () => setEditor(sub) },
        h('td', null, o.id), h('td', null, sub.owner || ''), h('td', { class: 'mono small' }, specSummary(sub.spec)),
        h('td', null, sub.expires ? fmtTime(sub.expires) : ''), h('td', { class: 'num' }, o.revision), h('td', null, fmtTime(o.updated)), h('td', null, o.author || ''));
    }));
  }

  async function save() {
    result.replaceChildren();
    let doc;
    try {
      doc = JSON.parse(editor.value);
    } catch (e) {
      result.replaceChildren(h('div', { 'data-testid': 'sub-error', class: 'error' }, 'Not valid JSON: ' + e.message));
      return;
    }
    saveBtn.disabled = true;
    try {
      const res = await api('/api/v1/mix/subscriptions', { method: 'POST', body: JSON.stringify(doc) });
      const ap = (res && res.applied && res.applied[0]) || {};
      result.replaceChildren(h('div', { 'data-testid': 'sub-saved', class: 'ok' },
        `Saved ${ap.id || doc.id || 'subscription'}` + (ap.revision ? ` (revision ${ap.revision}${ap.changed === false ? ', unchanged' : ''})` : '') + '.'));
      await load();
    } catch (e) {
      const fields = (e.body && e.body.fields) || [];
      const summary = e.status === 400
        ? `mix refused the subscription: ${(e.body && e.body.error) || e.message}`
        : e.message;
      result.replaceChildren(
        h('div', { 'data-testid': 'sub-error', class: 'error' }, summary),
        fields.length ? h('ul', { class: 'field-errors' }, fields.map((f) => h('li', null,
          h('code', { class: 'field-path' }, f.path || '(document)'), ' ',
          h('span', { 'data-testid': 'field-error', 'data-path': f.path || '', class: 'error' }, f.reason)))) : null);
    } finally {
      saveBtn.disabled = false;
    }
  }

  load();
  return () => {};
}

function specSummary(spec) {
  if (!spec || !Object.keys(spec).length) return 'everything';
  return Object.entries(spec).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : JSON.stringify(v)}`).join(' ');
}
