//! Commands that change the broker, against a fake management API: the requests they send
//! (method, path, body) and rabbitmqctl 3.10's messages and exit codes for each outcome.

mod support;

use serde_json::{json, Value};
use support::FakeApi;

fn body(request: &support::Recorded) -> Value {
    serde_json::from_str(&request.body).unwrap_or(Value::Null)
}

fn guest() -> Value {
    json!({"name": "u1", "password_hash": "HASH", "hashing_algorithm": "rabbit_password_hashing_sha256",
           "tags": ["monitoring", "management"], "limits": {}})
}

#[test]
fn add_user_creates_once() {
    let api = FakeApi::start();
    api.route("PUT", "/api/users/u1", 201, Value::Null);
    let run = api.ctl(&["add_user", "u1", "s3cret"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Adding user \"u1\" ...\nDone. Don't forget to grant the user permissions to some virtual hosts! \
         See 'warrenctl help set_permissions' to learn more.\n"
    );
    let changes = api.changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(body(&changes[0]), json!({"password": "s3cret", "tags": ""}));

    api.route("GET", "/api/users/u1", 200, guest());
    let again = api.ctl(&["add_user", "u1", "other"]);
    assert_eq!(again.code, 70, "{again:?}");
    assert_eq!(again.stdout, "Adding user \"u1\" ...\n");
    assert_eq!(again.stderr, "Error:\nUser \"u1\" already exists\n");
    assert_eq!(
        api.changes().len(),
        1,
        "an existing user is not overwritten"
    );

    assert_eq!(api.ctl(&["-q", "add_user", "u2", "x"]).stdout, "");
}

#[test]
fn delete_user_and_missing_user() {
    let api = FakeApi::start();
    api.route("DELETE", "/api/users/u1", 204, Value::Null);
    let run = api.ctl(&["delete_user", "u1"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "Deleting user \"u1\" ...\n"),
        "{run:?}"
    );
    let missing = api.ctl(&["delete_user", "nobody"]);
    assert_eq!(missing.code, 67, "{missing:?}");
    assert_eq!(missing.stderr, "Error:\nUser \"nobody\" does not exist\n");
}

#[test]
fn change_password_keeps_tags() {
    let api = FakeApi::start();
    api.route("GET", "/api/users/u1", 200, guest());
    api.route("PUT", "/api/users/u1", 204, Value::Null);
    let run = api.ctl(&["change_password", "u1", "new"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "Changing password for user \"u1\" ...\n");
    assert_eq!(
        body(&api.changes()[0]),
        json!({"password": "new", "tags": "monitoring,management"})
    );

    let missing = api.ctl(&["change_password", "nobody", "x"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (67, "Error:\nUser \"nobody\" does not exist\n")
    );
}

#[test]
fn set_user_tags_keeps_the_password() {
    let api = FakeApi::start();
    api.route("GET", "/api/users/u1", 200, guest());
    api.route("PUT", "/api/users/u1", 204, Value::Null);
    let run = api.ctl(&["set_user_tags", "u1", "administrator", "policymaker"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Setting tags for user \"u1\" to [administrator, policymaker] ...\n"
    );
    assert_eq!(
        body(&api.changes()[0]),
        json!({"password_hash": "HASH", "hashing_algorithm": "rabbit_password_hashing_sha256",
               "tags": "administrator,policymaker"})
    );
    let cleared = api.ctl(&["set_user_tags", "u1"]);
    assert_eq!(cleared.stdout, "Setting tags for user \"u1\" to [] ...\n");
    assert_eq!(body(&api.changes()[1])["tags"], "");
}

#[test]
fn set_and_clear_permissions() {
    let api = FakeApi::start();
    api.route("PUT", "/api/permissions/v1/u1", 201, Value::Null);
    let run = api.ctl(&["set_permissions", "-p", "v1", "u1", "^c", ".*", ""]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Setting permissions for user \"u1\" in vhost \"v1\" ...\n"
    );
    assert_eq!(
        body(&api.changes()[0]),
        json!({"configure": "^c", "write": ".*", "read": ""})
    );

    // The API says "vhost_or_user_not_found"; warrenctl finds out which, as rabbitmqctl says.
    let refused = json!({"error": "bad_request", "reason": "vhost_or_user_not_found"});
    api.route("PUT", "/api/permissions/nov/u1", 400, refused.clone());
    let no_vhost = api.ctl(&["set_permissions", "-p", "nov", "u1", ".*", ".*", ".*"]);
    assert_eq!(
        (no_vhost.code, no_vhost.stderr.as_str()),
        (69, "Error:\nVirtual host nov does not exist\n")
    );
    api.route("GET", "/api/vhosts/v1", 200, json!({"name": "v1"}));
    api.route("PUT", "/api/permissions/v1/nobody", 400, refused);
    let no_user = api.ctl(&["set_permissions", "-p", "v1", "nobody", ".*", ".*", ".*"]);
    assert_eq!(
        (no_user.code, no_user.stderr.as_str()),
        (67, "Error:\nUser nobody does not exist\n")
    );

    // Clearing permissions a user does not have is not an error; a missing user is.
    api.route("GET", "/api/users/u1", 200, guest());
    let clear = api.ctl(&["clear_permissions", "-p", "v1", "u1"]);
    assert_eq!(clear.code, 0, "{clear:?}");
    assert_eq!(
        clear.stdout,
        "Clearing permissions for user \"u1\" in vhost \"v1\" ...\n"
    );
    assert_eq!(
        api.changes()
            .last()
            .map(|r| (r.method.as_str(), r.path.as_str())),
        Some(("DELETE", "/api/permissions/v1/u1"))
    );
    let clear_missing = api.ctl(&["clear_permissions", "nobody"]);
    assert_eq!(
        (clear_missing.code, clear_missing.stderr.as_str()),
        (67, "Error:\nUser nobody does not exist\n")
    );
}

#[test]
fn vhosts() {
    let api = FakeApi::start();
    api.route("PUT", "/api/vhosts/v1", 201, Value::Null);
    api.route("DELETE", "/api/vhosts/v1", 204, Value::Null);
    let add = api.ctl(&["add_vhost", "v1", "--description", "staging"]);
    assert_eq!(
        (add.code, add.stdout.as_str()),
        (0, "Adding vhost \"v1\" ...\n"),
        "{add:?}"
    );
    assert_eq!(body(&api.changes()[0]), json!({"description": "staging"}));
    let delete = api.ctl(&["delete_vhost", "v1"]);
    assert_eq!(
        (delete.code, delete.stdout.as_str()),
        (0, "Deleting vhost \"v1\" ...\n"),
        "{delete:?}"
    );
    let missing = api.ctl(&["delete_vhost", "v9"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (65, "Virtual host 'v9' does not exist\n")
    );
}

#[test]
fn json_formatter_reports_the_node() {
    let api = FakeApi::start();
    api.route("GET", "/api/overview", 200, json!({"node": "warren@h"}));
    api.route("PUT", "/api/vhosts/v1", 201, Value::Null);
    let run = api.ctl(&["add_vhost", "v1", "--formatter", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "{\"node\":\"warren@h\",\"result\":\"ok\"}\n");
}

#[test]
fn policies() {
    let api = FakeApi::start();
    api.route("PUT", "/api/policies/%2F/p1", 201, Value::Null);
    let run = api.ctl(&[
        "set_policy",
        "--priority",
        "5",
        "--apply-to",
        "queues",
        "p1",
        "^q",
        r#"{"max-length":10}"#,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Setting policy \"p1\" for pattern \"^q\" to \"{\"max-length\":10}\" with priority \"5\" for vhost \"/\" ...\n"
    );
    assert_eq!(
        body(&api.changes()[0]),
        json!({"pattern": "^q", "definition": {"max-length": 10}, "priority": 5, "apply-to": "queues"})
    );

    let bad_json = api.ctl(&["set_policy", "p2", "^q", "notjson"]);
    assert_eq!(bad_json.code, 69, "{bad_json:?}");
    assert!(
        bad_json
            .stderr
            .starts_with("Error:\nJSON decoding error. Reason: "),
        "{bad_json:?}"
    );
    assert_eq!(
        api.changes().len(),
        1,
        "nothing is sent for a definition that is not JSON"
    );

    api.route(
        "PUT",
        "/api/policies/%2F/p3",
        400,
        json!({"error": "bad_request", "reason": "Validation failed\n\n[{&lt;&lt;\"bogus\"&gt;&gt;,1}] are not recognised policy settings\n"}),
    );
    let invalid = api.ctl(&["set_policy", "p3", "^q", r#"{"bogus":1}"#]);
    assert_eq!(invalid.code, 69, "{invalid:?}");
    assert_eq!(
        invalid.stderr,
        "Error:\nValidation failed\n\n[{<<\"bogus\">>,1}] are not recognised policy settings\n\n"
    );

    let no_vhost = api.ctl(&["set_policy", "-p", "nov", "p1", "^q", "{}"]);
    assert_eq!(
        (no_vhost.code, no_vhost.stderr.as_str()),
        (65, "Virtual host 'nov' does not exist\n")
    );

    api.route("DELETE", "/api/policies/%2F/p1", 204, Value::Null);
    let clear = api.ctl(&["clear_policy", "p1"]);
    assert_eq!(
        (clear.code, clear.stdout.as_str()),
        (0, "Clearing policy \"p1\" on vhost \"/\" ...\n")
    );
    let clear_missing = api.ctl(&["clear_policy", "p9"]);
    assert_eq!(
        (clear_missing.code, clear_missing.stderr.as_str()),
        (69, "Error:\nParameter does not exist\n")
    );
}

#[test]
fn purge_queue() {
    let api = FakeApi::start();
    api.route("DELETE", "/api/queues/%2F/q1/contents", 204, Value::Null);
    let run = api.ctl(&["purge_queue", "q1"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "Purging queue 'q1' in vhost '/' ...\n"),
        "{run:?}"
    );
    let missing = api.ctl(&["purge_queue", "-p", "nov", "q1"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (69, "Error:\nnot_found\n")
    );
}

#[test]
fn delete_queue_reports_ready_messages_and_conditions() {
    let api = FakeApi::start();
    api.route(
        "GET",
        "/api/queues/%2F/q1",
        200,
        json!({"name": "q1", "messages_ready": 7}),
    );
    api.route("DELETE", "/api/queues/%2F/q1", 204, Value::Null);
    let run = api.ctl(&["delete_queue", "q1"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Deleting queue 'q1' on vhost '/' ...\nQueue was successfully deleted with 7 ready messages\n"
    );
    // The result is not an informational line: -q keeps it.
    assert_eq!(
        api.ctl(&["-q", "delete_queue", "q1"]).stdout,
        "Queue was successfully deleted with 7 ready messages\n"
    );
    assert_eq!(
        api.ctl(&["delete_queue", "q1", "--formatter", "json"])
            .stdout,
        "{\"message\":\"Queue was successfully deleted with 7 ready messages\"}\n"
    );

    api.route(
        "DELETE",
        "/api/queues/%2F/q1?if-empty=true&if-unused=true",
        400,
        json!({"error": "bad_request", "reason": "queue 'q1' in vhost '/' not empty"}),
    );
    let not_empty = api.ctl(&["delete_queue", "-e", "-u", "q1"]);
    assert_eq!(not_empty.code, 64, "{not_empty:?}");
    assert_eq!(
        not_empty.stdout,
        "Deleting queue 'q1' on vhost '/' if queue is empty and if queue is unused ...\n"
    );
    assert_eq!(not_empty.stderr, "Error:\nQueue is not empty\n");

    api.route(
        "DELETE",
        "/api/queues/%2F/q1?if-unused=true",
        400,
        json!({"error": "bad_request", "reason": "queue 'q1' in vhost '/' in use"}),
    );
    let in_use = api.ctl(&["delete_queue", "--if-unused", "q1"]);
    assert_eq!(
        (in_use.code, in_use.stderr.as_str()),
        (64, "Error:\nQueue is in use\n")
    );

    let missing = api.ctl(&["delete_queue", "nosuch"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (64, "Error:\nQueue not found\n")
    );
}

#[test]
fn close_connection_sends_the_reason() {
    let api = FakeApi::start();
    let name = "127.0.0.1:5000 -> 127.0.0.1:5672";
    let path = "/api/connections/127.0.0.1%3A5000%20-%3E%20127.0.0.1%3A5672";
    api.route("DELETE", path, 204, Value::Null);
    let run = api.ctl(&["close_connection", name, "maintenance"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        format!("Closing connection {name}, reason: maintenance...\n")
    );
    let request = &api.changes()[0];
    assert_eq!(request.path, path);
    assert_eq!(request.headers["x-reason"], "maintenance");

    let missing = api.ctl(&["close_connection", "nosuch", "x"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (69, "Error:\nConnection 'nosuch' does not exist\n")
    );
}
