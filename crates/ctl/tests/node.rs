//! The broker as a whole, against a fake management API or none: a broker that is down,
//! wrong credentials, status, await_startup, stop, definitions, help and usage errors.

mod support;

use std::process::Stdio;

use serde_json::{json, Value};
use support::{free_port, run_ctl, FakeApi};

#[test]
fn broker_down_is_one_line_and_exit_69() {
    let port = free_port();
    for args in [
        vec!["list_queues"],
        vec!["add_user", "u", "p"],
        vec!["delete_queue", "q"],
        vec!["status"],
        vec!["export_definitions", "-"],
        vec!["stop"],
    ] {
        let run = run_ctl(port, &args, None);
        assert_eq!(run.code, 69, "{args:?}: {run:?}");
        assert_eq!(
            run.stdout, "",
            "{args:?}: no informational lines before the error"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
        assert!(
            run.stderr.starts_with(&format!(
                "Error: unable to connect to the management API at http://127.0.0.1:{port}: "
            )),
            "{args:?}: {run:?}"
        );
        assert!(run.stderr.contains("refused"), "{args:?}: {run:?}");
    }
}

#[test]
fn wrong_credentials_exit_77() {
    let api = FakeApi::start();
    let run = api.ctl(&["--password", "wrong", "list_queues"]);
    assert_eq!(run.code, 77, "{run:?}");
    assert_eq!(
        run.stderr,
        "Error: GET /api/queues/%2F answered 401 Unauthorized: Login failed\n"
    );
}

#[test]
fn server_errors_exit_69_with_the_reason() {
    let api = FakeApi::start();
    api.route(
        "GET",
        "/api/users",
        500,
        json!({"error": "internal", "reason": "boom"}),
    );
    let run = api.ctl(&["list_users"]);
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(
        run.stderr,
        "Error: GET /api/users answered 500 Internal Server Error: boom\n"
    );
}

fn status_fake() -> FakeApi {
    let api = FakeApi::start();
    api.route(
        "GET",
        "/api/overview",
        200,
        json!({"node": "warren@h", "product_name": "Warren", "product_version": "0.1.0",
               "object_totals": {"connections": 2, "queues": 3, "exchanges": 7},
               "listeners": [{"node": "warren@h", "protocol": "amqp", "ip_address": "0.0.0.0", "port": 5672},
                             {"node": "warren@h", "protocol": "http", "ip_address": "::", "port": 15672}]}),
    );
    api.route(
        "GET",
        "/api/nodes",
        200,
        json!([{"name": "warren@h", "os_pid": "4242", "uptime": 12_500, "mem_used": 134_090_752,
                "mem_limit": 10_110_604_083_u64, "mem_alarm": false, "disk_free_alarm": false,
                "disk_free": 67_684_356_096_u64, "disk_free_limit": 50_000_000,
                "fd_used": 43, "fd_total": 1024, "db_dir": "/var/lib/warren"}]),
    );
    api.route(
        "GET",
        "/api/vhosts",
        200,
        json!([{"name": "/"}, {"name": "v2"}]),
    );
    api
}

#[test]
fn status_text_and_json() {
    let api = status_fake();
    let run = api.ctl(&["status"]);
    assert_eq!(run.code, 0, "{run:?}");
    for line in [
        "Status of node warren@h ...",
        "OS PID: 4242",
        "Uptime (seconds): 12",
        "Product name: Warren",
        "Node data directory: /var/lib/warren",
        "(none)",
        "Total memory used: 0.1341 gb",
        "Free disk space: 67.6844 gb",
        "Connection count: 2",
        "Queue count: 3",
        "Virtual host count: 2",
        "Interface: 0.0.0.0, port: 5672, protocol: amqp, purpose: AMQP 0-9-1 and AMQP 1.0",
        "Interface: [::], port: 15672, protocol: http, purpose: HTTP API",
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }

    let json_run = api.ctl(&["status", "--formatter", "json"]);
    assert_eq!(json_run.code, 0, "{json_run:?}");
    let status: Value = serde_json::from_str(&json_run.stdout).expect("status JSON");
    assert_eq!(status["pid"], 4242);
    assert_eq!(status["totals"]["virtual_host_count"], 2);
    assert_eq!(status["listeners"][1]["interface"], "[::]");
}

#[test]
fn await_startup_waits_for_the_api() {
    let port = free_port();
    let child = support::ctl_command(port, &["await_startup", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warrenctl");
    // The broker comes up after warrenctl started waiting for it.
    let api = FakeApi::start_on(port);
    api.route("GET", "/api/overview", 200, json!({"node": "warren@h"}));
    let run = support::finish(child.wait_with_output().expect("await_startup ends"));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(api.requests().iter().any(|r| r.path == "/api/overview"));
}

#[test]
fn await_startup_gives_up_at_the_timeout() {
    let port = free_port();
    let run = run_ctl(port, &["await_startup", "--timeout", "0.5"], None);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "Error: the management API at http://127.0.0.1:{port} did not come up within 0.5 seconds: "
        )),
        "{run:?}"
    );
}

