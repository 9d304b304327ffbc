"""Running Warren as a service (issue 6, item 7): with systemd's `Type=notify` the broker sends
READY=1 to `$NOTIFY_SOCKET` once its listeners are open and STOPPING=1 when it begins to
stop; packaging/warren.service relies on that."""

import os
import signal
import socket

import pytest

from helpers import BrokerProcess

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")), reason="starts brokers of its own"
)


def next_notification(listener):
    data, _ = listener.recvfrom(4096)
    return data.decode()


def test_systemd_is_told_when_the_broker_is_ready_and_when_it_stops(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    broker = BrokerProcess().start()
    try:
        # By now the ready line was printed; READY=1 is sent right after the listener lines.
        assert next_notification(listener) == "READY=1"
        os.kill(broker.proc.pid, signal.SIGTERM)
        assert next_notification(listener) == "STOPPING=1"
        assert broker.proc.wait(timeout=10) == 0
    finally:
        broker.stop()
        listener.close()


def test_the_unit_file_waits_for_readiness_and_restarts_on_failure():
    from helpers import REPO_ROOT

    unit = (REPO_ROOT / "packaging" / "warren.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["Restart"] == "on-failure"
    assert settings["ExecStart"].startswith("/usr/bin/warren")
