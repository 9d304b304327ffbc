"""Tutorials 3-5: fanout publish/subscribe, direct routing and topic routing.

Every scenario ends with a sentinel message routed to every queue: delivery order from one
channel to one queue is preserved, so once a subscriber has seen the sentinel it has seen
everything that was routed to it, and "nothing else arrived" is checked without waiting."""

import time

import pika
import pytest

from helpers import connect, pump_until, unique

SENTINEL = b"--end--"


class Subscriber:
    """One connection with a server-named exclusive queue, recording routing keys in order."""

    def __init__(self, url):
        self.connection = connect(url)
        self.channel = self.connection.channel()
        declared = self.channel.queue_declare("", exclusive=True)
        self.queue = declared.method.queue
        self.received = []
        self.done = False
        self.channel.basic_consume(self.queue, self._on_message, auto_ack=True)

    def _on_message(self, ch, method, properties, body):
        if body == SENTINEL:
            self.done = True
        else:
            self.received.append((method.routing_key, body))

    def bind(self, exchange, routing_key=""):
        self.channel.queue_bind(self.queue, exchange, routing_key=routing_key)

    def close(self):
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture
def subscribers(amqp_url):
    made = []

    def make():
        sub = Subscriber(amqp_url)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def wait_all_done(subs):
    pump_until(
        [s.connection for s in subs], lambda: all(s.done for s in subs), what="sentinel at every subscriber"
    )


def test_fanout_every_subscriber_gets_every_message(amqp_url, channel, cleanup, subscribers):
    exchange = cleanup.exchange(unique("logs"))
    channel.exchange_declare(exchange, exchange_type="fanout")
    subs = [subscribers() for _ in range(3)]
    for sub in subs:
        assert sub.queue.startswith("amq.gen-"), sub.queue
        sub.bind(exchange)
    assert len({s.queue for s in subs}) == 3

    messages = [(f"key-{i}", f"log line {i}".encode()) for i in range(5)]
    for key, body in messages:
        # A fanout exchange ignores the routing key but passes it through to the delivery.
        channel.basic_publish(exchange, key, body)
    channel.basic_publish(exchange, "", SENTINEL)

    wait_all_done(subs)
    for sub in subs:
        assert sub.received == messages


def test_exclusive_queue_goes_away_with_its_connection(amqp_url, channel, subscribers):
    sub = subscribers()
    name = sub.queue
    assert sub.channel.queue_declare(name, passive=True).method.queue == name
    sub.close()

    # Until the broker has deleted it, another connection sees it as locked (405); then 404.
    deadline = time.monotonic() + 10
    while True:
        probe_channel = channel.connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
            probe_channel.queue_declare(name, passive=True)
        if excinfo.value.reply_code == 404:
            assert excinfo.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"
            return
        assert excinfo.value.reply_code == 405, excinfo.value
        assert time.monotonic() < deadline, "exclusive queue outlived its connection"


LOCKED_TEXT = (
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{}' in vhost '/'. "
    "It could be originally declared on another connection or the exclusive property value "
    "does not match that of the original declaration."
)


def test_exclusive_queue_is_locked_to_its_connection(amqp_url, conn, subscribers):
    sub = subscribers()
    for attempt in ("consume", "passive_declare", "get"):
        other = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
            if attempt == "consume":
                other.basic_consume(sub.queue, lambda *a: None)
            elif attempt == "passive_declare":
                other.queue_declare(sub.queue, passive=True)
            else:
                other.basic_get(sub.queue)
        assert excinfo.value.reply_code == 405, attempt
        assert excinfo.value.reply_text == LOCKED_TEXT.format(sub.queue), attempt


