"""Users, vhosts, permissions and policies through the management API, as RabbitMQ's
management plugin answers them (status codes and JSON checked against RabbitMQ 3.10), and what
they change for AMQP clients: a user created over HTTP logs in with pika, permissions decide what
it may do, a deleted vhost takes its queues with it, and definitions keep all of it across a
restart."""

import base64
import json
import os
import time
import urllib.error
import urllib.request

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ProbableAccessDeniedError

from helpers import BrokerProcess, DataDirBroker, listener_port, wait_until

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WARREN_TEST_AMQP_URL")),
    reason="needs a broker of its own with its management API",
)


class Api:
    def __init__(self, port, user="guest", password="guest"):
        self.base = f"http://127.0.0.1:{port}/api"
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def as_user(self, user, password):
        other = Api(0, user, password)
        other.base = self.base
        return other

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", self.auth)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as error:
            raw = error.read()
            return error.code, (json.loads(raw) if raw else None)


@pytest.fixture(scope="module")
def broker():
    started = BrokerProcess().start()
    started.http_port = listener_port(started, "http")
    yield started
    started.stop()


@pytest.fixture
def api(broker):
    return Api(broker.http_port)


def amqp(broker, user, password, vhost="/"):
    params = pika.ConnectionParameters(
        "127.0.0.1", broker.port, vhost, pika.PlainCredentials(user, password)
    )
    return pika.BlockingConnection(params)


def forced_closed(connection):
    """The reply text of the broker's connection.close, which must be 320 CONNECTION_FORCED."""
    closed = []
    connection._impl.add_on_close_callback(lambda _conn, reason: closed.append(reason))
    deadline = time.monotonic() + 10
    while not closed and time.monotonic() < deadline:
        try:
            connection.process_data_events(time_limit=0.05)
        except pika.exceptions.ConnectionClosedByBroker:
            break
    assert closed, "the broker did not close the connection"
    assert closed[0].reply_code == 320
    return closed[0].reply_text


