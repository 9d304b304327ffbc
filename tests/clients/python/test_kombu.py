"""kombu (py-amqp transport) against the broker: Connection, Producer/Consumer, SimpleQueue,
and kombu.Queue declared with x-message-ttl and x-max-priority."""

import socket
import time

import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Consumer, Exchange, Producer, Queue

from helpers import unique, wait_until

DRAIN_TIMEOUT_S = 10.0


@pytest.fixture
def kombu_conn(amqp_url):
    # Confirmed publishes are in their queue when publish() returns, so counts taken right
    # after are not racing the broker's routing.
    with Connection(
        amqp_url, connect_timeout=5, transport_options={"confirm_publish": True}
    ) as connection:
        connection.ensure_connection(max_retries=1)
        yield connection


def drain_until(connection, predicate, timeout=DRAIN_TIMEOUT_S, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out after {timeout}s waiting for {what}"
        try:
            connection.drain_events(timeout=min(remaining, 0.5))
        except socket.timeout:
            pass


def ready_count(channel, queue):
    return queue(channel).queue_declare(passive=True).message_count


def test_connection_negotiates_what_kombu_relies_on(kombu_conn):
    assert kombu_conn.connected
    capabilities = kombu_conn.connection.server_properties["capabilities"]
    # Publisher confirms, consumer cancel notifications and basic.nack change kombu's behaviour.
    for name in ("publisher_confirms", "consumer_cancel_notify", "basic.nack",
                 "connection.blocked"):
        assert capabilities.get(name) is True, (name, capabilities)
    assert kombu_conn.default_channel.is_open
    info = kombu_conn.info()
    assert info["transport"] == "amqp" and info["virtual_host"] == "/"

    kombu_conn.release()
    assert not kombu_conn.connected
    kombu_conn.ensure_connection(max_retries=1)
    assert kombu_conn.connected


def test_kombu_sees_rabbitmq_3_and_chooses_global_qos(kombu_conn):
    # kombu picks basic.qos semantics by the product and version in connection.start; Celery's
    # worker then sets its prefetch with global=True, as it does against RabbitMQ 3.3 to 3.13.
    properties = kombu_conn.connection.server_properties
    assert properties["product"] == "RabbitMQ"
    assert properties["version"].startswith("3.")
    assert kombu_conn.qos_semantics_matches_spec is False


def test_producer_and_consumer_round_trip(kombu_conn, cleanup):
    exchange = Exchange(cleanup.exchange(unique("kombu-x")), type="direct", durable=False)
    queue = Queue(cleanup.queue(unique("kombu-q")), exchange, routing_key="jobs", durable=False)
    producer = Producer(kombu_conn.channel(), exchange=exchange, serializer="json")
    sent = [{"n": i, "text": "héllo"} for i in range(3)]
    for body in sent:
        producer.publish(
            body, routing_key="jobs", declare=[queue], headers={"n": body["n"]}, retry=True
        )
    producer.publish(b"raw bytes", routing_key="jobs", content_type="application/data",
                     content_encoding="binary", compression="zlib", delivery_mode=2)

    received = []

    def on_message(body, message):
        received.append((body, message))
        message.ack()

    accept = ["json", "application/data"]
    with Consumer(kombu_conn.channel(), queues=[queue], callbacks=[on_message], accept=accept):
        drain_until(kombu_conn, lambda: len(received) == 4, what="4 messages")

    assert [body for body, _ in received[:3]] == sent
    assert [message.headers["n"] for _, message in received[:3]] == [0, 1, 2]
    raw_body, raw_message = received[3]
    assert raw_body == b"raw bytes"
    assert raw_message.properties["delivery_mode"] == 2
    assert raw_message.headers["compression"] == "application/x-gzip"
    assert all(message.acknowledged for _, message in received)
    assert ready_count(kombu_conn.channel(), queue) == 0


def test_simple_queue_put_get_ack(kombu_conn, cleanup):
    name = cleanup.queue(unique("kombu-simple"))
    cleanup.exchange(name)  # SimpleQueue declares a direct exchange named like its queue
    simple = kombu_conn.SimpleQueue(name, serializer="json")
    try:
        for i in range(3):
            simple.put({"i": i})
        assert simple.qsize() == 3

        # get_nowait is basic.get; get(block=True) starts a consumer.
        first = simple.get_nowait()
        assert first.payload == {"i": 0}
        first.ack()
        second = simple.get_nowait()
        assert second.payload == {"i": 1}
        second.requeue()
        # basic.reject has no reply: poll until the queue has the message back.
        wait_until(lambda: simple.qsize() == 2, DRAIN_TIMEOUT_S, "the requeued message")

        again = simple.get(block=True, timeout=DRAIN_TIMEOUT_S)
        assert again.payload == {"i": 1} and again.delivery_info["redelivered"] is True
        again.ack()
        last = simple.get(block=True, timeout=DRAIN_TIMEOUT_S)
        assert last.payload == {"i": 2} and last.delivery_info["redelivered"] is False
        last.ack()
        assert simple.qsize() == 0
        with pytest.raises(simple.Empty):
            simple.get_nowait()
    finally:
        simple.close()


def test_queue_with_message_ttl_drops_expired_messages(kombu_conn, cleanup):
    name = cleanup.queue(unique("kombu-ttl"))
    queue = Queue(name, Exchange(""), routing_key=name, durable=False, message_ttl=0.05)
    channel = kombu_conn.channel()
    queue(channel).declare()

    Producer(channel).publish({"short": "lived"}, routing_key=name, serializer="json")
    wait_until(lambda: ready_count(channel, queue) == 0, DRAIN_TIMEOUT_S, "the message to expire")
    assert queue(channel).get(no_ack=True) is None

    # kombu sent the TTL as x-message-ttl in milliseconds, and it is part of the queue's
    # identity: declaring without it is refused.
    without_ttl = Queue(name, Exchange(""), routing_key=name, durable=False)
    with pytest.raises(PreconditionFailed) as declared_again:
        without_ttl(kombu_conn.channel()).declare()
    assert str(declared_again.value) == (
        f"Queue.declare: (406) PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for "
        f"queue '{name}' in vhost '/': received none but current is the value '50' of type "
        f"'signedint'"
    )


def test_per_message_expiration_drops_the_message(kombu_conn, cleanup):
    name = cleanup.queue(unique("kombu-expiration"))
    queue = Queue(name, Exchange(""), routing_key=name, durable=False)
    channel = kombu_conn.channel()
    queue(channel).declare()
    producer = Producer(channel, serializer="json")
    producer.publish({"short": "lived"}, routing_key=name, expiration=0.05)
    producer.publish({"keeps": True}, routing_key=name)

    wait_until(lambda: ready_count(channel, queue) == 1, DRAIN_TIMEOUT_S, "the message to expire")
    message = queue(channel).get(no_ack=True)
    assert message.payload == {"keeps": True}


def test_priority_queue_delivers_highest_priority_first(kombu_conn, cleanup):
    name = cleanup.queue(unique("kombu-prio"))
    queue = Queue(name, Exchange(""), routing_key=name, durable=False, max_priority=5)
    channel = kombu_conn.channel()
    queue(channel).declare()

    producer = Producer(channel, serializer="json")
    # Priorities above the queue's maximum count as the maximum; equal ones stay FIFO.
    for label, priority in [("low", 1), ("none", None), ("high-a", 5), ("mid", 3), ("over", 9),
                            ("high-b", 5)]:
        producer.publish({"label": label}, routing_key=name, priority=priority)

    labels = []
    with Consumer(kombu_conn.channel(), queues=[queue], prefetch_count=1,
                  callbacks=[lambda body, message: (labels.append(body["label"]), message.ack())]):
        drain_until(kombu_conn, lambda: len(labels) == 6, what="6 messages")
    assert labels == ["high-a", "over", "high-b", "mid", "low", "none"]

    with pytest.raises(PreconditionFailed) as declared_again:
        Queue(name, Exchange(""), routing_key=name, durable=False, max_priority=10)(
            kombu_conn.channel()
        ).declare()
    assert str(declared_again.value) == (
        f"Queue.declare: (406) PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for "
        f"queue '{name}' in vhost '/': received '10' but current is '5'"
    )
