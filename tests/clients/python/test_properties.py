"""Message properties, header field-table types and body sizes survive the broker unchanged."""

import datetime
import decimal
import os
import urllib.parse

import pika
import pytest

from helpers import connect, pump_until, unique

HEADERS = {
    "str": "héllo wörld",
    "int": 42,
    "negative": -7,
    "big": 2**40,
    "true": True,
    "false": False,
    "bytes": b"\x00\x01\xfe\xff",
    "decimal": decimal.Decimal("3.14"),
    "when": datetime.datetime(2024, 2, 29, 12, 34, 56, tzinfo=datetime.timezone.utc),
    "void": None,
    "list": [1, "two", True, [3, "four"], {"k": "v"}],
    "table": {"nested": {"deeper": "yes", "n": 1}, "empty": {}, "items": []},
}


def test_properties_and_header_types_round_trip(conn, channel, cleanup):
    queue = cleanup.queue(unique("props"))
    channel.queue_declare(queue)
    sent = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=HEADERS,
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=5,
        correlation_id="corr-123",
        reply_to="replies-here",
        message_id="msg-456",
        timestamp=1700000000,
        type="order.created",
        app_id="warren-tests",
    )
    channel.basic_publish("", queue, b'{"a":1}', sent)

    received = []
    channel.basic_consume(queue, lambda ch, m, p, b: received.append((p, b)), auto_ack=True)
    pump_until(conn, lambda: received, what="the message with properties")
    props, body = received[0]
    assert body == b'{"a":1}'
    assert props.content_type == "application/json"
    assert props.content_encoding == "utf-8"
    assert props.delivery_mode == 2
    assert props.priority == 5
    assert props.correlation_id == "corr-123"
    assert props.reply_to == "replies-here"
    assert props.message_id == "msg-456"
    assert props.timestamp == 1700000000
    assert props.type == "order.created"
    assert props.app_id == "warren-tests"
    assert props.expiration is None
    assert props.user_id is None
    assert props.cluster_id is None
    assert props.headers == HEADERS
    # Types, not just equal values: bool must not come back as int, bytes not as str.
    assert type(props.headers["true"]) is bool
    assert type(props.headers["bytes"]) is bytes
    assert type(props.headers["decimal"]) is decimal.Decimal
    assert type(props.headers["table"]["nested"]) is dict


def test_message_without_properties_has_none_set(channel, cleanup):
    queue = cleanup.queue(unique("noprops"))
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"bare")
    _method, props, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"bare"
    for field in (
        "content_type",
        "content_encoding",
        "headers",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
    ):
        assert getattr(props, field) is None, field


def test_user_id_must_match_authenticated_user(amqp_url, conn, cleanup):
    user = urllib.parse.urlparse(amqp_url).username or "guest"
    channel = conn.channel()
    queue = cleanup.queue(unique("userid"))
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"ok", pika.BasicProperties(user_id=user))
    _method, props, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"ok"
    assert props.user_id == user

    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.basic_publish("", queue, b"forged", pika.BasicProperties(user_id="mallory"))
        channel.queue_declare(queue, passive=True)
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == (
        f"PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was '{user}'"
    )


@pytest.mark.parametrize("size", [0, 1, 200 * 1024, 16 * 1024 * 1024], ids=["0B", "1B", "200KiB", "16MiB"])
def test_body_sizes_round_trip(amqp_url, size, cleanup):
    # The smallest frame_max a client may ask for, so the 200 KiB body spans ~50 frames.
    params = pika.URLParameters(amqp_url)
    params.frame_max = 4096
    params.socket_timeout = 5
    params.stack_timeout = 8
    small_frames = pika.BlockingConnection(params)
    try:
        channel = small_frames.channel()
        queue = cleanup.queue(unique("sizes"))
        channel.queue_declare(queue)
        body = os.urandom(size)
        channel.basic_publish("", queue, body, pika.BasicProperties(message_id=f"size-{size}"))

        method, props, got = channel.basic_get(queue, auto_ack=True)
        assert method is not None
        assert props.message_id == f"size-{size}"
        assert len(got) == size
        assert got == body

        # Back through basic.deliver on a connection with the default frame size.
        default_conn = connect(amqp_url)
        try:
            ch2 = default_conn.channel()
            ch2.basic_publish("", queue, body)
            received = []
            ch2.basic_consume(queue, lambda c, m, p, b: received.append(b), auto_ack=True)
            pump_until(default_conn, lambda: received, timeout=30, what=f"{size}-byte delivery")
            assert received[0] == body
        finally:
            default_conn.close()
    finally:
        small_frames.close()
