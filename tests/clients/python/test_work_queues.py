"""Tutorial 2: competing workers on a durable queue with prefetch 1 and manual acks."""

import os
import signal
import time

import pika

from helpers import spawn_client, unique

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


def test_fair_dispatch_with_prefetch_one(amqp_url, channel, cleanup, children):
    queue = cleanup.queue(unique("task_queue"))
    channel.queue_declare(queue, durable=True)

    slow, slow_out = spawn_client("worker", amqp_url, queue, "0.25")
    fast, fast_out = spawn_client("worker", amqp_url, queue, "0")
    children.extend([slow, fast])
    for out in (slow_out, fast_out):
        out.wait_for(lambda l: l == "READY", 20, "worker READY")
    assert channel.queue_declare(queue, durable=True, passive=True).method.consumer_count == 2

    total = 20
    bodies = [f"task-{i}" for i in range(total)]
    for body in bodies:
        channel.basic_publish("", queue, body.encode(), PERSISTENT)

    # Each worker prints one DONE line per acked message; wait until all are accounted for.
    per_worker = {"slow": [], "fast": []}

    deadline = time.monotonic() + 20
    while len(per_worker["slow"]) + len(per_worker["fast"]) < total:
        assert time.monotonic() < deadline, f"not all tasks processed: {per_worker}"
        for name, out in (("fast", fast_out), ("slow", slow_out)):
            try:
                line = out.next_line(min(deadline, time.monotonic() + 0.05))
            except TimeoutError:
                continue
            assert line is not None, f"{name} worker exited early: {out.seen}"
            if line.startswith("DONE "):
                per_worker[name].append(line.split())

    processed = [fields[1] for lines in per_worker.values() for fields in lines]
    assert sorted(processed) == sorted(bodies), "every task processed exactly once"
    assert all(fields[2] == "False" for lines in per_worker.values() for fields in lines)
    assert all(fields[3] == "2" for lines in per_worker.values() for fields in lines)
    assert len(per_worker["fast"]) > len(per_worker["slow"]), per_worker
    assert channel.queue_declare(queue, durable=True, passive=True).method.message_count == 0


def test_killed_worker_message_is_redelivered(amqp_url, channel, cleanup, children):
    queue = cleanup.queue(unique("task_queue"))
    channel.queue_declare(queue, durable=True)

    holder, holder_out = spawn_client("hold", amqp_url, queue)
    children.append(holder)
    holder_out.wait_for(lambda l: l == "READY", 20, "holder READY")
    channel.basic_publish("", queue, b"precious", PERSISTENT)
    got = holder_out.wait_for(lambda l: l.startswith("GOT "), 10, "holder to receive the message")
    assert got == "GOT precious False"

    # The second worker joins while the only message is unacked by the first: nothing ready.
    worker, worker_out = spawn_client("worker", amqp_url, queue, "0")
    children.append(worker)
    worker_out.wait_for(lambda l: l == "READY", 20, "worker READY")
    declared = channel.queue_declare(queue, durable=True, passive=True).method
    assert declared.message_count == 0
    assert declared.consumer_count == 2

    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)

    done = worker_out.wait_for(lambda l: l.startswith("DONE "), 15, "redelivery to the survivor")
    assert done == "DONE precious True 2"
