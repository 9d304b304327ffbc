'use strict';
// basic.qos prefetch 1: a consumer holding an unacked message gets nothing more until it acks.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startBroker, unique, connect, waitFor, closeQuietly, HOOK_OPTS } = require('../support/broker');

let broker;
let conn;

before(async () => {
  broker = await startBroker();
  conn = await connect(broker.url);
}, HOOK_OPTS);

after(async () => {
  await closeQuietly(conn);
  if (broker) await broker.stop();
}, HOOK_OPTS);

test('prefetch 1 with two consumers on one queue', { timeout: 15_000 }, async () => {
  const queue = unique('node-prefetch');
  const setup = await conn.createConfirmChannel();
  await setup.assertQueue(queue);

  const consumers = {};
  for (const name of ['a', 'b']) {
    const ch = await conn.createChannel();
    await ch.prefetch(1);
    const got = [];
    await ch.consume(queue, (msg) => got.push(msg), { noAck: false });
    consumers[name] = { ch, got };
  }
  const { a, b } = consumers;
  assert.equal((await setup.checkQueue(queue)).consumerCount, 2);

  const bodies = ['m1', 'm2', 'm3', 'm4'];
  for (const body of bodies) setup.sendToQueue(queue, Buffer.from(body));
  await setup.waitForConfirms();

  // Each consumer holds one; the other two stay ready in the queue.
  await waitFor(() => a.got.length === 1 && b.got.length === 1, 'one delivery each');
  await waitFor(async () => (await setup.checkQueue(queue)).messageCount === 2, 'two ready messages');
  assert.equal(a.got.length, 1);
  assert.equal(b.got.length, 1);

  // Only the consumer that acked receives the next message.
  a.ch.ack(a.got[0]);
  await waitFor(() => a.got.length === 2, 'a second delivery to the consumer that acked');
  await waitFor(async () => (await setup.checkQueue(queue)).messageCount === 1, 'one ready message');
  assert.equal(b.got.length, 1);

  b.ch.ack(b.got[0]);
  await waitFor(() => b.got.length === 2, 'a second delivery to b after its ack');
  assert.equal(a.got.length, 2);
  assert.equal((await setup.checkQueue(queue)).messageCount, 0);

  a.ch.ack(a.got[1]);
  b.ch.ack(b.got[1]);
  const all = [...a.got, ...b.got].map((m) => m.content.toString()).sort();
  assert.deepEqual(all, bodies);
  for (const m of [...a.got, ...b.got]) assert.equal(m.fields.redelivered, false);

  await a.ch.close();
  await b.ch.close();
  assert.deepEqual(await setup.checkQueue(queue), { queue, messageCount: 0, consumerCount: 0 });
  await setup.deleteQueue(queue);
  await setup.close();
});
