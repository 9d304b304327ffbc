"""Issue 5, item 5 with pika: single active consumer (x-single-active-consumer). Only one
registered consumer gets messages; when it is cancelled or its channel or connection closes,
the next one takes over, getting the old one's unacknowledged messages first (requeued,
redelivered); every registered consumer counts in queue.declare-ok; an exclusive consumer is
refused; and, as in RabbitMQ 4, a consumer of higher priority takes over once the active one
has settled what it holds. Codes, texts and counts checked against RabbitMQ 3.10."""

import os
import subprocess
import sys

import pytest
from pika.exceptions import ChannelClosedByBroker

from helpers import DEFAULT_WAIT_S, LineReader, pump_until, unique


def sac_queue(channel, cleanup):
    queue = cleanup.queue(unique("sac"))
    channel.queue_declare(queue, arguments={"x-single-active-consumer": True})
    return queue


class Recorder:
    """What each consumer got: (body, redelivered, delivery tag) by consumer name."""

    def __init__(self):
        self.got = {}

    def consume(self, channel, queue, name, **kwargs):
        self.got[name] = []

        def on_message(ch, method, properties, body):
            self.got[name].append((body, method.redelivered, method.delivery_tag))

        channel.basic_consume(queue, on_message, consumer_tag=name, **kwargs)

    def bodies(self, name):
        return [body for body, _, _ in self.got[name]]

    def total(self):
        return sum(len(v) for v in self.got.values())


def consumer_count(channel, queue):
    return channel.queue_declare(queue, passive=True).method.consumer_count


def test_only_the_first_registered_consumer_gets_messages(conn, cleanup):
    setup = conn.channel()
    queue = sac_queue(setup, cleanup)
    recorder = Recorder()
    for name in ("first", "second", "third"):
        recorder.consume(conn.channel(), queue, name, auto_ack=True)
    for n in range(6):
        setup.basic_publish("", queue, b"m%d" % n)
    pump_until(conn, lambda: recorder.total() == 6, what="six deliveries")
    assert recorder.bodies("first") == [b"m%d" % n for n in range(6)]
    assert recorder.bodies("second") == recorder.bodies("third") == []
    assert consumer_count(setup, queue) == 3, "waiting consumers count too"


def test_when_the_active_channel_closes_its_unacked_messages_go_to_the_next(conn, cleanup):
    setup = conn.channel()
    queue = sac_queue(setup, cleanup)
    for n in range(6):
        setup.basic_publish("", queue, b"m%d" % n)
    active, standby = conn.channel(), conn.channel()
    active.basic_qos(prefetch_count=2)
    recorder = Recorder()
    recorder.consume(active, queue, "active")
    recorder.consume(standby, queue, "standby")
    pump_until(conn, lambda: len(recorder.got["active"]) == 2, what="the active consumer's window")
    assert recorder.got["standby"] == []
    assert setup.queue_declare(queue, passive=True).method.message_count == 4
    # pika cancels the channel's consumers before it closes it: the standby is active (and
    # served) before the closing channel's messages come back.
    active.close()
    pump_until(conn, lambda: len(recorder.got["standby"]) == 6, what="the standby taking over")
    got = [(body, redelivered) for body, redelivered, _ in recorder.got["standby"]]
    assert [g for g in got if g[1]] == [(b"m0", True), (b"m1", True)]
    assert [g for g in got if not g[1]] == [(b"m%d" % n, False) for n in range(2, 6)]
    assert consumer_count(setup, queue) == 1


# A client that takes two messages from QUEUE (prefetch 2, no acks), says so, and then waits
# to be killed with its socket.
HOLDER = """
import sys, time, pika
connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = connection.channel()
channel.basic_qos(prefetch_count=2)
held = []
def on_message(ch, method, properties, body):
    held.append(body)
    if len(held) == 2:
        print("HELD", b",".join(held).decode(), flush=True)
channel.basic_consume(sys.argv[2], on_message)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    connection.process_data_events(time_limit=0.2)
"""


