"""RabbitMQ's own `rabbitmqadmin` command-line tool (Debian's rabbitmq-server package puts it
on the PATH) pointed at Warren's management API: declare a queue, publish, get, list and
delete, reading the tool's own output. Skipped where the tool is not installed."""

import json
import os
import shutil
import subprocess

import pytest

from helpers import BrokerProcess, listener_port, unique

RABBITMQADMIN = shutil.which("rabbitmqadmin")

pytestmark = [
    pytest.mark.skipif(RABBITMQADMIN is None, reason="rabbitmqadmin is not installed"),
    pytest.mark.skipif(
        bool(os.environ.get("WARREN_TEST_AMQP_URL")),
        reason="starts its own broker to reach its management API",
    ),
]


@pytest.fixture(scope="module")
def admin():
    broker = BrokerProcess().start()
    port = listener_port(broker, "http")

    def run(*args):
        done = subprocess.run(
            [RABBITMQADMIN, "-H", "127.0.0.1", "-P", str(port), "-u", "guest", "-p", "guest",
             *args],
            capture_output=True, text=True, timeout=30,
        )
        assert done.returncode == 0, f"rabbitmqadmin {args}: {done.stdout}{done.stderr}"
        return done.stdout

    try:
        yield run
    finally:
        broker.stop()


def test_declare_publish_get_list_and_delete(admin):
    queue = unique("admin-q")
    assert "queue declared" in admin("declare", "queue", f"name={queue}", "durable=false")
    assert "Message published" in admin(
        "publish", "routing_key=" + queue, "payload=hello from rabbitmqadmin")
    listed = json.loads(admin("-f", "raw_json", "list", "queues", "name", "messages"))
    assert {"name": queue, "messages": 1} in listed
    got = json.loads(admin("-f", "raw_json", "get", f"queue={queue}", "ackmode=ack_requeue_false"))
    assert [(m["payload"], m["routing_key"], m["redelivered"]) for m in got] == [
        ("hello from rabbitmqadmin", queue, False)]
    table = admin("list", "queues", "name", "messages")
    row = [line for line in table.splitlines() if f" {queue} " in line]
    assert row and row[0].split("|")[2].strip() == "0", table
    exchanges = json.loads(admin("-f", "raw_json", "list", "exchanges", "name", "type"))
    assert {"name": "amq.topic", "type": "topic"} in exchanges
    assert "queue deleted" in admin("delete", "queue", f"name={queue}")
    assert queue not in admin("list", "queues", "name")


def test_bindings_and_overview(admin):
    exchange, queue = unique("admin-x"), unique("admin-bq")
    admin("declare", "exchange", f"name={exchange}", "type=direct")
    admin("declare", "queue", f"name={queue}")
    assert "binding declared" in admin(
        "declare", "binding", f"source={exchange}", f"destination={queue}", "routing_key=k")
    bindings = json.loads(admin("-f", "raw_json", "list", "bindings"))
    assert any(b["source"] == exchange and b["destination"] == queue and b["routing_key"] == "k"
               for b in bindings)
    overview = json.loads(admin("-f", "raw_json", "show", "overview"))
    assert overview[0]["object_totals"]["queues"] >= 1
    admin("delete", "binding", f"source={exchange}", "destination_type=queue",
          f"destination={queue}", "properties_key=k")
    bindings = json.loads(admin("-f", "raw_json", "list", "bindings"))
    assert not any(b["source"] == exchange for b in bindings)
