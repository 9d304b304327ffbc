"""Issue 5, item 1 with pika: message TTL (x-message-ttl and the expiration property, the lower
of the two applying, expiry from the head, TTL 0), requeued messages keeping their expiry,
queue expiry (x-expires), the arguments RabbitMQ refuses, and expiries surviving a restart."""

import os
import time

import pika
import pytest

from helpers import DataDirBroker, connect, unique, wait_until

SHORT_TTL_MS = 150


def message_count(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def wait_for_count(channel, queue, expected, what):
    wait_until(lambda: message_count(channel, queue) == expected, what=what)


def test_queue_ttl_expires_messages_nobody_consumes(channel, cleanup):
    queue = cleanup.queue(unique("ttl-queue"))
    channel.queue_declare(queue, arguments={"x-message-ttl": SHORT_TTL_MS})
    for i in range(3):
        channel.basic_publish("", queue, f"m{i}".encode())
    # Expired at the head on the queue's own timer: no consumer, no get needed.
    wait_for_count(channel, queue, 0, "the queue's messages to expire")
    assert channel.basic_get(queue, auto_ack=True) == (None, None, None)


def test_the_lower_of_queue_and_message_ttl_applies(channel, cleanup):
    long_queue = cleanup.queue(unique("ttl-long-queue"))
    channel.queue_declare(long_queue, arguments={"x-message-ttl": 600_000})
    channel.basic_publish(
        "", long_queue, b"short", pika.BasicProperties(expiration=str(SHORT_TTL_MS))
    )
    wait_for_count(channel, long_queue, 0, "the message's own TTL to run out")

    short_queue = cleanup.queue(unique("ttl-short-queue"))
    channel.queue_declare(short_queue, arguments={"x-message-ttl": SHORT_TTL_MS})
    channel.basic_publish("", short_queue, b"long", pika.BasicProperties(expiration="600000"))
    wait_for_count(channel, short_queue, 0, "the queue's TTL to run out")


def test_messages_expire_only_from_the_head(channel, cleanup):
    queue = cleanup.queue(unique("ttl-head"))
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"long", pika.BasicProperties(expiration="600000"))
    channel.basic_publish("", queue, b"short", pika.BasicProperties(expiration="1"))
    clock = cleanup.queue(unique("ttl-clock"))
    channel.queue_declare(clock, arguments={"x-message-ttl": SHORT_TTL_MS})
    channel.basic_publish("", clock, b"tick")
    wait_for_count(channel, clock, 0, "a TTL longer than the short message's to pass")
    # The short one expired long ago, but waits behind the head, as in RabbitMQ.
    assert message_count(channel, queue) == 2
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"long"
    assert properties.expiration == "600000"
    assert method.message_count == 0, "the expired message behind went when it became the head"
    assert channel.basic_get(queue, auto_ack=True) == (None, None, None)


def test_ttl_zero_reaches_a_waiting_consumer_and_nobody_else(conn, channel, cleanup):
    queue = cleanup.queue(unique("ttl-zero"))
    channel.queue_declare(queue, arguments={"x-message-ttl": 0})
    channel.basic_publish("", queue, b"nobody")
    wait_for_count(channel, queue, 0, "the message without a consumer to expire")
    assert channel.basic_get(queue, auto_ack=True) == (None, None, None)

    got = []
    consumer = conn.channel()
    consumer.basic_consume(queue, lambda ch, m, p, body: got.append(body), auto_ack=True)
    channel.basic_publish("", queue, b"taken")
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert got == [b"taken"]


def test_a_requeued_message_keeps_its_expiry(channel, cleanup):
    queue = cleanup.queue(unique("ttl-requeue"))
    channel.queue_declare(queue, arguments={"x-message-ttl": SHORT_TTL_MS})
    channel.basic_publish("", queue, b"held")
    method, _, body = channel.basic_get(queue)
    assert body == b"held"
    # A message published after it, with the same TTL, expiring means the held one's expiry
    # has passed too.
    channel.basic_publish("", queue, b"clock")
    wait_for_count(channel, queue, 0, "the later message to expire")
    channel.basic_nack(method.delivery_tag, requeue=True)
    wait_for_count(channel, queue, 0, "the requeued, expired message to go")
    assert channel.basic_get(queue, auto_ack=True) == (None, None, None)