def test_direct_routing_by_severity(amqp_url, channel, cleanup, subscribers):
    exchange = cleanup.exchange(unique("direct_logs"))
    channel.exchange_declare(exchange, exchange_type="direct")
    errors_only = subscribers()
    errors_only.bind(exchange, "error")
    everything_but_debug = subscribers()
    for severity in ("info", "warning", "error"):
        everything_but_debug.bind(exchange, severity)
    for sub in (errors_only, everything_but_debug):
        sub.bind(exchange, "end")

    for severity in ("info", "warning", "error", "debug", "critical", "error", "ERROR", "info.x"):
        channel.basic_publish(exchange, severity, f"a {severity} message".encode())
    channel.basic_publish(exchange, "end", SENTINEL)

    wait_all_done([errors_only, everything_but_debug])
    assert [k for k, _ in errors_only.received] == ["error", "error"]
    assert [k for k, _ in everything_but_debug.received] == ["info", "warning", "error", "error"]
    assert everything_but_debug.received[0][1] == b"a info message"


# routing key -> which of the three queues must get it (q3 is bound with "#" alone)
TOPIC_TABLE = [
    ("quick.orange.rabbit", {"q1", "q2", "q3"}),
    ("lazy.orange.elephant", {"q1", "q2", "q3"}),
    ("quick.orange.fox", {"q1", "q3"}),
    ("lazy.brown.fox", {"q2", "q3"}),
    ("lazy.pink.rabbit", {"q2", "q3"}),  # matches both of q2's bindings, delivered once
    ("quick.brown.fox", {"q3"}),
    ("orange", {"q3"}),
    ("quick.orange.new.rabbit", {"q3"}),
    ("lazy.orange.new.rabbit", {"q2", "q3"}),
    ("lazy", {"q2", "q3"}),  # "#" matches zero words
    ("", {"q3"}),
    ("quick..rabbit", {"q2", "q3"}),  # an empty word still counts as one word for "*"
]


def test_topic_routing_table(amqp_url, channel, cleanup, subscribers):
    exchange = cleanup.exchange(unique("topic_logs"))
    channel.exchange_declare(exchange, exchange_type="topic")
    q1, q2, q3 = subscribers(), subscribers(), subscribers()
    q1.bind(exchange, "*.orange.*")
    q2.bind(exchange, "*.*.rabbit")
    q2.bind(exchange, "lazy.#")
    q3.bind(exchange, "#")
    for sub in (q1, q2):
        sub.bind(exchange, "end.of.test")

    for key, _ in TOPIC_TABLE:
        channel.basic_publish(exchange, key, key.encode())
    channel.basic_publish(exchange, "end.of.test", SENTINEL)

    subs = {"q1": q1, "q2": q2, "q3": q3}
    wait_all_done(list(subs.values()))
    for name, sub in subs.items():
        expected = [key for key, targets in TOPIC_TABLE if name in targets]
        got = [key for key, _ in sub.received]
        assert got == expected, f"{name}: got {got}, expected {expected}"
        assert all(body == key.encode() for key, body in sub.received)


def test_topic_unroutable_is_dropped_or_returned_when_mandatory(conn, channel, cleanup):
    exchange = cleanup.exchange(unique("topic_logs"))
    channel.exchange_declare(exchange, exchange_type="topic")
    queue = cleanup.queue(unique("orange"))
    channel.queue_declare(queue)
    channel.queue_bind(queue, exchange, routing_key="*.orange.*")

    returned = []
    channel.add_on_return_callback(lambda ch, method, props, body: returned.append((method, body)))
    channel.basic_publish(exchange, "quick.brown.fox", b"dropped")
    channel.basic_publish(exchange, "quick.brown.fox", b"comes back", mandatory=True)
    channel.basic_publish(exchange, "quick.orange.fox", b"routed", mandatory=True)

    pump_until(conn, lambda: returned, what="basic.return of the mandatory message")
    method, body = returned[0]
    assert body == b"comes back"
    assert method.reply_code == 312
    assert method.reply_text == "NO_ROUTE"
    assert method.exchange == exchange
    assert method.routing_key == "quick.brown.fox"

    got = channel.basic_get(queue, auto_ack=True)
    assert got[2] == b"routed"
    assert got[0].message_count == 0
    assert len(returned) == 1
