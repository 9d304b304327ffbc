"""Users, vhosts and permissions with pika: a user reaches only the vhosts it has permissions
in, and its configure/write/read patterns decide which queues and exchanges it may declare,
delete, bind, publish to and consume from, with RabbitMQ's refusal codes and texts (checked
against RabbitMQ 3.10). Users and permissions come from a definitions.json in RabbitMQ's format
placed in the data directory before the broker starts."""

import base64
import hashlib
import json
import os

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError

from helpers import DataDirBroker

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="needs a broker started on definitions of its own",
)


def rabbitmq_password_hash(password, salt=b"\x01\x02\x03\x04"):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def user(name, password):
    return {
        "name": name,
        "password_hash": rabbitmq_password_hash(password),
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": [],
        "limits": {},
    }


def permission(user_name, vhost, configure, write, read):
    return {"user": user_name, "vhost": vhost, "configure": configure, "write": write, "read": read}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("permissions") / "data"
    os.makedirs(data_dir)
    definitions = {
        "users": [user("guest", "guest"), user("alice", "secret"), user("bob", "pw")],
        "vhosts": [{"name": "/"}, {"name": "v1"}],
        "permissions": [
            permission("guest", "/", ".*", ".*", ".*"),
            permission("guest", "v1", ".*", ".*", ".*"),
            permission("alice", "/", "", "", ""),
            permission("alice", "v1", "^(aq|ax|ex2)$", "^(aq|amq\\.default|ex2)$", "^(aq|ax)$"),
        ],
        "queues": [],
        "exchanges": [],
        "bindings": [],
    }
    (data_dir / "definitions.json").write_text(json.dumps(definitions))
    started = DataDirBroker(data_dir).start()
    yield started
    started.stop()


def connect(broker, user_name, password, vhost):
    params = pika.ConnectionParameters(
        "127.0.0.1", broker.port, vhost, pika.PlainCredentials(user_name, password)
    )
    return pika.BlockingConnection(params)


@pytest.fixture
def alice(broker):
    connection = connect(broker, "alice", "secret", "v1")
    yield connection
    if connection.is_open:
        connection.close()


def refused(connection, operation):
    """Runs `operation` on a fresh channel; returns (code, text) of the channel's closing."""
    channel = connection.channel()
    with pytest.raises(ChannelClosedByBroker) as closed:
        operation(channel)
        # A publish is asynchronous: a synchronous round trip brings the refusal back.
        channel.queue_declare("aq", passive=True)
    return closed.value.reply_code, closed.value.reply_text


def allowed(connection, operation):
    channel = connection.channel()
    result = operation(channel)
    channel.queue_declare("aq", passive=True)
    channel.close()
    return result


def access_refused(kind, name, vhost="v1", who="alice"):
    return (403, f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{vhost}' refused for user '{who}'")


def test_a_user_without_permissions_in_a_vhost_cannot_open_it(broker):
    with pytest.raises(ProbableAccessDeniedError) as denied:
        connect(broker, "bob", "pw", "v1")
    assert "NOT_ALLOWED - access to vhost 'v1' refused for user 'bob'" in str(denied.value)
    with pytest.raises(ProbableAccessDeniedError) as missing:
        connect(broker, "alice", "secret", "nohost")
    assert "NOT_ALLOWED - vhost nohost not found" in str(missing.value)


def test_empty_patterns_allow_the_vhost_but_nothing_in_it(broker):
    connection = connect(broker, "alice", "secret", "/")
    try:
        assert refused(connection, lambda ch: ch.queue_declare("aq")) == access_refused(
            "queue", "aq", vhost="/"
        )
    finally:
        connection.close()


def test_configure_decides_declare_and_delete(alice):
    allowed(alice, lambda ch: ch.queue_declare("aq"))
    allowed(alice, lambda ch: ch.exchange_declare("ax", "fanout"))
    allowed(alice, lambda ch: ch.exchange_declare("ex2", "fanout"))
    assert refused(alice, lambda ch: ch.queue_declare("bq")) == access_refused("queue", "bq")
    assert refused(alice, lambda ch: ch.exchange_declare("bx", "direct")) == access_refused(
        "exchange", "bx"
    )
    # Server-named queues are checked under their generated name.
    code, text = refused(alice, lambda ch: ch.queue_declare("", exclusive=True))
    assert code == 403 and "access to queue 'amq.gen-" in text
    # Passive declares only ask whether it exists; deletes are checked before existence.
    assert refused(alice, lambda ch: ch.queue_declare("bq", passive=True)) == (
        404,
        "NOT_FOUND - no queue 'bq' in vhost 'v1'",
    )
    allowed(alice, lambda ch: ch.exchange_declare("amq.direct", passive=True))
    assert refused(alice, lambda ch: ch.queue_delete("nope")) == access_refused("queue", "nope")
    assert refused(alice, lambda ch: ch.exchange_delete("nope")) == access_refused(
        "exchange", "nope"
    )


def test_write_decides_publish_and_binding_destinations_read_decides_sources(alice):
    allowed(alice, lambda ch: ch.queue_declare("aq"))
    allowed(alice, lambda ch: ch.exchange_declare("ax", "fanout"))
    allowed(alice, lambda ch: ch.exchange_declare("ex2", "fanout"))
    allowed(alice, lambda ch: ch.queue_purge("aq"))
    allowed(alice, lambda ch: ch.basic_publish("", "aq", b"through amq.default"))
    assert refused(alice, lambda ch: ch.basic_publish("amq.direct", "aq", b"x")) == (
        access_refused("exchange", "amq.direct")
    )
    assert refused(alice, lambda ch: ch.basic_publish("ax", "aq", b"x")) == access_refused(
        "exchange", "ax"
    )
    allowed(alice, lambda ch: ch.queue_bind("aq", "ax", "k"))
    assert refused(alice, lambda ch: ch.queue_bind("aq", "amq.direct", "k")) == access_refused(
        "exchange", "amq.direct"
    )
    assert refused(alice, lambda ch: ch.queue_unbind("aq", "amq.direct", "k")) == access_refused(
        "exchange", "amq.direct"
    )
    allowed(alice, lambda ch: ch.exchange_bind("ex2", "ax", "k"))
    assert refused(alice, lambda ch: ch.exchange_bind("ax", "ex2", "k")) == access_refused(
        "exchange", "ax"
    )
    method = allowed(alice, lambda ch: ch.basic_get("aq", auto_ack=True))
    assert method[2] == b"through amq.default"


def test_read_decides_consume_and_get(broker):
    guest = connect(broker, "guest", "guest", "v1")
    alice = connect(broker, "alice", "secret", "v1")
    try:
        channel = guest.channel()
        channel.queue_declare("aq")
        channel.queue_declare("secret-q")
        assert refused(alice, lambda ch: ch.basic_get("secret-q")) == access_refused(
            "queue", "secret-q"
        )
        assert refused(
            alice, lambda ch: ch.basic_consume("secret-q", lambda *args: None)
        ) == access_refused("queue", "secret-q")
        assert refused(alice, lambda ch: ch.queue_purge("secret-q")) == access_refused(
            "queue", "secret-q"
        )
        allowed(alice, lambda ch: ch.basic_consume("aq", lambda *args: None))
    finally:
        alice.close()
        guest.close()
