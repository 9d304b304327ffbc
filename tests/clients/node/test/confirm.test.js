'use strict';
// Publisher confirms through amqplib's ConfirmChannel.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startBroker, unique, connect, withDeadline, channelError, closeQuietly, HOOK_OPTS } = require('../support/broker');

let broker;
let conn;
const opts = { timeout: 15_000 };

before(async () => {
  broker = await startBroker();
  conn = await connect(broker.url);
}, HOOK_OPTS);

after(async () => {
  await closeQuietly(conn);
  if (broker) await broker.stop();
}, HOOK_OPTS);

test('confirm channel: every publish is acked and waitForConfirms resolves', opts, async () => {
  const ch = await conn.createConfirmChannel();
  const queue = unique('node-confirm');
  const exchange = unique('node-confirm-x');
  await ch.assertQueue(queue);
  await ch.assertExchange(exchange, 'direct', { durable: false });
  await ch.bindQueue(queue, exchange, 'k');

  const total = 100;
  const outcomes = [];
  for (let i = 0; i < total; i++) {
    const callback = (err, ok) => outcomes.push({ i, err, ok });
    if (i % 2 === 0) ch.sendToQueue(queue, Buffer.from(`m${i}`), { persistent: true }, callback);
    else ch.publish(exchange, 'k', Buffer.from(`m${i}`), {}, callback);
  }
  await withDeadline(ch.waitForConfirms(), 10_000, 'waitForConfirms');
  assert.equal(outcomes.length, total);
  for (const { i, err } of outcomes) assert.equal(err, null, `publish ${i} was nacked`);
  assert.deepEqual(
    outcomes.map((o) => o.i).sort((a, b) => a - b),
    [...Array(total).keys()],
  );
  assert.equal((await ch.checkQueue(queue)).messageCount, total);

  // An unroutable publish (no mandatory flag) is still confirmed with an ack.
  let unroutableErr;
  ch.publish(exchange, 'nobody', Buffer.from('lost'), {}, (err) => {
    unroutableErr = err;
  });
  await withDeadline(ch.waitForConfirms(), 10_000, 'waitForConfirms after unroutable publish');
  assert.equal(unroutableErr, null);

  await ch.deleteQueue(queue);
  await ch.deleteExchange(exchange);
  await ch.close();
});

test('mandatory unroutable publish is returned before its ack', opts, async () => {
  const ch = await conn.createConfirmChannel();
  const exchange = unique('node-return-x');
  await ch.assertExchange(exchange, 'topic', { durable: false });
  const returned = [];
  ch.on('return', (msg) => returned.push(msg));
  let ackErr;
  ch.publish(exchange, 'no.such.key', Buffer.from('bounce'), { mandatory: true }, (err) => {
    ackErr = err;
  });
  await withDeadline(ch.waitForConfirms(), 10_000, 'waitForConfirms');
  assert.equal(ackErr, null);
  assert.equal(returned.length, 1);
  assert.equal(returned[0].fields.replyCode, 312);
  assert.equal(returned[0].fields.replyText, 'NO_ROUTE');
  assert.equal(returned[0].fields.exchange, exchange);
  assert.equal(returned[0].fields.routingKey, 'no.such.key');
  assert.equal(returned[0].content.toString(), 'bounce');
  await ch.deleteExchange(exchange);
  await ch.close();
});

test('publishing to a missing exchange closes the channel with 404', opts, async () => {
  const ch = await conn.createConfirmChannel();
  const closedWith = channelError(ch);
  const missing = unique('node-missing-x');
  ch.publish(missing, 'k', Buffer.from('x'), {}, () => {});
  const err = await withDeadline(closedWith, 10_000, 'channel error');
  assert.equal(err.code, 404);
  assert.match(err.message, new RegExp(`NOT_FOUND - no exchange '${missing}' in vhost '/'`));
  // The connection survives a channel error.
  const other = await conn.createChannel();
  await other.close();
});
