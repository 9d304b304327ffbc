//! The list_* commands against a fake management API: the API's JSON (as RabbitMQ 3.10's
//! management plugin answers) in, rabbitmqctl 3.10's exact output (captured from it) out.

mod support;

use serde_json::{json, Value};
use support::FakeApi;

fn queues_api() -> Value {
    json!([
        {"name": "q2", "vhost": "/", "durable": false, "auto_delete": false, "exclusive": false,
         "arguments": {"x-message-ttl": 60000, "x-queue-type": "classic"},
         "messages": 1, "messages_ready": 0, "messages_unacknowledged": 1, "consumers": 1,
         "memory": 35064, "state": "running", "type": "classic", "policy": null},
        {"name": "q1", "vhost": "/", "durable": true, "auto_delete": false, "exclusive": false,
         "arguments": {}, "messages": 3, "messages_ready": 3, "messages_unacknowledged": 0,
         "consumers": 0, "memory": 55616, "state": "running", "type": "classic"}
    ])
}

fn queues_fake() -> FakeApi {
    let api = FakeApi::start();
    api.route("GET", "/api/queues/%2F", 200, queues_api());
    api
}

#[test]
fn list_queues_reads_like_rabbitmqctl() {
    let api = queues_fake();
    let run = api.ctl(&["list_queues"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nname\tmessages\nq2\t1\nq1\t3\n"
    );
    assert_eq!(run.stderr, "");
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/queues/%2F");
    assert_eq!(requests[0].headers["authorization"], support::GUEST_AUTH);
}

#[test]
fn list_queues_quiet_silent_and_headerless() {
    let api = queues_fake();
    // -q drops the informational lines but, as in rabbitmqctl, keeps the header.
    assert_eq!(
        api.ctl(&["list_queues", "-q"]).stdout,
        "name\tmessages\nq2\t1\nq1\t3\n"
    );
    assert_eq!(api.ctl(&["-s", "list_queues"]).stdout, "q2\t1\nq1\t3\n");
    assert_eq!(
        api.ctl(&["list_queues", "--no-table-headers"]).stdout,
        "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nq2\t1\nq1\t3\n"
    );
    assert_eq!(
        api.ctl(&["list_queues", "--timeout", "5"])
            .stdout
            .lines()
            .next(),
        Some("Timeout: 5.0 seconds ...")
    );
}

#[test]
fn list_queues_selected_columns() {
    let api = queues_fake();
    let run = api.ctl(&[
        "list_queues",
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "durable",
        "auto_delete",
        "exclusive",
        "arguments",
        "memory",
        "state",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\n\
         name\tmessages_ready\tmessages_unacknowledged\tconsumers\tdurable\tauto_delete\texclusive\targuments\tmemory\tstate\n\
         q2\t0\t1\t1\tfalse\tfalse\tfalse\t[{\"x-message-ttl\",60000},{\"x-queue-type\",\"classic\"}]\t35064\trunning\n\
         q1\t3\t0\t0\ttrue\tfalse\tfalse\t[]\t55616\trunning\n"
    );
    // Comma-separated names work too, and the policy of a queue without one is empty.
    assert_eq!(
        api.ctl(&["-q", "list_queues", "name,policy"]).stdout,
        "name\tpolicy\nq2\t\nq1\t\n"
    );
}

#[test]
fn list_queues_json_and_tsv() {
    let api = queues_fake();
    assert_eq!(
        api.ctl(&["list_queues", "--formatter", "json"]).stdout,
        "[\n{\"name\":\"q2\",\"messages\":1}\n,{\"name\":\"q1\",\"messages\":3}\n]\n"
    );
    assert_eq!(
        api.ctl(&["list_queues", "--formatter", "json", "name", "arguments", "durable", "state", "memory"]).stdout,
        "[\n{\"name\":\"q2\",\"arguments\":[[\"x-message-ttl\",\"signedint\",60000],[\"x-queue-type\",\"longstr\",\"classic\"]],\"durable\":false,\"state\":\"running\",\"memory\":35064}\n\
         ,{\"name\":\"q1\",\"arguments\":[],\"durable\":true,\"state\":\"running\",\"memory\":55616}\n]\n"
    );
    assert_eq!(
        api.ctl(&[
            "list_queues",
            "--formatter",
            "tsv",
            "name",
            "messages_ready"
        ])
        .stdout,
        "name\tmessages_ready\nq2\t0\nq1\t3\n"
    );
}

#[test]
fn unknown_columns_are_a_usage_error() {
    let api = queues_fake();
    let run = api.ctl(&["list_queues", "name", "bogus", "other"]);
    assert_eq!(run.code, 64, "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "Error (argument validation): Info key(s) bogus,other are not supported\n"
    );
    assert!(api.requests().is_empty());
}

#[test]
fn missing_vhost_lists_nothing_or_fails_as_rabbitmqctl_does() {
    let api = FakeApi::start(); // every path answers 404
    let run = api.ctl(&["list_queues", "-p", "nov"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Timeout: 60.0 seconds ...\nListing queues for vhost nov ...\n"
    );
    assert_eq!(api.requests()[0].path, "/api/queues/nov");
    assert_eq!(
        api.ctl(&["list_consumers", "-p", "nov", "--formatter", "json"])
            .stdout,
        "[\n]\n"
    );

    for command in ["list_permissions", "list_policies"] {
        let run = api.ctl(&[command, "-p", "nov"]);
        assert_eq!(run.code, 65, "{command}: {run:?}");
        assert_eq!(
            run.stderr, "Virtual host 'nov' does not exist\n",
            "{command}"
        );
    }
}

/// (arguments, API path, API answer, expected stdout) for each remaining list command.
fn cases() -> Vec<(Vec<&'static str>, &'static str, Value, &'static str)> {
    let connection = json!({
        "name": "127.0.0.1:34074 -> 127.0.0.1:5698", "user": "guest", "vhost": "/",
        "peer_host": "127.0.0.1", "peer_port": 34074, "host": "127.0.0.1", "port": 5698,
        "state": "running", "protocol": "AMQP 0-9-1", "ssl": false, "timeout": 60,
        "peer_cert_subject": null, "connected_at": 1795990985663_u64,
        "client_properties": {"product": "Pika Python Client Library",
                              "capabilities": {"basic.nack": true}}
    });
    vec![
        (
            vec!["list_exchanges"],
            "/api/exchanges/%2F",
            json!([{"name": "", "type": "direct", "durable": true, "auto_delete": false, "internal": false, "arguments": {}},
                   {"name": "amq.topic", "type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}]),
            "Listing exchanges for vhost / ...\nname\ttype\n\tdirect\namq.topic\ttopic\n",
        ),
        (
            vec!["list_exchanges", "name", "durable", "internal", "arguments", "policy"],
            "/api/exchanges/%2F",
            json!([{"name": "amq.rabbitmq.trace", "type": "topic", "durable": true, "auto_delete": false, "internal": true, "arguments": {}}]),
            "Listing exchanges for vhost / ...\nname\tdurable\tinternal\targuments\tpolicy\namq.rabbitmq.trace\ttrue\ttrue\t[]\t\n",
        ),
        (
            vec!["list_bindings"],
            "/api/bindings/%2F",
            json!([{"source": "", "vhost": "/", "destination": "q1", "destination_type": "queue", "routing_key": "q1", "arguments": {}, "properties_key": "q1"},
                   {"source": "ex1", "vhost": "/", "destination": "q1", "destination_type": "queue", "routing_key": "a.#", "arguments": {"k": "v"}, "properties_key": "a.%23~8IXMRA"}]),
            "Listing bindings for vhost /...\n\
             source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments\n\
             \texchange\tq1\tqueue\tq1\t[]\n\
             ex1\texchange\tq1\tqueue\ta.#\t[{\"k\",\"v\"}]\n",
        ),
        (
            vec!["list_bindings", "--formatter", "json"],
            "/api/bindings/%2F",
            json!([{"source": "ex1", "vhost": "/", "destination": "q1", "destination_type": "queue", "routing_key": "a.#", "arguments": {"k": "v"}}]),
            "[\n{\"source_name\":\"ex1\",\"source_kind\":\"exchange\",\"destination_name\":\"q1\",\"destination_kind\":\"queue\",\"routing_key\":\"a.#\",\"arguments\":[[\"k\",\"longstr\",\"v\"]]}\n]\n",
        ),
        (
            vec!["list_connections"],
            "/api/connections",
            json!([connection.clone()]),
            "Listing connections ...\nuser\tpeer_host\tpeer_port\tstate\nguest\t127.0.0.1\t34074\trunning\n",
        ),
        (
            vec!["list_connections", "name", "protocol", "client_properties", "connected_at", "ssl", "timeout", "peer_cert_subject"],
            "/api/connections",
            json!([connection.clone()]),
            "Listing connections ...\nname\tprotocol\tclient_properties\tconnected_at\tssl\ttimeout\tpeer_cert_subject\n\
             127.0.0.1:34074 -> 127.0.0.1:5698\t{0,9,1}\t[{\"capabilities\",[{\"basic.nack\",true}]},{\"product\",\"Pika Python Client Library\"}]\t1795990985663\tfalse\t60\t\n",
        ),
        (
            vec!["list_connections", "--formatter", "json", "protocol", "peer_host", "client_properties"],
            "/api/connections",
            json!([connection]),
            "[\n{\"protocol\":[0,9,1],\"peer_host\":[127,0,0,1],\"client_properties\":[[\"capabilities\",\"table\",[[\"basic.nack\",\"bool\",true]]],[\"product\",\"longstr\",\"Pika Python Client Library\"]]}\n]\n",
        ),
        (
            vec!["list_channels"],
            "/api/channels",
            json!([{"name": "127.0.0.1:34074 -> 127.0.0.1:5698 (1)", "number": 1, "user": "guest", "vhost": "/",
                    "consumer_count": 1, "messages_unacknowledged": 1, "prefetch_count": 0, "confirm": false,
                    "connection_details": {"name": "127.0.0.1:34074 -> 127.0.0.1:5698"}}]),
            "Listing channels ...\npid\tuser\tconsumer_count\tmessages_unacknowledged\n\
             127.0.0.1:34074 -> 127.0.0.1:5698 (1)\tguest\t1\t1\n",
        ),
        (
            vec!["list_channels", "-q", "connection", "number", "confirm", "prefetch_count"],
            "/api/channels",
            json!([{"name": "c (1)", "number": 1, "confirm": true, "prefetch_count": 10,
                    "connection_details": {"name": "c"}}]),
            "connection\tnumber\tconfirm\tprefetch_count\nc\t1\ttrue\t10\n",
        ),
        (
            vec!["list_consumers"],
            "/api/consumers/%2F",
            json!([{"arguments": {}, "ack_required": true, "active": true, "activity_status": "up",
                    "channel_details": {"name": "127.0.0.1:53556 -> 127.0.0.1:5698 (1)", "number": 1},
                    "consumer_tag": "ctag1", "exclusive": false, "prefetch_count": 0,
                    "queue": {"name": "q2", "vhost": "/"}}]),
            "Listing consumers in vhost / ...\n\
             queue_name\tchannel_pid\tconsumer_tag\tack_required\tprefetch_count\tactive\targuments\n\
             q2\t127.0.0.1:53556 -> 127.0.0.1:5698 (1)\tctag1\ttrue\t0\ttrue\t[]\n",
        ),
        (
            vec!["list_users"],
            "/api/users",
            json!([{"name": "bob", "password_hash": "x", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["monitoring", "management"], "limits": {}},
                   {"name": "guest", "password_hash": "y", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}}]),
            "Listing users ...\nuser\ttags\nbob\t[monitoring, management]\nguest\t[administrator]\n",
        ),
        (
            vec!["list_users", "--formatter", "json"],
            "/api/users",
            // Before RabbitMQ 3.9 the API gave tags as one comma-separated string.
            json!([{"name": "bob", "tags": "monitoring,management"}, {"name": "zed", "tags": []}]),
            "[\n{\"user\":\"bob\",\"tags\":[\"monitoring\",\"management\"]}\n,{\"user\":\"zed\",\"tags\":[]}\n]\n",
        ),
        (
            vec!["list_vhosts"],
            "/api/vhosts",
            json!([{"name": "/", "description": "Default virtual host", "tags": [], "tracing": false},
                   {"name": "v2", "description": "", "tags": [], "tracing": false}]),
            "Listing vhosts ...\nname\n/\nv2\n",
        ),
        (
            vec!["list_vhosts", "name", "tracing", "description", "tags", "default_queue_type", "cluster_state"],
            "/api/vhosts",
            json!([{"name": "/", "description": "Default virtual host", "tags": [], "tracing": false,
                    "default_queue_type": "undefined", "cluster_state": {"rmq5698@localhost": "running"}}]),
            "Listing vhosts ...\nname\ttracing\tdescription\ttags\tdefault_queue_type\tcluster_state\n\
             /\tfalse\tDefault virtual host\t[]\tundefined\t[{rmq5698@localhost, running}]\n",
        ),
        (
            vec!["list_permissions"],
            "/api/vhosts/%2F/permissions",
            json!([{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]),
            "Listing permissions for vhost \"/\" ...\nuser\tconfigure\twrite\tread\nguest\t.*\t.*\t.*\n",
        ),
        (
            vec!["list_policies"],
            "/api/policies/%2F",
            json!([{"vhost": "/", "name": "pol1", "pattern": "^q", "apply-to": "queues", "definition": {"max-length": 10}, "priority": 3}]),
            "Listing policies for vhost \"/\" ...\nvhost\tname\tpattern\tapply-to\tdefinition\tpriority\n\
             /\tpol1\t^q\tqueues\t{\"max-length\":10}\t3\n",
        ),
        (
            vec!["list_policies", "--formatter", "json"],
            "/api/policies/%2F",
            json!([{"vhost": "/", "name": "p2", "pattern": "^x", "apply-to": "all", "definition": {"message-ttl": 1000}, "priority": 0}]),
            "[\n{\"vhost\":\"/\",\"name\":\"p2\",\"pattern\":\"^x\",\"apply-to\":\"all\",\"definition\":\"{\\\"message-ttl\\\":1000}\",\"priority\":0}\n]\n",
        ),
    ]
}

#[test]
fn every_list_command_reads_like_rabbitmqctl() {
    for (args, path, answer, expected) in cases() {
        let api = FakeApi::start();
        api.route("GET", path, 200, answer);
        let run = api.ctl(&args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert_eq!(run.stdout, expected, "{args:?}");
        assert_eq!(run.stderr, "", "{args:?}");
    }
}

#[test]
fn vhost_option_scopes_the_request() {
    let api = FakeApi::start();
    api.route("GET", "/api/exchanges/my%2Fvhost", 200, json!([]));
    let run = api.ctl(&["list_exchanges", "--vhost", "my/vhost"]);
    assert_eq!(run.code, 0, "{run:?}");
    // An empty listing has no header, as in rabbitmqctl.
    assert_eq!(run.stdout, "Listing exchanges for vhost my/vhost ...\n");
    assert_eq!(api.requests()[0].path, "/api/exchanges/my%2Fvhost");
}
