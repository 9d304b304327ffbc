// The listing pages: queues, exchanges, connections, channels, users, vhosts and policies,
// each a table of the API's list endpoint with the columns RabbitMQ's UI shows.

import { listTable } from './table.js';
import {
  h,
  link,
  objectHref,
  exchangeLabel,
  featureTags,
  keyValues,
  formatCount,
  formatRate,
  rateOf,
} from './dom.js';

const text = (key) => (item) => String(item[key] ?? '');
const count = (key) => (item) => formatCount(item[key]);
const statsRate = (key) => (item) => formatRate(rateOf(item.message_stats, key));
const yesNo = (key) => (item) => (item[key] ? 'yes' : 'no');

function stateCell(item) {
  const state = item.state ?? '';
  return h('span', { class: `state state-${state}` }, state);
}

const vhostColumn = { label: 'Virtual host', sort: 'vhost', cell: text('vhost') };

const PAGES = {
  queues: {
    title: 'Queues',
    path: '/queues',
    paged: true,
    emptyText: 'No queues',
    columns: [
      vhostColumn,
      { label: 'Name', sort: 'name', cell: (q) => link(objectHref('queues', q.vhost, q.name), q.name) },
      { label: 'Type', sort: 'type', cell: text('type') },
      { label: 'Features', cell: featureTags },
      { label: 'State', sort: 'state', cell: stateCell },
      { label: 'Ready', sort: 'messages_ready', numeric: true, cell: count('messages_ready') },
      { label: 'Unacked', sort: 'messages_unacknowledged', numeric: true, cell: count('messages_unacknowledged') },
      { label: 'Total', sort: 'messages', numeric: true, cell: count('messages') },
      { label: 'Consumers', sort: 'consumers', numeric: true, cell: count('consumers') },
      { label: 'Incoming', sort: 'message_stats.publish_details.rate', numeric: true, cell: statsRate('publish') },
      { label: 'Deliver / get', sort: 'message_stats.deliver_get_details.rate', numeric: true, cell: statsRate('deliver_get') },
      { label: 'Ack', sort: 'message_stats.ack_details.rate', numeric: true, cell: statsRate('ack') },
    ],
  },
  exchanges: {
    title: 'Exchanges',
    path: '/exchanges',
    paged: true,
    emptyText: 'No exchanges',
    columns: [
      vhostColumn,
      { label: 'Name', sort: 'name', cell: (x) => link(objectHref('exchanges', x.vhost, x.name), exchangeLabel(x.name)) },
      { label: 'Type', sort: 'type', cell: text('type') },
      { label: 'Features', cell: featureTags },
      { label: 'Message rate in', sort: 'message_stats.publish_in_details.rate', numeric: true, cell: statsRate('publish_in') },
      { label: 'Message rate out', sort: 'message_stats.publish_out_details.rate', numeric: true, cell: statsRate('publish_out') },
    ],
  },
  connections: {
    title: 'Connections',
    path: '/connections',
    paged: true,
    emptyText: 'No connections',
    columns: [
      vhostColumn,
      { label: 'Name', sort: 'name', cell: text('name') },
      { label: 'User', sort: 'user', cell: text('user') },
      { label: 'State', sort: 'state', cell: stateCell },
      { label: 'TLS', sort: 'ssl', cell: yesNo('ssl') },
      { label: 'Protocol', sort: 'protocol', cell: text('protocol') },
      { label: 'Channels', sort: 'channels', numeric: true, cell: count('channels') },
      {
        label: 'Client',
        sort: 'client_properties.product',
        cell: (c) => [c.client_properties?.product, c.client_properties?.version].filter(Boolean).join(' '),
      },
      {
        label: 'Connected at',
        sort: 'connected_at',
        cell: (c) => (typeof c.connected_at === 'number' ? new Date(c.connected_at).toLocaleString() : ''),
      },
    ],
  },
  channels: {
    title: 'Channels',
    path: '/channels',
    paged: true,
    emptyText: 'No channels',
    columns: [
      vhostColumn,
      { label: 'Channel', sort: 'name', cell: text('name') },
      { label: 'User', sort: 'user', cell: text('user') },
      { label: 'Mode', cell: (c) => [c.confirm ? 'C' : '', c.transactional ? 'T' : ''].join('') || '–' },
      { label: 'State', sort: 'state', cell: stateCell },
      { label: 'Consumers', sort: 'consumer_count', numeric: true, cell: count('consumer_count') },
      { label: 'Prefetch', sort: 'prefetch_count', numeric: true, cell: count('prefetch_count') },
      { label: 'Unacked', sort: 'messages_unacknowledged', numeric: true, cell: count('messages_unacknowledged') },
      { label: 'Unconfirmed', sort: 'messages_unconfirmed', numeric: true, cell: count('messages_unconfirmed') },
      { label: 'Publish', sort: 'message_stats.publish_details.rate', numeric: true, cell: statsRate('publish') },
      { label: 'Deliver / get', sort: 'message_stats.deliver_get_details.rate', numeric: true, cell: statsRate('deliver_get') },
      { label: 'Ack', sort: 'message_stats.ack_details.rate', numeric: true, cell: statsRate('ack') },
    ],
  },
  users: {
    title: 'Users',
    path: '/users',
    paged: false,
    emptyText: 'No users',
    columns: [
      { label: 'Name', sort: 'name', cell: text('name') },
      {
        label: 'Tags',
        cell: (u) => {
          const tags = Array.isArray(u.tags) ? u.tags : String(u.tags ?? '').split(',').filter(Boolean);
          return tags.length ? tags.map((tag) => h('span', { class: 'tag' }, tag)) : h('span', { class: 'muted' }, '–');
        },
      },
      { label: 'Has password', cell: (u) => (u.password_hash ? 'yes' : 'no') },
    ],
  },
  vhosts: {
    title: 'Virtual hosts',
    path: '/vhosts',
    paged: false,
    emptyText: 'No virtual hosts',
    columns: [
      { label: 'Name', sort: 'name', cell: text('name') },
      { label: 'Description', sort: 'description', cell: text('description') },
      { label: 'Tags', cell: (v) => (Array.isArray(v.tags) ? v.tags.join(', ') : String(v.tags ?? '')) },
      { label: 'Default queue type', sort: 'default_queue_type', cell: text('default_queue_type') },
      { label: 'Ready', sort: 'messages_ready', numeric: true, cell: count('messages_ready') },
      { label: 'Unacked', sort: 'messages_unacknowledged', numeric: true, cell: count('messages_unacknowledged') },
      { label: 'Total', sort: 'messages', numeric: true, cell: count('messages') },
      { label: 'Tracing', sort: 'tracing', cell: yesNo('tracing') },
    ],
  },
  policies: {
    title: 'Policies',
    path: '/policies',
    paged: false,
    emptyText: 'No policies',
    columns: [
      vhostColumn,
      { label: 'Name', sort: 'name', cell: text('name') },
      { label: 'Pattern', sort: 'pattern', cell: (p) => h('code', null, p.pattern ?? '') },
      { label: 'Apply to', sort: 'apply-to', cell: text('apply-to') },
      { label: 'Definition', cell: (p) => keyValues(p.definition) },
      { label: 'Priority', sort: 'priority', numeric: true, cell: count('priority') },
    ],
  },
};

export const LIST_PAGES = Object.keys(PAGES);

export function listPage(kind) {
  const page = PAGES[kind];
  const table = listTable({
    id: `${kind}-table`,
    title: `All ${page.title.toLowerCase()}`,
    columns: page.columns,
    path: () => page.path,
    paged: page.paged,
    emptyText: page.emptyText,
  });
  const element = h('div', { class: `page ${kind}` }, h('h1', null, page.title), table.element);
  return { title: page.title, element, refresh: () => table.refresh() };
}
