// Analytics (analysts and admins): first touch and conversion by channel,
// the channel-switch matrix as a heat map, the five attribution models side
// by side, and the journey paths. The reports hold no personal data — only
// channels, counts and customer ids — and this page shows nothing else.

import { api, withQuery } from './api.js';
import { bars, heatmap, meter } from './charts.js';
import { clear, debounce, errorBox, h, mark, num, pct, rfc3339, say, table, when } from './dom.js';

const REPORTS = [
  ['channels', 'Channels'],
  ['switches', 'Switches'],
  ['attribution', 'Attribution'],
  ['journeys', 'Journeys'],
];

const MODELS = [
  ['first', 'First touch'],
  ['last', 'Last touch'],
  ['linear', 'Linear'],
  ['position', 'Position 40/20/40'],
  ['time_decay', 'Time decay (7 days)'],
];

const BASE = '/admin/v1/analytics';

/** The channels a report names, most active first. */
function channelsOf(...maps) {
  const total = {};
  for (const m of maps) for (const [c, v] of Object.entries(m || {})) total[c] = (total[c] || 0) + (Number(v) || 0);
  return Object.keys(total).sort((a, b) => total[b] - total[a] || a.localeCompare(b));
}

function figure(key, label, value) {
  return h('div', { class: 'figure' },
    h('span', { class: 'figure-value', dataset: { figure: key }, text: value }),
    h('span', { class: 'figure-label', text: label }));
}

function channelsView(r) {
  const channels = channelsOf(r.active, r.first_touch, r.conversions);
  const maxActive = Math.max(0, ...channels.map((c) => (r.active || {})[c] || 0));
  return [
    h('div', { class: 'figures' },
      figure('customers', 'Customers', num(r.customers)),
      figure('multi_channel_customers', 'On several channels', num(r.multi_channel_customers)),
      figure('multi_channel_share', 'Multi-channel share', pct(r.multi_channel_share)),
      figure('avg_channels_per_customer', 'Channels per customer', num(r.avg_channels_per_customer))),
    h('section', { class: 'card' },
      h('h2', { text: 'First touch' }),
      h('p', { class: 'muted', text: 'Each customer once, by the channel of their first message.' }),
      bars(channelsOf(r.first_touch).map((c) => ({ label: c, channel: c, value: (r.first_touch || {})[c] || 0 })), { title: 'First touch by channel' })),
    h('section', { class: 'card' },
      h('h2', { text: 'Conversion by channel' }),
      h('p', { class: 'muted', text: 'Conversions by the channel of the last touch before the first purchase; rate = conversions / active customers.' }),
      table(channels, [
        ['Channel', (c) => mark(c)],
        ['Active', (c) => h('span', {}, h('span', { dataset: { channel: c, column: 'active' }, text: num((r.active || {})[c] || 0) }), ' ', meter((r.active || {})[c] || 0, maxActive))],
        ['First touch', (c) => h('span', { dataset: { channel: c, column: 'first_touch' }, text: num((r.first_touch || {})[c] || 0) })],
        ['Conversions', (c) => h('span', { dataset: { channel: c, column: 'conversions' }, text: num((r.conversions || {})[c] || 0) })],
        ['Rate', (c) => h('span', {}, h('span', { dataset: { channel: c, column: 'conversion_rate' }, text: pct((r.conversion_rate || {})[c] || 0) }), ' ', meter((r.conversion_rate || {})[c] || 0, 1))],
      ], { class: 'report', id: 'conversion-by-channel' })),
  ];
}

function switchesView(r) {
  const m = r.most_common;
  return [
    h('div', { class: 'figures' },
      figure('most_common_count', 'Most common switch', m ? num(m.count) : '—'),
      m ? h('p', { class: 'most-common' }, mark(m.from), ' → ', mark(m.to)) : h('p', { class: 'muted', text: 'No customer has switched channels yet.' })),
    h('section', { class: 'card' },
      h('h2', { text: 'Switch matrix' }),
      h('p', { class: 'muted', text: 'One count per pair of consecutive touches of one customer on different channels.' }),
      heatmap(r.matrix || {}, { mark })),
  ];
}

function attributionView(results) {
  const ok = results.filter((x) => x.report);
  const channels = channelsOf(...ok.map((x) => x.report.credit));
  const most = Math.max(0, ...ok.flatMap((x) => Object.values(x.report.credit || {})));
  const cell = (x, c) => {
    if (!x.report) return '';
    const v = (x.report.credit || {})[c] || 0;
    return h('span', {}, h('span', { dataset: { model: x.model, channel: c }, text: v.toFixed(2) }), ' ', meter(v, most));
  };
  return [
    h('section', { class: 'card' },
      h('h2', { text: 'Attribution models side by side' }),
      h('p', { class: 'muted', text: 'The touches in the 30 days before each purchase share its one credit; “none” is a purchase with no touch in its window.' }),
      results.filter((x) => x.error).map((x) => h('div', {}, h('strong', { text: `${x.label}: ` }), errorBox(x.error))),
      h('table', { class: 'report attribution', id: 'attribution' },
        h('thead', {}, h('tr', {}, h('th', { text: 'Channel' }), results.map((x) => h('th', { text: x.label })))),
        h('tbody', {}, channels.map((c) => h('tr', {}, h('th', {}, mark(c)), results.map((x) => h('td', {}, cell(x, c)))))),
        h('tfoot', {}, h('tr', {}, h('th', { text: 'Purchases' }),
          results.map((x) => h('td', { dataset: { model: x.model, column: 'conversions' }, text: x.report ? num(x.report.conversions) : '—' })))))),
  ];
}

