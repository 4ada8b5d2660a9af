// Charts drawn here, with SVG and CSS built node by node: a horizontal bar
// chart, a heat map and a meter. No library; labels are set as text.

import { h, num, s } from './dom.js';

/**
 * Horizontal bars: `items` are `{label, value, channel?}`; `format` writes
 * a value. Bars take their channel's colour (app.css).
 */
export function bars(items, { format = num, title = 'bar chart' } = {}) {
  const rowH = 28;
  const labelW = 130;
  const valueW = 80;
  const width = 600;
  const barW = width - labelW - valueW;
  const max = Math.max(0, ...items.map((i) => i.value)) || 1;
  const height = Math.max(1, items.length) * rowH + 4;
  const svg = s('svg', {
    class: 'chart bars', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': title,
  });
  if (!items.length) {
    svg.append(s('text', { x: 8, y: 20, class: 'label', text: 'No data in this range.' }));
    return svg;
  }
  items.forEach((it, i) => {
    const y = i * rowH + 2;
    const w = it.value > 0 ? Math.max(2, (it.value / max) * barW) : 0;
    svg.append(s('g', { class: 'bar', dataset: { channel: it.channel || it.label } },
      s('title', { text: `${it.label}: ${format(it.value)}` }),
      s('text', { x: labelW - 8, y: y + rowH / 2, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'label', text: it.label }),
      s('rect', { x: labelW, y: y + 5, width: w.toFixed(1), height: rowH - 10, rx: 3 }),
      s('text', { x: labelW + w + 6, y: y + rowH / 2, 'dominant-baseline': 'middle', class: 'value', text: format(it.value) })));
  });
  return svg;
}

/**
 * A heat map of `matrix` (`{row: {column: n}}`): one cell per pair, its
 * colour by `n` against the largest, the count written in it.
 */
export function heatmap(matrix, { rowTitle = 'from', columnTitle = 'to', mark } = {}) {
  const rows = Object.keys(matrix || {}).sort();
  const columns = [...new Set(rows.flatMap((r) => Object.keys(matrix[r] || {})))].sort();
  const all = [...new Set([...rows, ...columns])].sort();
  const max = Math.max(0, ...rows.flatMap((r) => Object.values(matrix[r] || {}))) || 1;
  const label = (c) => (mark ? mark(c) : c);
  return h('table', { class: 'heatmap', id: 'switch-matrix' },
    h('thead', {}, h('tr', {},
      h('th', { class: 'corner', text: `${rowTitle} ↓ · ${columnTitle} →` }),
      all.map((c) => h('th', { scope: 'col' }, label(c))))),
    h('tbody', {}, all.map((r) => h('tr', {},
      h('th', { scope: 'row' }, label(r)),
      all.map((c) => {
        const n = (matrix[r] || {})[c] || 0;
        const heat = n / max;
        return h('td', {
          class: `heat${heat > 0.55 ? ' hot' : ''}${r === c ? ' same' : ''}`,
          vars: { heat: heat.toFixed(3) },
          dataset: { from: r, to: c },
          title: `${r} → ${c}: ${n}`,
          text: n ? String(n) : '',
        });
      })))));
}

/** A small bar for `value` out of `max`, beside a written figure. */
export function meter(value, max) {
  const w = max > 0 ? Math.max(0, Math.min(1, value / max)) * 100 : 0;
  return h('span', { class: 'meter', 'aria-hidden': 'true' }, h('i', { vars: { w: w.toFixed(1) } }));
}
