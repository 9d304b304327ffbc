"""Issue 5, item 4 with pika: priority queues (x-max-priority) deliver higher-priority messages
first, FIFO within a priority, priorities above the maximum counting as the maximum; a
requeued message goes back to its place in its priority; drop-head drops the message that
would be delivered next; a backlog paged out past the memory budget and a durable queue
restarted keep the order. Consumer priorities (x-priority): a higher-priority consumer with
credit always gets the message, equal priorities share round-robin, a non-integer one is
refused. Expected orders and refusal texts checked against RabbitMQ 3.10."""

import os

import pytest
from pika.exceptions import ChannelClosedByBroker
from pika.spec import BasicProperties

from helpers import DataDirBroker, connect, pump_until, unique, wait_until


def priority_queue(channel, cleanup, max_priority=5, **arguments):
    queue = cleanup.queue(unique("prio"))
    channel.queue_declare(queue, arguments={"x-max-priority": max_priority, **arguments})
    return queue


def publish(channel, queue, body, priority=None, **properties):
    channel.basic_publish("", queue, body, BasicProperties(priority=priority, **properties))


def drain(channel, queue):
    out = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((body, properties.priority, method.redelivered))


def test_higher_priorities_first_capped_at_the_maximum_fifo_within_one(channel, cleanup):
    queue = priority_queue(channel, cleanup)
    for n, priority in enumerate([None, 1, 9, 5, 3, 0, 7, None, 5]):
        publish(channel, queue, b"m%d" % n, priority)
    got = drain(channel, queue)
    # 9 and 7 count as 5 (the maximum) but keep their property; no property counts as 0.
    assert [(body, priority) for body, priority, _ in got] == [
        (b"m2", 9), (b"m3", 5), (b"m6", 7), (b"m8", 5),
        (b"m4", 3), (b"m1", 1), (b"m0", None), (b"m5", 0), (b"m7", None),
    ]


def test_a_queue_without_x_max_priority_ignores_priorities(channel, cleanup):
    queue = cleanup.queue(unique("fifo"))
    channel.queue_declare(queue)
    publish(channel, queue, b"low", 1)
    publish(channel, queue, b"high", 9)
    assert [body for body, _, _ in drain(channel, queue)] == [b"low", b"high"]


@pytest.mark.parametrize(
    "value, detail",
    [
        (256, "{max_value_exceeded,256}"),
        (-1, "{value_negative,-1}"),
        ("5", '"expected integer, got longstr"'),
        (True, '"expected integer, got bool"'),
    ],
)
def test_x_max_priority_is_checked_as_rabbitmq_does(conn, cleanup, value, detail):
    queue = cleanup.queue(unique("prio-bad"))
    channel = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as refused:
        channel.queue_declare(queue, arguments={"x-max-priority": value})
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{queue}' in vhost '/': {detail}"
    )


def test_zero_and_255_are_accepted_and_redeclaring_compares_them(conn, cleanup):
    channel = conn.channel()
    for max_priority in (0, 255):
        priority_queue(channel, cleanup, max_priority)
    queue = priority_queue(channel, cleanup, 5)
    channel.queue_declare(queue, arguments={"x-max-priority": 5})
    with pytest.raises(ChannelClosedByBroker) as refused:
        channel.queue_declare(queue, arguments={"x-max-priority": 6})
    assert refused.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue '{queue}' "
        "in vhost '/': received '6' but current is '5'"
    )


def test_a_requeued_message_goes_back_to_its_place_in_its_priority(channel, cleanup):
    queue = priority_queue(channel, cleanup)
    for body, priority in [(b"a1", 1), (b"b5", 5), (b"c3", 3), (b"d5", 5)]:
        publish(channel, queue, body, priority)
    first, _, first_body = channel.basic_get(queue)
    second, _, second_body = channel.basic_get(queue)
    assert (first_body, second_body) == (b"b5", b"d5")
    channel.basic_nack(first.delivery_tag, requeue=True)
    assert drain(channel, queue) == [(b"b5", 5, True), (b"c3", 3, False), (b"a1", 1, False)]
    channel.basic_nack(second.delivery_tag, requeue=True)
    assert drain(channel, queue) == [(b"d5", 5, True)]


def test_drop_head_drops_the_message_delivered_next(channel, cleanup):
    dlq = cleanup.queue(unique("prio-dlq"))
    channel.queue_declare(dlq)
    queue = priority_queue(
        channel, cleanup,
        **{"x-max-length": 3, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq},
    )
    for body, priority in [(b"a1", 1), (b"b5", 5), (b"c3", 3), (b"d1", 1), (b"e5", 5)]:
        publish(channel, queue, body, priority)
    wait_until(
        lambda: channel.queue_declare(dlq, passive=True).method.message_count == 2,
        what="two dead-lettered messages",
    )
    dead = [channel.basic_get(dlq, auto_ack=True) for _ in range(2)]
    assert [body for _, _, body in dead] == [b"b5", b"e5"]
    assert all(p.headers["x-death"][0]["reason"] == "maxlen" for _, p, _ in dead)
    assert [body for body, _, _ in drain(channel, queue)] == [b"c3", b"a1", b"d1"]


