"""Issue 4 with pika: persistent messages in a durable queue survive a broker restart (SIGTERM,
then a new broker on the same data directory, as `service warren stop/start` does); transient
messages and non-durable queues do not. These tests start their own `warren` (they restart
it), so they skip against an external broker."""

import os

import pika
import pytest

from helpers import DataDirBroker, connect

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="restarts the broker, so needs a broker process of its own",
)

COUNT = 25


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def brokers():
    """Every broker a test started; each is stopped by its own pid at teardown."""
    started = []
    yield started
    for broker in started:
        broker.stop()


def start(data_dir, brokers):
    broker = DataDirBroker(data_dir).start()
    brokers.append(broker)
    return broker


def restart(broker, data_dir, brokers):
    assert broker.terminate() == 0, "SIGTERM must stop the broker cleanly (exit 0)"
    return start(data_dir, brokers)


def publish(url, queue, delivery_mode, durable=True):
    conn = connect(url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=durable)
        for i in range(COUNT):
            props = pika.BasicProperties(
                delivery_mode=delivery_mode,
                message_id=f"id-{i}",
                content_type="text/plain",
                headers={"i": i},
            )
            # With confirms on, basic_publish returns once the broker has acked the message.
            ch.basic_publish("", queue, f"message {i}".encode(), props, mandatory=True)
    finally:
        conn.close()


def ready_count(ch, queue):
    """The queue's ready count; None if it does not exist (the 404 closes the channel)."""
    try:
        return ch.queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return None


def test_persistent_messages_survive_a_restart(data_dir, brokers):
    broker = start(data_dir, brokers)
    publish(broker.url, "pika-persistent", pika.DeliveryMode.Persistent)

    broker = restart(broker, data_dir, brokers)
    conn = connect(broker.url)
    try:
        ch = conn.channel()
        assert ready_count(ch, "pika-persistent") == COUNT, "queue and its count after restart"
        got = []
        for _ in range(COUNT):
            method, props, body = ch.basic_get("pika-persistent", auto_ack=False)
            assert method is not None, f"only {len(got)} messages came back"
            assert not method.redelivered
            assert props.delivery_mode == 2
            got.append((body.decode(), props.message_id, props.headers, props.content_type))
            ch.basic_ack(method.delivery_tag)
        assert got == [
            (f"message {i}", f"id-{i}", {"i": i}, "text/plain") for i in range(COUNT)
        ]
        assert ch.basic_get("pika-persistent")[0] is None
    finally:
        conn.close()

    # Consumed and acked before a clean stop: gone for good, the queue still there.
    broker = restart(broker, data_dir, brokers)
    conn = connect(broker.url)
    try:
        assert ready_count(conn.channel(), "pika-persistent") == 0
    finally:
        conn.close()


def test_transient_messages_are_gone_after_a_restart(data_dir, brokers):
    broker = start(data_dir, brokers)
    publish(broker.url, "pika-transient", pika.DeliveryMode.Transient)

    broker = restart(broker, data_dir, brokers)
    conn = connect(broker.url)
    try:
        # The durable queue is back, empty.
        assert ready_count(conn.channel(), "pika-transient") == 0
    finally:
        conn.close()


def test_non_durable_queue_is_gone_after_a_restart(data_dir, brokers):
    broker = start(data_dir, brokers)
    publish(broker.url, "pika-non-durable", pika.DeliveryMode.Persistent, durable=False)

    broker = restart(broker, data_dir, brokers)
    conn = connect(broker.url)
    try:
        assert ready_count(conn.channel(), "pika-non-durable") is None
    finally:
        conn.close()
