// The forms that act on messages: publish (POST /api/exchanges/{vhost}/{exchange}/publish) and
// get (POST /api/queues/{vhost}/{queue}/get), used by the queue and exchange pages.

import { post, objectPath } from './api.js';
import { h, field, select, replaceContent, keyValues, formatCount, exchangeLabel, errorBox } from './dom.js';

// The basic properties the publish API accepts besides delivery_mode and headers.
const PROPERTY_NAMES = [
  'content_type',
  'content_encoding',
  'priority',
  'correlation_id',
  'reply_to',
  'expiration',
  'message_id',
  'timestamp',
  'type',
  'user_id',
  'app_id',
  'cluster_id',
];
const NUMERIC_PROPERTIES = new Set(['priority', 'timestamp']);

const HEADER_TYPES = [
  ['string', 'String'],
  ['number', 'Number'],
  ['boolean', 'Boolean'],
];

// Rows of key / value (and optionally type) inputs; a fresh empty row appears whenever the
// last one gets a key, so any number of entries can be typed without an "add" button.
function keyValueRows({ name, keyList, typed }) {
  const rows = h('div', { class: 'key-value-rows' });
  const listId = keyList ? `${name}-keys` : null;
  const datalist = keyList ? h('datalist', { id: listId }, keyList.map((key) => h('option', { value: key }))) : null;

  function addRow() {
    const key = h('input', { type: 'text', class: 'kv-key', 'aria-label': `${name} key`, list: listId, autocomplete: 'off' });
    const value = h('input', { type: 'text', class: 'kv-value', 'aria-label': `${name} value`, autocomplete: 'off' });
    const type = typed ? select('type', HEADER_TYPES, 'string') : null;
    if (type) type.setAttribute('aria-label', `${name} type`);
    const row = h('div', { class: 'kv-row' }, key, h('span', { class: 'equals' }, '='), value, type);
    key.addEventListener('input', () => {
      if (key.value && row === rows.lastElementChild) addRow();
    });
    rows.append(row);
  }

  function read() {
    const entries = [];
    for (const row of rows.children) {
      const key = row.querySelector('.kv-key').value.trim();
      if (!key) continue;
      entries.push({ key, value: row.querySelector('.kv-value').value, type: row.querySelector('select')?.value ?? 'string' });
    }
    return entries;
  }

  function reset() {
    rows.replaceChildren();
    addRow();
  }

  reset();
  return { element: h('div', null, rows, datalist), read, reset };
}

function typedValue({ key, value, type }) {
  if (type === 'number') {
    const number = Number(value);
    if (value.trim() === '' || !Number.isFinite(number)) throw new Error(`Header '${key}' is not a number`);
    return number;
  }
  if (type === 'boolean') {
    if (value !== 'true' && value !== 'false') throw new Error(`Header '${key}' must be true or false`);
    return value === 'true';
  }
  return value;
}

function status(element, kind, text) {
  element.className = `form-status ${kind}`;
  element.textContent = text;
}

