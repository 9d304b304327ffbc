"""basic.get, nack/reject, purge, delete and declare errors, with the counts the broker reports."""

import pika
import pytest

from helpers import pump_until, unique


def publish_confirmed(channel, queue, bodies):
    channel.confirm_delivery()
    for body in bodies:
        channel.basic_publish("", queue, body)


def test_basic_get_reports_remaining_count_and_get_empty(channel, cleanup):
    queue = cleanup.queue(unique("get"))
    channel.queue_declare(queue)
    assert channel.basic_get(queue) == (None, None, None)  # basic.get-empty

    publish_confirmed(channel, queue, [b"a", b"b", b"c"])
    seen = []
    for expected_remaining in (2, 1, 0):
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        assert method.message_count == expected_remaining
        assert method.redelivered is False
        assert method.exchange == ""
        assert method.routing_key == queue
        seen.append(body)
    assert seen == [b"a", b"b", b"c"]
    assert channel.basic_get(queue) == (None, None, None)


def test_delivery_tags_increase_per_channel(channel, cleanup):
    queue = cleanup.queue(unique("tags"))
    channel.queue_declare(queue)
    publish_confirmed(channel, queue, [b"1", b"2", b"3"])
    tags = [channel.basic_get(queue)[0].delivery_tag for _ in range(3)]
    assert tags == [1, 2, 3]
    channel.basic_ack(3, multiple=True)
    assert channel.queue_declare(queue, passive=True).method.message_count == 0


def test_nack_with_requeue_redelivers(conn, channel, cleanup):
    queue = cleanup.queue(unique("nack"))
    channel.queue_declare(queue)
    publish_confirmed(channel, queue, [b"again"])

    method, _, body = channel.basic_get(queue)
    assert (body, method.redelivered) == (b"again", False)
    channel.basic_nack(method.delivery_tag, requeue=True)

    method, _, body = channel.basic_get(queue)
    assert (body, method.redelivered) == (b"again", True)
    channel.basic_reject(method.delivery_tag, requeue=True)

    # Redelivery to a consumer carries the flag as well.
    received = []
    channel.basic_consume(queue, lambda ch, m, p, b: received.append((m, b)))
    pump_until(conn, lambda: received, what="redelivery to consumer")
    method, body = received[0]
    assert (body, method.redelivered) == (b"again", True)
    channel.basic_ack(method.delivery_tag)
    channel.close()


def test_reject_without_requeue_drops(channel, cleanup):
    queue = cleanup.queue(unique("reject"))
    channel.queue_declare(queue)
    publish_confirmed(channel, queue, [b"drop me", b"keep me"])
    method, _, body = channel.basic_get(queue)
    assert body == b"drop me"
    channel.basic_reject(method.delivery_tag, requeue=False)
    method, _, body = channel.basic_get(queue)
    assert body == b"keep me"
    channel.basic_nack(method.delivery_tag, requeue=False)
    assert channel.queue_declare(queue, passive=True).method.message_count == 0
    assert channel.basic_get(queue) == (None, None, None)


def test_unacked_messages_return_when_channel_closes(conn, cleanup):
    channel = conn.channel()
    queue = cleanup.queue(unique("unacked"))
    channel.queue_declare(queue)
    publish_confirmed(channel, queue, [b"x", b"y"])
    assert channel.basic_get(queue)[2] == b"x"
    assert channel.queue_declare(queue, passive=True).method.message_count == 1
    channel.close()

    other = conn.channel()
    method, _, body = other.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered) == (b"x", True)
    assert method.message_count == 1


def test_purge_and_delete_report_counts(channel, cleanup):
    queue = cleanup.queue(unique("purge"))
    channel.queue_declare(queue)
    publish_confirmed(channel, queue, [b"p"] * 5)
    assert channel.queue_purge(queue).method.message_count == 5
    assert channel.queue_purge(queue).method.message_count == 0

    publish_confirmed(channel, queue, [b"d"] * 4)
    assert channel.queue_delete(queue).method.message_count == 4
    # Deleting a queue that does not exist is not an error in RabbitMQ.
    assert channel.queue_delete(queue).method.message_count == 0


def test_queue_delete_if_empty_and_if_unused(conn, cleanup):
    channel = conn.channel()
    queue = cleanup.queue(unique("ifempty"))
    channel.queue_declare(queue)
    publish_confirmed(channel, queue, [b"x"])
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.queue_delete(queue, if_empty=True)
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' not empty"

    channel = conn.channel()
    channel.basic_consume(queue, lambda *a: None)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        conn.channel().queue_delete(queue, if_unused=True)
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' in use"


def test_passive_declare_of_missing_queue_is_404(channel):
    missing = unique("missing")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.queue_declare(missing, passive=True)
    assert excinfo.value.reply_code == 404
    assert excinfo.value.reply_text == f"NOT_FOUND - no queue '{missing}' in vhost '/'"


def test_passive_declare_of_missing_exchange_is_404(channel):
    missing = unique("missing-x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.exchange_declare(missing, passive=True)
    assert excinfo.value.reply_code == 404
    assert excinfo.value.reply_text == f"NOT_FOUND - no exchange '{missing}' in vhost '/'"


def test_redeclare_with_different_durable_is_406(conn, cleanup):
    queue = cleanup.queue(unique("inequivalent"))
    channel = conn.channel()
    channel.queue_declare(queue, durable=False)
    channel.queue_declare(queue, durable=False)  # same arguments: fine, idempotent
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.queue_declare(queue, durable=True)
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{queue}' in vhost '/': "
        "received 'true' but current is 'false'"
    )


def test_redeclare_exchange_with_different_type_is_406(conn, cleanup):
    exchange = cleanup.exchange(unique("inequivalent-x"))
    channel = conn.channel()
    channel.exchange_declare(exchange, exchange_type="direct")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.exchange_declare(exchange, exchange_type="topic")
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{exchange}' in vhost '/': "
        "received 'topic' but current is 'direct'"
    )


def test_amq_prefix_is_reserved(conn):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        conn.channel().queue_declare("amq.mine")
    assert excinfo.value.reply_code == 403
    assert excinfo.value.reply_text == (
        "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'"
    )
