"""Tutorial 6: request/reply over a server queue, with per-client callback queues and with
direct reply-to (amq.rabbitmq.reply-to)."""

import threading
import time
import uuid

import pika
import pytest

from helpers import connect, unique

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class RpcServer(threading.Thread):
    """Consumes the request queue on its own connection; replies fib(n) to reply_to."""

    def __init__(self, url, queue):
        super().__init__(daemon=True)
        self.url = url
        self.queue = queue
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.errors = []
        self.reply_tos = []
        self.handled = 0

    def run(self):
        try:
            connection = connect(self.url)
            channel = connection.channel()
            channel.queue_declare(self.queue)
            channel.basic_qos(prefetch_count=1)
            channel.basic_consume(self.queue, self._on_request)
            self.ready.set()
            while not self.stop.is_set():
                connection.process_data_events(time_limit=0.05)
            connection.close()
        except Exception as err:  # surfaced by the test through self.errors
            self.errors.append(repr(err))
            self.ready.set()

    def _on_request(self, ch, method, props, body):
        self.reply_tos.append(props.reply_to)
        reply = str(fib(int(body))).encode()
        ch.basic_publish("", props.reply_to, reply, pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)
        self.handled += 1


@pytest.fixture
def rpc_server(amqp_url, cleanup):
    server = RpcServer(amqp_url, cleanup.queue(unique("rpc_queue")))
    server.start()
    assert server.ready.wait(20), "RPC server did not start"
    assert not server.errors, server.errors
    yield server
    server.stop.set()
    server.join(10)
    assert not server.errors, server.errors


class RpcClient:
    def __init__(self, url, server_queue, direct_reply_to=False):
        self.connection = connect(url)
        self.channel = self.connection.channel()
        self.server_queue = server_queue
        if direct_reply_to:
            self.reply_queue = DIRECT_REPLY_TO
        else:
            declared = self.channel.queue_declare("", exclusive=True)
            self.reply_queue = declared.method.queue
        self.replies = {}
        self.foreign = []
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)

    def _on_reply(self, ch, method, props, body):
        if props.correlation_id in self.replies and self.replies[props.correlation_id] is None:
            self.replies[props.correlation_id] = int(body)
        else:
            self.foreign.append((props.correlation_id, body))

    def send(self, n):
        correlation_id = str(uuid.uuid4())
        self.replies[correlation_id] = None
        self.channel.basic_publish(
            "",
            self.server_queue,
            str(n).encode(),
            pika.BasicProperties(reply_to=self.reply_queue, correlation_id=correlation_id),
        )
        return correlation_id

    def wait_all(self, timeout=15):
        deadline = time.monotonic() + timeout
        while any(v is None for v in self.replies.values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"RPC replies missing after {timeout}s: {self.replies}")
            self.connection.process_data_events(time_limit=0)

    def close(self):
        if self.connection.is_open:
            self.connection.close()


def test_single_rpc_call(amqp_url, rpc_server):
    client = RpcClient(amqp_url, rpc_server.queue)
    try:
        assert client.reply_queue.startswith("amq.gen-")
        correlation_id = client.send(30)
        client.wait_all()
        assert client.replies == {correlation_id: 832040}
        assert client.foreign == []
        assert rpc_server.reply_tos == [client.reply_queue]
    finally:
        client.close()


def test_concurrent_clients_get_only_their_own_replies(amqp_url, rpc_server):
    outcomes = {}

    def run_client(index):
        client = RpcClient(amqp_url, rpc_server.queue)
        try:
            sent = {client.send(index * 10 + k): index * 10 + k for k in range(5)}
            client.wait_all()
            outcomes[index] = (sent, dict(client.replies), list(client.foreign))
        except Exception as err:
            outcomes[index] = err
        finally:
            client.close()

    threads = [threading.Thread(target=run_client, args=(i,)) for i in range(1, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "an RPC client thread hung"

    assert sorted(outcomes) == [1, 2, 3]
    for index, outcome in outcomes.items():
        assert not isinstance(outcome, Exception), f"client {index}: {outcome!r}"
        sent, replies, foreign = outcome
        assert foreign == [], f"client {index} got someone else's replies: {foreign}"
        assert set(replies) == set(sent)
        for correlation_id, n in sent.items():
            assert replies[correlation_id] == fib(n)
    assert rpc_server.handled == 15


def test_rpc_via_direct_reply_to(amqp_url, rpc_server):
    clients = [RpcClient(amqp_url, rpc_server.queue, direct_reply_to=True) for _ in range(2)]
    try:
        sent = [{c.send(n): n for n in (7, 11, 20)} for c in clients]
        for client, requests in zip(clients, sent):
            client.wait_all()
            assert client.foreign == []
            assert client.replies == {cid: fib(n) for cid, n in requests.items()}
        # The server saw a per-channel pseudo-queue name, never the bare one.
        assert len(rpc_server.reply_tos) == 6
        for reply_to in rpc_server.reply_tos:
            assert reply_to.startswith(DIRECT_REPLY_TO + "."), reply_to
        assert len(set(rpc_server.reply_tos)) == 2
    finally:
        for client in clients:
            client.close()


def test_direct_reply_to_requires_consuming_first(amqp_url, conn, rpc_server):
    channel = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as excinfo:
        channel.basic_publish("", rpc_server.queue, b"1", pika.BasicProperties(reply_to=DIRECT_REPLY_TO))
        # basic.publish has no reply; a synchronous round trip surfaces the channel error.
        channel.queue_declare(rpc_server.queue, passive=True)
    assert excinfo.value.reply_code == 406
    assert excinfo.value.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"