// routingKey: fixed (a queue's name, through the default exchange) or null for an input.
export function publishForm({ vhost, exchange, routingKey = null, onPublished = () => {} }) {
  const routingKeyInput = routingKey === null ? h('input', { type: 'text', name: 'routing_key', autocomplete: 'off' }) : null;
  const deliveryMode = select('delivery_mode', [['1', '1 - Non-persistent'], ['2', '2 - Persistent']], '1');
  const headers = keyValueRows({ name: 'Header', typed: true });
  const properties = keyValueRows({ name: 'Property', keyList: PROPERTY_NAMES });
  const payload = h('textarea', { name: 'payload', rows: 5 });
  const encoding = select('payload_encoding', [['string', 'String (default)'], ['base64', 'Base64']], 'string');
  const outcome = h('p', { class: 'form-status', role: 'status' });
  const submit = h('button', { type: 'submit' }, 'Publish message');

  const form = h(
    'form',
    { class: 'message-form', 'aria-label': 'Publish message' },
    routingKeyInput
      ? field('Routing key', routingKeyInput)
      : h(
          'p',
          { class: 'hint' },
          'The message goes to the default exchange with routing key ',
          h('strong', null, routingKey),
          ', which routes it to this queue.',
        ),
    field('Delivery mode', deliveryMode),
    h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Headers'), headers.element),
    h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Properties'), properties.element),
    field('Payload', payload),
    field('Payload encoding', encoding),
    h('div', { class: 'actions' }, submit),
    outcome,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let body;
    try {
      const messageProperties = { delivery_mode: Number(deliveryMode.value) };
      const headerEntries = headers.read();
      if (headerEntries.length) {
        messageProperties.headers = Object.fromEntries(headerEntries.map((entry) => [entry.key, typedValue(entry)]));
      }
      for (const { key, value } of properties.read()) {
        messageProperties[key] = NUMERIC_PROPERTIES.has(key) && value.trim() !== '' && Number.isFinite(Number(value)) ? Number(value) : value;
      }
      body = {
        properties: messageProperties,
        routing_key: routingKeyInput ? routingKeyInput.value : routingKey,
        payload: payload.value,
        payload_encoding: encoding.value,
      };
    } catch (error) {
      status(outcome, 'error', error.message);
      return;
    }
    submit.disabled = true;
    try {
      const answer = await post(`${objectPath('exchanges', vhost, exchange === '' ? 'amq.default' : exchange)}/publish`, body);
      if (answer?.routed) {
        status(outcome, 'ok', 'Message published.');
      } else {
        status(outcome, 'warning', 'Message published, but not routed.');
      }
      onPublished();
    } catch (error) {
      status(outcome, 'error', error.message);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function messageCard(message, index) {
  return h(
    'article',
    { class: 'message' },
    h('h4', null, `Message ${index + 1}`),
    h('p', { class: 'hint' }, `The server reported ${formatCount(message.message_count)} messages remaining.`),
    h(
      'dl',
      { class: 'key-values' },
      h('dt', null, 'Exchange'),
      h('dd', null, exchangeLabel(message.exchange ?? '')),
      h('dt', null, 'Routing key'),
      h('dd', null, message.routing_key ?? ''),
      h('dt', null, 'Redelivered'),
      h('dd', null, message.redelivered ? 'yes' : 'no'),
      h('dt', null, 'Properties'),
      h('dd', null, keyValues(message.properties)),
      h('dt', null, 'Payload'),
      h('dd', null, `${formatCount(message.payload_bytes)} bytes, encoding: ${message.payload_encoding}`),
    ),
    h('pre', { class: 'payload' }, message.payload ?? ''),
  );
}

export function getForm({ vhost, queue, onDone = () => {} }) {
  const ackMode = select(
    'ackmode',
    [
      ['ack_requeue_true', 'Nack message requeue true'],
      ['ack_requeue_false', 'Automatic ack'],
      ['reject_requeue_true', 'Reject requeue true'],
      ['reject_requeue_false', 'Reject requeue false'],
    ],
    'ack_requeue_true',
  );
  const encoding = select('encoding', [['auto', 'Automatic string/base64'], ['base64', 'Base64']], 'auto');
  const count = h('input', { type: 'number', name: 'count', min: '1', value: '1' });
  const submit = h('button', { type: 'submit' }, 'Get messages');
  const results = h('div', { class: 'messages', 'aria-live': 'polite' });

  const form = h(
    'form',
    { class: 'message-form', 'aria-label': 'Get messages' },
    h('p', { class: 'hint' }, 'Getting messages is a destructive action: with requeueing they come back redelivered, in their place in the queue.'),
    field('Ack mode', ackMode),
    field('Encoding', encoding),
    field('Messages', count),
    h('div', { class: 'actions' }, submit),
    results,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const wanted = Number(count.value);
    if (!Number.isInteger(wanted) || wanted < 1) {
      replaceContent(results, errorBox('The number of messages must be a whole number above 0'));
      return;
    }
    submit.disabled = true;
    try {
      const messages = await post(`${objectPath('queues', vhost, queue)}/get`, {
        count: wanted,
        ackmode: ackMode.value,
        encoding: encoding.value,
        truncate: 50000,
      });
      if (!Array.isArray(messages) || messages.length === 0) {
        replaceContent(results, h('p', { class: 'form-status warning' }, 'Queue is empty'));
      } else {
        replaceContent(results, messages.map(messageCard));
      }
      onDone();
    } catch (error) {
      replaceContent(results, errorBox(error.message));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
