"""The management API over HTTP (urllib, as any HTTP client would use it): each endpoint's
JSON shape and status codes as RabbitMQ's management plugin answers them (checked against
RabbitMQ 3.10), basic auth, and what the user tags administrator, monitoring and management
let a user see and change."""

import base64
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import pika
import pytest
from pika.exceptions import ConnectionClosedByBroker

from helpers import BrokerProcess, connect, listener_port, unique, wait_until

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="starts its own broker to reach its management API",
)

GUEST = ("guest", "guest")


class Api:
    """The management API of one broker, called as a given user."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method, path, body=None, user=GUEST, headers=None):
        """(status, parsed JSON body or None, response headers); never raises on 4xx/5xx."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if user is not None:
            token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, got = error.code, error.read(), error.headers
        return status, (json.loads(raw) if raw else None), got

    def get(self, path, user=GUEST):
        status, body, _ = self.call("GET", path, user=user)
        assert status == 200, f"GET {path}: {status} {body}"
        return body


def q(name):
    return urllib.parse.quote(name, safe="")


@pytest.fixture(scope="module")
def broker():
    process = BrokerProcess().start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api(broker):
    return Api(listener_port(broker, "http"))


def rabbitmq_password_hash(password, salt=b"\x0a\x0b\x0c\x0d"):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def test_no_credentials_or_wrong_ones_are_401(api):
    status, body, headers = api.call("GET", "/api/overview", user=None)
    assert (status, body) == (401, None)
    assert headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'
    status, body, headers = api.call("GET", "/api/overview", user=("guest", "wrong"))
    assert status == 401
    assert body == {"error": "not_authorized", "reason": "Not_Authorized"}
    status, body, _ = api.call("GET", "/api/no-such-thing")
    assert (status, body) == (404, {"error": "Object Not Found", "reason": "Not Found"})


def test_overview_nodes_whoami_and_health(broker, api):
    overview = api.get("/api/overview")
    assert overview["rates_mode"] == "basic"
    assert {t["name"] for t in overview["exchange_types"]} >= {"direct", "fanout", "topic", "headers"}
    for key in ("queue_totals", "object_totals", "message_stats", "churn_rates", "node"):
        assert key in overview, key
    amqp = [l for l in overview["listeners"] if l["protocol"] == "amqp"]
    assert amqp and amqp[0]["port"] == broker.port
    nodes = api.get("/api/nodes")
    assert len(nodes) == 1 and nodes[0]["running"] is True
    assert nodes[0]["name"] == overview["node"]
    assert api.get("/api/whoami") == {"name": "guest", "tags": ["administrator"]}
    assert api.get("/api/health/checks/alarms") == {"status": "ok"}
    assert api.get("/api/aliveness-test/%2F") == {"status": "ok"}
    status, _, _ = api.call("GET", "/api/aliveness-test/no-such-vhost")
    assert status == 404


