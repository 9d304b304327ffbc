'use strict';
// The management web UI in headless Chromium: log in, watch a queue filled over AMQP appear
// with its count, publish from the UI's form and get the message back, visit every page and
// keep a screenshot of each in tests/ui/artifacts/.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const amqp = require('amqplib');
const { chromium } = require('playwright-core');
const { startWarren, eventually } = require('../support/warren');

const ARTIFACTS = path.resolve(__dirname, '..', 'artifacts');
const HOOK_OPTS = { timeout: 60_000 };

let broker;
let browser;
let page;
let connection;
let channel;
const pageErrors = [];
const policyViolations = [];

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  broker = await startWarren();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium', headless: true });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (error) => pageErrors.push(error.message));
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) policyViolations.push(message.text());
  });
}, HOOK_OPTS);

after(async () => {
  if (connection) await connection.close().catch(() => {});
  if (browser) await browser.close();
  if (broker) await broker.stop();
}, HOOK_OPTS);

async function screenshot(name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

// The text of `header`'s column in the row of the listing table whose name cell reads `name`.
function listingCell(name, header) {
  return page.evaluate(
    ({ name, header }) => {
      const table = document.querySelector('section.list table');
      if (!table) return null;
      const headers = [...table.querySelectorAll('thead th')].map((th) => th.textContent.replace(/[▲▼]/g, '').trim());
      const column = headers.indexOf(header);
      const nameColumn = headers.indexOf('Name');
      for (const row of table.querySelectorAll('tbody tr')) {
        const cells = row.querySelectorAll('td');
        if (cells[nameColumn]?.textContent === name) return cells[column]?.textContent ?? null;
      }
      return null;
    },
    { name, header },
  );
}

async function openTab(label, heading) {
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: label, exact: true }).click();
  await page.getByRole('heading', { level: 1, name: heading, exact: true }).waitFor();
}

