// The hand-off inbox: conversations waiting for a person, kept live; open
// one to read it, reply (it goes out on the customer's preferred, else most
// recent, channel) or close it (back to the agent).

import { api } from './api.js';
import { clear, debounce, errorBox, h, mark, okBox, say, table, when } from './dom.js';
import { customerLink, timelineList } from './customers.js';

/** Entries shown of an open conversation: the most recent ones. */
const RECENT = 30;

export function render(root, ctx) {
  const open = ctx.args[0] || null;
  let disposed = false;
  let seq = 0;
  const listBox = h('section', { class: 'card', id: 'handoffs' });
  const convBox = h('section', { class: 'card', id: 'conversation' });
  const messages = h('div', { class: 'messages', id: 'reply-messages' });
  root.append(h('h1', { text: 'Hand-off inbox' }), listBox, open ? convBox : null);

  async function loadList() {
    const mine = ++seq;
    let r;
    try {
      r = await api('/admin/v1/handoffs');
    } catch (err) {
      if (!disposed) say(listBox, errorBox(err));
      return;
    }
    if (disposed || mine !== seq) return;
    const list = r.handoffs || [];
    clear(listBox).append(h('h2', {}, 'Waiting for a person ', h('span', { class: 'count', text: `· ${list.length} · live` })));
    if (!list.length) return listBox.append(h('p', { class: 'muted', text: 'Nobody is waiting.' }));
    listBox.append(table(list, [
      ['Customer', (o) => customerLink(o.customer_id)],
      ['Channel', (o) => mark(o.channel)],
      ['Reason', (o) => h('span', { text: o.reason, title: o.detail || '' })],
      ['Opened', (o) => when(o.opened_at)],
      ['Last message', (o) => when(o.last_message_at)],
      ['Waiting', (o) => h('span', { class: o.waiting ? 'badge' : 'muted', text: String(o.waiting ?? 0) })],
      ['', (o) => h('a', {
        class: 'button', href: `#/inbox/${encodeURIComponent(o.conversation_id)}`,
        dataset: { conversation: o.conversation_id }, text: o.conversation_id === open ? 'Open ✓' : 'Open',
      })],
    ], { class: 'handoffs' }));
  }

  const text = h('textarea', { id: 'reply-text', rows: 3, placeholder: 'Your reply…', 'aria-label': 'Reply' });
  const history = h('div', { id: 'conversation-entries' });

  async function loadConversation() {
    try {
      const t = await api(`/admin/v1/customers/${encodeURIComponent(open)}/timeline`);
      if (!disposed) say(history, timelineList(t, { last: RECENT }));
    } catch (err) {
      if (!disposed) say(history, errorBox(err));
    }
  }

  async function reply(e) {
    e.preventDefault();
    const body = text.value;
    if (!body.trim()) return say(messages, errorBox('Write something first.'));
    try {
      const r = await api(`/admin/v1/conversations/${encodeURIComponent(open)}/reply`, { method: 'POST', body: { text: body } });
      text.value = '';
      say(messages, okBox(`Reply ${r.id} ${r.status} on ${r.channel || 'no channel'}.`));
      loadConversation();
    } catch (err) {
      say(messages, errorBox(err));
    }
  }

  async function close() {
    try {
      const r = await api(`/admin/v1/conversations/${encodeURIComponent(open)}/close`, { method: 'POST' });
      say(messages, okBox(r.closed ? 'Closed: the agent answers again.' : 'It was not open.'));
      loadList();
    } catch (err) {
      say(messages, errorBox(err));
    }
  }

  if (open) {
    convBox.append(
      h('h2', {}, 'Conversation with ', customerLink(open)),
      history,
      h('form', { id: 'reply', class: 'reply', onsubmit: reply }, text,
        h('div', { class: 'actions' },
          h('button', { type: 'submit', id: 'reply-send', text: 'Send reply' }),
          h('button', { type: 'button', id: 'conversation-close', class: 'secondary', text: 'Close conversation', onclick: close }))),
      messages);
    loadConversation();
  }
  loadList();

  const soonList = debounce(loadList, 150);
  const soonConversation = debounce(loadConversation, 150);
  return {
    changed(change) {
      soonList();
      if (open && (change.kind === 'resync' || change.customer_id === open)) soonConversation();
    },
    dispose() {
      disposed = true;
      soonList.cancel();
      soonConversation.cancel();
    },
  };
}
