"""Configuration: a TOML file (`--config`, or ./warren.toml), WARREN_* environment variables
and flags, each overriding the one before; a bad file names the key and the broker does not
start; the default user and log format come from the config too."""

import json
import socket
import os
import subprocess
import tempfile

import pika
import pytest
from pika.exceptions import AMQPConnectionError

from helpers import (
    BROKER_READY_TIMEOUT_S,
    BROKER_STOP_TIMEOUT_S,
    LineReader,
    READY_PATTERN,
    default_warren_bin,
    stop_process,
)

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="starts brokers with configurations of its own",
)

BINARY = os.environ.get("WARREN_BIN") or default_warren_bin()
# Every listener on a free port, whatever else the file says.
FREE_PORTS = '[amqp]\nport = 0\n[http]\nport = 0\n[metrics]\nport = 0\n'


class Run:
    """`warren` started with some args, environment, working directory and config file."""

    def __init__(self, tmp, args=(), env=None, config=None, cwd=None):
        self.tmp = tmp
        self.args = [BINARY, *args]
        if config is not None:
            path = os.path.join(tmp, "warren-test.toml")
            with open(path, "w") as f:
                f.write(config)
            self.args += ["--config", path]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
        self.env.update(env or {})
        self.cwd = cwd or tmp
        self.stderr_path = os.path.join(tmp, f"stderr-{len(os.listdir(tmp))}.log")
        self.proc = None

    def __enter__(self):
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=stderr)
        self.stdout = LineReader(self.proc.stdout)
        return self

    def ready_line(self):
        return self.stdout.wait_for(lambda line: READY_PATTERN.search(line) is not None,
                                    BROKER_READY_TIMEOUT_S, "the ready line")

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def __exit__(self, *exc):
        stop_process(self.proc)
        self.proc.stdout.close()


@pytest.fixture
def tmp():
    with tempfile.TemporaryDirectory(prefix="warren-config-") as path:
        yield path


def data_dir(tmp):
    return f'data_dir = "{os.path.join(tmp, "data")}"\n'


def test_file_then_environment_then_flags(tmp):
    # Loopback addresses other than 127.0.0.1 show which layer chose the AMQP bind address.
    config = data_dir(tmp) + '[amqp]\nbind = "127.0.0.2"\nport = 0\n[http]\nport = 0\n[metrics]\nport = 0\n'
    with Run(tmp, config=config) as run:
        assert "listening on 127.0.0.2:" in run.ready_line()
    with Run(tmp, config=config, env={"WARREN_BIND": "127.0.0.3"}) as run:
        assert "listening on 127.0.0.3:" in run.ready_line()
    with Run(tmp, ["--bind", "127.0.0.4"], config=config, env={"WARREN_BIND": "127.0.0.3"}) as run:
        assert "listening on 127.0.0.4:" in run.ready_line()


def test_warren_toml_in_the_working_directory_is_read(tmp):
    with open(os.path.join(tmp, "warren.toml"), "w") as f:
        f.write(data_dir(tmp) + '[amqp]\nbind = "127.0.0.5"\nport = 0\n[http]\nport = 0\n'
                '[metrics]\nport = 0\n')
    with Run(tmp) as run:
        assert "listening on 127.0.0.5:" in run.ready_line()


@pytest.mark.parametrize("config, named", [
    ('[http]\nport = "eighty"\n', "http.port"),
    ('[amqp]\nprot = 5672\n', "prot"),
    ('[limits]\nframe_max_bytes = 100\n', "limits.frame_max_bytes"),
    ('[log]\nformat = "xml"\n', "log.format"),
    # A syntax error: the line, after the data_dir line the test puts first.
    ('[http]\nport = ', "line 3"),
])
def test_a_bad_config_names_the_key_and_the_broker_does_not_start(tmp, config, named):
    with Run(tmp, config=data_dir(tmp) + config) as run:
        code = run.proc.wait(timeout=BROKER_STOP_TIMEOUT_S * 4)
        assert code != 0
        assert named in run.stderr(), run.stderr()
        assert not any(READY_PATTERN.search(line) for line in run.stdout.seen)


def test_a_missing_config_file_is_an_error(tmp):
    with Run(tmp, ["--config", os.path.join(tmp, "nope.toml")]) as run:
        assert run.proc.wait(timeout=BROKER_STOP_TIMEOUT_S * 4) != 0
        assert "nope.toml" in run.stderr()


def test_default_user_and_json_logs_from_the_file(tmp):
    config = (data_dir(tmp) + FREE_PORTS + '[default]\nuser = "admin"\npass = "s3cret"\n'
              '[log]\nformat = "json"\nlevel = "info"\n')
    with Run(tmp, ["--bind", "127.0.0.1"], config=config) as run:
        port = int(READY_PATTERN.search(run.ready_line()).group(1))
        params = pika.ConnectionParameters("127.0.0.1", port,
                                           credentials=pika.PlainCredentials("admin", "s3cret"))
        pika.BlockingConnection(params).close()
        guest = pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1,
                                          credentials=pika.PlainCredentials("guest", "guest"))
        with pytest.raises(AMQPConnectionError):
            pika.BlockingConnection(guest)
    lines = [line for line in run.stderr().splitlines() if line.strip()]
    assert lines, "the broker logged nothing"
    events = [json.loads(line) for line in lines]
    assert any("data directory" in e.get("fields", {}).get("message", "") for e in events)


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback_available(), reason="this machine has no IPv6 loopback")
def test_the_default_listener_takes_ipv4_and_ipv6_clients_as_rabbitmq_does(tmp):
    # No bind address given: every address of both IP versions, each peer seen as itself.
    with Run(tmp, config=data_dir(tmp) + FREE_PORTS) as run:
        port = int(READY_PATTERN.search(run.ready_line()).group(1))
        for host in ("127.0.0.1", "::1"):
            params = pika.ConnectionParameters(host=host, port=port)
            with pika.BlockingConnection(params) as connection:
                queue = connection.channel().queue_declare("", exclusive=True).method.queue
                assert queue.startswith("amq.gen-"), (host, queue)


def test_bind_0_0_0_0_listens_on_ipv4_only(tmp):
    with Run(tmp, args=["--bind", "0.0.0.0"], config=data_dir(tmp) + FREE_PORTS) as run:
        port = int(READY_PATTERN.search(run.ready_line()).group(1))
        with pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port)):
            pass
        if ipv6_loopback_available():
            with pytest.raises(AMQPConnectionError):
                pika.BlockingConnection(
                    pika.ConnectionParameters("::1", port, connection_attempts=1)
                )
