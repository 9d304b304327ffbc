"""Issue 5, item 7 with pika: the x-delayed-message exchange (RabbitMQ's
rabbitmq_delayed_message_exchange plugin). A publish with a positive `x-delay` header is held
and routed, as the exchange's `x-delayed-type`, when its time comes: in order of due time,
never before, with `x-delay` turned negative. Like the plugin, a held mandatory publish is
returned at once (no route is known yet) and still delivered later. Persistent messages on a
durable delayed exchange survive a restart, also after kill -9. A large number of held
messages stays on disk, not in the broker's memory."""

import os
import signal
import time

import pika
import pytest

from helpers import BrokerProcess, DataDirBroker, connect, pump_until, unique, wait_until

DELAYED = "x-delayed-message"


def declare(channel, cleanup, delayed_type="direct", durable=False, routing_key="k"):
    exchange = cleanup.exchange(unique("dx"))
    queue = cleanup.queue(unique("dq"))
    channel.exchange_declare(
        exchange, DELAYED, durable=durable, arguments={"x-delayed-type": delayed_type}
    )
    channel.queue_declare(queue, durable=durable)
    channel.queue_bind(queue, exchange, routing_key)
    return exchange, queue


def delayed_props(delay, **more):
    headers = dict(more.pop("headers", {}))
    if delay is not None:
        headers["x-delay"] = delay
    return pika.BasicProperties(headers=headers, **more)


class Arrivals:
    """Consumes a queue, noting each body and when it came (monotonic seconds)."""

    def __init__(self, channel, queue):
        self.got = []
        channel.basic_consume(queue, self._on_message, auto_ack=True)

    def _on_message(self, _channel, _method, properties, body):
        self.got.append((body.decode(), time.monotonic(), properties))

    def bodies(self):
        return [body for body, _, _ in self.got]


def test_messages_arrive_in_order_of_due_time_and_not_before(conn, cleanup):
    channel = conn.channel()
    exchange, queue = declare(channel, cleanup)
    arrivals = Arrivals(channel, queue)
    delays = {"d": 900, "a": 100, "c": 600, "b": 300, "b2": 300}
    sent = {}
    for body, delay in delays.items():
        sent[body] = time.monotonic()
        channel.basic_publish(exchange, "k", body.encode(), delayed_props(delay))
    pump_until(conn, lambda: len(arrivals.got) == len(delays), what="every delayed message")
    assert arrivals.bodies() == ["a", "b", "b2", "c", "d"], "due order; ties in publish order"
    for body, arrived, _ in arrivals.got:
        assert arrived - sent[body] >= delays[body] / 1000, f"{body} came before its time"


def test_a_delivered_message_carries_a_negative_x_delay(conn, cleanup):
    channel = conn.channel()
    exchange, queue = declare(channel, cleanup, delayed_type="topic", routing_key="a.*")
    arrivals = Arrivals(channel, queue)
    props = delayed_props(
        150, headers={"keep": "me"}, message_id="m-1", content_type="text/plain"
    )
    channel.basic_publish(exchange, "a.b", b"held", props)
    channel.basic_publish(exchange, "b.b", b"unrouted", delayed_props(50))
    pump_until(conn, lambda: arrivals.got, what="the delayed message")
    _, _, delivered = arrivals.got[0]
    assert delivered.headers == {"keep": "me", "x-delay": -150}
    assert (delivered.message_id, delivered.content_type) == ("m-1", "text/plain")
    # String delays are read as numbers, as the plugin does.
    channel.basic_publish(exchange, "a.c", b"text delay", delayed_props("40"))
    pump_until(conn, lambda: len(arrivals.got) == 2, what="the string-delayed message")
    assert arrivals.got[1][2].headers == {"x-delay": -40}
    assert arrivals.bodies() == ["held", "text delay"]


@pytest.mark.parametrize("delay", [None, 0, -500, "later"])
def test_without_a_positive_delay_a_message_is_routed_at_once(conn, cleanup, delay):
    channel = conn.channel()
    exchange, queue = declare(channel, cleanup, delayed_type="fanout")
    channel.confirm_delivery()
    channel.basic_publish(exchange, "any", b"now", delayed_props(delay), mandatory=True)
    method, props, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"now", "routed before the publish was confirmed"
    assert props.headers == ({} if delay is None else {"x-delay": delay})


