"""Hostile input: hundreds of connections sending random and malformed frames (methods with
random arguments on random channels, content headers with absurd body sizes, stray bodies and
heartbeats, plain garbage), after a handshake cut off at a random step. Whatever a peer sends,
the broker must answer with AMQP errors or hang up, never crash, and keep serving everyone
else. Seeded, so a failure reproduces."""

import os
import random
import socket
import struct
import time

import pytest

from helpers import BrokerProcess, connect

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")), reason="watches a broker process of its own"
)

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
CONNECTIONS_PER_SEED = 150
SEEDS = (1, 2, 3)

# Every (class, method) of AMQP 0-9-1 and RabbitMQ's extensions.
METHODS = [
    (c, m)
    for c, ms in {
        10: [10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61],
        20: [10, 11, 20, 21, 40, 41],
        40: [10, 11, 20, 21, 30, 31, 40, 51],
        50: [10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60: [10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120],
        85: [10, 11],
        90: [10, 11, 20, 21, 30, 31],
    }.items()
    for m in ms
]


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def shortstr(text):
    return bytes([len(text)]) + text


def handshake_steps():
    response = b"\x00guest\x00guest"
    start_ok = (
        struct.pack(">HHI", 10, 11, 0)
        + shortstr(b"PLAIN")
        + struct.pack(">I", len(response))
        + response
        + shortstr(b"en_US")
    )
    return [
        frame(1, 0, start_ok),
        frame(1, 0, struct.pack(">HHHIH", 10, 31, 2047, 131072, 0)),
        frame(1, 0, struct.pack(">HH", 10, 40) + shortstr(b"/") + b"\x00\x00"),
        frame(1, 1, struct.pack(">HH", 20, 10) + b"\x00"),
    ]


def random_bytes(rnd, sizes):
    return bytes(rnd.getrandbits(8) for _ in range(rnd.choice(sizes)))


def random_frame(rnd):
    channel = rnd.choice([0, 1, 1, 1, 2, 65535])
    roll = rnd.random()
    if roll < 0.6:
        class_id, method_id = rnd.choice(METHODS)
        args = random_bytes(rnd, [0, 1, 3, 8, 20, 60])
        return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)
    if roll < 0.75:
        body_size = rnd.choice([0, 1, 10, 2**40, 2**63])
        flags = rnd.getrandbits(16)
        header = struct.pack(">HHQH", 60, 0, body_size, flags) + random_bytes(rnd, [0, 5, 30])
        return frame(2, channel, header)
    if roll < 0.85:
        return frame(3, channel, random_bytes(rnd, [0, 10, 1000]))
    if roll < 0.9:
        return frame(8, channel, b"")
    return random_bytes(rnd, [1, 7, 50, 500])


def one_hostile_connection(port, rnd):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PROTOCOL_HEADER)
        sock.settimeout(0.02)
        steps = handshake_steps()
        data = b"".join(steps[: rnd.choice([0, 1, 2, 3, 4, 4, 4])])
        data += b"".join(random_frame(rnd) for _ in range(rnd.choice([1, 3, 10, 50])))
        try:
            sock.sendall(data)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # the broker closing on us, or nothing more to read in time: both fine


@pytest.mark.parametrize("seed", SEEDS)
def test_random_frames_never_bring_the_broker_down(seed):
    broker = BrokerProcess().start()
    try:
        rnd = random.Random(seed)
        for _ in range(CONNECTIONS_PER_SEED):
            one_hostile_connection(broker.port, rnd)
            assert broker.proc.poll() is None, f"broker exited; seed {seed}{broker._stderr_tail()}"
        # Everyone else is still served.
        connection = connect(broker.url)
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, b"still here")
        deadline = time.monotonic() + 10
        body = None
        while body is None and time.monotonic() < deadline:
            _, _, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"still here"
        connection.close()
        assert "panicked" not in broker._stderr_tail()
    finally:
        broker.stop()
