// The audit log (auditors and admins): every admin and business call,
// oldest first, a page at a time (`after` = the previous page's `next`),
// filtered by actor, action, customer and time.

import { api, withQuery } from './api.js';
import { errorBox, h, rfc3339, say, when } from './dom.js';

/** Entries per page. */
const PAGE = 100;

export function render(root) {
  let disposed = false;
  let next = null;
  let filters = {};
  const field = (id, label, props) => h('label', {}, label, h('input', { id, autocomplete: 'off', ...props }));
  const form = h('form', { class: 'filters', id: 'audit-filters' },
    field('audit-actor', 'Actor', { type: 'search', placeholder: 'token name' }),
    field('audit-action', 'Action', { type: 'search', placeholder: 'customer.read' }),
    field('audit-customer', 'Customer', { type: 'search', placeholder: 'c_…' }),
    field('audit-from', 'From', { type: 'datetime-local' }),
    field('audit-to', 'To', { type: 'datetime-local' }),
    h('button', { type: 'submit', text: 'Apply' }));
  const messages = h('div', { class: 'messages' });
  const body = h('tbody', {});
  const more = h('button', { type: 'button', id: 'audit-more', class: 'secondary', text: 'Load more', hidden: true });
  const count = h('span', { class: 'count' });
  const list = h('table', { class: 'audit', id: 'audit-entries' },
    h('thead', {}, h('tr', {}, ['#', 'At', 'Actor', 'Action', 'Route', 'Customer', 'Outcome'].map((t) => h('th', { text: t })))),
    body);
  root.append(h('h1', {}, 'Audit log ', count), form, messages, list, more);

  async function page(first) {
    const params = { ...filters, limit: PAGE, after: first ? '' : next };
    let r;
    try {
      r = await api(withQuery('/admin/v1/audit', params));
    } catch (err) {
      if (!disposed) say(messages, errorBox(err));
      return;
    }
    if (disposed) return;
    say(messages, null);
    if (first) body.replaceChildren();
    for (const e of r.entries || []) {
      body.append(h('tr', { dataset: { outcome: e.outcome } },
        h('td', { class: 'muted', text: e.seq ?? '' }),
        h('td', {}, when(e.at)),
        h('td', { text: e.actor }),
        h('td', { text: e.action }),
        h('td', { class: 'route', text: e.route }),
        h('td', { text: e.customer_id || '' }),
        h('td', { class: 'outcome', text: e.outcome })));
    }
    next = r.next;
    more.hidden = !next;
    count.textContent = `· ${body.children.length} shown${next ? ', more to load' : ''}`;
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = (id) => root.querySelector(`#${id}`).value.trim();
    filters = {
      actor: v('audit-actor'),
      action: v('audit-action'),
      customer_id: v('audit-customer'),
      from: rfc3339(v('audit-from')),
      to: rfc3339(v('audit-to')),
    };
    page(true);
  });
  more.addEventListener('click', () => page(false));
  page(true);

  return {
    dispose() {
      disposed = true;
    },
  };
}
