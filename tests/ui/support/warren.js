'use strict';
// Starts a `warren` child on free ports for the browser test (WARREN_BIN, default
// target/debug/warren), reads the AMQP and HTTP ports from the lines it prints, and stops it
// by its pid. Also a deadline-bound polling helper. Knows nothing of the UI.
// Lives outside test/ so that `node --test` does not run it as a test file.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

// tests/ui/support -> repo root
const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const AMQP_READY = /ready: listening on [^ ]*:(\d+)/;
const HTTP_READY = /http: listening on [^ ]*:(\d+)/;
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;
const DEFAULT_WAIT_MS = 15_000;

function stderrTail(workdir) {
  try {
    const text = fs.readFileSync(path.join(workdir, 'stderr.log'), 'utf8').slice(-4000);
    return text ? `; stderr:\n${text}` : '';
  } catch {
    return '';
  }
}

// Returns { amqpUrl, httpUrl, stop }.
async function startWarren() {
  const bin = process.env.WARREN_BIN || path.join(REPO_ROOT, 'target', 'debug', 'warren');
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`broker binary '${bin}' is missing or not executable: build it (cargo build --bin warren) or set WARREN_BIN`);
  }
  const workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-ui-'));
  const dataDir = path.join(workdir, 'data');
  fs.mkdirSync(dataDir);
  const stderrFd = fs.openSync(path.join(workdir, 'stderr.log'), 'w');
  const args = ['--bind', '127.0.0.1', '--port', '0', '--http-port', '0', '--metrics-port', '0', '--data-dir', dataDir];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', stderrFd] });
  fs.closeSync(stderrFd);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // Keeps reading stdout for the broker's whole life so it never blocks on a full pipe.
  const lines = readline.createInterface({ input: child.stdout });

  async function stop() {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, 'SIGTERM');
      let timer;
      const grace = new Promise((resolve) => {
        timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
      });
      const outcome = await Promise.race([exited, grace]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        process.kill(child.pid, 'SIGKILL');
        await exited;
      }
    }
    lines.close();
    fs.rmSync(workdir, { recursive: true, force: true });
  }

  try {
    const ports = await new Promise((resolve, reject) => {
      const found = {};
      const timer = setTimeout(
        () => reject(new Error(`broker did not print its AMQP and HTTP ports within ${READY_TIMEOUT_MS} ms${stderrTail(workdir)}`)),
        READY_TIMEOUT_MS,
      );
      lines.on('line', (line) => {
        const amqp = AMQP_READY.exec(line);
        const http = HTTP_READY.exec(line);
        if (amqp) found.amqp = Number(amqp[1]);
        if (http) found.http = Number(http[1]);
        if (found.amqp && found.http) {
          clearTimeout(timer);
          resolve(found);
        }
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`broker exited (code ${code}, signal ${signal}) before it was ready${stderrTail(workdir)}`));
      });
    });
    return {
      amqpUrl: `amqp://guest:guest@127.0.0.1:${ports.amqp}/`,
      httpUrl: `http://127.0.0.1:${ports.http}`,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

// Polls `check` (sync or async; truthy means done) until it holds; fails after `ms` with the
// last value or error seen, so a failure says what the page showed instead.
async function eventually(check, what, ms = DEFAULT_WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

module.exports = { startWarren, eventually };
