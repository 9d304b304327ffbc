"""Issue 5, item 8 with pika: the x-consistent-hash exchange (RabbitMQ's bundled
rabbitmq_consistent_hash_exchange plugin). Binding keys are weights; each message goes to one
queue, picked by hashing its routing key (or a header, or a property); one key always lands on
the same queue and queues get shares proportional to their weights. Refusals carry the
plugin's texts, as RabbitMQ 3.10.8 answered them."""

import pika
import pytest

from helpers import unique

MESSAGES = 3000


def declare_ring(channel, cleanup, weights, arguments=None):
    exchange = cleanup.exchange(unique("chx"))
    channel.exchange_declare(exchange, "x-consistent-hash", arguments=arguments)
    queues = []
    for weight in weights:
        queue = cleanup.queue(unique("chq"))
        channel.queue_declare(queue)
        channel.queue_bind(queue, exchange, str(weight))
        queues.append(queue)
    return exchange, queues


def counts(channel, queues):
    return [channel.queue_declare(q, passive=True).method.message_count for q in queues]


def drain_bodies(channel, queue):
    bodies = set()
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.add(body.decode())


def publish_confirmed(channel, exchange, routing_keys, properties=None):
    channel.confirm_delivery()
    for i, key in enumerate(routing_keys):
        props = properties(i) if properties else None
        channel.basic_publish(exchange, key, str(i).encode(), props)


def test_shares_follow_the_weights(channel, cleanup):
    exchange, queues = declare_ring(channel, cleanup, [1, 2, 1])
    publish_confirmed(channel, exchange, [f"key-{i}" for i in range(MESSAGES)])
    q1, q2, q3 = counts(channel, queues)
    assert q1 + q2 + q3 == MESSAGES, "each message goes to exactly one queue"
    # Expected 750 / 1500 / 750.
    assert 550 < q1 < 950 and 550 < q3 < 950, (q1, q2, q3)
    assert 1250 < q2 < 1750, (q1, q2, q3)


def test_one_routing_key_always_lands_on_the_same_queue(channel, cleanup):
    exchange, queues = declare_ring(channel, cleanup, [1, 1, 1, 1])
    keys = [f"order-{i % 20}" for i in range(400)]
    publish_confirmed(channel, exchange, keys)
    owner = {}
    for queue in queues:
        for body in drain_bodies(channel, queue):
            key = keys[int(body)]
            assert owner.setdefault(key, queue) == queue, f"{key} went to two queues"
    assert len(owner) == 20
    assert len(set(owner.values())) > 1, "twenty keys do not all hash to one queue"


def test_hash_header_and_hash_property_replace_the_routing_key(channel, cleanup):
    by_header, header_queues = declare_ring(
        channel, cleanup, [1, 1, 1], {"hash-header": "customer"}
    )
    by_id, id_queues = declare_ring(
        channel, cleanup, [1, 1, 1], {"hash-property": "message_id"}
    )

    def props(i):
        return pika.BasicProperties(headers={"customer": f"c{i % 10}"}, message_id=f"m{i % 10}")

    keys = [f"different-{i}" for i in range(300)]
    publish_confirmed(channel, by_header, keys, props)
    publish_confirmed(channel, by_id, keys, props)
    for queues in (header_queues, id_queues):
        owner = {}
        for queue in queues:
            for body in drain_bodies(channel, queue):
                group = int(body) % 10
                assert owner.setdefault(group, queue) == queue, "one value, one queue"
        assert len(owner) == 10


def test_messages_without_the_hashed_header_all_go_to_one_queue(channel, cleanup):
    exchange, queues = declare_ring(channel, cleanup, [1, 1, 1], {"hash-header": "h"})
    publish_confirmed(channel, exchange, [f"k{i}" for i in range(60)])
    assert sorted(counts(channel, queues))[-1] == 60


@pytest.mark.parametrize(
    "key,text",
    [
        ("abc", 'PRECONDITION_FAILED - The binding key must be an integer: <<"abc">>'),
        ("", "PRECONDITION_FAILED - The binding key must be an integer: <<>>"),
        ("1.5", 'PRECONDITION_FAILED - The binding key must be an integer: <<"1.5">>'),
        ("0", "PRECONDITION_FAILED - The binding key must be greater than 0"),
        ("-3", "PRECONDITION_FAILED - The binding key must be greater than 0"),
    ],
)
def test_a_binding_key_that_is_no_weight_is_refused(conn, cleanup, key, text):
    channel = conn.channel()
    exchange = cleanup.exchange(unique("chx"))
    queue = cleanup.queue(unique("chq"))
    channel.exchange_declare(exchange, "x-consistent-hash")
    channel.queue_declare(queue)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_bind(queue, exchange, key)
    assert (closed.value.reply_code, closed.value.reply_text) == (406, text)


@pytest.mark.parametrize(
    "arguments,text",
    [
        ({"hash-property": "foo"}, "PRECONDITION_FAILED - Unsupported property: foo"),
        (
            {"hash-property": "message_id", "hash-header": "h"},
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive",
        ),
    ],
)
def test_bad_arguments_are_refused_with_the_plugins_texts(conn, cleanup, arguments, text):
    channel = conn.channel()
    exchange = cleanup.exchange(unique("chx"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.exchange_declare(exchange, "x-consistent-hash", arguments=arguments)
    assert (closed.value.reply_code, closed.value.reply_text) == (406, text)
