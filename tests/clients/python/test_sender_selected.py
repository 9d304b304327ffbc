"""Issue 5, item 6 with pika: sender-selected distribution (CC and BCC headers add routing keys
to one publish; BCC never reaches a consumer; a CC that is no array refuses the message), and
alternate exchanges as RabbitMQ routes to them."""

import pika
import pytest

from helpers import unique


def bodies_and_headers(channel, queue):
    out = []
    while True:
        _, properties, body = channel.basic_get(queue, auto_ack=True)
        if body is None:
            return out
        out.append((body, properties.headers))


def test_cc_and_bcc_route_one_publish_to_more_keys(channel, cleanup):
    exchange = cleanup.exchange(unique("ssd"))
    channel.exchange_declare(exchange, exchange_type="direct")
    queues = {}
    for key in ("main", "copy", "secret", "both"):
        queues[key] = cleanup.queue(unique(f"ssd-{key}"))
        channel.queue_declare(queues[key])
        channel.queue_bind(queues[key], exchange, key)
    channel.queue_bind(queues["both"], exchange, "main")
    channel.confirm_delivery()
    headers = {"CC": ["copy", "both"], "BCC": ["secret"], "app": "x"}
    channel.basic_publish(exchange, "main", b"hello", pika.BasicProperties(headers=headers))

    delivered = {"CC": ["copy", "both"], "app": "x"}
    for key in ("main", "copy", "secret", "both"):
        # One copy per queue, however many of its keys matched; BCC removed everywhere.
        assert bodies_and_headers(channel, queues[key]) == [(b"hello", delivered)], key


def test_cc_through_the_default_exchange_reaches_queues_by_name(channel, cleanup):
    first = cleanup.queue(unique("ssd-first"))
    second = cleanup.queue(unique("ssd-second"))
    for queue in (first, second):
        channel.queue_declare(queue)
    channel.confirm_delivery()
    channel.basic_publish(
        "", first, b"both", pika.BasicProperties(headers={"BCC": [second, 7]})
    )
    assert bodies_and_headers(channel, first) == [(b"both", {})]
    assert bodies_and_headers(channel, second) == [(b"both", {})]


@pytest.mark.parametrize(
    "headers, text",
    [
        ({"CC": "k"}, 'invalid message: {unacceptable_type_in_header,"CC",longstr}'),
        ({"BCC": 5}, 'invalid message: {unacceptable_type_in_header,"BCC",signedint}'),
        ({"CC": {"a": 1}}, 'invalid message: {unacceptable_type_in_header,"CC",table}'),
    ],
)
def test_a_routing_header_that_is_no_array_closes_the_channel(conn, cleanup, headers, text):
    channel = conn.channel()
    queue = cleanup.queue(unique("ssd-invalid"))
    channel.queue_declare(queue)
    channel.basic_publish("", queue, b"x", pika.BasicProperties(headers=headers))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.queue_declare(queue, passive=True)
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == "PRECONDITION_FAILED - " + text


def test_alternate_exchanges_route_as_rabbitmq_does(channel, cleanup):
    alternate = cleanup.exchange(unique("ae"))
    channel.exchange_declare(alternate, exchange_type="fanout")
    unrouted = cleanup.queue(unique("ae-unrouted"))
    channel.queue_declare(unrouted)
    channel.queue_bind(unrouted, alternate)
    main = cleanup.exchange(unique("ae-main"))
    channel.exchange_declare(main, exchange_type="direct", arguments={"alternate-exchange": alternate})
    empty = cleanup.exchange(unique("ae-empty"))
    channel.exchange_declare(empty, exchange_type="fanout")
    channel.exchange_bind(empty, main, "to-empty")
    channel.confirm_delivery()

    # Matching no binding: the alternate exchange takes it, so mandatory returns nothing.
    channel.basic_publish(main, "nothing-bound", b"unroutable", mandatory=True)
    # Matching a binding to an exchange that routes nowhere is still a match.
    channel.basic_publish(main, "to-empty", b"matched")
    assert bodies_and_headers(channel, unrouted) == [(b"unroutable", None)]

    missing = cleanup.exchange(unique("ae-missing"))
    channel.exchange_declare(
        missing, exchange_type="direct", arguments={"alternate-exchange": unique("nowhere")}
    )
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish(missing, "k", b"lost", mandatory=True)