def test_users_are_created_listed_changed_and_deleted(api, broker):
    assert api.call("PUT", "/users/carol", {"password": "s3cret", "tags": "management"})[0] == 201
    assert api.call("PUT", "/users/carol", {"password": "s3cret", "tags": ["monitoring"]})[0] == 204
    status, carol = api.call("GET", "/users/carol")
    assert status == 200
    assert carol["name"] == "carol"
    assert carol["tags"] == ["monitoring"]
    assert carol["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert carol["limits"] == {}
    names = [u["name"] for u in api.call("GET", "/users")[1]]
    assert "carol" in names and "guest" in names
    # A user without permissions anywhere is listed as such, and cannot open a vhost.
    assert "carol" in [u["name"] for u in api.call("GET", "/users/without-permissions")[1]]
    with pytest.raises(ProbableAccessDeniedError):
        amqp(broker, "carol", "s3cret")
    api.call("PUT", "/permissions/%2F/carol", {"configure": ".*", "write": ".*", "read": ".*"})
    connection = amqp(broker, "carol", "s3cret")
    assert api.call("DELETE", "/users/carol")[0] == 204
    assert forced_closed(connection) == "CONNECTION_FORCED - user 'carol' is deleted"
    assert api.call("GET", "/permissions/%2F/carol")[0] == 404
    assert api.call("DELETE", "/users/carol") == (
        404,
        {"error": "Object Not Found", "reason": "Not Found"},
    )


def test_permissions_set_over_http_decide_what_an_amqp_client_may_do(api, broker):
    api.call("PUT", "/users/dan", {"password": "pw", "tags": ""})
    assert api.call("PUT", "/permissions/%2F/dan", {"configure": "^dan\\.", "write": ".*"}) == (
        400,
        {"error": "bad_request", "reason": "[{key_missing,read}]"},
    )
    assert api.call(
        "PUT", "/permissions/%2F/nobody", {"configure": ".*", "write": ".*", "read": ".*"}
    ) == (400, {"error": "bad_request", "reason": "vhost_or_user_not_found"})
    perms = {"configure": "^dan\\.", "write": ".*", "read": ".*"}
    assert api.call("PUT", "/permissions/%2F/dan", perms)[0] == 201
    assert api.call("GET", "/permissions/%2F/dan") == (
        200,
        {"user": "dan", "vhost": "/", **perms},
    )
    assert {"user": "dan", "vhost": "/", **perms} in api.call("GET", "/users/dan/permissions")[1]
    connection = amqp(broker, "dan", "pw")
    try:
        channel = connection.channel()
        channel.queue_declare("dan.work")
        with pytest.raises(ChannelClosedByBroker) as refused:
            connection.channel().queue_declare("other.work")
        assert refused.value.reply_code == 403
        # A change reaches connections that are already open.
        assert api.call("PUT", "/permissions/%2F/dan", {**perms, "configure": ".*"})[0] == 204
        connection.channel().queue_declare("other.work")
        assert api.call("DELETE", "/permissions/%2F/dan")[0] == 204
        with pytest.raises(ChannelClosedByBroker):
            connection.channel().queue_declare("dan.more")
    finally:
        if connection.is_open:
            connection.close()
    assert api.call("DELETE", "/permissions/%2F/dan")[0] == 404
    api.call("DELETE", "/users/dan")


def test_a_vhost_is_created_with_its_creators_permissions_and_deleted_with_its_queues(api, broker):
    assert api.call("PUT", "/vhosts/project")[0] == 201
    assert api.call("PUT", "/vhosts/project")[0] == 204
    assert api.call("GET", "/vhosts/project/permissions")[1] == [
        {"vhost": "project", "user": "guest", "configure": ".*", "write": ".*", "read": ".*"}
    ]
    status, vhost = api.call("GET", "/vhosts/project")
    assert status == 200 and vhost["name"] == "project" and vhost["messages"] == 0
    connection = amqp(broker, "guest", "guest", "project")
    channel = connection.channel()
    channel.queue_declare("in-project")
    channel.confirm_delivery()
    channel.basic_publish("", "in-project", b"counted")
    status, vhost = api.call("GET", "/vhosts/project")
    assert (vhost["messages"], vhost["messages_ready"], vhost["messages_unacknowledged"]) == (1, 1, 0)
    assert api.call("GET", "/queues/project/in-project")[0] == 200
    assert api.call("DELETE", "/vhosts/project")[0] == 204
    assert forced_closed(connection) == "CONNECTION_FORCED - vhost 'project' is deleted"
    assert api.call("GET", "/queues/project/in-project")[0] == 404
    assert api.call("DELETE", "/vhosts/project")[0] == 404
    with pytest.raises(ProbableAccessDeniedError):
        amqp(broker, "guest", "guest", "project")


def test_policies_are_validated_listed_and_shown_on_the_queues_they_apply_to(api):
    policy = {"pattern": "^limited\\.", "definition": {"max-length": 5}, "priority": 1,
              "apply-to": "queues"}
    assert api.call("PUT", "/policies/%2F/limit", policy)[0] == 201
    assert api.call("PUT", "/queues/%2F/limited.q", {"durable": False})[0] == 201
    status, queue = api.call("GET", "/queues/%2F/limited.q")
    assert status == 200
    assert queue["policy"] == "limit"
    assert queue["effective_policy_definition"] == {"max-length": 5}
    assert api.call("GET", "/queues/%2F/other-q")[0] == 404
    api.call("DELETE", "/queues/%2F/limited.q")
    assert api.call("PUT", "/policies/%2F/limit", policy)[0] == 204
    assert api.call("GET", "/policies/%2F/limit") == (200, {"vhost": "/", "name": "limit", **policy})
    assert api.call("PUT", "/policies/%2F/bad", {"pattern": "x", "definition": {"foo": 5}}) == (
        400,
        {"error": "bad_request",
         "reason": 'Validation failed\n\n[{<<"foo">>,5}] are not recognised policy settings\n'},
    )
    assert api.call("PUT", "/policies/%2F/bad", {"pattern": "x", "definition": {"expires": 0}})[1][
        "reason"
    ] == "Validation failed\n\n0 is not a valid queue expiry\n"
    assert api.call("PUT", "/policies/%2F/bad", {"definition": {"max-length": 1}}) == (
        400,
        {"error": "bad_request", "reason": "[{key_missing,pattern}]"},
    )
    assert [p["name"] for p in api.call("GET", "/policies")[1]] == ["limit"]
    assert api.call("DELETE", "/policies/%2F/limit")[0] == 204
    assert api.call("DELETE", "/policies/%2F/limit")[0] == 404


def test_tags_decide_who_may_change_users_vhosts_and_policies(api):
    api.call("PUT", "/users/watcher", {"password": "pw", "tags": "monitoring"})
    api.call("PUT", "/users/maker", {"password": "pw", "tags": "policymaker"})
    for name in ("watcher", "maker"):
        api.call("PUT", f"/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"})
    watcher = api.as_user("watcher", "pw")
    maker = api.as_user("maker", "pw")
    not_admin = (401, {"error": "not_authorised", "reason": "Not administrator user"})
    assert watcher.call("GET", "/users") == not_admin
    assert watcher.call("PUT", "/vhosts/sneaky") == not_admin
    assert maker.call("PUT", "/users/x", {"password": "x"}) == not_admin
    policy = {"pattern": "^p\\.", "definition": {"message-ttl": 1000}}
    assert watcher.call("PUT", "/policies/%2F/ttl", policy) == (
        401,
        {"error": "not_authorised", "reason": "User not authorised to access object"},
    )
    assert maker.call("PUT", "/policies/%2F/ttl", policy)[0] == 201
    assert maker.call("DELETE", "/policies/%2F/ttl")[0] == 204
    assert [v["name"] for v in watcher.call("GET", "/vhosts")[1]] == ["/"]
    for name in ("watcher", "maker"):
        api.call("DELETE", f"/users/{name}")