function journeysView(r) {
  const paths = r.paths || [];
  const most = Math.max(0, ...paths.map((p) => p.customers || 0));
  const touchpoints = h('div', { id: 'touchpoints' });
  const who = h('input', { id: 'journey-customer', type: 'search', autocomplete: 'off', placeholder: 'c_…', 'aria-label': 'Customer id' });
  const lookup = h('form', {
    class: 'inline',
    onsubmit: async (e) => {
      e.preventDefault();
      if (!who.value.trim()) return;
      try {
        const t = await api(withQuery(`${BASE}/journeys`, { customer_id: who.value.trim() }));
        say(touchpoints, table(t.touchpoints || [], [
          ['At', (p) => when(p.at)],
          ['Channel', (p) => mark(p.channel)],
          ['Kind', (p) => p.kind],
        ], { class: 'report' }));
      } catch (err) {
        say(touchpoints, errorBox(err));
      }
    },
  }, who, h('button', { type: 'submit', id: 'journey-show', text: 'Show touchpoints' }));
  return [
    h('section', { class: 'card' },
      h('h2', { text: 'Journey paths' }),
      h('p', { class: 'muted', text: "Each customer's distinct channels in order of first use, most common first." }),
      paths.length
        ? table(paths, [
          ['Path', (p) => h('span', { class: 'path' }, (p.path || []).flatMap((c, i) => (i ? [' → ', mark(c)] : [mark(c)])))],
          ['Customers', (p) => h('span', {}, h('span', { dataset: { column: 'customers' }, text: num(p.customers) }), ' ', meter(p.customers, most))],
          ['Conversions', (p) => num(p.conversions)],
          ['Rate', (p) => pct(p.customers ? p.conversions / p.customers : 0)],
        ], { class: 'report', id: 'journeys' })
        : h('p', { class: 'muted', text: 'No journeys in this range.' })),
    h('section', { class: 'card' },
      h('h2', { text: "One customer's touchpoints" }),
      lookup, touchpoints),
  ];
}

async function download(path, name, area) {
  try {
    const text = await api(path, { text: true });
    const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
    const a = h('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    say(area, errorBox(err));
  }
}

export function render(root, ctx) {
  const report = REPORTS.some(([id]) => id === ctx.args[0]) ? ctx.args[0] : 'channels';
  ctx.session.analytics = ctx.session.analytics || { from: '', to: '', channel: '' };
  const f = ctx.session.analytics;
  let disposed = false;
  let seq = 0;
  const messages = h('div', { class: 'messages', id: 'analytics-messages' });
  const body = h('div', { id: 'report', dataset: { report } });
  const input = (id, label, props) => h('label', {}, label, h('input', { id, autocomplete: 'off', ...props }));
  const form = h('form', { class: 'filters', id: 'analytics-filters' },
    input('analytics-from', 'From', { type: 'datetime-local', value: f.from }),
    input('analytics-to', 'To', { type: 'datetime-local', value: f.to }),
    input('analytics-channel', 'Channel', { type: 'search', placeholder: 'all', value: f.channel }),
    h('button', { type: 'submit', text: 'Apply' }),
    h('span', { class: 'csv' }, 'CSV: ',
      (report === 'attribution' ? MODELS.map(([m]) => [m, { model: m }]) : [[report, {}]]).map(([label, extra]) => h('button', {
        type: 'button', class: 'link', text: label,
        onclick: () => download(withQuery(`${BASE}/${report}`, { ...query(), ...extra, format: 'csv' }), `${label}.csv`, messages),
      }))));
  root.append(
    h('h1', { text: 'Analytics' }),
    h('nav', { class: 'tabs', 'aria-label': 'Reports' },
      REPORTS.map(([id, label]) => h('a', { href: `#/analytics/${id}`, 'aria-current': id === report ? 'page' : 'false', text: label }))),
    form, messages, body);

  function query() {
    return { from: rfc3339(f.from), to: rfc3339(f.to), channel: f.channel.trim() };
  }

  async function load() {
    const mine = ++seq;
    let nodes;
    try {
      if (report === 'attribution') {
        const results = await Promise.all(MODELS.map(async ([model, label]) => {
          try {
            return { model, label, report: await api(withQuery(`${BASE}/attribution`, { ...query(), model })) };
          } catch (error) {
            return { model, label, error };
          }
        }));
        nodes = attributionView(results);
      } else {
        const r = await api(withQuery(`${BASE}/${report}`, query()));
        nodes = report === 'channels' ? channelsView(r) : report === 'switches' ? switchesView(r) : journeysView(r);
      }
    } catch (err) {
      if (!disposed && mine === seq) say(body, errorBox(err));
      return;
    }
    if (disposed || mine !== seq) return;
    say(messages, null);
    clear(body).append(...nodes.flat());
    body.dataset.loaded = 'true';
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    f.from = root.querySelector('#analytics-from').value;
    f.to = root.querySelector('#analytics-to').value;
    f.channel = root.querySelector('#analytics-channel').value;
    load();
  });
  load();

  // Reports move as messages arrive: read again now and then, not per message.
  const soon = debounce(load, 2000);
  return {
    changed: soon,
    dispose() {
      disposed = true;
      soon.cancel();
    },
  };
}
