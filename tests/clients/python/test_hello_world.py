"""Tutorial 1: publish to the default exchange and consume it back."""

import pika

from helpers import pump_until, unique


def test_publish_to_default_exchange_and_consume(conn, channel, cleanup):
    queue = cleanup.queue(unique("hello"))
    declared = channel.queue_declare(queue)
    assert declared.method.queue == queue
    assert declared.method.message_count == 0
    assert declared.method.consumer_count == 0

    channel.basic_publish("", queue, b"Hello World!")

    received = []

    def on_message(ch, method, properties, body):
        received.append((method, body))

    tag = channel.basic_consume(queue, on_message, auto_ack=True)
    pump_until(conn, lambda: received, what="the hello message")
    method, body = received[0]
    assert body == b"Hello World!"
    assert method.exchange == ""
    assert method.routing_key == queue
    assert method.redelivered is False
    assert method.consumer_tag == tag
    assert method.delivery_tag == 1

    channel.basic_cancel(tag)
    assert channel.queue_declare(queue, passive=True).method.message_count == 0


def test_explicit_consumer_tag_is_used(conn, channel, cleanup):
    queue = cleanup.queue(unique("hello-tags"))
    channel.queue_declare(queue)
    got = []
    explicit = channel.basic_consume(
        queue, lambda ch, m, p, b: got.append(m.consumer_tag), auto_ack=True, consumer_tag="my-tag"
    )
    assert explicit == "my-tag"
    channel.basic_publish("", queue, b"x", pika.BasicProperties())
    pump_until(conn, lambda: got, what="delivery to explicit consumer tag")
    assert got == ["my-tag"]
    channel.basic_cancel("my-tag")
    assert channel.queue_declare(queue, passive=True).method.consumer_count == 0