def test_users_permissions_and_policies_survive_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    first = DataDirBroker(data_dir).start()
    try:
        api = Api(listener_port(first, "http"))
        api.call("PUT", "/users/erin", {"password": "pw", "tags": "management"})
        api.call("PUT", "/vhosts/kept")
        api.call("PUT", "/permissions/kept/erin", {"configure": ".*", "write": ".*", "read": "^r"})
        api.call("PUT", "/policies/kept/ttl", {"pattern": ".*", "definition": {"message-ttl": 60000}})
    finally:
        first.stop()
    second = DataDirBroker(data_dir).start()
    try:
        api = Api(listener_port(second, "http"))
        assert api.call("GET", "/users/erin")[1]["tags"] == ["management"]
        assert api.call("GET", "/permissions/kept/erin")[1]["read"] == "^r"
        assert api.call("GET", "/policies/kept/ttl")[1]["definition"] == {"message-ttl": 60000}
        connection = amqp(second, "erin", "pw", "kept")
        connection.close()
    finally:
        second.stop()


def test_queues_report_message_totals_and_rates(api, broker):
    connection = amqp(broker, "guest", "guest")
    try:
        channel = connection.channel()
        channel.queue_declare("counted")
        channel.confirm_delivery()
        status, before = api.call("GET", "/queues/%2F/counted")
        assert status == 200
        assert before["message_stats"]["publish"] == 0
        assert before["messages_details"] == {"rate": 0.0}
        for n in range(10):
            channel.basic_publish("", "counted", b"m%d" % n)
        for _ in range(4):
            method, _, _ = channel.basic_get("counted")
            channel.basic_ack(method.delivery_tag)
        channel.basic_get("counted", auto_ack=True)
        # The acks reach the queue before this round trip is answered.
        channel.queue_declare("counted", passive=True)
        _, after = api.call("GET", "/queues/%2F/counted")
        stats = after["message_stats"]
        assert (stats["publish"], stats["deliver_get"], stats["ack"], stats["redeliver"]) == (10, 5, 4, 0)
        # Measured against the earlier request: messages came in and the queue grew.
        assert stats["publish_details"]["rate"] > 0
        assert stats["deliver_get_details"]["rate"] > 0
        assert after["messages_details"]["rate"] > 0
        assert after["messages"] == 5
        channel.queue_delete("counted")
    finally:
        connection.close()


def test_the_overview_measures_queue_depth_and_churn_rates(api, broker):
    declaring = amqp(broker, "guest", "guest")
    declaring.channel().queue_declare("overview-depth")
    declaring.close()
    # The first sample: rates compare later requests with it.
    api.call("GET", "/overview")
    connection = amqp(broker, "guest", "guest")
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for n in range(20):
            channel.basic_publish("", "overview-depth", b"%d" % n)
        _, overview = api.call("GET", "/overview")
        assert overview["queue_totals"]["messages_ready_details"]["rate"] > 0
        assert overview["churn_rates"]["connection_created_details"]["rate"] > 0
        assert overview["churn_rates"]["channel_created_details"]["rate"] > 0
        channel.queue_delete("overview-depth")
    finally:
        connection.close()


