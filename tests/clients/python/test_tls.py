"""AMQPS (issue 6, item 1): with a certificate and key configured, the broker also listens for
AMQP over TLS (RabbitMQ's ssl listener); pika connects through it, verifying the broker's
certificate, and publishes and consumes as over plain TCP. Broken TLS files stop the start
with the file named."""

import os
import shutil
import ssl
import subprocess

import pika
import pytest

from helpers import BrokerProcess, listener_port

pytestmark = [
    pytest.mark.skipif(
        bool(os.environ.get("WARREN_TEST_AMQP_URL")), reason="starts brokers of its own"
    ),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_clients_connect_over_tls_and_verify_the_broker(certificate, monkeypatch):
    cert, key = certificate
    monkeypatch.setenv("WARREN_AMQPS_PORT", "0")
    monkeypatch.setenv("WARREN_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("WARREN_TLS_KEY_FILE", str(key))
    broker = BrokerProcess().start()
    try:
        port = listener_port(broker, "amqps")
        context = ssl.create_default_context(cafile=str(cert))
        params = pika.ConnectionParameters(
            "127.0.0.1", port, ssl_options=pika.SSLOptions(context, "127.0.0.1")
        )
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, b"over tls")
        body = None
        for _ in range(100):
            _, _, body = channel.basic_get(queue, auto_ack=True)
            if body is not None:
                break
            connection.sleep(0.05)
        assert body == b"over tls"
        connection.close()
        # A client that does not trust the certificate refuses the broker.
        untrusting = ssl.create_default_context()
        with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
            pika.BlockingConnection(
                pika.ConnectionParameters(
                    "127.0.0.1", port, ssl_options=pika.SSLOptions(untrusting, "127.0.0.1"),
                    connection_attempts=1,
                )
            )
    finally:
        broker.stop()


def test_a_key_that_is_not_a_key_stops_the_start(certificate, tmp_path, monkeypatch):
    cert, _ = certificate
    bad_key = tmp_path / "not-a-key.pem"
    bad_key.write_text("not a key\n")
    monkeypatch.setenv("WARREN_AMQPS_PORT", "0")
    monkeypatch.setenv("WARREN_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("WARREN_TLS_KEY_FILE", str(bad_key))
    with pytest.raises(RuntimeError) as failed:
        BrokerProcess().start()
    assert "not-a-key.pem" in str(failed.value)
