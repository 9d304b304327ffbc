"""warrenctl against a running broker: each command's output and exit code, as rabbitmqctl's.

The broker is a `warren` started with `--http-port 0` (its management API port is read from
the "warren X http: listening on ADDR" line), or, to check that these expectations are
RabbitMQ's, a RabbitMQ node given by WARREN_TEST_HTTP_URL (e.g. http://127.0.0.1:15672) and
WARREN_TEST_AMQP_URL. RabbitMQ's management statistics lag by seconds, so every count is
polled with a deadline."""

import json
import os
import socket
import subprocess
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote, urlparse

import pika
import pytest

from helpers import REPO_ROOT, BrokerProcess, connect, listener_port, unique, wait_until

CTL_TIMEOUT_S = 60
STATS_WAIT_S = 30  # RabbitMQ refreshes management statistics every 5 s


@dataclass
class Target:
    http_host: str
    http_port: int
    amqp_host: str
    amqp_port: int
    process: Optional[BrokerProcess]  # None when the broker is not ours (RabbitMQ)

    def amqp_url(self, user="guest", password="guest", vhost="/"):
        return (
            f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@"
            f"{self.amqp_host}:{self.amqp_port}/{quote(vhost, safe='')}"
        )


def warrenctl_bin():
    binary = os.environ.get("WARRENCTL_BIN") or str(REPO_ROOT / "target" / "debug" / "warrenctl")
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{binary} is missing: build it (cargo build -p warrenctl) or set WARRENCTL_BIN")
    return binary


def start_warren():
    broker = BrokerProcess().start()
    try:
        http_port = listener_port(broker, "http")
    except BaseException:
        broker.stop()
        raise
    return Target("127.0.0.1", http_port, "127.0.0.1", broker.port, broker)


@pytest.fixture(scope="module")
def target():
    http_url = os.environ.get("WARREN_TEST_HTTP_URL")
    if http_url:
        amqp = urlparse(os.environ.get("WARREN_TEST_AMQP_URL") or "amqp://127.0.0.1:5672/")
        http = urlparse(http_url)
        yield Target(http.hostname, http.port or 15672, amqp.hostname, amqp.port or 5672, None)
        return
    broker = start_warren()
    try:
        yield broker
    finally:
        broker.process.stop()


def ctl_at(host, port, *args, stdin=None):
    return subprocess.run(
        [warrenctl_bin(), "--node", host, "--port", str(port), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT_S,
    )


def ctl(target, *args, stdin=None):
    return ctl_at(target.http_host, target.http_port, *args, stdin=stdin)


def ok(target, *args, stdin=None):
    run = ctl(target, *args, stdin=stdin)
    assert run.returncode == 0, f"warrenctl {' '.join(args)}: exit {run.returncode}\n{run.stdout}{run.stderr}"
    return run.stdout


def rows(target, *args):
    """The rows of a listing, without informational lines and header."""
    return ok(target, "-s", *args).splitlines()


def wait_for_row(target, args, row, what):
    return wait_until(lambda: row in rows(target, *args), timeout=STATS_WAIT_S, what=what)


def publish(channel, queue, count):
    channel.confirm_delivery()
    for i in range(count):
        channel.basic_publish("", queue, f"m{i}".encode())


@pytest.fixture
def amqp(target):
    connection = connect(target.amqp_url())
    yield connection
    if connection.is_open:
        connection.close()


def test_list_queues_default_output_is_rabbitmqctls(target, amqp):
    queue = unique("ctl-q")
    channel = amqp.channel()
    channel.queue_declare(queue)
    publish(channel, queue, 3)
    wait_for_row(target, ["list_queues"], f"{queue}\t3", "the queue's count")

    lines = ok(target, "list_queues").splitlines()
    assert lines[:3] == ["Timeout: 60.0 seconds ...", "Listing queues for vhost / ...", "name\tmessages"]
    assert f"{queue}\t3" in lines[3:]
    # -q drops the informational lines, not the header.
    quiet = ok(target, "-q", "list_queues").splitlines()
    assert quiet[0] == "name\tmessages" and f"{queue}\t3" in quiet
    channel.queue_delete(queue)


def test_list_queues_columns_and_json(target, amqp):
    queue = unique("ctl-cols")
    channel = amqp.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-max-length": 10})
    publish(channel, queue, 2)
    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue, lambda *_: None, consumer_tag=unique("tag"))
    columns = [
        "name", "messages_ready", "messages_unacknowledged", "consumers", "durable",
        "auto_delete", "exclusive", "arguments", "state",
    ]
    expected = f'{queue}\t1\t1\t1\ttrue\tfalse\tfalse\t[{{"x-max-length",10}}]\trunning'
    wait_for_row(target, ["list_queues", *columns], expected, "the queue's columns")

    listing = json.loads(ok(target, "--formatter", "json", "list_queues", "name", "messages", "arguments"))
    assert {"name": queue, "messages": 2, "arguments": [["x-max-length", "signedint", 10]]} in listing

    tsv = ok(target, "--formatter", "tsv", "list_queues", "name", "durable").splitlines()
    assert tsv[0] == "name\tdurable" and f"{queue}\ttrue" in tsv

    bad = ctl(target, "list_queues", "name", "bogus")
    assert (bad.returncode, bad.stderr) == (64, "Error (argument validation): Info key(s) bogus are not supported\n")
    channel.queue_delete(queue)


