// One queue's page: its details and message counts, consumers, bindings, the publish and get
// forms, and purge / delete.

import { get, del, objectPath } from './api.js';
import { publishForm, getForm } from './forms.js';
import {
  h,
  replaceContent,
  link,
  objectHref,
  exchangeLabel,
  featureTags,
  keyValues,
  formatCount,
  formatRate,
  rateOf,
  errorBox,
} from './dom.js';

function row(label, ...value) {
  return h('tr', null, h('th', { scope: 'row' }, label), h('td', null, ...value));
}

function table(headers, rows, emptyText) {
  return h(
    'table',
    { class: 'data' },
    h('thead', null, h('tr', null, headers.map((header) => h('th', { scope: 'col' }, header)))),
    h('tbody', null, rows.length ? rows : h('tr', null, h('td', { colspan: headers.length, class: 'empty' }, emptyText))),
  );
}

// Beyond this many bindings the table shows the first ones and says how many there are.
const MAX_BINDINGS_SHOWN = 500;

// The bindings of a queue or exchange, one row each.
export function bindingsTable(allBindings, { showSource, showDestination }) {
  const bindings = allBindings.slice(0, MAX_BINDINGS_SHOWN);
  const headers = [];
  if (showSource) headers.push('From');
  if (showDestination) headers.push('To');
  headers.push('Routing key', 'Arguments');
  const rows = bindings.map((binding) => {
    const cells = [];
    if (showSource) {
      cells.push(
        binding.source === ''
          ? h('td', null, h('span', { class: 'muted' }, '(Default exchange binding)'))
          : h('td', null, link(objectHref('exchanges', binding.vhost, binding.source), binding.source)),
      );
    }
    if (showDestination) {
      const kind = binding.destination_type === 'exchange' ? 'exchanges' : 'queues';
      cells.push(h('td', null, link(objectHref(kind, binding.vhost, binding.destination), exchangeLabel(binding.destination)), ` (${binding.destination_type})`));
    }
    cells.push(h('td', null, binding.routing_key ?? ''), h('td', null, keyValues(binding.arguments)));
    return h('tr', null, cells);
  });
  const shown = table(headers, rows, 'No bindings');
  if (allBindings.length <= bindings.length) return shown;
  return h('div', null, shown, h('p', { class: 'hint' }, `Showing the first ${formatCount(bindings.length)} of ${formatCount(allBindings.length)} bindings.`));
}

export function queuePage(vhost, name, { navigate }) {
  const path = objectPath('queues', vhost, name);
  const details = h('div', { class: 'table-scroll' });
  const consumers = h('div', { class: 'table-scroll' });
  const bindings = h('div', { class: 'table-scroll' });
  const actionStatus = h('p', { class: 'form-status', role: 'status' });

  const purge = h('button', { type: 'button', class: 'secondary' }, 'Purge messages');
  const remove = h('button', { type: 'button', class: 'danger' }, 'Delete queue');
  purge.addEventListener('click', async () => {
    if (!window.confirm(`Purge all ready messages of queue '${name}'?`)) return;
    try {
      await del(`${path}/contents`);
      actionStatus.className = 'form-status ok';
      actionStatus.textContent = 'Queue purged.';
      refresh();
    } catch (error) {
      actionStatus.className = 'form-status error';
      actionStatus.textContent = error.message;
    }
  });
  remove.addEventListener('click', async () => {
    if (!window.confirm(`Delete queue '${name}' and its messages?`)) return;
    try {
      await del(path);
      navigate('#/queues');
    } catch (error) {
      actionStatus.className = 'form-status error';
      actionStatus.textContent = error.message;
    }
  });

  const element = h(
    'div',
    { class: 'page queue' },
    h('p', { class: 'breadcrumb' }, link('#/queues', 'Queues'), ' / ', vhost),
    h('h1', null, 'Queue ', h('span', { class: 'object-name' }, name)),
    h('section', null, h('h2', null, 'Details'), details),
    h('section', null, h('h2', null, 'Consumers'), consumers),
    h('section', null, h('h2', null, 'Bindings'), bindings),
    h('section', null, h('h2', null, 'Publish message'), publishForm({ vhost, exchange: '', routingKey: name, onPublished: () => refresh() })),
    h('section', null, h('h2', null, 'Get messages'), getForm({ vhost, queue: name, onDone: () => refresh() })),
    h('section', null, h('h2', null, 'Purge / delete'), h('div', { class: 'actions' }, purge, remove), actionStatus),
  );

  async function refresh() {
    let queue;
    try {
      queue = await get(path);
    } catch (error) {
      replaceContent(details, errorBox(error.status === 404 ? `No queue '${name}' in vhost '${vhost}'` : error.message));
      return;
    }
    replaceContent(
      details,
      h(
        'table',
        { class: 'data details' },
        h(
          'tbody',
          null,
          row('Virtual host', queue.vhost),
          row('Type', queue.type ?? ''),
          row('Features', featureTags(queue)),
          row('State', queue.state ?? ''),
          row('Policy', queue.policy ?? h('span', { class: 'muted' }, '–')),
          row('Consumers', formatCount(queue.consumers)),
          row('Ready', h('span', { class: 'count-ready' }, formatCount(queue.messages_ready))),
          row('Unacked', h('span', { class: 'count-unacked' }, formatCount(queue.messages_unacknowledged))),
          row('Total', h('span', { class: 'count-total' }, formatCount(queue.messages))),
          row('Incoming', formatRate(rateOf(queue.message_stats, 'publish'))),
          row('Arguments', keyValues(queue.arguments)),
        ),
      ),
    );
    const consumerRows = (queue.consumer_details ?? []).map((consumer) =>
      h(
        'tr',
        null,
        h('td', null, consumer.channel_details?.name ?? ''),
        h('td', null, consumer.consumer_tag ?? ''),
        h('td', null, consumer.ack_required ? 'yes' : 'no'),
        h('td', null, consumer.exclusive ? 'yes' : 'no'),
        h('td', { class: 'numeric' }, formatCount(consumer.prefetch_count)),
        h('td', null, consumer.activity_status ?? (consumer.active ? 'up' : '')),
      ),
    );
    replaceContent(consumers, table(['Channel', 'Consumer tag', 'Ack required', 'Exclusive', 'Prefetch count', 'Status'], consumerRows, 'No consumers'));
    try {
      replaceContent(bindings, bindingsTable((await get(`${path}/bindings`)) ?? [], { showSource: true }));
    } catch (error) {
      replaceContent(bindings, errorBox(error.message));
    }
  }

  return { title: `Queue ${name}`, element, refresh };
}