def test_when_the_active_consumer_dies_the_next_gets_its_messages_first(amqp_url, conn, cleanup, children):
    setup = conn.channel()
    queue = sac_queue(setup, cleanup)
    for n in range(5):
        setup.basic_publish("", queue, b"m%d" % n)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, amqp_url, queue], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    children.append(holder)
    lines = LineReader(holder.stdout)
    lines.wait_for(lambda line: line == "HELD m0,m1", DEFAULT_WAIT_S, "the holder's two messages")
    recorder = Recorder()
    recorder.consume(conn.channel(), queue, "standby", auto_ack=True)
    conn.process_data_events(time_limit=0.1)
    assert recorder.got["standby"] == [], "the standby waits while the first consumer lives"
    holder.kill()
    holder.wait(timeout=DEFAULT_WAIT_S)
    pump_until(conn, lambda: recorder.total() == 5, what="the standby taking over")
    assert [(b, r) for b, r, _ in recorder.got["standby"]] == [
        (b"m0", True), (b"m1", True), (b"m2", False), (b"m3", False), (b"m4", False)
    ]


def test_a_cancelled_active_consumer_hands_over_and_keeps_what_it_holds(conn, cleanup):
    setup = conn.channel()
    queue = sac_queue(setup, cleanup)
    active, standby = conn.channel(), conn.channel()
    recorder = Recorder()
    recorder.consume(active, queue, "active")
    recorder.consume(standby, queue, "standby", auto_ack=True)
    setup.basic_publish("", queue, b"before")
    pump_until(conn, lambda: recorder.total() == 1, what="the first delivery")
    active.basic_cancel("active")
    setup.basic_publish("", queue, b"after")
    pump_until(conn, lambda: recorder.total() == 2, what="the second delivery")
    assert recorder.bodies("active") == [b"before"]
    assert recorder.bodies("standby") == [b"after"]
    # basic.cancel neither requeues nor drops what the cancelled consumer holds.
    active.basic_ack(recorder.got["active"][0][2])
    assert setup.queue_declare(queue, passive=True).method.message_count == 0


def test_an_exclusive_consumer_is_refused(conn, cleanup):
    setup = conn.channel()
    queue = sac_queue(setup, cleanup)
    for existing_consumers in (0, 1):
        if existing_consumers:
            setup.basic_consume(queue, lambda *a: None, auto_ack=True)
        channel = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as refused:
            channel.basic_consume(queue, lambda *a: None, exclusive=True)
        assert refused.value.reply_code == 403
        assert refused.value.reply_text == f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"


@pytest.mark.parametrize("value, type_name", [("true", "longstr"), (1, "signedint")])
def test_the_argument_must_be_a_boolean(conn, cleanup, value, type_name):
    queue = cleanup.queue(unique("sac-bad"))
    channel = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as refused:
        channel.queue_declare(queue, arguments={"x-single-active-consumer": value})
    assert refused.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue '{queue}' "
        f"in vhost '/': {{unacceptable_type,{type_name}}}"
    )


def test_false_means_round_robin(conn, cleanup):
    setup = conn.channel()
    queue = cleanup.queue(unique("sac-off"))
    setup.queue_declare(queue, arguments={"x-single-active-consumer": False})
    recorder = Recorder()
    for name in ("a", "b"):
        recorder.consume(conn.channel(), queue, name, auto_ack=True)
    for n in range(2):
        setup.basic_publish("", queue, b"m%d" % n)
        pump_until(conn, lambda: recorder.total() == n + 1, what=f"delivery {n}")
    assert recorder.bodies("a") == [b"m0"] and recorder.bodies("b") == [b"m1"]


@pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="RabbitMQ 4 behaviour (consumer priority decides the active consumer)",
)
def test_a_higher_priority_consumer_takes_over_once_the_active_one_settled(conn, cleanup):
    setup = conn.channel()
    queue = sac_queue(setup, cleanup)
    for n in range(4):
        setup.basic_publish("", queue, b"m%d" % n)
    low, high = conn.channel(), conn.channel()
    low.basic_qos(prefetch_count=1)
    recorder = Recorder()
    recorder.consume(low, queue, "low")
    pump_until(conn, lambda: len(recorder.got["low"]) == 1, what="the first delivery")
    recorder.consume(high, queue, "high", auto_ack=True, arguments={"x-priority": 5})
    conn.process_data_events(time_limit=0.1)
    assert recorder.got["high"] == [], "the active consumer still holds a message"
    low.basic_ack(recorder.got["low"][0][2])
    pump_until(conn, lambda: len(recorder.got["high"]) == 3, what="the takeover")
    assert recorder.bodies("high") == [b"m1", b"m2", b"m3"]
    assert recorder.bodies("low") == [b"m0"]
