// The operator dashboard's shell: sign-in, the navigation the token's role
// allows, the views, and the live change feed. docs/dashboard.md.

import { api, follow, setToken, whenUnauthorized } from './api.js';
import { clear, h } from './dom.js';
import * as customers from './customers.js';
import * as inbox from './inbox.js';
import * as conflicts from './conflicts.js';
import * as analytics from './analytics.js';
import * as audit from './audit.js';

// Who sees which view: INTERFACE §3.5's roles. An analyst sees reports
// only and an auditor the audit log only — the other views are not even
// in their navigation (and the API refuses them anyway).
const VIEWS = [
  { id: 'customers', label: 'Customers', roles: ['admin', 'agent'], module: customers, also: ['customer'] },
  { id: 'inbox', label: 'Inbox', roles: ['admin', 'agent'], module: inbox },
  { id: 'conflicts', label: 'Conflicts', roles: ['admin'], module: conflicts },
  { id: 'analytics', label: 'Analytics', roles: ['admin', 'analyst'], module: analytics },
  { id: 'audit', label: 'Audit log', roles: ['admin', 'auditor'], module: audit },
];

/** Roles that may follow the change feed (`GET /admin/v1/changes`). */
const LIVE_ROLES = ['admin', 'agent'];

const $ = (id) => document.getElementById(id);

/** The signed-in session: `{name, role, views, stopFeed, merges}`; null when signed out. */
let session = null;
/** The view on screen: `{id, handle}`, where `handle` may have `changed(change)` and `dispose()`. */
let current = null;

function showLive(state, detail) {
  const el = $('live');
  el.hidden = false;
  el.dataset.state = state;
  if (state === 'live') el.textContent = '● live';
  else if (state === 'warn') el.textContent = `● live — ${detail.error}`;
  else if (state === 'retry') el.textContent = `○ reconnecting in ${Math.ceil(detail.wait / 1000)} s — ${detail.error}`;
  else el.textContent = `○ live updates off — ${detail.error}`;
}

function route() {
  if (!session) return;
  const decode = (part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  };
  const [first, ...args] = location.hash.replace(/^#\/?/, '').split('/').map(decode);
  let view = session.views.find((v) => v.id === first || (v.also || []).includes(first));
  if (!view) {
    view = session.views[0];
    history.replaceState(null, '', `#/${view.id}`);
    args.length = 0;
  }
  if (current && current.handle && current.handle.dispose) current.handle.dispose();
  for (const a of $('nav').querySelectorAll('a')) {
    a.setAttribute('aria-current', a.dataset.view === view.id ? 'page' : 'false');
  }
  const root = clear($('view'));
  root.dataset.view = view.id;
  current = {
    id: view.id,
    handle: view.module.render(root, {
      role: session.role,
      args,
      session,
      go: (hash) => {
        location.hash = hash;
      },
    }),
  };
}

function changed(change) {
  if (current && current.handle && current.handle.changed) current.handle.changed(change);
}

function start(me) {
  const views = VIEWS.filter((v) => v.roles.includes(me.role));
  session = { name: me.name, role: me.role, views, stopFeed: null, merges: [] };
  $('sign-in').hidden = true;
  $('sign-in-error').hidden = true;
  const nav = clear($('nav'));
  for (const v of views) nav.append(h('a', { href: `#/${v.id}`, dataset: { view: v.id }, text: v.label }));
  $('who').hidden = false;
  $('who').textContent = `${me.name} · ${me.role}`;
  $('sign-out').hidden = false;
  $('view').hidden = false;
  if (LIVE_ROLES.includes(me.role)) {
    session.stopFeed = follow({
      onChange: changed,
      onState: showLive,
      // Changes may have been missed while the feed was down.
      onReconnect: () => changed({ customer_id: '', kind: 'resync' }),
    });
  }
  route();
}

/** Forgets the token and everything shown; `why` is said on the sign-in form. */
function signOut(why) {
  if (session && session.stopFeed) session.stopFeed();
  session = null;
  setToken(null);
  if (current && current.handle && current.handle.dispose) current.handle.dispose();
  current = null;
  clear($('view')).hidden = true;
  clear($('nav'));
  $('who').hidden = true;
  $('who').textContent = '';
  $('live').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in').hidden = false;
  const err = $('sign-in-error');
  err.hidden = !why;
  err.textContent = why || '';
  history.replaceState(null, '', location.pathname);
  $('token').focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $('token');
  const t = input.value.trim();
  // The token leaves the form at once: only this module's memory holds it.
  input.value = '';
  if (!t) return;
  setToken(t);
  const button = $('sign-in-button');
  button.disabled = true;
  try {
    start(await api('/admin/v1/me'));
  } catch (err) {
    setToken(null);
    const box = $('sign-in-error');
    box.hidden = false;
    box.textContent = `Not signed in — ${err}`;
  } finally {
    button.disabled = false;
  }
}

whenUnauthorized((err) => {
  if (session) signOut(`Signed out: the gateway no longer accepts this token (${err}).`);
});
$('sign-in').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', () => signOut(''));
window.addEventListener('hashchange', route);
$('token').focus();
