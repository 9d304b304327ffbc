// The overview page: live charts of queued messages and message rates (from the samples of
// /api/overview the app takes on every refresh, on any page), object totals, the node and
// its listeners.

import { get } from './api.js';
import { lineChart } from './chart.js';
import { h, replaceContent, formatCount, formatRate, formatBytes, formatDuration, rateOf, errorBox } from './dom.js';

const HISTORY_MS = 10 * 60 * 1000;
const CHART_WINDOW_MS = 5 * 60 * 1000;

const history = [];

// Keeps one sample of the broker's counters and rates for the charts.
export function recordOverview(overview) {
  const at = Date.now();
  const stats = overview?.message_stats ?? {};
  const totals = overview?.queue_totals ?? {};
  history.push({
    at,
    values: {
      ready: totals.messages_ready ?? 0,
      unacked: totals.messages_unacknowledged ?? 0,
      total: totals.messages ?? 0,
      publish: rateOf(stats, 'publish') ?? 0,
      deliver: rateOf(stats, 'deliver_get') ?? 0,
      ack: rateOf(stats, 'ack') ?? 0,
    },
  });
  while (history.length && history[0].at < at - HISTORY_MS) history.shift();
}

function totalsCard(label, value) {
  return h('div', { class: 'stat' }, h('span', { class: 'stat-value' }, formatCount(value)), h('span', { class: 'stat-label' }, label));
}

export function overviewPage() {
  const queued = lineChart({
    title: 'Queued messages',
    series: [
      { key: 'ready', label: 'Ready' },
      { key: 'unacked', label: 'Unacked' },
      { key: 'total', label: 'Total' },
    ],
    format: formatCount,
    windowMs: CHART_WINDOW_MS,
  });
  const rates = lineChart({
    title: 'Message rates',
    series: [
      { key: 'publish', label: 'Publish' },
      { key: 'deliver', label: 'Deliver' },
      { key: 'ack', label: 'Acknowledge' },
    ],
    format: formatRate,
    windowMs: CHART_WINDOW_MS,
  });
  const totals = h('div', { class: 'stats' });
  const node = h('div', { class: 'table-scroll' });
  const listeners = h('div', { class: 'table-scroll' });
  const element = h(
    'div',
    { class: 'page overview' },
    h('h1', null, 'Overview'),
    h('section', { class: 'charts' }, queued.element, rates.element),
    h('section', null, h('h2', null, 'Totals'), totals),
    h('section', null, h('h2', null, 'Node'), node),
    h('section', null, h('h2', null, 'Listeners'), listeners),
  );

  async function refresh(overview) {
    queued.update(history);
    rates.update(history);
    const objects = overview?.object_totals ?? {};
    replaceContent(
      totals,
      totalsCard('Connections', objects.connections),
      totalsCard('Channels', objects.channels),
      totalsCard('Exchanges', objects.exchanges),
      totalsCard('Queues', objects.queues),
      totalsCard('Consumers', objects.consumers),
    );
    replaceContent(
      listeners,
      h(
        'table',
        { class: 'data' },
        h('thead', null, h('tr', null, h('th', null, 'Protocol'), h('th', null, 'Bound to'), h('th', { class: 'numeric' }, 'Port'))),
        h(
          'tbody',
          null,
          (overview?.listeners ?? []).map((listener) =>
            h('tr', null, h('td', null, listener.protocol), h('td', null, listener.ip_address), h('td', { class: 'numeric' }, String(listener.port))),
          ),
        ),
      ),
    );
    try {
      const [info] = await get('/nodes');
      replaceContent(
        node,
        h(
          'table',
          { class: 'data details' },
          h(
            'tbody',
            null,
            h('tr', null, h('th', null, 'Name'), h('td', null, info?.name ?? overview?.node ?? '')),
            h('tr', null, h('th', null, 'Version'), h('td', null, `${overview?.product_name ?? ''} ${overview?.product_version ?? ''}`)),
            h('tr', null, h('th', null, 'Uptime'), h('td', null, formatDuration(info?.uptime))),
            h('tr', null, h('th', null, 'Memory used'), h('td', null, formatBytes(info?.mem_used))),
            h('tr', null, h('th', null, 'File descriptors'), h('td', null, `${formatCount(info?.fd_used)} / ${formatCount(info?.fd_total)}`)),
            h('tr', null, h('th', null, 'Processors'), h('td', null, formatCount(info?.processors))),
          ),
        ),
      );
    } catch (error) {
      // Only monitoring users see the node; others get the overview without it.
      replaceContent(node, error.status === 401 ? h('p', { class: 'muted' }, error.message) : errorBox(error.message));
    }
  }

  return { title: 'Overview', element, refresh };
}