@pytest.fixture
def scoped_vhost(api):
    """A vhost with two exchanges, a queue and bindings to each, and four users in RabbitMQ's
    roles: monitoring and management, each without permissions there and with them (all of
    them have permissions in `/`)."""
    vhost = "scoped"
    assert api.call("PUT", f"/vhosts/{vhost}")[0] == 201
    full = {"configure": ".*", "write": ".*", "read": ".*"}
    users = {
        "blind_monitor": "monitoring",
        "monitor": "monitoring",
        "blind_manager": "management",
        "manager": "management",
    }
    for name, tag in users.items():
        api.call("PUT", f"/users/{name}", {"password": "pw", "tags": tag})
        api.call("PUT", f"/permissions/%2F/{name}", full)
    for name in ("monitor", "manager"):
        api.call("PUT", f"/permissions/{vhost}/{name}", full)
    assert api.call("PUT", f"/exchanges/{vhost}/ex", {"type": "direct"})[0] == 201
    assert api.call("PUT", f"/exchanges/{vhost}/ex2", {"type": "fanout"})[0] == 201
    assert api.call("PUT", f"/queues/{vhost}/q", {"durable": False})[0] == 201
    assert api.call("POST", f"/bindings/{vhost}/e/ex/q/q", {"routing_key": "k"})[0] == 201
    assert api.call("POST", f"/bindings/{vhost}/e/ex/e/ex2", {"routing_key": "k2"})[0] == 201
    yield vhost, {name: api.as_user(name, "pw") for name in users}
    api.call("DELETE", f"/vhosts/{vhost}")
    for name in users:
        api.call("DELETE", f"/users/{name}")


# GETs for which RabbitMQ asks for access to the vhost itself, not that the user may see it.
VHOST_SCOPED_OBJECTS = [
    "/queues/{v}",
    "/queues/{v}/q",
    "/queues/{v}/q/bindings",
    "/exchanges/{v}",
    "/exchanges/{v}/ex",
    "/exchanges/{v}/ex/bindings/source",
    "/exchanges/{v}/ex2/bindings/destination",
    "/bindings/{v}",
    "/bindings/{v}/e/ex/q/q",
    "/bindings/{v}/e/ex/q/q/k",
    "/bindings/{v}/e/ex/e/ex2",
    "/bindings/{v}/e/ex/e/ex2/k2",
]


def test_a_monitoring_user_needs_permissions_in_a_vhost_to_read_its_objects(scoped_vhost):
    vhost, users = scoped_vhost
    refused = (
        401,
        {"error": "not_authorised", "reason": "User not authorised to access virtual host"},
    )
    for path in VHOST_SCOPED_OBJECTS + ["/queues/{v}/nope", "/exchanges/{v}/nope"]:
        assert users["blind_monitor"].call("GET", path.format(v=vhost)) == refused, path
    for path in VHOST_SCOPED_OBJECTS:
        for name in ("monitor", "manager"):
            assert users[name].call("GET", path.format(v=vhost))[0] == 200, (name, path)
    # The vhost is looked up before the user's access to it is checked.
    assert users["blind_monitor"].call("GET", "/queues/no-such-vhost")[0] == 404


def test_a_monitoring_user_sees_the_consumers_of_a_vhost_it_has_no_permissions_in(
    broker, scoped_vhost
):
    vhost, users = scoped_vhost
    connection = amqp(broker, "guest", "guest", vhost)
    try:
        connection.channel().basic_consume("q", lambda *_: None, consumer_tag="seen")

        def listed():
            status, consumers = users["blind_monitor"].call("GET", f"/consumers/{vhost}")
            assert status == 200
            return [c["consumer_tag"] for c in consumers]

        assert wait_until(listed, what="guest's consumer listed") == ["seen"]
    finally:
        connection.close()