def test_exchanges_and_bindings(target, amqp):
    exchange, queue = unique("ctl-ex"), unique("ctl-bq")
    channel = amqp.channel()
    channel.exchange_declare(exchange, "topic")
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange, "a.#", arguments={"k": "v"})

    assert f"{exchange}\ttopic" in rows(target, "list_exchanges")
    assert "\tdirect" in rows(target, "list_exchanges")  # the default exchange has no name
    bindings = rows(target, "list_bindings")
    assert f'{exchange}\texchange\t{queue}\tqueue\ta.#\t[{{"k","v"}}]' in bindings
    assert f"\texchange\t{queue}\tqueue\t{queue}\t[]" in bindings
    assert ok(target, "list_bindings").splitlines()[:2] == [
        "Listing bindings for vhost /...",
        "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments",
    ]
    channel.queue_delete(queue)
    channel.exchange_delete(exchange)


def connection_named(target, connection_name):
    """The broker's name for the connection whose client called itself connection_name."""

    def probe():
        for row in rows(target, "list_connections", "name", "client_properties"):
            if f'{{"connection_name","{connection_name}"}}' in row:
                return row.split("\t")[0]
        return None

    return wait_until(probe, timeout=STATS_WAIT_S, what=f"connection {connection_name}")


def test_connections_channels_consumers_and_close(target):
    connection_name = unique("ctl-conn")
    params = pika.URLParameters(target.amqp_url())
    params.client_properties = {"connection_name": connection_name}
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        queue, tag = unique("ctl-cq"), unique("ctl-tag")
        channel.queue_declare(queue)
        publish(channel, queue, 2)
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(queue, lambda *_: None, consumer_tag=tag)

        name = connection_named(target, connection_name)
        peer_port = name.split(" -> ")[0].rsplit(":", 1)[1]
        assert f"guest\t127.0.0.1\t{peer_port}\trunning" in rows(target, "list_connections")
        assert ok(target, "list_connections").splitlines()[:2] == [
            "Listing connections ...", "user\tpeer_host\tpeer_port\tstate"
        ]
        wait_for_row(target, ["list_channels"], f"{name} (1)\tguest\t1\t1", "the channel's counts")
        wait_for_row(
            target, ["list_consumers"], f"{queue}\t{name} (1)\t{tag}\ttrue\t1\ttrue\t[]", "the consumer"
        )

        closed = ok(target, "close_connection", name, "closed by warrenctl")
        assert closed == f"Closing connection {name}, reason: closed by warrenctl...\n"
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as raised:
            connection.process_data_events(time_limit=10)
            connection.process_data_events(time_limit=10)
        assert raised.value.reply_code == 320
        assert raised.value.reply_text == "CONNECTION_FORCED - closed by warrenctl"
    finally:
        if connection.is_open:
            connection.close()
    cleanup = connect(target.amqp_url())
    cleanup.channel().queue_delete(queue)
    cleanup.close()

    missing = ctl(target, "close_connection", "no such connection", "x")
    assert missing.returncode == 69


def can_log_in(target, user, password, vhost="/"):
    try:
        connect(target.amqp_url(user, password, vhost)).close()
        return True
    except pika.exceptions.AMQPConnectionError:
        return False


