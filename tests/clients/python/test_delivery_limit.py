"""Issue 5, item 10 with pika: x-delivery-limit as RabbitMQ's quorum queues have it. Every
return of a message (nack or reject with requeue, or its channel closing) counts; from the
first redelivery on it carries x-delivery-count; returned more often than the limit, it is
dead-lettered (reason delivery_limit) or dropped."""

import pika
import pytest

from helpers import unique, wait_until


def get_unacked(channel, queue):
    return wait_until(
        lambda: (lambda r: r if r[0] else None)(channel.basic_get(queue)),
        what=f"a message in {queue}",
    )


def test_a_message_returned_more_than_the_limit_is_dead_lettered(channel, cleanup):
    dlq = cleanup.queue(unique("limit-dlq"))
    channel.queue_declare(dlq)
    queue = cleanup.queue(unique("limited"))
    channel.queue_declare(
        queue,
        arguments={
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )
    channel.basic_publish("", queue, b"poison", pika.BasicProperties(headers={"app": 1}))

    method, properties, _ = get_unacked(channel, queue)
    assert not method.redelivered
    assert "x-delivery-count" not in (properties.headers or {})
    channel.basic_nack(method.delivery_tag, requeue=True)

    method, properties, _ = get_unacked(channel, queue)
    assert method.redelivered
    assert properties.headers["x-delivery-count"] == 1
    assert properties.headers["app"] == 1
    channel.basic_reject(method.delivery_tag, requeue=True)

    _, properties, body = wait_until(
        lambda: (lambda r: r if r[0] else None)(channel.basic_get(dlq, auto_ack=True)),
        what="the message over its limit in the dead-letter queue",
    )
    assert body == b"poison"
    (death,) = properties.headers["x-death"]
    assert (death["reason"], death["queue"]) == ("delivery_limit", queue)
    assert channel.queue_declare(queue, passive=True).method.message_count == 0


def test_a_closed_channel_counts_and_without_a_dead_letter_exchange_it_is_dropped(
    conn, channel, cleanup
):
    queue = cleanup.queue(unique("limited-drop"))
    channel.queue_declare(queue, arguments={"x-delivery-limit": 0})
    channel.basic_publish("", queue, b"once")
    other = conn.channel()
    _, _, body = get_unacked(other, queue)
    assert body == b"once"
    other.close()  # the unacknowledged message comes back: one return, over a limit of 0
    # Had it been requeued, it would come before a message published now.
    channel.basic_publish("", queue, b"marker")
    method, _, body = get_unacked(channel, queue)
    assert body == b"marker"
    channel.basic_ack(method.delivery_tag)
    assert channel.basic_get(queue, auto_ack=True) == (None, None, None)

    counted = cleanup.queue(unique("limited-count"))
    channel.queue_declare(counted, arguments={"x-delivery-limit": 5})
    channel.basic_publish("", counted, b"again")
    other = conn.channel()
    get_unacked(other, counted)
    other.close()
    method, properties, _ = get_unacked(channel, counted)
    assert properties.headers["x-delivery-count"] == 1


def test_an_invalid_delivery_limit_is_refused(conn):
    channel = conn.channel()
    queue = unique("limited-invalid")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.queue_declare(queue, arguments={"x-delivery-limit": -1})
    assert excinfo.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue '{queue}' in vhost '/': "
        "{value_negative,-1}"
    )
