'use strict';
// Server-named exclusive queues and topic exchange routing.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startBroker, unique, connect, waitFor, withDeadline, channelError, closeQuietly, HOOK_OPTS } = require('../support/broker');

let broker;
let conn;
const opts = { timeout: 15_000 };
const SENTINEL = '--end--';

before(async () => {
  broker = await startBroker();
  conn = await connect(broker.url);
}, HOOK_OPTS);

after(async () => {
  await closeQuietly(conn);
  if (broker) await broker.stop();
}, HOOK_OPTS);

test('server-named exclusive queue', opts, async () => {
  const owner = await connect(broker.url);
  const ch = await owner.createChannel();
  const { queue, messageCount, consumerCount } = await ch.assertQueue('', { exclusive: true });
  assert.match(queue, /^amq\.gen-/);
  assert.equal(messageCount, 0);
  assert.equal(consumerCount, 0);

  ch.sendToQueue(queue, Buffer.from('mine'));
  const got = [];
  await ch.consume(queue, (msg) => got.push(msg.content.toString()), { noAck: true });
  await waitFor(() => got.length === 1, 'delivery from the exclusive queue');
  assert.deepEqual(got, ['mine']);

  // Another connection may not touch it while its owner lives...
  const intruder = await conn.createChannel();
  const locked = channelError(intruder);
  await assert.rejects(intruder.checkQueue(queue));
  const err = await withDeadline(locked, 5_000, 'RESOURCE_LOCKED');
  assert.equal(err.code, 405);
  assert.match(err.message, /RESOURCE_LOCKED - cannot obtain exclusive access to locked queue/);

  // ...and it is gone once the owner closes.
  await owner.close();
  let lastCode;
  await waitFor(async () => {
    const probe = await conn.createChannel();
    const closed = channelError(probe);
    await probe.checkQueue(queue).catch(() => {});
    lastCode = (await withDeadline(closed, 5_000, 'passive declare error')).code;
    return lastCode === 404;
  }, 'the exclusive queue to be deleted');
  assert.equal(lastCode, 404);
});

// routing key -> which queues must receive it
const TOPIC_TABLE = [
  ['quick.orange.rabbit', ['q1', 'q2', 'all']],
  ['lazy.orange.elephant', ['q1', 'q2', 'all']],
  ['quick.orange.fox', ['q1', 'all']],
  ['lazy.brown.fox', ['q2', 'all']],
  ['lazy.pink.rabbit', ['q2', 'all']],
  ['quick.brown.fox', ['all']],
  ['orange', ['all']],
  ['quick.orange.new.rabbit', ['all']],
  ['lazy.orange.new.rabbit', ['q2', 'all']],
  ['lazy', ['q2', 'all']],
];

test('topic exchange routing', opts, async () => {
  const ch = await conn.createConfirmChannel();
  const exchange = unique('node-topic');
  await ch.assertExchange(exchange, 'topic', { durable: false, autoDelete: false });
  const bindings = { q1: ['*.orange.*'], q2: ['*.*.rabbit', 'lazy.#'], all: ['#'] };
  const received = {};
  const done = {};
  for (const [name, patterns] of Object.entries(bindings)) {
    const { queue } = await ch.assertQueue('', { exclusive: true });
    for (const pattern of patterns) await ch.bindQueue(queue, exchange, pattern);
    await ch.bindQueue(queue, exchange, 'end.of.test');
    received[name] = [];
    done[name] = false;
    await ch.consume(
      queue,
      (msg) => {
        if (msg.content.toString() === SENTINEL) done[name] = true;
        else received[name].push(msg.fields.routingKey);
      },
      { noAck: true },
    );
  }

  for (const [key] of TOPIC_TABLE) ch.publish(exchange, key, Buffer.from(key));
  // Unroutable with mandatory comes back through basic.return.
  const returned = [];
  ch.on('return', (msg) => returned.push(msg.fields));
  const onlyTwo = unique('node-topic-narrow');
  await ch.assertExchange(onlyTwo, 'topic', { durable: false });
  ch.publish(onlyTwo, 'quick.brown.fox', Buffer.from('x'), { mandatory: true });
  ch.publish(exchange, 'end.of.test', Buffer.from(SENTINEL));
  await ch.waitForConfirms();

  await waitFor(() => Object.values(done).every(Boolean), 'the sentinel on every queue');
  for (const name of Object.keys(bindings)) {
    const expected = TOPIC_TABLE.filter(([, to]) => to.includes(name)).map(([key]) => key);
    assert.deepEqual(received[name], expected, `queue ${name}`);
  }
  assert.equal(returned.length, 1);
  assert.equal(returned[0].replyCode, 312);
  assert.equal(returned[0].routingKey, 'quick.brown.fox');

  await ch.deleteExchange(exchange);
  await ch.deleteExchange(onlyTwo);
  await ch.close();
});
