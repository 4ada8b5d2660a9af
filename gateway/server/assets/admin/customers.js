// Customers: find one by any identifier; their profile (attributes,
// identifiers, linked identities, consent); their unified timeline with
// channel marks and delivery states, kept live; and, for admins, merge and
// undo.

import { api, withQuery } from './api.js';
import { clear, debounce, errorBox, h, mark, okBox, say, table, when } from './dom.js';

const KINDS = [
  ['phone', 'Phone'],
  ['email', 'Email'],
  ['whatsapp', 'WhatsApp id'],
  ['telegram', 'Telegram id'],
  ['discord', 'Discord id'],
  ['widget', 'Widget user'],
  ['user_id', 'User id'],
  ['id', 'Customer id'],
];

/**
 * The customer `value` names: `kind:value` as typed (any configured
 * channel's name works as a kind), a customer id with kind `id`, else
 * `kind` and `value` together.
 */
export function findCustomer(kind, value) {
  const v = value.trim();
  if (kind === 'id') return api(`/admin/v1/customers/${encodeURIComponent(v)}`);
  const identifier = /^[a-z_][a-z0-9_-]*:/i.test(v) ? v : `${kind}:${v}`;
  return api(withQuery('/admin/v1/customers', { identifier }));
}

/** `c_…` as a customer id, anything else as an identifier. */
function findAny(value) {
  const v = value.trim();
  return /^c_[0-9a-z]+$/i.test(v) ? findCustomer('id', v) : findCustomer('phone', v);
}

export function customerLink(id) {
  return h('a', { href: `#/customer/${encodeURIComponent(id)}`, class: 'id', text: id });
}

const ARROWS = { inbound: '→ in', outbound: '← out', event: '• event' };

/** One timeline entry: channel mark, direction, kind, time, text, and for an outbound message its delivery state. */
export function entryItem(e) {
  const outbound = e.direction === 'outbound';
  return h('li', { class: 'entry', dataset: { id: e.id, direction: e.direction, channel: e.channel } },
    h('div', { class: 'entry-head' },
      mark(e.channel),
      h('span', { class: 'dir', text: ARROWS[e.direction] || e.direction }),
      h('span', { class: 'kind', text: e.kind }),
      when(e.at)),
    e.text !== undefined && e.text !== null ? h('p', { class: 'text', text: e.text }) : null,
    e.properties ? h('pre', { class: 'props', text: JSON.stringify(e.properties) }) : null,
    e.contents
      ? h('details', {}, h('summary', { text: 'rich content' }), h('pre', { text: JSON.stringify(e.contents, null, 1) }))
      : null,
    e.referral ? h('p', { class: 'muted', text: `came from an ad: ${JSON.stringify(e.referral)}` }) : null,
    outbound
      ? h('p', { class: 'delivery' },
        h('span', { class: 'status', dataset: { status: e.status || 'unknown' }, text: e.status || 'unknown' }),
        h('span', { class: 'muted', text: ` · by ${e.author || 'agent'}` }))
      : null);
}

/** The timeline, oldest first. */
export function timelineList(t, { last } = {}) {
  let entries = t.entries || [];
  if (last && entries.length > last) entries = entries.slice(-last);
  if (!entries.length) return h('p', { class: 'muted', text: 'No messages or events yet.' });
  return h('ol', { class: 'timeline' }, entries.map(entryItem));
}

function identities(c) {
  return table(c.identities || [], [
    ['Channel', (i) => mark(i.channel)],
    ['Scope', (i) => i.scope],
    ['Id', (i) => i.id],
    ['Verified', (i) => h('span', { class: i.verified ? 'yes' : 'no', text: i.verified ? 'verified' : 'unverified' })],
    ['Linked', (i) => when(i.linked_at)],
    ['How', (i) => i.how],
  ], { class: 'identities' });
}

function identifiers(c) {
  return table(c.identifiers || [], [
    ['Kind', (i) => i.kind],
    ['Value', (i) => i.value],
    ['Linked', (i) => when(i.linked_at)],
    ['How', (i) => i.how],
  ], { class: 'identifiers' });
}

