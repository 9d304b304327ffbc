"""Publisher confirms (RabbitMQ's confirm.select extension) through pika's blocking channel."""

import pika
import pytest

from helpers import unique


def test_confirmed_publishes_succeed(channel, cleanup):
    queue = cleanup.queue(unique("confirmed"))
    channel.queue_declare(queue)
    channel.confirm_delivery()
    for i in range(50):
        # Raises NackError / UnroutableError on failure; returns only after the broker's ack.
        channel.basic_publish("", queue, f"m{i}".encode(), mandatory=True)
    assert channel.queue_declare(queue, passive=True).method.message_count == 50

    # Persistent messages on a durable queue are confirmed too.
    durable = cleanup.queue(unique("confirmed-durable"))
    channel.queue_declare(durable, durable=True)
    for i in range(10):
        channel.basic_publish(
            "", durable, b"p", pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        )
    assert channel.queue_declare(durable, passive=True).method.message_count == 10


def test_unroutable_without_mandatory_is_acked_and_dropped(channel, cleanup):
    exchange = cleanup.exchange(unique("confirm-x"))
    channel.exchange_declare(exchange, exchange_type="direct")
    channel.confirm_delivery()
    channel.basic_publish(exchange, "nobody-bound", b"lost")  # no exception: acked


def test_mandatory_unroutable_raises_unroutable_error(channel, cleanup):
    exchange = cleanup.exchange(unique("confirm-x"))
    channel.exchange_declare(exchange, exchange_type="direct")
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as excinfo:
        channel.basic_publish(exchange, "nobody-bound", b"bounce", mandatory=True)
    (returned,) = excinfo.value.messages
    assert returned.body == b"bounce"
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == exchange
    assert returned.method.routing_key == "nobody-bound"

    # Also through the default exchange to a queue that does not exist.
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish("", unique("no-such-queue"), b"bounce", mandatory=True)

    # The channel is still usable afterwards.
    channel.basic_publish(exchange, "nobody-bound", b"fine")


def test_publish_to_missing_exchange_closes_channel_with_404(conn):
    channel = conn.channel()
    channel.confirm_delivery()
    missing = unique("no-such-exchange")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.basic_publish(missing, "k", b"x")
    assert excinfo.value.reply_code == 404
    assert excinfo.value.reply_text.startswith("NOT_FOUND - no exchange")
    assert excinfo.value.reply_text == f"NOT_FOUND - no exchange '{missing}' in vhost '/'"
    assert channel.is_closed
    assert conn.is_open  # a channel error leaves the connection alone
    assert conn.channel().is_open
