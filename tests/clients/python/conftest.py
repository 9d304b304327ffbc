"""pytest fixtures: which broker the pika tests talk to (WARREN_TEST_AMQP_URL, or a `warren`
child started per test module), plus per-test connections, cleanup and child processes."""

import os

import pika
import pytest

from helpers import BrokerProcess, connect, stop_process


def check_handshake(url):
    """One handshake up front, so a broker that accepts sockets but never answers fails the
    whole module once instead of every test waiting out its own connect timeout."""
    connect(url).close()


@pytest.fixture(scope="module")
def amqp_url():
    url = os.environ.get("WARREN_TEST_AMQP_URL")
    if url:
        check_handshake(url)
        yield url
        return
    broker = BrokerProcess().start()
    try:
        check_handshake(broker.url)
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture
def conn(amqp_url):
    connection = connect(amqp_url)
    yield connection
    if connection.is_open:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass


@pytest.fixture
def channel(conn):
    return conn.channel()


class Cleanup:
    """Remembers the queues and exchanges a test declared so a shared broker stays tidy."""

    def __init__(self):
        self.queues = []
        self.exchanges = []

    def queue(self, name):
        self.queues.append(name)
        return name

    def exchange(self, name):
        self.exchanges.append(name)
        return name

    def run(self, url):
        if not (self.queues or self.exchanges):
            return
        try:
            connection = connect(url)
        except pika.exceptions.AMQPError:
            return
        try:
            ch = connection.channel()
            for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
                for name in names:
                    try:
                        if kind == "queue":
                            ch.queue_delete(name)
                        else:
                            ch.exchange_delete(name)
                    except pika.exceptions.ChannelClosed:
                        ch = connection.channel()
        finally:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                pass


@pytest.fixture
def cleanup(amqp_url):
    registry = Cleanup()
    yield registry
    registry.run(amqp_url)


@pytest.fixture
def children():
    """Child processes a test spawned; each is stopped by its own pid at teardown."""
    procs = []
    yield procs
    for proc in procs:
        stop_process(proc, timeout=5)
