// Payments per hour as SVG: bars for the amount (left axis, yuan), a line for the number of
// payments (right axis). Amounts stay integer fen; only pixel positions are fractional.

import { hourMinute, money, svg, t } from './common.js';

const WIDTH = 760;
const HEIGHT = 300;
const MARGIN = { top: 34, right: 48, bottom: 36, left: 76 };

/** The smallest 1, 2 or 5 times a power of ten (integer) that splits `max` into at most `ticks` steps. */
export function niceStep(max, ticks = 4) {
  const target = BigInt(max) <= 0n ? 1n : BigInt(max);
  let power = 1n;
  for (;;) {
    for (const m of [1n, 2n, 5n]) {
      const step = m * power;
      if (step * BigInt(ticks) >= target) return step;
    }
    power *= 10n;
  }
}

/** An SVG chart of `hours` ([{hour_start, payments, amount_fen}], oldest first). */
export function hourlyChart(hours) {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const maxFen = hours.reduce((m, x) => (BigInt(x.amount_fen) > m ? BigInt(x.amount_fen) : m), 0n);
  const fenStep = niceStep(maxFen === 0n ? 100n : maxFen);
  const fenTop = fenStep * 4n;
  const maxCount = hours.reduce((m, x) => Math.max(m, x.payments), 0);
  const countStep = Number(niceStep(Math.max(maxCount, 1)));
  const countTop = countStep * 4;
  const slot = plotW / Math.max(hours.length, 1);
  const barW = Math.max(slot * 0.62, 2);
  // Heights as fractions of the top tick; the division of two integers is exact enough for pixels.
  const yFen = (fen) => MARGIN.top + plotH - (Number(BigInt(fen) * 10000n / fenTop) / 10000) * plotH;
  const yCount = (n) => MARGIN.top + plotH - (n / countTop) * plotH;

  const grid = [];
  for (let i = 0n; i <= 4n; i += 1n) {
    const fen = fenStep * i;
    const y = yFen(fen);
    grid.push(svg('line', { class: 'grid', x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y }));
    grid.push(svg('text', { class: 'axis', x: MARGIN.left - 6, y: y + 4, 'text-anchor': 'end', text: money(fen) }));
    grid.push(svg('text', { class: 'axis', x: WIDTH - MARGIN.right + 6, y: y + 4, 'text-anchor': 'start', text: String(countStep * Number(i)) }));
  }

  const bars = hours.map((x, i) => {
    const xPos = MARGIN.left + i * slot + (slot - barW) / 2;
    const y = yFen(x.amount_fen);
    const label = t('stats.tooltip', { hour: hourMinute(x.hour_start), count: x.payments, amount: money(x.amount_fen) });
    return svg(
      'rect',
      {
        class: 'bar',
        x: xPos.toFixed(1),
        y: y.toFixed(1),
        width: barW.toFixed(1),
        height: (MARGIN.top + plotH - y).toFixed(1),
        'data-hour': x.hour_start,
        'data-payments': x.payments,
        'data-amount-fen': x.amount_fen,
      },
      svg('title', { text: label }),
    );
  });

  const points = hours.map((x, i) => [MARGIN.left + i * slot + slot / 2, yCount(x.payments)]);
  const line = svg('polyline', {
    class: 'count-line',
    points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' '),
  });
  const dots = points.map(([x, y], i) =>
    svg('circle', { class: 'count-dot', cx: x.toFixed(1), cy: y.toFixed(1), r: hours[i].payments ? 3.5 : 2 },
      svg('title', { text: t('stats.tooltip', { hour: hourMinute(hours[i].hour_start), count: hours[i].payments, amount: money(hours[i].amount_fen) }) })),
  );

  const labels = hours
    .map((x, i) => (i % 3 === 0 || i === hours.length - 1
      ? svg('text', { class: 'axis', x: (MARGIN.left + i * slot + slot / 2).toFixed(1), y: HEIGHT - MARGIN.bottom + 18, 'text-anchor': 'middle', text: hourMinute(x.hour_start) })
      : null))
    .filter(Boolean);

  return svg(
    'svg',
    {
      class: 'chart',
      id: 'hourly-chart',
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: 'img',
      'aria-label': t('stats.chart_label'),
    },
    svg('title', { text: t('stats.chart_label') }),
    grid,
    svg('line', { class: 'axis-line', x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH }),
    bars,
    line,
    dots,
    labels,
    svg('text', { class: 'axis-title', x: 8, y: 14, text: t('stats.amount_axis') }),
    svg('text', { class: 'axis-title', x: WIDTH - 8, y: 14, 'text-anchor': 'end', text: t('stats.count_axis') }),
  );
}
