'use strict';
// Publish, consume, ack, nack and connection close through amqplib's promise API.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startBroker, unique, connect, waitFor, withDeadline, closeQuietly, HOOK_OPTS } = require('../support/broker');

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

test('publish, consume and ack', opts, async () => {
  const ch = await conn.createChannel();
  const queue = unique('node-basic');
  const declared = await ch.assertQueue(queue, { autoDelete: false });
  assert.deepEqual(declared, { queue, messageCount: 0, consumerCount: 0 });

  assert.equal(ch.sendToQueue(queue, Buffer.from('hello'), { contentType: 'text/plain', messageId: 'm1' }), true);
  const received = [];
  const { consumerTag } = await ch.consume(queue, (msg) => received.push(msg), { noAck: false });
  // Without a tag of its own the client lets the server name the consumer.
  assert.match(consumerTag, /^amq\.ctag-/);

  await waitFor(() => received.length === 1, 'the delivery');
  const [msg] = received;
  assert.equal(msg.content.toString(), 'hello');
  assert.equal(msg.fields.routingKey, queue);
  assert.equal(msg.fields.exchange, '');
  assert.equal(msg.fields.redelivered, false);
  assert.equal(msg.fields.consumerTag, consumerTag);
  assert.equal(msg.fields.deliveryTag, 1);
  assert.equal(msg.properties.contentType, 'text/plain');
  assert.equal(msg.properties.messageId, 'm1');
  ch.ack(msg);

  const cancelOk = await ch.cancel(consumerTag);
  assert.equal(cancelOk.consumerTag, consumerTag);
  // Channel close flushes the ack first; an unacked message would come back as ready.
  await ch.close();
  const check = await conn.createChannel();
  assert.deepEqual(await check.checkQueue(queue), { queue, messageCount: 0, consumerCount: 0 });
  assert.deepEqual(await check.deleteQueue(queue), { messageCount: 0 });
  await check.close();
});

test('nack with requeue redelivers with redelivered=true', opts, async () => {
  const ch = await conn.createChannel();
  const queue = unique('node-nack');
  await ch.assertQueue(queue);
  ch.sendToQueue(queue, Buffer.from('try again'));
  const deliveries = [];
  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (msg === null) return; // server-side cancel; not expected here
    deliveries.push(msg);
    if (deliveries.length === 1) ch.nack(msg, false, true);
    else if (deliveries.length === 2) ch.ack(msg);
    else ch.nack(msg, false, false); // dropped, not requeued
  });
  await waitFor(() => deliveries.length === 2, 'the redelivery');
  assert.equal(deliveries[0].fields.redelivered, false);
  assert.equal(deliveries[1].fields.redelivered, true);
  assert.equal(deliveries[1].content.toString(), 'try again');
  assert.notEqual(deliveries[1].fields.deliveryTag, deliveries[0].fields.deliveryTag);

  ch.sendToQueue(queue, Buffer.from('drop'));
  await waitFor(() => deliveries.length === 3, 'third delivery');
  await ch.cancel(consumerTag);
  assert.equal(deliveries.length, 3);
  assert.equal(deliveries[2].fields.redelivered, false);
  assert.deepEqual(await ch.checkQueue(queue), { queue, messageCount: 0, consumerCount: 0 });
  await ch.deleteQueue(queue);
  await ch.close();
});

test('basic.get, reject and get-empty', opts, async () => {
  const ch = await conn.createConfirmChannel();
  const queue = unique('node-get');
  await ch.assertQueue(queue);
  for (const body of ['a', 'b']) ch.sendToQueue(queue, Buffer.from(body));
  await ch.waitForConfirms();

  const first = await ch.get(queue, { noAck: false });
  assert.equal(first.content.toString(), 'a');
  assert.equal(first.fields.messageCount, 1);
  ch.reject(first, false);
  const second = await ch.get(queue, { noAck: true });
  assert.equal(second.content.toString(), 'b');
  assert.equal(second.fields.messageCount, 0);
  assert.equal(await ch.get(queue), false);
  await ch.deleteQueue(queue);
  await ch.close();
});

test('closing a connection requeues its unacked messages and ends the connection', opts, async () => {
  const queue = unique('node-close');
  const setup = await conn.createConfirmChannel();
  await setup.assertQueue(queue);
  setup.sendToQueue(queue, Buffer.from('held'));
  await setup.waitForConfirms();

  const doomed = await connect(broker.url);
  let closed = false;
  doomed.on('close', () => {
    closed = true;
  });
  const dch = await doomed.createChannel();
  const got = [];
  await dch.consume(queue, (msg) => got.push(msg), { noAck: false });
  await waitFor(() => got.length === 1, 'delivery to the doomed connection');
  assert.equal((await setup.checkQueue(queue)).consumerCount, 1);

  await withDeadline(doomed.close(), 10_000, 'connection.close-ok');
  await waitFor(() => closed, "the connection's close event");
  await assert.rejects(doomed.createChannel());

  let again = false;
  await waitFor(async () => {
    again = await setup.get(queue, { noAck: true });
    return again !== false;
  }, 'the requeued message');
  assert.equal(again.content.toString(), 'held');
  assert.equal(again.fields.redelivered, true);
  assert.deepEqual(await setup.checkQueue(queue), { queue, messageCount: 0, consumerCount: 0 });
  await setup.deleteQueue(queue);
  await setup.close();
});
