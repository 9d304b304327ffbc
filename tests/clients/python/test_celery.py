"""Celery end to end: real `celery worker` children (solo pool) on the broker, results over
the rpc:// backend, ETA tasks, retries, remote control (pidbox), acks_late redelivery after
SIGKILL; and the basic.qos global=true semantics Celery relies on, checked directly."""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from celery_app import add, always_fails, app, block_unless_redelivered, flaky, stamp
from helpers import HERE, LineReader, pump_until, stop_process, unique, wait_until

WORKER_READY_TIMEOUT_S = 30.0
RESULT_TIMEOUT_S = 15.0
CONTROL_TIMEOUT_S = 5.0
CLI_TIMEOUT_S = 30.0


def celery_env(url):
    return dict(os.environ, CELERY_TEST_BROKER_URL=url, PYTHONUNBUFFERED="1")


class CeleryWorker:
    """A `celery worker` child with one process (solo pool), stopped by its own pid."""

    def __init__(self, url, queues):
        self.name = f"{unique('w')}@warren-test"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                "--pool=solo", "--concurrency=1", "--loglevel=INFO",
                "-n", self.name, "-Q", ",".join(queues),
                # Startup handshakes with other workers cost seconds and show nothing here.
                "--without-gossip", "--without-mingle",
            ],
            cwd=HERE,
            env=celery_env(url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = LineReader(self.proc.stdout)

    def wait_ready(self):
        self.output.wait_for(
            lambda line: f"{self.name} ready." in line, WORKER_READY_TIMEOUT_S, f"{self.name} ready"
        )
        return self

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        stop_process(self.proc, timeout=10)
        self.output.join(5)
        self.proc.stdout.close()


def run_celery_cli(url, *args):
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "celery_app", *args],
        cwd=HERE,
        env=celery_env(url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def celery_queue(cleanup, prefix):
    """A fresh queue name; Celery declares it with a direct exchange of the same name."""
    name = cleanup.queue(unique(prefix))
    cleanup.exchange(name)
    return name


@pytest.fixture(scope="module")
def celery_app(amqp_url):
    app.conf.broker_url = amqp_url
    yield app
    # app.close() only forgets the pool: close the connections so the broker sees them go.
    app.backend.result_consumer.stop()
    app.pool.force_close_all()
    app.close()


@pytest.fixture
def workers(amqp_url):
    started = []

    def start(queues):
        worker = CeleryWorker(amqp_url, queues)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def default_worker(amqp_url, celery_app):
    """One worker on Celery's default queue, shared by the tests that only send tasks."""
    worker = CeleryWorker(amqp_url, ["celery"])
    try:
        yield worker.wait_ready()
    finally:
        worker.stop()


def test_delay_returns_results(celery_app, default_worker):
    results = [add.delay(i, 10 * i) for i in range(5)]
    assert [r.get(timeout=RESULT_TIMEOUT_S) for r in results] == [11 * i for i in range(5)]


def test_countdown_and_eta_tasks_run_no_earlier_than_their_time(celery_app, default_worker):
    # Warren presents itself as RabbitMQ 3.13 in connection.start, so the worker uses global
    # QoS and raises it while it holds the ETA message: the ordinary task runs meanwhile.
    countdown_s = 3
    sent_at = time.time()
    delayed = stamp.apply_async(("delayed",), countdown=countdown_s)
    immediate = stamp.delay("immediate")
    assert immediate.get(timeout=RESULT_TIMEOUT_S)["label"] == "immediate"
    delayed_run = delayed.get(timeout=RESULT_TIMEOUT_S)
    assert delayed_run["ran_at"] >= sent_at + countdown_s, (sent_at, delayed_run)
    eta = datetime.fromtimestamp(delayed_run["ran_at"] + 0.5, tz=timezone.utc)
    at_eta = stamp.apply_async(("eta",), eta=eta)
    assert at_eta.get(timeout=RESULT_TIMEOUT_S)["ran_at"] >= eta.timestamp()


def test_retried_task_finally_succeeds(celery_app, default_worker):
    assert flaky.delay(2).get(timeout=RESULT_TIMEOUT_S) == {"retries": 2}


def test_task_that_keeps_failing_raises_after_max_retries(celery_app, default_worker):
    result = always_fails.delay()
    with pytest.raises(ValueError, match="failed attempt 2"):
        result.get(timeout=RESULT_TIMEOUT_S)
    assert result.state == "FAILURE"


def test_inspect_ping_answers_through_api_and_cli(amqp_url, celery_app, default_worker):
    name = default_worker.name
    assert celery_app.control.ping(destination=[name], timeout=CONTROL_TIMEOUT_S) == [
        {name: {"ok": "pong"}}
    ]
    inspect = celery_app.control.inspect(destination=[name], timeout=CONTROL_TIMEOUT_S)
    assert inspect.ping() == {name: {"ok": "pong"}}
    queues = inspect.active_queues()[name]
    assert [q["name"] for q in queues] == ["celery"]

    cli = run_celery_cli(amqp_url, "inspect", "ping", "-d", name, "-t", str(CONTROL_TIMEOUT_S))
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert name in cli.stdout and "pong" in cli.stdout, cli.stdout


def test_control_commands_add_and_cancel_consumers(amqp_url, celery_app, workers, cleanup):
    extra, idle = celery_queue(cleanup, "celery-extra"), celery_queue(cleanup, "celery-idle")
    worker = workers([idle]).wait_ready()

    cli = run_celery_cli(
        amqp_url, "control", "add_consumer", extra, "-d", worker.name, "-t", str(CONTROL_TIMEOUT_S)
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"add consumer {extra}" in cli.stdout, cli.stdout
    assert add.apply_async((20, 22), queue=extra).get(timeout=RESULT_TIMEOUT_S) == 42

    replies = celery_app.control.cancel_consumer(
        extra, destination=[worker.name], reply=True, timeout=CONTROL_TIMEOUT_S
    )
    assert replies == [{worker.name: {"ok": f"no longer consuming from {extra}"}}]
    inspect = celery_app.control.inspect(destination=[worker.name], timeout=CONTROL_TIMEOUT_S)
    assert extra not in [q["name"] for q in inspect.active_queues()[worker.name]]


def test_acks_late_task_runs_again_on_another_worker_after_sigkill(
    amqp_url, celery_app, workers, cleanup, tmp_path
):
    queue = celery_queue(cleanup, "celery-late")
    first, second = workers([queue]), workers([queue])
    first.wait_ready()
    second.wait_ready()
    by_name = {first.name: first, second.name: second}

    marker = tmp_path / "started-on"
    result = block_unless_redelivered.apply_async((str(marker),), queue=queue)
    wait_until(marker.exists, RESULT_TIMEOUT_S, "the task to start")
    victim = by_name[marker.read_text()]
    victim.kill()
    (survivor,) = [w for w in by_name.values() if w is not victim]

    assert result.get(timeout=RESULT_TIMEOUT_S) == {"hostname": survivor.name, "redelivered": True}


# basic.qos global=true, the way Celery's worker uses it against RabbitMQ: classic queues
# count a global prefetch over every consumer of the channel, and a new value applies at once.


def fill(channel, queue, count):
    channel.queue_declare(queue)
    for i in range(count):
        channel.basic_publish("", queue, f"{queue}-{i}".encode())


def ready_count(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def consume_all(channel, queues, deliveries):
    for queue in queues:
        channel.basic_consume(
            queue, lambda ch, method, props, body: deliveries.append(method), auto_ack=False
        )


def test_global_prefetch_is_shared_by_all_consumers_of_the_channel(conn, channel, cleanup):
    queues = [cleanup.queue(unique("gqos-a")), cleanup.queue(unique("gqos-b"))]
    for queue in queues:
        fill(channel, queue, 5)
    consumer_channel = conn.channel()
    consumer_channel.basic_qos(prefetch_count=3, global_qos=True)
    deliveries = []
    consume_all(consumer_channel, queues, deliveries)

    pump_until(conn, lambda: len(deliveries) >= 3, what="3 deliveries")
    # Ready counts come from the queues after they served the consumers: more than three
    # deliveries would show up as fewer than seven ready messages.
    assert sum(ready_count(channel, q) for q in queues) == 7
    assert len(deliveries) == 3

    # Raising the global limit while consuming lets more through at once.
    consumer_channel.basic_qos(prefetch_count=5, global_qos=True)
    pump_until(conn, lambda: len(deliveries) >= 5, what="5 deliveries after raising the limit")
    assert sum(ready_count(channel, q) for q in queues) == 5
    assert len(deliveries) == 5

    # Lowering it below what is unacked holds deliveries until enough acks come back.
    consumer_channel.basic_qos(prefetch_count=2, global_qos=True)
    for method in deliveries[:3]:
        consumer_channel.basic_ack(method.delivery_tag)
    assert sum(ready_count(channel, q) for q in queues) == 5
    consumer_channel.basic_ack(deliveries[3].delivery_tag)
    pump_until(conn, lambda: len(deliveries) >= 6, what="a delivery once unacked < 2")
    assert sum(ready_count(channel, q) for q in queues) == 4
    assert len(deliveries) == 6


def per_queue_counts(deliveries, queues):
    return [sum(1 for d in deliveries if d.routing_key == q) for q in queues]


def test_global_and_per_consumer_prefetch_both_apply(conn, channel, cleanup):
    queues = [cleanup.queue(unique("gqos-c")), cleanup.queue(unique("gqos-d"))]
    for queue in queues:
        fill(channel, queue, 5)
    consumer_channel = conn.channel()
    consumer_channel.basic_qos(prefetch_count=2, global_qos=False)
    consumer_channel.basic_qos(prefetch_count=3, global_qos=True)
    deliveries = []
    consume_all(consumer_channel, queues, deliveries)

    pump_until(conn, lambda: len(deliveries) >= 3, what="3 deliveries")
    assert sum(ready_count(channel, q) for q in queues) == 7
    # The first consumer stops at its own limit (2), the second at what the channel has left.
    assert per_queue_counts(deliveries, queues) == [2, 1]

    # Lifting the global limit frees the second consumer up to its own limit. A new
    # per-consumer value is for consumers that start later: the running ones keep theirs.
    consumer_channel.basic_qos(prefetch_count=0, global_qos=True)
    consumer_channel.basic_qos(prefetch_count=4, global_qos=False)
    later = cleanup.queue(unique("gqos-e"))
    fill(channel, later, 5)
    consume_all(consumer_channel, [later], deliveries)
    pump_until(conn, lambda: len(deliveries) >= 8, what="8 deliveries")
    assert per_queue_counts(deliveries, queues + [later]) == [2, 2, 4]
    assert [ready_count(channel, q) for q in queues + [later]] == [3, 3, 1]


def test_per_consumer_prefetch_counts_each_consumer_separately(conn, channel, cleanup):
    queues = [cleanup.queue(unique("cqos-a")), cleanup.queue(unique("cqos-b"))]
    for queue in queues:
        fill(channel, queue, 5)
    consumer_channel = conn.channel()
    consumer_channel.basic_qos(prefetch_count=2)
    deliveries = []
    consume_all(consumer_channel, queues, deliveries)

    pump_until(conn, lambda: len(deliveries) >= 4, what="2 deliveries per consumer")
    assert sum(ready_count(channel, q) for q in queues) == 6
    assert per_queue_counts(deliveries, queues) == [2, 2]