function attributes(c) {
  const rows = Object.entries(c.attributes || {}).filter(([k]) => !k.startsWith('consent.'));
  if (!rows.length) return h('p', { class: 'muted', text: 'No attributes.' });
  return table(rows, [['Attribute', ([k]) => k], ['Value', ([, v]) => v]], { class: 'attributes' });
}

function consent(c) {
  const rows = Object.entries(c.consent || {});
  if (!rows.length) return h('p', { class: 'muted', text: 'No consent recorded.' });
  return table(rows, [
    ['Purpose', ([p]) => p],
    ['Consent', ([, v]) => h('span', { class: v.granted ? 'yes' : 'no', text: v.granted ? 'granted' : 'denied' })],
    ['Updated', ([, v]) => when(v.updated_at)],
    ['Source', ([, v]) => v.source],
  ], { class: 'consent' });
}

function profileCard(c) {
  const primary = c.primary_identifier ? `${c.primary_identifier.kind}: ${c.primary_identifier.value}` : '—';
  return h('section', { class: 'card profile', id: 'profile', dataset: { customer: c.id } },
    h('h2', {}, 'Customer ', h('span', { class: 'id', text: c.id })),
    c.merged_into ? h('p', { class: 'warn' }, 'Merged into ', customerLink(c.merged_into)) : null,
    c.archived_at ? h('p', { class: 'warn' }, 'Archived by retention at ', when(c.archived_at)) : null,
    h('dl', { class: 'facts' },
      h('dt', { text: 'Created' }), h('dd', {}, when(c.created_at)),
      h('dt', { text: 'Primary identifier' }), h('dd', { text: primary })),
    h('h3', { text: 'Attributes' }), attributes(c),
    h('h3', { text: 'Identifiers' }), identifiers(c),
    h('h3', { text: 'Linked identities' }), identities(c),
    h('h3', { text: 'Consent' }), consent(c));
}

/** Undoes `m` (a merge of this session) and says so in `area`. */
async function undo(m, area, after) {
  try {
    const r = await api(`/admin/v1/merges/${encodeURIComponent(m.merge_id)}/undo`, { method: 'POST' });
    m.undone_at = r.undone_at || new Date().toISOString();
    say(area, okBox(`Merge ${r.merge_id} undone: ${r.merged} is on its own again.`));
    after();
  } catch (err) {
    say(area, errorBox(err));
  }
}

/**
 * Admins: merge another customer into this one; this session's merges,
 * each with its undo. `area` outlives the panel (rebuilt on each refresh),
 * so what was said stays.
 */