def test_a_held_mandatory_message_is_returned_at_once_and_delivered_later(conn, cleanup):
    # The plugin cannot know routes before the delay ends: it routes a held message nowhere
    # at publish time, so a mandatory publish gets basic.return NO_ROUTE, and is delivered.
    channel = conn.channel()
    exchange, queue = declare(channel, cleanup)
    returned = []
    channel.add_on_return_callback(lambda _ch, method, _p, body: returned.append((method, body)))
    arrivals = Arrivals(channel, queue)
    channel.basic_publish(exchange, "k", b"held", delayed_props(200), mandatory=True)
    pump_until(conn, lambda: returned and arrivals.got, what="the return and the delivery")
    method, body = returned[0]
    assert (method.reply_code, method.reply_text, body) == (312, "NO_ROUTE", b"held")
    assert arrivals.bodies() == ["held"]


@pytest.mark.parametrize(
    "arguments,text",
    [
        ({}, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"),
        (
            {"x-delayed-type": 5},
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type",
        ),
        (
            {"x-delayed-type": DELAYED},
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'",
        ),
        ({"x-delayed-type": "bogus"}, "PRECONDITION_FAILED - unknown exchange type 'bogus'"),
    ],
)
def test_x_delayed_type_is_required_and_checked(conn, cleanup, arguments, text):
    channel = conn.channel()
    exchange = cleanup.exchange(unique("dx"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.exchange_declare(exchange, DELAYED, arguments=arguments)
    assert (closed.value.reply_code, closed.value.reply_text) == (406, text)


def test_bindings_follow_the_delayed_type(conn, cleanup):
    channel = conn.channel()
    exchange = cleanup.exchange(unique("dx"))
    queue = cleanup.queue(unique("dq"))
    channel.exchange_declare(exchange, DELAYED, arguments={"x-delayed-type": "x-consistent-hash"})
    channel.queue_declare(queue)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_bind(queue, exchange, "not-a-weight")
    assert closed.value.reply_text == (
        'PRECONDITION_FAILED - The binding key must be an integer: <<"not-a-weight">>'
    )


# Restarts need a broker of their own.
needs_own_broker = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")), reason="starts and restarts its own broker"
)


@needs_own_broker
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill_9"])
def test_persistent_delayed_messages_survive_a_restart(tmp_path, stop_signal):
    data_dir = tmp_path / "data"
    broker = DataDirBroker(data_dir).start()
    try:
        conn = connect(broker.url)
        channel = conn.channel()
        channel.exchange_declare("dx", DELAYED, durable=True, arguments={"x-delayed-type": "direct"})
        channel.queue_declare("dq", durable=True)
        channel.queue_bind("dq", "dx", "k")
        channel.confirm_delivery()
        for body, delay, mode in [
            ("late", 3000, 2),
            ("early", 2500, 2),
            ("transient", 2000, 1),
        ]:
            props = delayed_props(delay, delivery_mode=mode)
            channel.basic_publish("dx", "k", body.encode(), props)
        assert channel.queue_declare("dq", passive=True).method.message_count == 0
        os.kill(broker.proc.pid, stop_signal)
        broker.proc.wait(timeout=5)
    finally:
        broker.stop()

    broker = DataDirBroker(data_dir).start()
    try:
        conn = connect(broker.url)
        channel = conn.channel()
        arrivals = Arrivals(channel, "dq")
        pump_until(conn, lambda: len(arrivals.got) == 2, timeout=15, what="the persistent messages")
        assert arrivals.bodies() == ["early", "late"]
        assert [p.headers["x-delay"] for _, _, p in arrivals.got] == [-2500, -3000]
        # The transient one is gone for good.
        conn.process_data_events(time_limit=1.2)
        assert arrivals.bodies() == ["early", "late"]
        conn.close()
    finally:
        broker.stop()


def broker_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@needs_own_broker
def test_many_held_messages_stay_on_disk_not_in_memory():
    count, body = 100_000, b"x" * 1024
    broker = BrokerProcess().start()
    try:
        conn = connect(broker.url)
        channel = conn.channel()
        channel.exchange_declare("many", DELAYED, arguments={"x-delayed-type": "fanout"})
        channel.queue_declare("sink")
        channel.queue_bind("sink", "many", "")
        channel.queue_declare("sink", passive=True)
        before = broker_rss_bytes(broker.proc.pid)
        for i in range(count):
            # Due over the next hour or two: nothing comes out during the test.
            props = pika.BasicProperties(headers={"x-delay": 3_600_000 + i * 37})
            channel.basic_publish("many", "", body, props)
        # A round trip: every publish before it has been taken in.
        assert channel.queue_declare("sink", passive=True).method.message_count == 0
        grown = broker_rss_bytes(broker.proc.pid) - before
        payload = count * len(body)
        assert grown < payload // 4, f"RSS grew {grown >> 20} MiB for {payload >> 20} MiB held"
        channel.exchange_delete("many")
        conn.close()
    finally:
        broker.stop()
