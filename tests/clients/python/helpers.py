"""Shared plumbing for the pika client tests: finding or starting a broker, connecting,
and waiting with deadlines. Knows nothing about what any single test checks."""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pika

HERE = Path(__file__).resolve().parent
# tests/clients/python -> tests/clients -> tests -> repo root
REPO_ROOT = HERE.parents[2]
READY_PATTERN = re.compile(r"listening on [^ ]*:(\d+)")
BROKER_READY_TIMEOUT_S = 30.0
BROKER_STOP_TIMEOUT_S = 5.0
DEFAULT_WAIT_S = 10.0
# The management API and metrics listen on 15672/15692 by default: brokers started side by
# side take free ports instead.
SIDE_BY_SIDE_FLAGS = ("--http-port", "0", "--metrics-port", "0")


class LineReader:
    """Drains a child's stdout on a thread so the child never blocks on a full pipe, and lets
    the test wait for a line with a deadline instead of a blocking readline."""

    def __init__(self, stream):
        self._lines = queue.Queue()
        self.seen = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self._lines.put(None)  # end of stream

    def join(self, timeout):
        self._thread.join(timeout)

    def next_line(self, deadline):
        """Next line, None at end of stream; raises TimeoutError when the deadline passes."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            line = self._lines.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError from None
        if line is not None:
            self.seen.append(line)
        return line

    def wait_for(self, predicate, timeout, what):
        """Consume lines until one satisfies predicate; returns it. Raises AssertionError on
        timeout or end of stream so a broken peer fails the test instead of hanging it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.next_line(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; lines so far: {self.seen[-20:]}"
                ) from None
            if line is None:
                raise AssertionError(f"stream ended while waiting for {what}; lines: {self.seen[-20:]}")
            if predicate(line):
                return line


def stop_process(proc, timeout=BROKER_STOP_TIMEOUT_S):
    """SIGTERM, wait with a timeout, then SIGKILL; always by this child's own pid."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(timeout=timeout)


def default_warren_bin():
    return str(REPO_ROOT / "target" / "debug" / "warren")


class BrokerProcess:
    """A `warren` child process bound to an ephemeral loopback port with a fresh data dir."""

    def __init__(self, binary=None):
        self.binary = binary or os.environ.get("WARREN_BIN") or default_warren_bin()
        self.proc = None
        self.port = None
        self.workdir = None
        self.stdout = None

    @property
    def url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self):
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise RuntimeError(
                f"broker binary {self.binary!r} is missing or not executable: build it "
                "(cargo build -p warren), set WARREN_BIN, or point WARREN_TEST_AMQP_URL at a broker"
            )
        self.workdir = tempfile.mkdtemp(prefix="warren-pika-")
        data_dir = os.path.join(self.workdir, "data")
        os.mkdir(data_dir)
        stderr_path = os.path.join(self.workdir, "stderr.log")
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [self.binary, "--bind", "127.0.0.1", "--port", "0", "--data-dir", data_dir,
                 *SIDE_BY_SIDE_FLAGS],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.stdout = LineReader(self.proc.stdout)
        deadline = time.monotonic() + BROKER_READY_TIMEOUT_S
        try:
            while True:
                try:
                    line = self.stdout.next_line(deadline)
                except TimeoutError:
                    raise RuntimeError(
                        f"broker did not print 'listening on ...:<port>' within "
                        f"{BROKER_READY_TIMEOUT_S}s{self._stderr_tail()}"
                    ) from None
                if line is None:
                    code = self.proc.wait(timeout=BROKER_STOP_TIMEOUT_S)
                    raise RuntimeError(
                        f"broker exited (code {code}) before it was ready{self._stderr_tail()}"
                    )
                match = READY_PATTERN.search(line)
                if match:
                    self.port = int(match.group(1))
                    return self
        except BaseException:
            self.stop()
            raise

    def _stderr_tail(self):
        try:
            with open(os.path.join(self.workdir, "stderr.log"), "rb") as f:
                tail = f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return f"; stderr:\n{tail}" if tail else ""

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            if self.stdout is not None:
                self.stdout.join(BROKER_STOP_TIMEOUT_S)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def listener_port(broker, listener):
    """The port of a started broker's "http" or "metrics" listener, from the line it prints
    after the ready line."""
    pattern = re.compile(rf"warren \S+ {listener}: listening on [^ ]*:(\d+)")
    line = broker.stdout.wait_for(
        lambda text: pattern.search(text) is not None,
        BROKER_READY_TIMEOUT_S,
        f"the '{listener}: listening on' line",
    )
    return int(pattern.search(line).group(1))


def unique(prefix):
    """A name no other test (or earlier run against a shared broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def connect(url):
    params = pika.URLParameters(url)
    # A silent broker must fail the test, not hang it.
    params.socket_timeout = 5
    params.stack_timeout = 8
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


def pump_until(connections, predicate, timeout=DEFAULT_WAIT_S, what="condition"):
    """Drive the I/O loops of the given blocking connections until predicate() holds."""
    if not isinstance(connections, (list, tuple)):
        connections = [connections]
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        for conn in connections:
            conn.process_data_events(time_limit=0.02)


def wait_until(probe, timeout=DEFAULT_WAIT_S, what="condition", interval=0.05):
    """Call probe() until it returns something truthy (returned) or the deadline passes
    (AssertionError naming `what`). For state that is polled, not pushed to the test."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def spawn_client(*args):
    """Start procs.py (a pika client in its own process) and return (Popen, LineReader)."""
    proc = subprocess.Popen(
        [sys.executable, "-u", str(HERE / "procs.py"), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,
    )
    return proc, LineReader(proc.stdout)


class DataDirBroker(BrokerProcess):
    """A `warren` child on a data directory the caller owns, so a test can stop it and start
    another broker on the same state (the port may differ between runs). Its own scratch dir
    (stderr log) is still temporary and removed by `stop()`; the data directory is not."""

    def __init__(self, data_dir, binary=None):
        super().__init__(binary)
        self.data_dir = str(data_dir)

    def start(self):
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise RuntimeError(
                f"broker binary {self.binary!r} is missing or not executable: build it "
                "(cargo build -p warren) or set WARREN_BIN"
            )
        os.makedirs(self.data_dir, exist_ok=True)
        self.workdir = tempfile.mkdtemp(prefix="warren-pika-run-")
        with open(os.path.join(self.workdir, "stderr.log"), "wb") as stderr:
            self.proc = subprocess.Popen(
                [self.binary, "--bind", "127.0.0.1", "--port", "0", "--data-dir", self.data_dir,
                 *SIDE_BY_SIDE_FLAGS],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self.stdout = LineReader(self.proc.stdout)
        try:
            line = self.stdout.wait_for(
                lambda text: READY_PATTERN.search(text) is not None,
                BROKER_READY_TIMEOUT_S,
                "the 'listening on ...:<port>' line",
            )
        except AssertionError as e:
            tail = self._stderr_tail()
            self.stop()
            raise RuntimeError(f"{e}{tail}") from None
        except BaseException:
            self.stop()
            raise
        self.port = int(READY_PATTERN.search(line).group(1))
        return self

    def terminate(self, timeout=BROKER_STOP_TIMEOUT_S):
        """SIGTERM (the way `service ... stop` stops it); returns the exit code, or None if
        it had to be killed after `timeout`. Cleans up like `stop()`."""
        code = None
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
        self.stop()
        return code
