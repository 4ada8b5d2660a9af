// Builds the page from data with DOM calls and textContent only: nothing
// the API returns is ever parsed as markup, so a customer's message that
// looks like HTML is shown as the text it is.

const SVG = 'http://www.w3.org/2000/svg';

/** Properties set as properties (not attributes). */
const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden', 'selected', 'open']);

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function apply(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') el.textContent = String(v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'dataset') for (const [d, dv] of Object.entries(v)) el.dataset[d] = String(dv);
    // CSS custom properties through the CSSOM, which the page's policy
    // allows (a `style` attribute it would refuse).
    else if (k === 'vars') for (const [n, nv] of Object.entries(v)) el.style.setProperty(`--${n}`, String(nv));
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (PROPERTIES.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

/** An HTML element: `h('p', {class: 'x', text: data})`, children appended as nodes or text. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** An SVG element, the same way. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG, tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** Empties `el`. */
export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A time as the operator's locale writes it; the RFC 3339 original on hover. */
export function when(rfc3339) {
  if (!rfc3339) return h('span', { class: 'muted', text: '—' });
  const d = new Date(rfc3339);
  const shown = Number.isNaN(d.getTime()) ? rfc3339 : d.toLocaleString();
  return h('time', { datetime: rfc3339, title: rfc3339, text: shown });
}

/** A number: whole, or with up to three decimals. */
export function num(x) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return String(x ?? '—');
  return Number.isInteger(x) ? String(x) : String(Math.round(x * 1000) / 1000);
}

/** A share (0–1) as a percentage. */
export function pct(x) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '—';
  return `${(x * 100).toFixed(1)}%`;
}

/** A channel's mark: its name on the channel's colour. */
export function mark(channel) {
  return h('span', { class: 'mark', dataset: { channel: channel || 'none' }, text: channel || 'none' });
}

/** An error as the API said it (status, code and message), never swallowed. */
export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert', text: String(err) });
}

/** A notice that something worked. */
export function okBox(text) {
  return h('p', { class: 'ok', role: 'status', text });
}

/** Shows `node` (or nothing) in `area`, in place of what was there. */
export function say(area, node) {
  clear(area);
  if (node) area.append(node);
}

/** A table: `columns` are [header, cell(row) → node or text] pairs. */
export function table(rows, columns, props) {
  return h('table', props,
    h('thead', {}, h('tr', {}, columns.map(([head]) => h('th', { text: head })))),
    h('tbody', {}, rows.map((r) => h('tr', {}, columns.map(([, cell]) => h('td', {}, cell(r)))))));
}

/** Calls `f` once, `ms` after the last of a burst of calls. */
export function debounce(f, ms) {
  let t = null;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => f(...args), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

/** A datetime-local input's value as RFC 3339 UTC ('' when empty). */
export function rfc3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
