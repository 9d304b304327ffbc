// A time-series line chart drawn as inline SVG: the last few minutes of samples, a y axis
// with round ticks and a legend with the latest values. Knows nothing of where samples come
// from.

import { h, svg, replaceContent, formatTime } from './dom.js';

const WIDTH = 640;
const HEIGHT = 200;
const MARGIN = { top: 12, right: 12, bottom: 24, left: 56 };
const Y_TICKS = 4;
// A young history fills the chart rather than hugging its right edge, down to this span.
const MIN_WINDOW_MS = 60 * 1000;

// The smallest "round" number (1, 2, 2.5, 5 × 10^n) at or above `value`.
function roundUp(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

function tickLabel(value) {
  if (value >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${+(value / 1e3).toFixed(1)}k`;
  return `${+value.toFixed(2)}`;
}

// series: [{ key, label }]; format: how the legend shows a value (rate or count); windowMs:
// the longest span shown.
export function lineChart({ title, series, format, windowMs }) {
  const plot = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: 'chart-plot',
    role: 'img',
    'aria-label': title,
  });
  const legend = h('ul', { class: 'chart-legend' });
  const element = h('figure', { class: 'chart' }, h('figcaption', null, title), plot, legend);

  function update(samples) {
    const now = samples.length ? samples[samples.length - 1].at : Date.now();
    const oldest = samples.length ? samples[0].at : now;
    const span = Math.min(windowMs, Math.max(MIN_WINDOW_MS, now - oldest));
    const since = now - span;
    const visible = samples.filter((sample) => sample.at >= since);
    let highest = 0;
    for (const sample of visible) {
      for (const { key } of series) highest = Math.max(highest, sample.values[key] ?? 0);
    }
    const top = roundUp(highest);
    const width = WIDTH - MARGIN.left - MARGIN.right;
    const height = HEIGHT - MARGIN.top - MARGIN.bottom;
    const x = (at) => MARGIN.left + ((at - since) / span) * width;
    const y = (value) => MARGIN.top + height - (value / top) * height;

    const grid = [];
    for (let tick = 0; tick <= Y_TICKS; tick += 1) {
      const value = (top * tick) / Y_TICKS;
      grid.push(
        svg('line', { class: 'chart-grid', x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }),
        svg('text', { class: 'chart-axis', x: MARGIN.left - 6, y: y(value) + 4, 'text-anchor': 'end' }, tickLabel(value)),
      );
    }
    for (const at of [since, since + span / 2, now]) {
      const anchor = at === since ? 'start' : at === now ? 'end' : 'middle';
      grid.push(svg('text', { class: 'chart-axis', x: x(at), y: HEIGHT - 6, 'text-anchor': anchor }, formatTime(new Date(at))));
    }
    const lines = series.map(({ key }, index) => {
      const points = visible
        .filter((sample) => typeof sample.values[key] === 'number')
        .map((sample) => `${x(sample.at).toFixed(1)},${y(sample.values[key]).toFixed(1)}`);
      return svg('polyline', { class: `chart-line series-${index}`, points: points.join(' ') });
    });
    replaceContent(plot, grid, lines);

    const latest = visible[visible.length - 1];
    replaceContent(
      legend,
      series.map(({ key, label }, index) =>
        h(
          'li',
          null,
          h('span', { class: `swatch series-${index}` }),
          h('span', { class: 'legend-label' }, label),
          h('span', { class: 'legend-value' }, format(latest?.values[key])),
        ),
      ),
    );
  }

  update([]);
  return { element, update };
}
