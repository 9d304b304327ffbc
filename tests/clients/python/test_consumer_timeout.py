"""Consumer timeout (issue 5, item 9) with pika: a delivery left unacknowledged longer than the
queue's `x-consumer-timeout` closes the consumer's channel with 406 PRECONDITION_FAILED and
RabbitMQ's text, and the message goes back to the queue for another consumer, redelivered."""

import pytest
from pika.exceptions import ChannelClosedByBroker

from helpers import connect, pump_until, unique

TIMEOUT_MS = 300


@pytest.fixture
def connections(amqp_url):
    opened = []

    def open_connection():
        connection = connect(amqp_url)
        opened.append(connection)
        return connection

    yield open_connection
    for connection in opened:
        if connection.is_open:
            connection.close()


def test_an_unacknowledged_delivery_past_the_queue_timeout_closes_the_channel(connections):
    queue = unique("consumer-timeout")
    slow = connections()
    channel = slow.channel()
    channel.queue_declare(queue, arguments={"x-consumer-timeout": TIMEOUT_MS})
    channel.basic_publish("", queue, b"work")
    closed = []
    channel._impl.add_on_close_callback(lambda _channel, reason: closed.append(reason))
    delivered = []
    channel.basic_consume(queue, lambda ch, method, props, body: delivered.append(method))
    pump_until([slow], lambda: delivered, what="the delivery")
    pump_until([slow], lambda: closed, what="the channel closed by the consumer timeout")
    reason = closed[0]
    assert isinstance(reason, ChannelClosedByBroker)
    assert reason.reply_code == 406
    assert reason.reply_text == (
        "PRECONDITION_FAILED - delivery acknowledgement on channel "
        f"{channel.channel_number} timed out. Timeout value used: {TIMEOUT_MS} ms. "
        "This timeout value can be configured, see consumers doc guide to learn more"
    )
    assert slow.is_open, "only the channel closes, not the connection"

    other = connections()
    again = other.channel()
    redelivered = []
    again.basic_consume(
        queue,
        lambda ch, method, props, body: (redelivered.append((method, body)), ch.basic_ack(method.delivery_tag)),
    )
    pump_until([other], lambda: redelivered, what="the message back from the timed-out channel")
    method, body = redelivered[0]
    assert body == b"work"
    assert method.redelivered is True
    again.queue_delete(queue)