def test_declare_list_get_purge_and_delete_a_queue(broker, api):
    name = unique("http-q")
    path = f"/api/queues/%2F/{q(name)}"
    status, _, _ = api.call("PUT", path, {"durable": True, "arguments": {"x-max-length": 100}})
    assert status == 201
    status, _, _ = api.call("PUT", path, {"durable": "true", "arguments": {"x-max-length": 100}})
    assert status == 204
    status, body, _ = api.call("PUT", path, {"durable": False})
    assert status == 400
    assert body["reason"] == (
        f"inequivalent arg 'durable' for queue '{name}' in vhost '/': "
        "received 'false' but current is 'true'"
    )

    conn = connect(broker.url)
    try:
        ch = conn.channel()
        for i in range(3):
            ch.basic_publish("", name, f"m{i}".encode(),
                             pika.BasicProperties(content_type="text/plain", headers={"h": 1}))
    finally:
        conn.close()

    listed = wait_until(
        lambda: [x for x in api.get("/api/queues") if x["name"] == name and x["messages"] == 3],
        what="the queue listed with its 3 messages",
    )[0]
    assert listed["vhost"] == "/" and listed["durable"] is True
    assert listed["messages_ready"] == 3 and listed["messages_unacknowledged"] == 0
    assert listed["arguments"] == {"x-max-length": 100}
    one = api.get(path)
    assert one["name"] == name and one["consumers"] == 0

    # Peek: taken and put back, so they come back redelivered, as in RabbitMQ.
    get = f"{path}/get"
    status, body, _ = api.call(
        "POST", get, {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert status == 200
    assert [m["payload"] for m in body] == ["m0", "m1"]
    assert [m["message_count"] for m in body] == [2, 1]
    assert body[0]["properties"] == {"content_type": "text/plain", "headers": {"h": 1}}
    assert body[0]["payload_encoding"] == "string" and body[0]["redelivered"] is False
    status, body, _ = api.call(
        "POST", get, {"count": "1", "ackmode": "ack_requeue_false", "encoding": "base64"})
    assert status == 200
    assert body[0]["redelivered"] is True
    assert base64.b64decode(body[0]["payload"]) == b"m0"
    assert api.get(path)["messages"] == 2
    status, body, _ = api.call("POST", get, {"count": 1})
    assert (status, body["reason"]) == (400, "[{key_missing,ackmode},{key_missing,encoding}]")

    status, _, _ = api.call("DELETE", f"{path}/contents")
    assert status == 204
    assert api.get(path)["messages"] == 0
    status, _, _ = api.call("DELETE", path)
    assert status == 204
    status, body, _ = api.call("GET", path)
    assert (status, body) == (404, {"error": "Object Not Found", "reason": "Not Found"})
    status, body, _ = api.call(
        "POST", get, {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert (status, body["error"]) == (404, "not_found")


def test_exchanges_bindings_and_publish(api):
    exchange, queue = unique("http-x"), unique("http-bq")
    assert api.call("PUT", f"/api/exchanges/%2F/{q(exchange)}", {"type": "topic"})[0] == 201
    assert api.call("PUT", f"/api/queues/%2F/{q(queue)}", {})[0] == 201
    shown = api.get(f"/api/exchanges/%2F/{q(exchange)}")
    assert (shown["type"], shown["durable"], shown["internal"]) == ("topic", False, False)
    assert any(x["name"] == exchange for x in api.get("/api/exchanges/%2F"))

    binding = f"/api/bindings/%2F/e/{q(exchange)}/q/{q(queue)}"
    status, _, headers = api.call("POST", binding, {"routing_key": "a.#", "arguments": {}})
    assert status == 201
    assert headers["Location"] == f"{queue}/a.%23"
    listed = api.get(binding)
    assert listed == [{
        "source": exchange, "vhost": "/", "destination": queue, "destination_type": "queue",
        "routing_key": "a.#", "arguments": {}, "properties_key": "a.%23",
    }]
    assert api.get(f"/api/exchanges/%2F/{q(exchange)}/bindings/source") == listed
    assert listed[0] in api.get(f"/api/queues/%2F/{q(queue)}/bindings")
    status, body, _ = api.call(
        "POST", f"/api/bindings/%2F/e/{q(exchange)}/q/no-such-queue", {"routing_key": "k"})
    assert (status, body) == (404, {"error": "not_found", "reason": "no queue 'no-such-queue' in vhost '/'"})

    publish = f"/api/exchanges/%2F/{q(exchange)}/publish"
    message = {"properties": {"delivery_mode": 2}, "routing_key": "a.b",
               "payload": "aGVsbG8=", "payload_encoding": "base64"}
    assert api.call("POST", publish, message)[1] == {"routed": True}
    assert api.call("POST", publish, dict(message, routing_key="b"))[1] == {"routed": False}
    status, body, _ = api.call("POST", publish, {"properties": {}, "routing_key": "a", "payload": "x"})
    assert (status, body["reason"]) == (400, "[{key_missing,payload_encoding}]")
    got = api.call("POST", f"/api/queues/%2F/{q(queue)}/get",
                   {"count": 5, "ackmode": "ack_requeue_false", "encoding": "auto"})[1]
    assert [(m["payload"], m["routing_key"], m["properties"]) for m in got] == [
        ("hello", "a.b", {"delivery_mode": 2})]

    assert api.call("DELETE", f"{binding}/a.%2523")[0] == 204
    assert api.get(binding) == []
    assert api.call("DELETE", f"{binding}/a.%2523")[0] == 404
    assert api.call("DELETE", f"/api/exchanges/%2F/{q(exchange)}")[0] == 204
    assert api.call("GET", f"/api/exchanges/%2F/{q(exchange)}")[0] == 404


def test_connections_channels_consumers_and_closing_one(broker, api):
    name = unique("http-conn")
    params = pika.URLParameters(broker.url)
    params.client_properties = {"connection_name": name}
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=7)
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_consume(queue, lambda *a: None, consumer_tag="http-ctag")

        def listed():
            return [c for c in api.get("/api/connections") if c.get("user_provided_name") == name]

        connection = wait_until(listed, what="the connection listed")[0]
        assert connection["user"] == "guest" and connection["vhost"] == "/"
        assert connection["protocol"] == "AMQP 0-9-1" and connection["state"] == "running"
        assert connection["client_properties"]["connection_name"] == name
        assert connection["peer_port"] == conn._impl._transport._sock.getsockname()[1]
        assert api.get(f"/api/connections/{q(connection['name'])}")["name"] == connection["name"]

        channels = wait_until(
            lambda: [c for c in api.get("/api/channels")
                     if c["connection_details"]["name"] == connection["name"]
                     and c["consumer_count"] == 1],
            what="the channel with its consumer",
        )
        assert channels[0]["prefetch_count"] == 7 and channels[0]["number"] == 1
        assert channels[0]["name"] == f"{connection['name']} (1)"
        consumers = [c for c in api.get("/api/consumers") if c["consumer_tag"] == "http-ctag"]
        assert consumers[0]["queue"] == {"name": queue, "vhost": "/"}
        assert consumers[0]["ack_required"] is True and consumers[0]["prefetch_count"] == 7
        assert consumers[0]["channel_details"]["connection_name"] == connection["name"]

        status, _, _ = api.call("DELETE", f"/api/connections/{q(connection['name'])}")
        assert status == 204
        with pytest.raises(ConnectionClosedByBroker) as closed:
            deadline_loops = 500
            while deadline_loops:
                conn.process_data_events(time_limit=0.02)
                deadline_loops -= 1
        assert closed.value.reply_code == 320
        assert closed.value.reply_text == "CONNECTION_FORCED - Closed via management plugin"
        wait_until(lambda: not listed(), what="the closed connection unlisted")
        assert api.call("GET", f"/api/connections/{q(connection['name'])}")[0] == 404
    finally:
        if conn.is_open:
            conn.close()


def test_definitions_export_and_import(api):
    vhost, queue, exchange = unique("defs-v"), unique("defs-q"), unique("defs-x")
    definitions = {
        "users": [{"name": unique("defs-user"), "password_hash": rabbitmq_password_hash("pw"),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"]}],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": "guest", "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [{"name": exchange, "vhost": vhost, "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"name": queue, "vhost": vhost, "durable": True, "auto_delete": False,
                    "arguments": {"x-message-ttl": 60000}}],
        "bindings": [{"source": exchange, "vhost": vhost, "destination": queue,
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
    }
    status, _, _ = api.call("POST", "/api/definitions", definitions)
    assert status == 204
    shown = api.get(f"/api/queues/{q(vhost)}/{q(queue)}")
    assert shown["durable"] is True and shown["arguments"] == {"x-message-ttl": 60000}
    assert any(b["source"] == exchange for b in api.get(f"/api/bindings/{q(vhost)}"))

    exported = api.get("/api/definitions")
    assert {"name": vhost} in [{"name": v["name"]} for v in exported["vhosts"]]
    assert any(x["name"] == queue and x["vhost"] == vhost for x in exported["queues"])
    assert any(x["name"] == exchange and x["type"] == "fanout" for x in exported["exchanges"])
    user = definitions["users"][0]
    exported_user = [u for u in exported["users"] if u["name"] == user["name"]][0]
    assert exported_user["password_hash"] == user["password_hash"]
    assert api.get("/api/whoami", user=(user["name"], "pw"))["tags"] == ["management"]
    scoped = api.get(f"/api/definitions/{q(vhost)}")
    assert [x["name"] for x in scoped["queues"]] == [queue]



def test_a_body_that_is_not_json_is_refused(api):
    request = urllib.request.Request(api.base + "/api/definitions", data=b"not json", method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read()) == {"error": "bad_request", "reason": "failed_to_parse_json"}


@pytest.fixture(scope="module")
def tagged_users(api):
    """A monitoring user with permissions in `/`, a management user with permissions only in
    its own vhost, and a user with no management tag."""
    other = unique("tags-v")
    users = {
        "monitor": (unique("mon"), "monitoring"),
        "manager": (unique("mgmt"), "management"),
        "plain": (unique("plain"), None),
    }
    definitions = {
        "users": [{"name": name, "password_hash": rabbitmq_password_hash("pw"),
                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": [tag] if tag else []} for name, tag in users.values()],
        "vhosts": [{"name": other}],
        "permissions": [
            {"user": users["monitor"][0], "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": users["manager"][0], "vhost": other, "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "guest", "vhost": other, "configure": ".*", "write": ".*", "read": ".*"},
        ],
    }
    assert api.call("POST", "/api/definitions", definitions)[0] == 204
    creds = {role: (name, "pw") for role, (name, _) in users.items()}
    return creds, other


def test_a_user_without_a_management_tag_is_refused(api, tagged_users):
    creds, _ = tagged_users
    status, body, _ = api.call("GET", "/api/overview", user=creds["plain"])
    assert (status, body) == (401, {"error": "not_authorised", "reason": "Not management user"})


def test_a_monitoring_user_sees_every_connection_but_only_its_vhosts_objects_and_changes_nothing(
    broker, api, tagged_users
):
    creds, other = tagged_users
    mon = creds["monitor"]
    assert api.call("GET", "/api/nodes", user=mon)[0] == 200
    name = unique("guest-conn")
    # In a vhost the monitoring user has no permissions in: its connections still show.
    conn = named_connection(broker, other, name)
    try:
        seen = wait_until(
            lambda: [c for c in api.get("/api/connections", user=mon)
                     if c.get("user_provided_name") == name],
            what="guest's connection seen by the monitoring user",
        )
        status, body, _ = api.call("DELETE", f"/api/connections/{q(seen[0]['name'])}", user=mon)
        assert (status, body) == (
            401, {"error": "not_authorised", "reason": "User not authorised to access object"})
        assert conn.is_open
    finally:
        conn.close()
    # Queues, exchanges and bindings show only from the vhosts it has permissions in, as in
    # RabbitMQ; the vhost listing has every vhost.
    queues = [f"/api/queues/{q(vhost)}/{q(unique('q'))}" for vhost in ("/", other)]
    for queue in queues:
        assert api.call("PUT", queue, {})[0] == 201
    try:
        for path in ("/api/queues", "/api/exchanges", "/api/bindings"):
            assert {x["vhost"] for x in api.get(path, user=mon)} == {"/"}, path
            assert other in {x["vhost"] for x in api.get(path)}, path
    finally:
        for queue in queues:
            api.call("DELETE", queue)
    assert other in {v["name"] for v in api.get("/api/vhosts", user=mon)}
    for method, path in (("GET", "/api/definitions"), ("POST", "/api/definitions")):
        status, body, _ = api.call(method, path, {} if method == "POST" else None, user=mon)
        assert (status, body) == (401, {"error": "not_authorised", "reason": "Not administrator user"})


def test_a_management_user_sees_only_its_vhosts_and_connections(broker, api, tagged_users):
    creds, other = tagged_users
    mgmt = creds["manager"]
    in_other, in_root = unique("mine"), unique("not-mine")
    assert api.call("PUT", f"/api/queues/{q(other)}/{q(in_other)}", {}, user=mgmt)[0] == 201
    assert api.call("PUT", f"/api/queues/%2F/{q(in_root)}", {})[0] == 201
    names = {(x["vhost"], x["name"]) for x in api.get("/api/queues", user=mgmt)}
    assert (other, in_other) in names
    assert all(vhost == other for vhost, _ in names)
    status, body, _ = api.call("GET", "/api/queues/%2F", user=mgmt)
    assert (status, body) == (
        401, {"error": "not_authorised", "reason": "User not authorised to access virtual host"})
    status, body, _ = api.call("PUT", f"/api/queues/%2F/{q(unique('nope'))}", {}, user=mgmt)
    assert status == 401
    status, body, _ = api.call("GET", "/api/nodes", user=mgmt)
    assert (status, body) == (401, {"error": "not_authorised", "reason": "Not monitor user"})
    conn = connect(broker.url)
    try:
        wait_until(lambda: api.get("/api/connections"), what="guest's connection listed")
        assert api.get("/api/connections", user=mgmt) == []
    finally:
        conn.close()


def test_an_administrator_can_stop_the_broker():
    own = BrokerProcess().start()
    try:
        api = Api(listener_port(own, "http"))
        assert api.call("POST", "/api/warren/stop", {})[0] == 204
        assert own.proc.wait(timeout=30) == 0
    finally:
        own.stop()


def test_only_administrators_may_stop_the_broker(api, tagged_users):
    creds, _ = tagged_users
    status, body, _ = api.call("POST", "/api/warren/stop", {}, user=creds["monitor"])
    assert (status, body) == (401, {"error": "not_authorised", "reason": "Not administrator user"})
    assert api.call("GET", "/api/whoami")[0] == 200


def named_connection(broker, vhost, name, user=GUEST):
    params = pika.URLParameters(broker.url)
    params.virtual_host = vhost
    params.credentials = pika.PlainCredentials(*user)
    params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


def test_per_vhost_connections_and_channels_list_only_that_vhosts(broker, api, tagged_users):
    creds, other = tagged_users
    in_root, in_other, managers = unique("root-conn"), unique("other-conn"), unique("mgmt-conn")
    conns = [named_connection(broker, "/", in_root),
             named_connection(broker, other, in_other),
             named_connection(broker, other, managers, user=creds["manager"])]
    try:
        for conn in conns:
            conn.channel()
        conns[1].channel()

        def listed(vhost, what, user=GUEST):
            return api.get(f"/api/vhosts/{q(vhost)}/{what}", user=user)

        def names(items):
            return {c.get("user_provided_name") for c in items}

        wait_until(lambda: {in_other, managers} <= names(listed(other, "connections")),
                   what="both connections listed in their vhost")
        root = listed("/", "connections")
        assert in_root in names(root) and {c["vhost"] for c in root} == {"/"}
        assert names(listed(other, "connections")) == {in_other, managers}

        def channel_owners(vhost, user=GUEST):
            by_name = {c["name"]: c.get("user_provided_name") for c in api.get("/api/connections")}
            return sorted(by_name.get(ch["connection_details"]["name"])
                          for ch in listed(vhost, "channels", user) if ch["vhost"] == vhost)

        wait_until(lambda: channel_owners(other) == sorted([in_other, in_other, managers]),
                   what="the other vhost's three channels listed")
        assert {ch["vhost"] for ch in listed("/", "channels")} == {"/"}
        assert in_root in channel_owners("/")

        # A management user sees only its own, and RabbitMQ pages none of these listings.
        mgmt = creds["manager"]
        assert names(listed(other, "connections", mgmt)) == {managers}
        assert channel_owners(other, mgmt) == [managers]
        paged = api.get(f"/api/vhosts/{q(other)}/channels?page=1&page_size=1&sort=number",
                        user=mgmt)
        assert isinstance(paged, list) and len(paged) == 1
        # Here even a monitoring user needs permissions in the vhost, as in RabbitMQ.
        assert names(listed("/", "connections", creds["monitor"])) >= {in_root}
        for what in ("connections", "channels"):
            status, body, _ = api.call("GET", f"/api/vhosts/{q(other)}/{what}",
                                       user=creds["monitor"])
            assert (status, body) == (
                401, {"error": "not_authorised", "reason": "User not authorised to access virtual host"})
    finally:
        for conn in conns:
            if conn.is_open:
                conn.close()


def test_per_vhost_connections_and_channels_of_an_unknown_vhost_are_404(api):
    for what in ("connections", "channels"):
        assert api.call("GET", f"/api/vhosts/%2F/{what}")[0] == 200
        status, body, _ = api.call("GET", f"/api/vhosts/{q(unique('no-vhost'))}/{what}")
        assert (status, body) == (404, {"error": "Object Not Found", "reason": "Not Found"})
