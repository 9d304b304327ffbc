"""The Celery app and tasks that test_celery.py sends and its `celery worker` children run.
Broker URL from CELERY_TEST_BROKER_URL (the test sets it for the worker; the test process
itself overrides app.conf.broker_url); results travel back over the rpc:// backend only."""

import os
import time
from pathlib import Path

from celery import Celery

# A task whose worker is meant to be SIGKILLed must not run forever if the kill never comes.
BLOCKING_TASK_MAX_S = 30.0

app = Celery(
    "celery_app",
    broker=os.environ.get("CELERY_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # One message in flight per worker, so a raised prefetch (ETA tasks) is what lets the
    # next task through.
    worker_prefetch_multiplier=1,
    # The rpc:// reply queue is declared with x-expires = result_expires.
    result_expires=120,
    broker_connection_retry_on_startup=False,
    broker_connection_timeout=5,
    broker_connection_max_retries=1,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    worker_hijack_root_logger=False,
)


@app.task
def add(x, y):
    return x + y


@app.task
def stamp(label):
    """When the worker ran it, so a test can order tasks without measuring durations."""
    return {"label": label, "ran_at": time.time()}


@app.task(bind=True, max_retries=5)
def flaky(self, failures_before_success):
    if self.request.retries < failures_before_success:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"), countdown=0.1)
    return {"retries": self.request.retries}


@app.task(bind=True, max_retries=2)
def always_fails(self):
    raise self.retry(exc=ValueError(f"failed attempt {self.request.retries}"), countdown=0.1)


@app.task(bind=True, acks_late=True)
def block_unless_redelivered(self, marker_path):
    """First delivery: say which worker has it (marker file) and keep working until killed.
    A redelivery (the first worker died holding it unacked) finishes at once."""
    if self.request.delivery_info.get("redelivered"):
        return {"hostname": self.request.hostname, "redelivered": True}
    # Written whole then renamed, so the test never reads half a name.
    partial = Path(f"{marker_path}.partial")
    partial.write_text(self.request.hostname)
    partial.replace(marker_path)
    deadline = time.monotonic() + BLOCKING_TASK_MAX_S
    while time.monotonic() < deadline:
        time.sleep(0.05)  # the simulated long job, not a synchronisation wait
    return {"hostname": self.request.hostname, "redelivered": False}