def test_consumers_get_the_backlog_by_priority(channel, cleanup):
    queue = priority_queue(channel, cleanup)
    for n, priority in enumerate([0, 2, 4, 2, 0]):
        publish(channel, queue, b"m%d" % n, priority)
    channel.basic_qos(prefetch_count=1)
    got = []

    def on_message(ch, method, properties, body):
        got.append(body)
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message)
    pump_until(channel.connection, lambda: len(got) == 5, what="five deliveries")
    assert got == [b"m2", b"m1", b"m3", b"m0", b"m4"]


def test_a_backlog_paged_out_past_the_memory_budget_keeps_priority_order(channel, cleanup):
    # 48 MiB of ready messages: past the 32 MiB a queue keeps in memory.
    queue = priority_queue(channel, cleanup, 3)
    body = b"x" * (1024 * 1024)
    for n in range(48):
        publish(channel, queue, b"%02d" % n + body, n % 4)
    got = []
    while True:
        method, properties, payload = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        assert payload[2:] == body
        got.append((properties.priority, int(payload[:2])))
    expected = sorted(((n % 4, n) for n in range(48)), key=lambda e: (-e[0], e[1]))
    assert got == expected


def test_a_higher_priority_consumer_with_credit_always_gets_the_message(conn, cleanup):
    setup = conn.channel()
    queue = cleanup.queue(unique("consumer-prio"))
    setup.queue_declare(queue)
    high, low = conn.channel(), conn.channel()
    high.basic_qos(prefetch_count=2)
    got = {"high": [], "low": []}

    def consumer(name):
        return lambda ch, method, properties, body: got[name].append((body, method.delivery_tag))

    high.basic_consume(queue, consumer("high"), arguments={"x-priority": 10})
    low.basic_consume(queue, consumer("low"))
    for n in range(5):
        setup.basic_publish("", queue, b"m%d" % n)
    pump_until(conn, lambda: len(got["high"]) + len(got["low"]) == 5, what="five deliveries")
    assert [body for body, _ in got["high"]] == [b"m0", b"m1"]
    assert [body for body, _ in got["low"]] == [b"m2", b"m3", b"m4"]
    # Credit back: the next message goes to the high-priority consumer again.
    high.basic_ack(got["high"][0][1])
    setup.basic_publish("", queue, b"m5")
    pump_until(conn, lambda: len(got["high"]) == 3, what="m5 for the high-priority consumer")
    assert got["high"][2][0] == b"m5"
    assert len(got["low"]) == 3


def test_equal_consumer_priorities_share_round_robin(conn, cleanup):
    setup = conn.channel()
    queue = cleanup.queue(unique("consumer-rr"))
    setup.queue_declare(queue)
    got = []
    channels = [conn.channel() for _ in range(3)]
    for name, ch in zip("abc", channels):
        ch.basic_consume(
            queue,
            lambda c, method, p, body, name=name: got.append((name, body)),
            auto_ack=True,
            arguments={"x-priority": 3} if name != "c" else {},
        )
    # One at a time: how a burst is spread is not something RabbitMQ promises.
    for n in range(4):
        setup.basic_publish("", queue, b"m%d" % n)
        pump_until(conn, lambda: len(got) == n + 1, what=f"delivery {n}")
    assert [name for name, _ in got] == ["a", "b", "a", "b"], "c has a lower priority"


@pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")), reason="restarts a broker of its own"
)
def test_a_durable_priority_queue_keeps_its_order_across_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    broker = DataDirBroker(data_dir).start()
    try:
        connection = connect(broker.url)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("durable-prio", durable=True, arguments={"x-max-priority": 5})
        for n, priority in enumerate([1, 5, 3, 5, 0]):
            publish(channel, "durable-prio", b"m%d" % n, priority, delivery_mode=2)
        connection.close()
        assert broker.terminate() == 0
        broker = DataDirBroker(data_dir).start()
        connection = connect(broker.url)
        channel = connection.channel()
        got = [body for body, _, _ in drain(channel, "durable-prio")]
        assert got == [b"m1", b"m3", b"m2", b"m0", b"m4"]
        connection.close()
    finally:
        broker.stop()


@pytest.mark.parametrize("value, type_name", [("high", "longstr"), (True, "bool")])
def test_a_consumer_priority_must_be_an_integer(conn, cleanup, value, type_name):
    queue = cleanup.queue(unique("consumer-prio-bad"))
    conn.channel().queue_declare(queue)
    channel = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as refused:
        channel.basic_consume(queue, lambda *a: None, arguments={"x-priority": value})
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{queue}' in vhost '/': "
        f'"expected integer, got {type_name}"'
    )
