"""Definitions exported by RabbitMQ 3.10.8 (`GET /api/definitions` of a real node, saved in
fixtures/) load into Warren with `--definitions FILE`: users log in with their RabbitMQ
password hashes, permissions, the durable exchange, queue (with its arguments), binding and
policy are in place, and Warren exports them back in the same format (which RabbitMQ imports:
checked by hand against the same node)."""

import base64
import json
import os
import subprocess

import pika
import pytest
import urllib.request

from helpers import HERE, LineReader, READY_PATTERN, SIDE_BY_SIDE_FLAGS, stop_process

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")), reason="starts a broker of its own"
)

FIXTURE = HERE / "fixtures" / "rabbitmq-3.10.8-definitions.json"


@pytest.fixture
def broker(tmp_path):
    binary = os.environ.get("WARREN_BIN") or str(HERE.parents[2] / "target" / "debug" / "warren")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "data"),
         "--definitions", str(FIXTURE), *SIDE_BY_SIDE_FLAGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    lines = LineReader(proc.stdout)
    try:
        ready = lines.wait_for(lambda l: READY_PATTERN.search(l) is not None, 30, "ready line")
        http = lines.wait_for(lambda l: " http: listening on " in l, 30, "http line")
        yield int(READY_PATTERN.search(ready).group(1)), int(http.rsplit(":", 1)[1])
    finally:
        stop_process(proc)
        proc.stdout.close()


def api_get(port, path, user="guest", password="guest"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_rabbitmq_definitions_load_and_work(broker):
    amqp_port, http_port = broker
    # The user RabbitMQ hashed the password of logs in, and its permissions hold.
    params = pika.ConnectionParameters(
        "127.0.0.1", amqp_port, "shop", pika.PlainCredentials("shopper", "basket")
    )
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("orders", "order.new", b"first order")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        connection.channel().queue_declare("not.shop")
    assert refused.value.reply_code == 403
    _, _, body = channel.basic_get("shop.orders", auto_ack=True)
    assert body == b"first order"
    connection.close()

    queue = api_get(http_port, "/queues/shop/shop.orders")
    assert queue["durable"] is True
    assert queue["arguments"] == {"x-max-priority": 5, "x-message-ttl": 60000}
    assert queue["policy"] == "dlx"
    assert api_get(http_port, "/exchanges/shop/orders")["type"] == "topic"

    exported = api_get(http_port, "/definitions")
    original = json.loads(FIXTURE.read_text())
    for key in ("users", "permissions", "policies", "queues", "exchanges", "bindings"):
        ours = sorted(json.dumps(item, sort_keys=True) for item in exported[key])
        theirs = sorted(json.dumps(item, sort_keys=True) for item in original[key])
        assert ours == theirs, key
