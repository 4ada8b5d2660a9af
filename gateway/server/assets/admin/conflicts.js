// The review queue (admins): identity matches the gateway would not make
// on its own and attribute changes that overwrote another channel's value.
// Resolve one, or merge the two customers it names (undo is on the
// customer's page).

import { api } from './api.js';
import { clear, debounce, errorBox, h, okBox, say, table, when } from './dom.js';
import { customerLink } from './customers.js';

export function render(root, ctx) {
  let disposed = false;
  const box = h('section', { class: 'card', id: 'conflicts' });
  const messages = h('div', { class: 'messages', id: 'conflict-messages' });
  root.append(h('h1', { text: 'Review queue' }), messages, box);

  async function act(path, body, done) {
    try {
      const r = await api(path, { method: 'POST', body });
      say(messages, okBox(done(r)));
      load();
    } catch (err) {
      say(messages, errorBox(err));
    }
  }

  async function load() {
    let r;
    try {
      r = await api('/admin/v1/conflicts');
    } catch (err) {
      if (!disposed) say(box, errorBox(err));
      return;
    }
    if (disposed) return;
    const list = r.conflicts || [];
    clear(box).append(h('h2', {}, 'Open conflicts ', h('span', { class: 'count', text: `· ${list.length}` })));
    if (!list.length) return box.append(h('p', { class: 'muted', text: 'Nothing to review.' }));
    box.append(table(list, [
      ['At', (c) => when(c.at)],
      ['Kind', (c) => c.kind],
      ['Customer', (c) => (c.customer_id ? customerLink(c.customer_id) : '—')],
      ['Other customer', (c) => (c.other_customer_id ? customerLink(c.other_customer_id) : '—')],
      ['Detail', (c) => h('span', { class: 'detail', text: typeof c.detail === 'string' ? c.detail : JSON.stringify(c.detail) })],
      ['', (c) => h('div', { class: 'actions' },
        c.customer_id && c.other_customer_id
          ? h('button', {
            type: 'button', class: 'secondary', text: 'Merge',
            title: 'Merge the other customer into the first',
            onclick: () => act('/admin/v1/customers/merge',
              { surviving: c.customer_id, merged: c.other_customer_id },
              (m) => {
                ctx.session.merges.unshift({ merge_id: m.merge_id, surviving: m.surviving, merged: m.merged });
                return `Merged ${m.merged} into ${m.surviving} — merge ${m.merge_id} (undo it on the customer's page). Resolve the conflict when done.`;
              }),
          })
          : null,
        h('button', {
          type: 'button', class: 'resolve', dataset: { conflict: c.id }, text: 'Resolve',
          onclick: () => act(`/admin/v1/conflicts/${encodeURIComponent(c.id)}/resolve`, undefined,
            (x) => `Conflict ${x.id} resolved.`),
        }))],
    ], { class: 'conflicts' }));
  }
  load();

  // A conflict is born of an arrival, a profile change or a merge.
  const soon = debounce(load, 300);
  return {
    changed: soon,
    dispose() {
      disposed = true;
      soon.cancel();
    },
  };
}