def test_unscoped_listings_show_a_monitor_the_objects_of_its_own_vhosts_only(
    broker, api, scoped_vhost
):
    vhost, users = scoped_vhost
    # A queue in `/` too, where every user has permissions, so each listing has something.
    assert api.call("PUT", "/queues/%2F/in-root", {})[0] in (201, 204)
    connection = amqp(broker, "guest", "guest", vhost)
    try:
        connection.channel().basic_consume("q", lambda *_: None, consumer_tag="guests")

        def vhosts_in(user, path):
            status, items = users[user].call("GET", path)
            assert status == 200, (user, path)
            return {item["queue"]["vhost"] if path == "/consumers" else item["vhost"]
                    for item in items}

        wait_until(lambda: vhost in vhosts_in("blind_monitor", "/consumers"),
                   what="guest's consumer listed")
        for path in ("/queues", "/exchanges", "/bindings"):
            assert vhost not in vhosts_in("blind_monitor", path), path
            assert "/" in vhosts_in("blind_monitor", path), path
            assert vhost in vhosts_in("monitor", path), path
        # Connections, channels and consumers are not filtered by vhost: a monitor sees all.
        for path in ("/connections", "/channels", "/consumers"):
            assert vhost in vhosts_in("blind_monitor", path), path
            assert vhost not in vhosts_in("manager", path), path
        assert vhost in [v["name"] for v in users["blind_monitor"].call("GET", "/vhosts")[1]]
    finally:
        connection.close()
        api.call("DELETE", "/queues/%2F/in-root")


def test_the_consumers_of_a_vhost_are_the_users_own_unless_it_monitors(broker, scoped_vhost):
    vhost, users = scoped_vhost
    guests = amqp(broker, "guest", "guest", vhost)
    managers = amqp(broker, "manager", "pw", vhost)
    try:
        guests.channel().basic_consume("q", lambda *_: None, consumer_tag="guests")
        managers.channel().basic_consume("q", lambda *_: None, consumer_tag="managers")

        def tags(user, path=f"/consumers/{vhost}"):
            status, consumers = users[user].call("GET", path)
            assert status == 200, (user, path, consumers)
            return sorted(c["consumer_tag"] for c in consumers)

        both = ["guests", "managers"]
        assert wait_until(lambda: tags("monitor") == both, what="both consumers listed")
        assert tags("blind_monitor") == both
        assert tags("manager") == ["managers"]
        assert tags("manager", "/consumers") == ["managers"]
        # Only the vhost's existence is checked, not the user's permissions in it.
        assert tags("blind_manager") == []
        not_found = (404, {"error": "Object Not Found", "reason": "Not Found"})
        assert users["blind_manager"].call("GET", "/consumers/no-such-vhost") == not_found
        # A queue shows everyone's consumers to whoever may see the queue.
        status, queue = users["manager"].call("GET", f"/queues/{vhost}/q")
        assert status == 200
        assert sorted(c["consumer_tag"] for c in queue["consumer_details"]) == both
    finally:
        guests.close()
        managers.close()


def test_bindings_between_unknown_exchanges_or_queues_are_an_empty_list(scoped_vhost):
    vhost, users = scoped_vhost
    manager = users["manager"]
    for path in (
        "/bindings/{v}/e/nope/q/q",
        "/bindings/{v}/e/ex/q/nope",
        "/bindings/{v}/e/nope/q/nope",
        "/bindings/{v}/e/nope/e/ex2",
        "/bindings/{v}/e/ex/e/nope",
        "/bindings/{v}/e/nope/e/ex2?page=1",
        "/bindings/no-such-vhost/e/ex/q/q",
    ):
        assert manager.call("GET", path.format(v=vhost)) == (200, []), path
    # Not paged, as RabbitMQ answers this listing.
    status, bindings = manager.call("GET", f"/bindings/{vhost}/e/ex/q/q?page=1")
    assert (status, [b["routing_key"] for b in bindings]) == (200, ["k"])
    # A binding named in full is still not found, and the vhost's access check still applies.
    not_found = (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert manager.call("GET", f"/bindings/{vhost}/e/nope/q/q/k") == not_found
    assert manager.call("DELETE", f"/bindings/{vhost}/e/ex/q/nope/k") == not_found
    assert users["blind_manager"].call("GET", f"/bindings/{vhost}/e/nope/q/q")[0] == 401


def test_only_administrators_may_read_a_single_vhost(api, scoped_vhost):
    vhost, users = scoped_vhost
    not_admin = (401, {"error": "not_authorised", "reason": "Not administrator user"})
    for user in users.values():
        for name in (vhost, "%2F", "no-such-vhost"):
            assert user.call("GET", f"/vhosts/{name}") == not_admin, name
    assert api.call("GET", f"/vhosts/{vhost}")[0] == 200
    assert api.call("GET", "/vhosts/no-such-vhost")[0] == 404
    # The listing is not so guarded: a monitor sees every vhost in it.
    assert vhost in [v["name"] for v in users["blind_monitor"].call("GET", "/vhosts")[1]]