@pytest.mark.parametrize(
    "arguments, text",
    [
        ({"x-message-ttl": -1}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
        ({"x-message-ttl": "abc"}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': \"expected integer, got longstr\""),
        ({"x-expires": 0}, "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_zero,0}}"),
        ({"x-expires": -5}, "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_negative,-5}}"),
        (
            {"x-message-ttl": -1, "x-expires": 0},
            "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_zero,0}}",
        ),
    ],
)
def test_invalid_lifetime_arguments_are_refused_as_rabbitmq_does(conn, arguments, text):
    channel = conn.channel()
    queue = unique("ttl-invalid")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.queue_declare(queue, arguments=arguments)
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == "PRECONDITION_FAILED - " + text.format(q=queue)


@pytest.mark.parametrize(
    "expiration, reason",
    [
        ("abc", "no_integer"),
        ("-1", "{value_negative,-1}"),
        ("10abc", '{leftover_string,"abc"}'),
        ("1.5", '{leftover_string,".5"}'),
    ],
)
def test_an_invalid_expiration_closes_the_channel(conn, cleanup, expiration, reason):
    channel = conn.channel()
    queue = cleanup.queue(unique("ttl-expiration"))
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"x", pika.BasicProperties(expiration=expiration))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.queue_declare(queue, passive=True)
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == (
        f"PRECONDITION_FAILED - invalid expiration '{expiration}': {reason}"
    )


def queue_exists(channel, queue):
    """Publishing with mandatory under confirms: returned when the queue is gone. (A passive
    declare would count as using the queue and keep it alive.)"""
    try:
        channel.basic_publish("", queue, b"probe", mandatory=True)
        return True
    except pika.exceptions.UnroutableError:
        return False


def test_x_expires_deletes_an_unused_queue_and_a_declare_renews_it(channel, cleanup):
    channel.confirm_delivery()
    unused = cleanup.queue(unique("expires-unused"))
    channel.queue_declare(unused, arguments={"x-expires": 300})
    kept = cleanup.queue(unique("expires-kept"))
    channel.queue_declare(kept, arguments={"x-expires": 300})

    def unused_gone():
        channel.queue_declare(kept, passive=True)  # counts as a use: renews the lease
        return not queue_exists(channel, unused)

    wait_until(unused_gone, what="the unused queue to expire")
    channel.queue_declare(kept, passive=True)

    consumed = cleanup.queue(unique("expires-consumed"))
    channel.queue_declare(consumed, arguments={"x-expires": 300})
    channel.basic_consume(consumed, lambda *args: None, auto_ack=True)
    clock = cleanup.queue(unique("expires-clock"))
    channel.queue_declare(clock, arguments={"x-expires": 300})
    wait_until(lambda: not queue_exists(channel, clock), what="the clock queue to expire")
    assert queue_exists(channel, consumed), "a queue with a consumer is in use"


@pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="restarts the broker, so needs a broker process of its own",
)
def test_expiries_survive_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    broker = DataDirBroker(data_dir).start()
    try:
        conn = connect(broker.url)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("ttl-durable", durable=True, arguments={"x-message-ttl": 600_000})
        persistent = pika.DeliveryMode.Persistent
        ch.basic_publish(
            "",
            "ttl-durable",
            b"short",
            pika.BasicProperties(delivery_mode=persistent, expiration="500"),
        )
        ch.basic_publish("", "ttl-durable", b"long", pika.BasicProperties(delivery_mode=persistent))
        published_at = time.monotonic()
        conn.close()
        assert broker.terminate() == 0
        # The short message expires while no broker runs.
        wait_until(lambda: time.monotonic() > published_at + 0.5, what="the short TTL to pass")
        broker = DataDirBroker(data_dir).start()
        conn = connect(broker.url)
        ch = conn.channel()
        wait_for_count(ch, "ttl-durable", 1, "the message that expired while down to go")
        method, _, body = ch.basic_get("ttl-durable", auto_ack=True)
        assert body == b"long"
        conn.close()
    finally:
        broker.stop()