#[test]
fn await_startup_does_not_wait_on_wrong_credentials() {
    let api = FakeApi::start();
    let run = api.ctl(&["await_startup", "--password", "wrong"]);
    assert_eq!(run.code, 77, "{run:?}");
}

#[test]
fn stop_asks_warren_and_waits_until_it_is_gone() {
    let api = FakeApi::start();
    api.route("GET", "/api/overview", 200, json!({"node": "warren@h"}));
    api.route_then_shut_down("POST", "/api/warren/stop", 202);
    let run = api.ctl(&["stop"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "Stopping and halting node warren@h ...\n");
    assert!(api
        .changes()
        .iter()
        .any(|r| r.method == "POST" && r.path == "/api/warren/stop"));
}

#[test]
fn stop_against_rabbitmq_says_it_cannot() {
    let api = FakeApi::start();
    api.route("GET", "/api/overview", 200, json!({"node": "rabbit@h"}));
    api.route("POST", "/api/warren/stop", 405, Value::Null);
    let run = api.ctl(&["stop"]);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("cannot be stopped over HTTP"),
        "{run:?}"
    );
}

#[test]
fn stop_idempotent_succeeds_when_already_down() {
    let port = free_port();
    let run = run_ctl(port, &["stop", "--idempotent"], None);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        format!(
            "Stopping and halting node http://127.0.0.1:{port} ...\nNode http://127.0.0.1:{port} is no longer running\n"
        )
    );
}

#[test]
fn export_definitions_to_a_file_and_stdout() {
    let api = FakeApi::start();
    let definitions = json!({"rabbit_version": "3.10.8", "users": [{"name": "guest", "tags": ["administrator"]}],
                             "vhosts": [{"name": "/"}], "queues": [], "bindings": []});
    api.route("GET", "/api/definitions", 200, definitions.clone());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("defs.json");
    let file_name = file.to_str().expect("utf-8 path");

    let run = api.ctl(&["export_definitions", file_name]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        format!("Exporting definitions in JSON to a file at \"{file_name}\" ...\n")
    );
    // Compact, keys sorted, no final newline: rabbitmqctl's bytes.
    let written = std::fs::read_to_string(&file).expect("exported file");
    assert_eq!(written, definitions.to_string());
    assert!(written.starts_with("{\"bindings\":[]"));

    let stdout = api.ctl(&["export_definitions", "-"]);
    assert_eq!((stdout.code, stdout.stdout.as_str()), (0, written.as_str()));
}