def test_users_tags_permissions_and_passwords(target):
    user = unique("ctl-user")
    added = ok(target, "add_user", user, "pw1")
    assert added.splitlines()[0] == f'Adding user "{user}" ...'
    again = ctl(target, "add_user", user, "pw2")
    assert (again.returncode, again.stderr) == (70, f'Error:\nUser "{user}" already exists\n')

    assert ok(target, "set_user_tags", user, "monitoring", "policymaker") == (
        f'Setting tags for user "{user}" to [monitoring, policymaker] ...\n'
    )
    assert f"{user}\t[monitoring, policymaker]" in rows(target, "list_users")
    assert {"user": user, "tags": ["monitoring", "policymaker"]} in json.loads(
        ok(target, "--formatter", "json", "list_users")
    )

    assert ok(target, "set_permissions", user, "^ctl-", ".*", ".*") == (
        f'Setting permissions for user "{user}" in vhost "/" ...\n'
    )
    assert f"{user}\t^ctl-\t.*\t.*" in rows(target, "list_permissions")
    # Setting tags must not have cleared the password.
    assert can_log_in(target, user, "pw1")

    ok(target, "change_password", user, "pw2")
    assert can_log_in(target, user, "pw2")
    assert not can_log_in(target, user, "pw1")
    assert f"{user}\t[monitoring, policymaker]" in rows(target, "list_users"), "tags survive"

    assert ok(target, "clear_permissions", user) == f'Clearing permissions for user "{user}" in vhost "/" ...\n'
    assert not [r for r in rows(target, "list_permissions") if r.startswith(f"{user}\t")]

    no_vhost = ctl(target, "set_permissions", "-p", unique("ctl-novhost"), user, ".*", ".*", ".*")
    assert no_vhost.returncode == 69 and "does not exist" in no_vhost.stderr

    assert ok(target, "delete_user", user) == f'Deleting user "{user}" ...\n'
    assert not [r for r in rows(target, "list_users") if r.startswith(f"{user}\t")]
    gone = ctl(target, "delete_user", user)
    assert (gone.returncode, gone.stderr) == (67, f'Error:\nUser "{user}" does not exist\n')
    nobody = ctl(target, "change_password", user, "x")
    assert nobody.returncode == 67