function mergePanel(c, ctx, reload, area) {
  const preview = h('div', { id: 'merge-preview' });
  const merges = h('div', { id: 'merges' });
  const other = h('input', {
    id: 'merge-other', type: 'search', autocomplete: 'off',
    placeholder: 'c_…, phone:+1…, telegram:…', 'aria-label': 'The customer to merge into this one',
  });

  function showMerges() {
    const list = ctx.session.merges;
    if (!list.length) return say(merges, null);
    say(merges, h('div', {},
      h('h3', { text: 'Merges this session' }),
      table(list, [
        ['Merge', (m) => h('span', { class: 'id', text: m.merge_id })],
        ['Surviving', (m) => customerLink(m.surviving)],
        ['Merged', (m) => customerLink(m.merged)],
        ['', (m) => (m.undone_at
          ? h('span', { class: 'muted', text: 'undone' })
          : h('button', {
            type: 'button', class: 'undo', dataset: { merge: m.merge_id }, text: 'Undo',
            onclick: () => undo(m, area, () => { showMerges(); reload(); }),
          }))],
      ], { class: 'merges' })));
  }

  async function merge(o) {
    try {
      const r = await api('/admin/v1/customers/merge', { method: 'POST', body: { surviving: c.id, merged: o.id } });
      ctx.session.merges.unshift({ merge_id: r.merge_id, surviving: r.surviving, merged: r.merged });
      const dropped = (r.dropped || []).map((d) => d.attribute).join(', ');
      say(area, okBox(`Merged ${r.merged} into ${r.surviving} — merge ${r.merge_id}.${dropped ? ` Kept this customer's ${dropped}.` : ''}`));
      say(preview, null);
      other.value = '';
      showMerges();
      reload();
    } catch (err) {
      say(area, errorBox(err));
    }
  }

  const form = h('form', {
    class: 'inline',
    onsubmit: async (e) => {
      e.preventDefault();
      say(area, null);
      try {
        const o = await findAny(other.value);
        if (o.id === c.id) return say(area, errorBox('That is this customer.'));
        say(preview, h('div', { class: 'preview' },
          h('p', {}, 'Merge ', customerLink(o.id), ` (${(o.identities || []).length} identities: `,
            (o.identities || []).map((i) => mark(i.channel)), ') into this customer?'),
          h('button', { type: 'button', id: 'merge-confirm', text: 'Merge into this customer', onclick: () => merge(o) }),
          h('button', { type: 'button', class: 'secondary', text: 'Cancel', onclick: () => say(preview, null) })));
      } catch (err) {
        say(area, errorBox(err));
      }
    },
  }, other, h('button', { type: 'submit', id: 'merge-find', text: 'Find' }));

  showMerges();
  return h('section', { class: 'card merge' },
    h('h2', { text: 'Merge' }),
    h('p', { class: 'muted', text: 'Everything of the other customer moves here; every merge can be undone exactly.' }),
    form, preview, area, merges);
}

export function render(root, ctx) {
  const id = ctx.args[0] || null;
  let disposed = false;
  let seq = 0;
  const messages = h('div', { class: 'messages', id: 'customer-messages' });
  const mergeArea = h('div', { class: 'messages', id: 'merge-messages' });
  const kind = h('select', { id: 'search-kind', 'aria-label': 'Identifier kind' },
    KINDS.map(([v, label]) => h('option', { value: v, text: label })));
  const value = h('input', {
    id: 'search-value', type: 'search', autocomplete: 'off', spellcheck: 'false',
    placeholder: '+15551234567, sarah@example.com, or kind:value', 'aria-label': 'Identifier',
  });
  const search = h('form', {
    class: 'search', id: 'search',
    onsubmit: async (e) => {
      e.preventDefault();
      if (!value.value.trim()) return;
      say(messages, null);
      try {
        const c = await findCustomer(kind.value, value.value);
        if (c.id === id) refresh();
        else ctx.go(`#/customer/${encodeURIComponent(c.id)}`);
      } catch (err) {
        say(messages, errorBox(err));
      }
    },
  }, kind, value, h('button', { type: 'submit', text: 'Find' }));

  const profileBox = h('div', { class: 'column' });
  const timelineBox = h('section', { class: 'card', id: 'timeline' });
  root.append(h('h1', { text: 'Customers' }), search, messages);
  if (id) root.append(h('div', { class: 'columns' }, profileBox, timelineBox));
  else root.append(h('p', { class: 'muted', text: 'Find a customer by phone, email, a channel id (whatsapp:…, telegram:…) or their customer id.' }));

  async function refresh() {
    const mine = ++seq;
    const [c, t] = await Promise.allSettled([
      api(`/admin/v1/customers/${encodeURIComponent(id)}`),
      api(`/admin/v1/customers/${encodeURIComponent(id)}/timeline`),
    ]);
    if (disposed || mine !== seq) return;
    clear(profileBox);
    if (c.status === 'fulfilled') {
      profileBox.append(profileCard(c.value));
      if (ctx.role === 'admin') profileBox.append(mergePanel(c.value, ctx, refresh, mergeArea));
    } else profileBox.append(errorBox(c.reason));
    clear(timelineBox);
    timelineBox.append(h('h2', { text: 'Timeline' },
      t.status === 'fulfilled' ? h('span', { class: 'count', text: ` · ${(t.value.entries || []).length} entries · live` }) : null));
    timelineBox.append(t.status === 'fulfilled' ? timelineList(t.value) : errorBox(t.reason));
  }
  const soon = debounce(refresh, 150);
  if (id) refresh();

  return {
    changed(change) {
      if (id && (change.kind === 'resync' || change.customer_id === id)) soon();
    },
    dispose() {
      disposed = true;
      soon.cancel();
    },
  };
}