test('the web UI logs in, lists, publishes and gets', { timeout: 120_000 }, async (t) => {
  const queue = `ui-test-${crypto.randomBytes(4).toString('hex')}`;
  const payload = 'hello from the web UI';

  await t.test('serves the page and leaves /api to the API', async () => {
    const index = await fetch(`${broker.httpUrl}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type'), /^text\/html/);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    const html = await index.text();
    const script = /src="(assets\/[0-9a-f]+\/app\.js)"/.exec(html);
    assert.ok(script, 'the page loads its versioned app.js');
    const asset = await fetch(`${broker.httpUrl}/${script[1]}`);
    assert.match(asset.headers.get('content-type'), /^text\/javascript/);
    assert.match(asset.headers.get('cache-control'), /immutable/);
    const api = await fetch(`${broker.httpUrl}/api/overview`);
    assert.equal(api.status, 401);
  });

  await t.test('refuses a wrong password without the browser prompt, then logs in as guest', async () => {
    await page.goto(`${broker.httpUrl}/`);
    await page.getByLabel('Username').fill('guest');
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Login failed' }).waitFor();
    await screenshot('login');

    await page.getByLabel('Password').fill('guest');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
    assert.match(await page.locator('header .user').textContent(), /guest/);
    const stored = await page.evaluate(() => sessionStorage.getItem('warren.credentials'));
    assert.deepEqual(JSON.parse(stored), { username: 'guest', password: 'guest' });
    // Refresh fast so that the waits below are short.
    await page.getByLabel('Refresh').selectOption('2000');
  });

  await t.test('a queue filled over AMQP appears with its message count', async () => {
    await openTab('Queues', 'Queues');
    connection = await amqp.connect(broker.amqpUrl);
    channel = await connection.createConfirmChannel();
    await channel.assertQueue(queue, { durable: false });
    for (let i = 0; i < 3; i += 1) channel.sendToQueue(queue, Buffer.from(`amqp message ${i}`));
    await channel.waitForConfirms();

    await eventually(async () => (await listingCell(queue, 'Ready')) === '3', `queue ${queue} listed with 3 ready`);
    assert.equal(await listingCell(queue, 'Total'), '3');

    // The broker filters by name: a name that matches nothing empties the table.
    await page.getByLabel('Filter').fill('no-such-queue');
    await page.getByText('No items match the filter').waitFor();
    await page.getByLabel('Filter').fill(queue);
    await eventually(async () => (await listingCell(queue, 'Ready')) === '3', 'the filtered listing');
    await screenshot('queues');
  });

  await t.test('publishes from the UI and gets the message back', async () => {
    await page.getByRole('link', { name: queue, exact: true }).click();
    await page.getByRole('heading', { level: 1, name: `Queue ${queue}` }).waitFor();
    await eventually(async () => (await page.locator('.count-total').textContent()) === '3', 'the queue page showing 3 messages');

    const publish = page.getByRole('form', { name: 'Publish message' });
    await publish.getByLabel('Header key').first().fill('source');
    await publish.getByLabel('Header value').first().fill('ui');
    await publish.getByLabel('Payload', { exact: true }).fill(payload);
    await publish.getByRole('button', { name: 'Publish message' }).click();
    await publish.getByText('Message published.', { exact: true }).waitFor();
    await eventually(async () => (await page.locator('.count-total').textContent()) === '4', 'the queue page showing 4 messages');
    assert.equal((await channel.checkQueue(queue)).messageCount, 4);

    const getMessages = page.getByRole('form', { name: 'Get messages' });
    await getMessages.getByLabel('Messages').fill('4');
    await getMessages.getByRole('button', { name: 'Get messages' }).click();
    await eventually(async () => (await getMessages.locator('article.message').count()) === 4, 'four messages shown');
    const last = getMessages.locator('article.message').nth(3);
    assert.equal(await last.locator('pre.payload').textContent(), payload);
    assert.match(await last.textContent(), /source/);
    // ack_requeue_true puts them back.
    await eventually(async () => (await channel.checkQueue(queue)).messageCount === 4, 'the messages requeued');
    await screenshot('queue');
  });

  await t.test('every listing page shows what the broker has', async () => {
    const policy = await fetch(`${broker.httpUrl}/api/policies/%2F/ui-test-policy`, {
      method: 'PUT',
      headers: { Authorization: `Basic ${Buffer.from('guest:guest').toString('base64')}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ pattern: '^ui-', definition: { 'max-length': 1000 }, 'apply-to': 'queues' }),
    });
    assert.ok(policy.ok, `policy declared (${policy.status})`);

    await openTab('Exchanges', 'Exchanges');
    await eventually(async () => (await listingCell('amq.topic', 'Type')) === 'topic', 'amq.topic listed');
    await screenshot('exchanges');

    await openTab('Connections', 'Connections');
    await eventually(async () => (await page.locator('section.list tbody').textContent()).includes('guest'), 'the test connection listed');
    await screenshot('connections');

    await openTab('Channels', 'Channels');
    await eventually(async () => (await page.locator('section.list tbody td').count()) > 1, 'the test channel listed');
    await screenshot('channels');

    await openTab('Users', 'Users');
    await eventually(async () => (await listingCell('guest', 'Tags')) === 'administrator', 'guest listed');
    await screenshot('users');

    await openTab('Virtual hosts', 'Virtual hosts');
    await eventually(async () => (await listingCell('/', 'Name')) === '/', 'vhost / listed');
    await screenshot('vhosts');

    await openTab('Policies', 'Policies');
    await eventually(async () => (await listingCell('ui-test-policy', 'Pattern')) === '^ui-', 'the policy listed');
    await screenshot('policies');
  });

  await t.test('the overview charts the queued messages', async () => {
    await openTab('Overview', 'Overview');
    const total = page.getByRole('figure').filter({ hasText: 'Queued messages' }).locator('li').filter({ hasText: 'Total' });
    await eventually(async () => (await total.locator('.legend-value').textContent()) === '4', 'the chart legend showing 4 queued');
    await eventually(async () => (await page.locator('polyline.chart-line').first().getAttribute('points')).split(' ').length >= 2, 'a drawn line');
    await screenshot('overview');
  });

  await t.test('a reload keeps the session and logging out ends it', async () => {
    await page.reload();
    await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('warren.credentials')), null);
  });

  assert.deepEqual(pageErrors, [], 'no script errors in the page');
  assert.deepEqual(policyViolations, [], 'no content security policy violations');
});
