"""Issue 5, item 2 with pika: dead-lettering of rejected and expired messages through
x-dead-letter-exchange / x-dead-letter-routing-key, with the headers RabbitMQ 4 writes
(x-death merged by queue and reason, x-first-death-*, x-last-death-*), the expiration
removed, cycles dropped unless a client rejected, and no dead-lettering to a missing
exchange."""

import datetime

import pika

from helpers import unique, wait_until


def get_one(channel, queue):
    """The next message of `queue`, waiting for it to arrive."""
    got = wait_until(
        lambda: (lambda r: r if r[0] else None)(channel.basic_get(queue, auto_ack=True)),
        what=f"a message in {queue}",
    )
    return got


def dead_letter_setup(channel, cleanup, **source_arguments):
    dlx = cleanup.exchange(unique("dlx"))
    channel.exchange_declare(dlx, exchange_type="fanout")
    dlq = cleanup.queue(unique("dlq"))
    channel.queue_declare(dlq)
    channel.queue_bind(dlq, dlx)
    source = cleanup.queue(unique("dl-source"))
    arguments = {"x-dead-letter-exchange": dlx, **source_arguments}
    channel.queue_declare(source, arguments=arguments)
    return dlx, dlq, source


def test_a_rejected_message_is_dead_lettered_with_rabbitmq_headers(channel, cleanup):
    dlx, dlq, source = dead_letter_setup(channel, cleanup)
    exchange = cleanup.exchange(unique("dl-origin"))
    channel.exchange_declare(exchange, exchange_type="direct")
    channel.queue_bind(source, exchange, "rk")
    properties = pika.BasicProperties(
        expiration="60000", headers={"CC": ["cc-key"], "app": "kept"}, message_id="m-1"
    )
    channel.basic_publish(exchange, "rk", b"payload", properties)
    method, _, _ = get_one_unacked(channel, source)
    channel.basic_reject(method.delivery_tag, requeue=False)

    method, properties, body = get_one(channel, dlq)
    assert body == b"payload"
    assert (method.exchange, method.routing_key) == (dlx, "rk")
    assert properties.expiration is None, "the expiration is removed"
    assert properties.message_id == "m-1"
    headers = properties.headers
    assert headers["app"] == "kept" and headers["CC"] == ["cc-key"]
    (death,) = headers["x-death"]
    assert death["count"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == source
    assert death["exchange"] == exchange
    assert death["routing-keys"] == ["rk", "cc-key"]
    assert death["original-expiration"] == "60000"
    assert isinstance(death["time"], datetime.datetime)
    for kind in ("first", "last"):
        assert headers[f"x-{kind}-death-reason"] == "rejected"
        assert headers[f"x-{kind}-death-queue"] == source
        assert headers[f"x-{kind}-death-exchange"] == exchange


def get_one_unacked(channel, queue):
    return wait_until(
        lambda: (lambda r: r if r[0] else None)(channel.basic_get(queue)),
        what=f"a message in {queue}",
    )


def test_an_expired_message_goes_with_the_dead_letter_routing_key(channel, cleanup):
    dlx = cleanup.exchange(unique("dlx-direct"))
    channel.exchange_declare(dlx, exchange_type="direct")
    dlq = cleanup.queue(unique("dlq"))
    channel.queue_declare(dlq)
    channel.queue_bind(dlq, dlx, "dead")
    source = cleanup.queue(unique("dl-expiring"))
    channel.queue_declare(
        source,
        arguments={
            "x-message-ttl": 100,
            "x-dead-letter-exchange": dlx,
            "x-dead-letter-routing-key": "dead",
        },
    )
    channel.basic_publish("", source, b"late")
    method, properties, body = get_one(channel, dlq)
    assert body == b"late"
    assert method.routing_key == "dead"
    (death,) = properties.headers["x-death"]
    assert death["reason"] == "expired"
    assert death["queue"] == source
    assert death["exchange"] == ""
    assert death["routing-keys"] == [source]
    assert "original-expiration" not in death, "only a per-message TTL is recorded"


def test_deaths_merge_by_queue_and_reason_most_recent_first(channel, cleanup):
    a = cleanup.queue(unique("dl-a"))
    b = cleanup.queue(unique("dl-b"))
    channel.queue_declare(a, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": b})
    channel.queue_declare(
        b,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": a,
            "x-message-ttl": 50,
        },
    )
    channel.basic_publish("", a, b"ball")
    for _ in range(2):
        method, _, _ = get_one_unacked(channel, a)
        channel.basic_nack(method.delivery_tag, requeue=False)  # a -> b, then b expires -> a
    _, properties, _ = get_one(channel, a)
    headers = properties.headers
    deaths = [(d["queue"], d["reason"], d["count"]) for d in headers["x-death"]]
    assert deaths == [(b, "expired", 2), (a, "rejected", 2)]
    assert headers["x-first-death-queue"] == a
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-last-death-queue"] == b
    assert headers["x-last-death-reason"] == "expired"


def test_an_automatic_cycle_is_dropped_and_a_rejected_one_is_not(channel, cleanup):
    witness_exchange = cleanup.exchange(unique("dl-fanout"))
    channel.exchange_declare(witness_exchange, exchange_type="fanout")
    source = cleanup.queue(unique("dl-cycle"))
    channel.queue_declare(
        source, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": witness_exchange}
    )
    witness = cleanup.queue(unique("dl-witness"))
    channel.queue_declare(witness)
    channel.queue_bind(witness, witness_exchange)
    channel.queue_bind(source, witness_exchange)  # the message would come back to its queue
    channel.basic_publish("", source, b"first")
    _, properties, body = get_one(channel, witness)
    assert body == b"first"
    assert properties.headers["x-death"][0]["count"] == 1
    # A later message dying: a looping copy of the first would have died before it.
    channel.basic_publish("", source, b"marker")
    _, _, body = get_one(channel, witness)
    assert body == b"marker"
    assert channel.basic_get(witness, auto_ack=True) == (None, None, None)

    rejecting = cleanup.queue(unique("dl-self-reject"))
    channel.queue_declare(rejecting, arguments={"x-dead-letter-exchange": ""})
    channel.basic_publish("", rejecting, b"again")
    for _ in range(2):
        method, _, _ = get_one_unacked(channel, rejecting)
        channel.basic_reject(method.delivery_tag, requeue=False)
    _, properties, body = get_one(channel, rejecting)
    assert body == b"again"
    assert properties.headers["x-death"][0]["count"] == 2


def test_an_x_death_a_client_republished_starts_over(channel, cleanup):
    dlx, dlq, source = dead_letter_setup(channel, cleanup)
    forged = [{"count": 5, "reason": "rejected", "queue": source, "exchange": "", "routing-keys": []}]
    channel.basic_publish("", source, b"again", pika.BasicProperties(headers={"x-death": forged}))
    method, _, _ = get_one_unacked(channel, source)
    channel.basic_reject(method.delivery_tag, requeue=False)
    _, properties, _ = get_one(channel, dlq)
    (death,) = properties.headers["x-death"]
    assert (death["queue"], death["reason"], death["count"]) == (source, "rejected", 1)


def test_without_its_exchange_a_dead_message_is_dropped(channel, cleanup):
    source = cleanup.queue(unique("dl-nowhere"))
    channel.queue_declare(source, arguments={"x-dead-letter-exchange": unique("missing")})
    channel.basic_publish("", source, b"gone")
    method, _, _ = get_one_unacked(channel, source)
    channel.basic_reject(method.delivery_tag, requeue=False)
    assert channel.queue_declare(source, passive=True).method.message_count == 0
    assert channel.basic_get(source, auto_ack=True) == (None, None, None)


def test_dead_letter_arguments_are_checked_as_rabbitmq_does(conn):
    cases = [
        (
            {"x-dead-letter-routing-key": "k"},
            "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': routing_key_but_no_dlx_defined",
        ),
        (
            {"x-dead-letter-exchange": "x", "x-dead-letter-routing-key": 5},
            "invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': {{unacceptable_type,signedint}}",
        ),
        (
            {"x-dead-letter-exchange": 5, "x-message-ttl": -1},
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'",
        ),
    ]
    for arguments, text in cases:
        channel = conn.channel()
        queue = unique("dl-invalid")
        try:
            channel.queue_declare(queue, arguments=arguments)
            raise AssertionError(f"{arguments} was accepted")
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 406
            assert e.reply_text == "PRECONDITION_FAILED - " + text.format(q=queue)
