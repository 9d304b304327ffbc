"""The broker process itself: it stops cleanly on SIGTERM, telling connected clients why.
These tests start their own `warren` (they need its pid), so they skip against an external
broker."""

import os
import signal
import time

import pika
import pytest

from helpers import BROKER_STOP_TIMEOUT_S, BrokerProcess, connect

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="needs a broker process of its own to signal",
)


def wait_exit(proc, timeout):
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the child's state, not synchronising with it
    return proc.poll()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_broker_cleanly_and_closes_clients_with_320(signum):
    broker = BrokerProcess().start()
    try:
        connection = connect(broker.url)
        channel = connection.channel()
        channel.queue_declare("lifecycle")
        os.kill(broker.proc.pid, signum)
        assert wait_exit(broker.proc, BROKER_STOP_TIMEOUT_S) == 0
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as excinfo:
            # The close frame is already buffered on our socket; pumping reads it.
            deadline = time.monotonic() + BROKER_STOP_TIMEOUT_S
            while time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.1)
        assert excinfo.value.reply_code == 320
        assert excinfo.value.reply_text.startswith("CONNECTION_FORCED")
    finally:
        broker.stop()
