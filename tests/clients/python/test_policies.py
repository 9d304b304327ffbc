"""Issue 5, item 11 with pika: policies apply to the queues and exchanges whose names match.
Policies come from a definitions.json in the data directory (RabbitMQ's format) and, at
runtime, from the management API (PUT/DELETE /api/policies/%2F/name). A queue's limit is the
lower of its argument and its policy's; its own dead-letter exchange wins; redeclaring
compares the declared arguments only; an exchange without an alternate-exchange argument takes
its policy's; a queue restored at startup comes back under its policy; a new max-length policy
trims an existing queue at once and deleting it lifts the limit (as RabbitMQ 3.10 does)."""

import base64
import hashlib
import json
import os
import urllib.request

import pytest
from pika.exceptions import ChannelClosedByBroker

from helpers import DataDirBroker, connect, listener_port, unique, wait_until

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="needs a broker started on definitions of its own",
)


def password_hash(password, salt=b"\x05\x06\x07\x08"):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def policy(name, pattern, definition, apply_to="queues", priority=0):
    return {
        "vhost": "/", "name": name, "pattern": pattern, "apply-to": apply_to,
        "definition": definition, "priority": priority,
    }


DEFINITIONS = {
    "users": [{
        "name": "guest", "password_hash": password_hash("guest"),
        "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"],
        "limits": {},
    }],
    "vhosts": [{"name": "/"}],
    "permissions": [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
    ],
    "policies": [
        policy("limit", r"^pol\.len\.",
               {"max-length": 2, "dead-letter-exchange": "", "dead-letter-routing-key": "pol.dead"}),
        policy("ttl", r"^pol\.ttl\.", {"message-ttl": 50}),
        policy("ae", r"^pol\.x\.", {"alternate-exchange": "pol.ae"}, apply_to="exchanges"),
    ],
    "queues": [{
        "name": "pol.len.restored", "vhost": "/", "durable": True, "auto_delete": False,
        "arguments": {},
    }],
    "exchanges": [],
    "bindings": [],
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("policies") / "data"
    os.makedirs(data_dir)
    (data_dir / "definitions.json").write_text(json.dumps(DEFINITIONS))
    started = DataDirBroker(data_dir).start()
    yield started
    started.stop()


@pytest.fixture
def channel(broker):
    connection = connect(broker.url)
    yield connection.channel()
    if connection.is_open:
        connection.close()


def ready(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def bodies(channel, queue):
    out = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((body, properties))


def publish(channel, queue, *payloads):
    for body in payloads:
        channel.basic_publish("", queue, body)


def test_a_max_length_policy_limits_queues_and_dead_letters_what_it_drops(channel):
    channel.queue_declare("pol.dead")
    bare, lower, higher = (unique(f"pol.len.{kind}") for kind in ("bare", "lower", "higher"))
    channel.queue_declare(bare)
    channel.queue_declare(lower, arguments={"x-max-length": 1})
    channel.queue_declare(higher, arguments={"x-max-length": 5})
    for queue in (bare, lower, higher):
        publish(channel, queue, b"m1", b"m2", b"m3")
    assert [body for body, _ in bodies(channel, bare)] == [b"m2", b"m3"]
    assert [body for body, _ in bodies(channel, lower)] == [b"m3"], "its own lower limit"
    assert [body for body, _ in bodies(channel, higher)] == [b"m2", b"m3"], "the policy's lower limit"
    wait_until(lambda: ready(channel, "pol.dead") == 4, what="the dropped messages dead-lettered")
    dead = bodies(channel, "pol.dead")
    deaths = [(p.headers["x-death"][0]["queue"], p.headers["x-death"][0]["reason"]) for _, p in dead]
    assert sorted(deaths) == sorted(
        [(bare, "maxlen"), (lower, "maxlen"), (lower, "maxlen"), (higher, "maxlen")]
    )


def test_a_queue_argument_wins_over_the_policy_for_names(channel):
    own_dlq = unique("pol-own-dlq")
    channel.queue_declare(own_dlq)
    queue = unique("pol.len.own-dlx")
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": own_dlq})
    publish(channel, queue, b"m1", b"m2", b"m3")
    wait_until(lambda: ready(channel, own_dlq) == 1, what="m1 dead-lettered to the queue's own target")
    assert [body for body, _ in bodies(channel, own_dlq)] == [b"m1"]
    channel.queue_delete(own_dlq)


def test_redeclaring_compares_the_declared_arguments_not_the_policy(channel):
    queue = unique("pol.len.redeclare")
    channel.queue_declare(queue)
    channel.queue_declare(queue)
    with pytest.raises(ChannelClosedByBroker) as refused:
        channel.queue_declare(queue, arguments={"x-max-length": 2})
    assert refused.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{queue}' in vhost '/': "
        "received the value '2' of type 'signedint' but current is none"
    )


def test_a_message_ttl_policy_expires_messages(channel):
    queue = unique("pol.ttl.q")
    channel.queue_declare(queue)
    publish(channel, queue, b"short-lived")
    wait_until(lambda: ready(channel, queue) == 0, what="the message to expire")


def test_an_exchange_takes_its_alternate_exchange_from_a_policy(channel):
    channel.exchange_declare("pol.ae", "fanout")
    caught = unique("pol-ae-q")
    channel.queue_declare(caught)
    channel.queue_bind(caught, "pol.ae")
    exchange = unique("pol.x.direct")
    channel.exchange_declare(exchange, "direct")
    channel.basic_publish(exchange, "nowhere", b"unroutable")
    wait_until(lambda: ready(channel, caught) == 1, what="the alternate exchange to take it")
    channel.queue_delete(caught)


def test_a_queue_restored_at_startup_comes_back_under_its_policy(channel):
    publish(channel, "pol.len.restored", b"m1", b"m2", b"m3")
    assert [body for body, _ in bodies(channel, "pol.len.restored")] == [b"m2", b"m3"]


def api(port, method, path, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_policies_changed_at_runtime_apply_to_existing_queues(broker, channel):
    port = listener_port(broker, "http")
    queue = unique("pol.rt.q")
    channel.queue_declare(queue)
    publish(channel, queue, b"m1", b"m2", b"m3")
    assert api(port, "PUT", "/api/policies/%2F/runtime",
               {"pattern": r"^pol\.rt\.", "definition": {"max-length": 1}, "apply-to": "queues"}) == 201
    wait_until(lambda: ready(channel, queue) == 1, what="the new policy to trim the queue")
    publish(channel, queue, b"m4")
    assert [body for body, _ in bodies(channel, queue)] == [b"m4"]
    assert api(port, "DELETE", "/api/policies/%2F/runtime") == 204
    publish(channel, queue, b"m5", b"m6", b"m7")
    wait_until(lambda: ready(channel, queue) == 3, what="the limit lifted")
    channel.queue_delete(queue)
