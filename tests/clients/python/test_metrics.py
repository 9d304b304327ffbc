"""Prometheus metrics on the metrics port with RabbitMQ's rabbitmq_prometheus names: node-wide
sums on /metrics, per-queue labels on /metrics/per-object, global message counters that follow
what pika does, and a scrape that still works with 10,000 queues."""

import os
import re
import time
import urllib.request

import pytest

from helpers import BrokerProcess, connect, listener_port, unique, wait_until

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="starts its own broker to scrape its metrics",
)

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def samples(text):
    """{(name, labels): value} of every sample line; every line must parse."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        out[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return out


@pytest.fixture
def broker():
    process = BrokerProcess().start()
    try:
        yield process
    finally:
        process.stop()


def test_counters_and_gauges_follow_what_clients_do(broker):
    port = listener_port(broker, "metrics")
    protocol = '{protocol="amqp091"}'
    classic = '{protocol="amqp091",queue_type="rabbit_classic_queue"}'
    before = samples(scrape(port))
    assert before[("rabbitmq_connections", "")] == 0
    assert before[("rabbitmq_global_messages_received_total", protocol)] == 0

    queue = unique("metrics-q")
    conn = connect(broker.url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue)
        for i in range(5):
            ch.basic_publish("", queue, f"m{i}".encode())
        ch.basic_qos(prefetch_count=10)
        got = []
        ch.basic_consume(queue, lambda c, m, p, b: got.append(m.delivery_tag))
        wait_until(lambda: conn.process_data_events(time_limit=0.05) or len(got) == 5,
                   what="five deliveries")
        ch.basic_ack(got[1], multiple=True)

        def settled():
            now = samples(scrape(port))
            return now if now[("rabbitmq_global_messages_acknowledged_total", classic)] == 2 else None

        now = wait_until(settled, what="two acknowledgements counted")
        assert now[("rabbitmq_connections", "")] == 1
        assert now[("rabbitmq_channels", "")] == 1
        assert now[("rabbitmq_consumers", "")] == 1
        assert now[("rabbitmq_global_consumers", protocol)] == 1
        assert now[("rabbitmq_global_publishers", protocol)] == 1
        assert now[("rabbitmq_global_messages_received_total", protocol)] == 5
        assert now[("rabbitmq_global_messages_routed_total", protocol)] == 5
        assert now[("rabbitmq_global_messages_confirmed_total", protocol)] == 5
        assert now[("rabbitmq_global_messages_delivered_total", classic)] == 5
        assert now[("rabbitmq_global_messages_delivered_consume_manual_ack_total", classic)] == 5
        assert now[("rabbitmq_queue_messages_unacked", "")] == 3
        assert now[("rabbitmq_queue_messages_ready", "")] == 0
        assert now[("rabbitmq_queue_messages", "")] == 3
        assert now[("rabbitmq_queue_consumers", "")] == 1
        assert now[("rabbitmq_queues", "")] >= 1
        assert ("rabbitmq_identity_info", "") not in now  # it carries labels
        assert any(name == "rabbitmq_identity_info" for name, _ in now)
    finally:
        conn.close()

    # Counts of closed connections stay in the totals.
    after = wait_until(
        lambda: (s := samples(scrape(port)))[("rabbitmq_connections", "")] == 0 and s,
        what="the connection gone from the gauges",
    )
    assert after[("rabbitmq_global_messages_received_total", protocol)] == 5
    assert after[("rabbitmq_global_messages_acknowledged_total", classic)] == 2
    assert after[("rabbitmq_connections_opened_total", "")] == 1
    assert after[("rabbitmq_connections_closed_total", "")] == 1


def test_per_object_metrics_label_each_queue(broker):
    port = listener_port(broker, "metrics")
    queue = unique("metrics-labelled")
    conn = connect(broker.url)
    try:
        ch = conn.channel()
        ch.queue_declare(queue)
        for _ in range(3):
            ch.basic_publish("", queue, b"x")
        key = ("rabbitmq_queue_messages_ready", f'{{vhost="/",queue="{queue}"}}')
        now = wait_until(
            lambda: (s := samples(scrape(port, "/metrics/per-object"))).get(key) == 3 and s,
            what="the queue's ready count with its labels",
        )
        assert now[("rabbitmq_queue_messages", f'{{vhost="/",queue="{queue}"}}')] == 3
        assert now[("rabbitmq_queue_consumers", f'{{vhost="/",queue="{queue}"}}')] == 0
    finally:
        conn.close()


def test_a_scrape_with_ten_thousand_queues(broker):
    port = listener_port(broker, "metrics")
    count = 10_000
    conn = connect(broker.url)
    try:
        ch = conn.channel()
        prefix = unique("many")
        for i in range(count):
            ch.queue_declare(f"{prefix}-{i}")
        started = time.monotonic()
        aggregated = samples(scrape(port))
        aggregated_secs = time.monotonic() - started
        started = time.monotonic()
        per_object = scrape(port, "/metrics/per-object")
        per_object_secs = time.monotonic() - started
    finally:
        conn.close()
    assert aggregated[("rabbitmq_queues", "")] >= count
    labelled = [line for line in per_object.splitlines()
                if line.startswith("rabbitmq_queue_messages_ready{") and prefix in line]
    assert len(labelled) == count
    # Reported, not asserted: timing is not a test.
    print(f"scrape of {count} queues: /metrics {aggregated_secs:.3f} s, "
          f"/metrics/per-object {per_object_secs:.3f} s")
