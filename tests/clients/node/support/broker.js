'use strict';
// Finds or starts the broker the amqplib tests talk to (WARREN_TEST_AMQP_URL, or a `warren`
// child per test file) and offers deadline-bound waiting helpers. Knows no test's expectations.
// Lives outside test/ so that `node --test` does not run it as a test file.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const amqp = require('amqplib');

// tests/clients/node/support -> repo root
const REPO_ROOT = path.resolve(__dirname, '..', '..', '..', '..');
const READY_PATTERN = /listening on [^ ]*:(\d+)/;
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;
const DEFAULT_WAIT_MS = 10_000;

function defaultWarrenBin() {
  return path.join(REPO_ROOT, 'target', 'debug', 'warren');
}

function stderrTail(workdir) {
  try {
    const text = fs.readFileSync(path.join(workdir, 'stderr.log'), 'utf8').slice(-4000);
    return text ? `; stderr:\n${text}` : '';
  } catch {
    return '';
  }
}

function timeout(ms) {
  let timer;
  const promise = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

// Returns { url, stop }. With WARREN_TEST_AMQP_URL the broker is shared and stop does nothing.
async function startBroker() {
  const envUrl = process.env.WARREN_TEST_AMQP_URL;
  if (envUrl) {
    return { url: envUrl, stop: async () => {} };
  }
  const bin = process.env.WARREN_BIN || defaultWarrenBin();
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(
      `broker binary '${bin}' is missing or not executable: build it (cargo build -p warren), ` +
        'set WARREN_BIN, or point WARREN_TEST_AMQP_URL at a broker',
    );
  }

  const workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-amqplib-'));
  const dataDir = path.join(workdir, 'data');
  fs.mkdirSync(dataDir);
  const stderrFd = fs.openSync(path.join(workdir, 'stderr.log'), 'w');
  // --http-port/--metrics-port 0: brokers run side by side, so no fixed 15672/15692.
  const args = ['--bind', '127.0.0.1', '--port', '0', '--data-dir', dataDir,
    '--http-port', '0', '--metrics-port', '0'];
  const child = spawn(bin, args, {
    stdio: ['ignore', 'pipe', stderrFd],
  });
  fs.closeSync(stderrFd);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // Keeps reading stdout for the broker's whole life so it never blocks on a full pipe.
  const lines = readline.createInterface({ input: child.stdout });

  async function stop() {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const grace = timeout(STOP_TIMEOUT_MS);
      const outcome = await Promise.race([exited, grace.promise]);
      grace.cancel();
      if (outcome === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
    }
    lines.close();
    fs.rmSync(workdir, { recursive: true, force: true });
  }

  let port;
  try {
    port = await new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`broker did not print 'listening on ...:<port>' within ${READY_TIMEOUT_MS} ms${stderrTail(workdir)}`)),
        READY_TIMEOUT_MS,
      );
      lines.on('line', (line) => {
        const match = READY_PATTERN.exec(line);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`broker exited (code ${code}, signal ${signal}) before it was ready${stderrTail(workdir)}`));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `amqp://guest:guest@127.0.0.1:${port}/`, stop };
}

function unique(prefix) {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`;
}

async function connect(url) {
  // A silent broker must fail the test, not hang it.
  return withDeadline(amqp.connect(url, { timeout: 10_000 }), 15_000, 'connection handshake');
}

// Rejects if the promise has not settled in `ms`.
async function withDeadline(promise, ms, what) {
  const t = timeout(ms);
  try {
    const outcome = await Promise.race([promise.then((v) => ({ v })), t.promise]);
    if (outcome === 'timeout') throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    return outcome.v;
  } finally {
    t.cancel();
  }
}

// Polls an (optionally async) predicate until it is truthy; fails after `ms`.
async function waitFor(predicate, what, ms = DEFAULT_WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// Resolves with the channel-close error a broker sends; the listener keeps it from crashing
// the process as an unhandled 'error' event.
function channelError(channel) {
  return new Promise((resolve) => channel.once('error', resolve));
}

// Closes politely if the broker answers, else drops the socket so the test process can exit.
async function closeQuietly(conn) {
  if (!conn) return;
  try {
    await withDeadline(conn.close(), 5_000, 'connection.close-ok');
  } catch {
    conn.connection?.stream?.destroy();
  }
}

// Hook timeouts: a broker that starts but never answers must fail the file, not hang it.
const HOOK_OPTS = { timeout: 45_000 };

module.exports = {
  startBroker,
  unique,
  connect,
  closeQuietly,
  withDeadline,
  waitFor,
  channelError,
  defaultWarrenBin,
  HOOK_OPTS,
};