#[test]
fn import_definitions_from_a_file_and_stdin() {
    let api = FakeApi::start();
    api.route("POST", "/api/definitions", 204, Value::Null);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("defs.json");
    let text = r#"{"vhosts":[{"name":"v1"}],"users":[]}"#;
    std::fs::write(&file, text).expect("write defs");
    let file_name = file.to_str().expect("utf-8 path");

    let run = api.ctl(&["import_definitions", file_name]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        format!(
            "Importing definitions in JSON from a file at \"{file_name}\" ...\n\
             Successfully started definition import. This process is asynchronous and can take some time.\n"
        )
    );
    assert_eq!(api.changes()[0].body, text);

    let piped = api.ctl_with_stdin(&["-q", "import_definitions", "-"], text);
    assert_eq!((piped.code, piped.stdout.as_str()), (0, ""), "{piped:?}");
    assert_eq!(api.changes().len(), 2);

    let missing = api.ctl(&["import_definitions", "/nonexistent/defs.json"]);
    assert_eq!(missing.code, 65, "{missing:?}");
    assert_eq!(
        missing.stderr,
        "Error (argument validation): Bad argument: File /nonexistent/defs.json does not exist\n"
    );

    std::fs::write(&file, "{bad").expect("write bad defs");
    let bad = api.ctl(&["import_definitions", file_name]);
    assert_eq!(bad.code, 65, "{bad:?}");
    assert!(
        bad.stderr
            .starts_with("Error:\nFailed to deserialise input (format: JSON) (error: "),
        "{bad:?}"
    );
    assert_eq!(api.changes().len(), 2, "a broken file is not sent");

    api.route(
        "POST",
        "/api/definitions",
        400,
        json!({"error": "bad_request", "reason": "failed_to_parse_json"}),
    );
    std::fs::write(&file, text).expect("rewrite defs");
    let refused = api.ctl(&["import_definitions", file_name]);
    assert_eq!(
        (refused.code, refused.stderr.as_str()),
        (65, "Error:\nfailed_to_parse_json\n")
    );
}

#[test]
fn help_documents_every_command() {
    let run = run_ctl(free_port(), &["--help"], None);
    assert_eq!(run.code, 0, "{run:?}");
    for command in [
        "list_queues",
        "list_exchanges",
        "list_bindings",
        "list_connections",
        "list_channels",
        "list_consumers",
        "list_users",
        "list_vhosts",
        "list_permissions",
        "list_policies",
        "add_user",
        "delete_user",
        "change_password",
        "set_user_tags",
        "set_permissions",
        "clear_permissions",
        "add_vhost",
        "delete_vhost",
        "set_policy",
        "clear_policy",
        "purge_queue",
        "delete_queue",
        "close_connection",
        "export_definitions",
        "import_definitions",
        "status",
        "await_startup",
        "stop",
    ] {
        assert!(
            run.stdout.contains(&format!("  {command} ")),
            "{command} missing from --help"
        );
        let help = run_ctl(free_port(), &["help", command], None);
        assert_eq!(help.code, 0, "help {command}: {help:?}");
        assert!(
            help.stdout.contains(&format!("warrenctl {command}")),
            "help {command}: {help:?}"
        );
    }
    let list_help = run_ctl(free_port(), &["help", "list_queues"], None);
    assert!(
        list_help.stdout.contains("name, policy, state, type"),
        "{list_help:?}"
    );
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        vec!["bogus"],
        vec!["list_queues", "--formatter", "xml"],
        vec!["add_user", "only-name"],
    ] {
        let run = run_ctl(free_port(), &args, None);
        assert_eq!(run.code, 64, "{args:?}: {run:?}");
    }
}

#[test]
fn node_forms_reach_the_same_api() {
    let api = FakeApi::start();
    api.route("GET", "/api/vhosts", 200, json!([{"name": "/"}]));
    let port = api.port().to_string();
    for node in [
        format!("rabbit@127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/"),
        format!("127.0.0.1:{port}"),
    ] {
        let run = support::finish(
            std::process::Command::new(env!("CARGO_BIN_EXE_warrenctl"))
                .args(["--node", &node, "-q", "list_vhosts"])
                .env_remove("WARRENCTL_PORT")
                .output()
                .expect("run warrenctl"),
        );
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "name\n/\n"),
            "{node}: {run:?}"
        );
    }
}