def test_vhosts(target):
    vhost = unique("ctl-vhost")
    assert ok(target, "add_vhost", vhost) == f'Adding vhost "{vhost}" ...\n'
    assert vhost in rows(target, "list_vhosts")
    ok(target, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    assert can_log_in(target, "guest", "guest", vhost)

    missing = unique("ctl-missing")
    assert ok(target, "list_queues", "-p", missing) == (
        f"Timeout: 60.0 seconds ...\nListing queues for vhost {missing} ...\n"
    )
    no_vhost = ctl(target, "list_permissions", "-p", missing)
    assert (no_vhost.returncode, no_vhost.stderr) == (65, f"Virtual host '{missing}' does not exist\n")

    assert ok(target, "delete_vhost", vhost) == f'Deleting vhost "{vhost}" ...\n'
    assert vhost not in rows(target, "list_vhosts")
    again = ctl(target, "delete_vhost", vhost)
    assert (again.returncode, again.stderr) == (65, f"Virtual host '{vhost}' does not exist\n")


def test_policies(target):
    name = unique("ctl-policy")
    out = ok(target, "set_policy", "--priority", "3", "--apply-to", "queues", name, "^ctl-pol-", '{"max-length":10}')
    assert out == (
        f'Setting policy "{name}" for pattern "^ctl-pol-" to "{{"max-length":10}}" '
        f'with priority "3" for vhost "/" ...\n'
    )
    assert f'/\t{name}\t^ctl-pol-\tqueues\t{{"max-length":10}}\t3' in rows(target, "list_policies")

    invalid = ctl(target, "set_policy", unique("ctl-bad"), "^x", '{"no-such-key":1}')
    assert invalid.returncode == 69 and invalid.stderr.startswith("Error:\n"), invalid

    assert ok(target, "clear_policy", name) == f'Clearing policy "{name}" on vhost "/" ...\n'
    assert not [r for r in rows(target, "list_policies") if f"\t{name}\t" in r]
    again = ctl(target, "clear_policy", name)
    assert (again.returncode, again.stderr) == (69, "Error:\nParameter does not exist\n")


def test_purge_and_delete_queue(target, amqp):
    queue = unique("ctl-purge")
    channel = amqp.channel()
    channel.queue_declare(queue)
    publish(channel, queue, 5)
    assert ok(target, "purge_queue", queue) == f"Purging queue '{queue}' in vhost '/' ...\n"
    assert channel.queue_declare(queue, passive=True).method.message_count == 0

    publish(channel, queue, 2)
    wait_for_row(target, ["list_queues", "name", "messages_ready"], f"{queue}\t2", "two ready messages")
    refused = ctl(target, "delete_queue", "--if-empty", queue)
    assert (refused.returncode, refused.stderr) == (64, "Error:\nQueue is not empty\n")
    deleted = ok(target, "delete_queue", queue)
    assert deleted == (
        f"Deleting queue '{queue}' on vhost '/' ...\nQueue was successfully deleted with 2 ready messages\n"
    )
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
        channel.queue_declare(queue, passive=True)
    assert raised.value.reply_code == 404

    missing = ctl(target, "delete_queue", queue)
    assert (missing.returncode, missing.stderr) == (64, "Error:\nQueue not found\n")
    no_purge = ctl(target, "purge_queue", queue)
    assert (no_purge.returncode, no_purge.stderr) == (69, "Error:\nnot_found\n")


def test_definitions_export_and_import(target, amqp, tmp_path):
    queue, exchange, user = unique("ctl-defq"), unique("ctl-defx"), unique("ctl-defu")
    channel = amqp.channel()
    channel.exchange_declare(exchange, "direct", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, "key")
    ok(target, "add_user", user, "secret")
    ok(target, "set_permissions", user, ".*", ".*", ".*")

    path = tmp_path / "definitions.json"
    assert ok(target, "export_definitions", str(path)) == (
        f'Exporting definitions in JSON to a file at "{path}" ...\n'
    )
    exported = json.loads(path.read_text())
    assert any(q["name"] == queue and q["durable"] for q in exported["queues"])
    assert any(x["name"] == exchange for x in exported["exchanges"])
    assert any(b["source"] == exchange and b["destination"] == queue for b in exported["bindings"])
    [exported_user] = [u for u in exported["users"] if u["name"] == user]
    assert exported_user["password_hash"] and exported_user["hashing_algorithm"]
    to_stdout = json.loads(ok(target, "export_definitions", "-"))
    assert any(q["name"] == queue for q in to_stdout["queues"])

    channel.queue_delete(queue)
    channel.exchange_delete(exchange)
    ok(target, "delete_user", user)
    assert not can_log_in(target, user, "secret")

    imported = ok(target, "import_definitions", str(path))
    assert imported.splitlines()[0] == f'Importing definitions in JSON from a file at "{path}" ...'
    wait_for_row(target, ["list_queues", "name", "durable"], f"{queue}\ttrue", "the imported queue")
    assert f"{exchange}\texchange\t{queue}\tqueue\tkey\t[]" in rows(target, "list_bindings")
    # The password travelled as its salted hash and still works.
    assert can_log_in(target, user, "secret")

    missing = ctl(target, "import_definitions", str(tmp_path / "absent.json"))
    assert missing.returncode == 65
    broken = tmp_path / "broken.json"
    broken.write_text("{broken")
    bad = ctl(target, "import_definitions", str(broken))
    assert bad.returncode == 65 and "Failed to deserialise input (format: JSON)" in bad.stderr

    channel.queue_delete(queue)
    channel.exchange_delete(exchange)
    ok(target, "delete_user", user)


def test_status_and_await_startup(target):
    assert ok(target, "await_startup", "--timeout", "30") == ""
    status = ok(target, "status").splitlines()
    assert status[0].startswith("Status of node ")
    assert any(
        line.endswith(f"port: {target.amqp_port}, protocol: amqp, purpose: AMQP 0-9-1 and AMQP 1.0")
        for line in status
    ), status
    as_json = json.loads(ok(target, "--formatter", "json", "status"))
    assert any(listener["port"] == target.http_port for listener in as_json["listeners"])


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_broker_down_is_one_line_and_exit_69():
    port = closed_port()
    run = ctl_at("127.0.0.1", port, "list_queues")
    assert run.returncode == 69
    assert run.stdout == ""
    assert run.stderr.startswith(f"Error: unable to connect to the management API at http://127.0.0.1:{port}: ")
    assert len(run.stderr.splitlines()) == 1

    waited = ctl_at("127.0.0.1", port, "await_startup", "--timeout", "0.5")
    assert waited.returncode == 69


def test_wrong_password_is_refused(target):
    run = ctl(target, "--password", "wrong", "list_queues")
    assert run.returncode == 77
    assert "401" in run.stderr


def test_stop(target):
    if target.process is None:
        # RabbitMQ's management API cannot stop a node: warrenctl says so.
        run = ctl(target, "stop")
        assert run.returncode == 69 and "cannot be stopped over HTTP" in run.stderr
        return
    own = start_warren()  # not the module's broker: this one goes down
    try:
        run = ctl(own, "stop")
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("Stopping and halting node ")
        assert own.process.proc.wait(timeout=30) == 0
        assert ctl(own, "stop", "--idempotent").returncode == 0
    finally:
        own.process.stop()
