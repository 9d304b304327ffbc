//! Issue item 2: exchange.declare/delete/bind/unbind, routing of each exchange type,
//! alternate and internal exchanges, the predeclared exchanges and the `amq.` prefix.
//! Codes and texts are RabbitMQ 3.10.8's unless a comment says otherwise.

use client_tests::*;
use lapin::options::{
    BasicPublishOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    ExchangeUnbindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind, args: FieldTable) {
    within(
        "exchange.declare",
        ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), args),
    )
    .await
    .unwrap_or_else(|e| panic!("exchange.declare {name}: {e:?}"));
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_fanout_route_by_key_and_to_all() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;

    let direct = unique("direct");
    declare_exchange(&ch, &direct, ExchangeKind::Direct, FieldTable::default()).await;
    let q_info = declare_queue(&ch, "info").await;
    let q_errors = declare_queue(&ch, "errors").await;
    bind(&ch, &q_info, &direct, "info", FieldTable::default()).await;
    bind(&ch, &q_errors, &direct, "error", FieldTable::default()).await;
    // A queue bound with several keys gets each message once.
    bind(&ch, &q_errors, &direct, "critical", FieldTable::default()).await;
    for key in ["info", "error", "critical", "debug"] {
        publish(&ch, &direct, key, key.as_bytes()).await;
    }
    assert_eq!(drain(&ch, &q_info).await, vec![b"info".to_vec()]);
    assert_eq!(
        drain(&ch, &q_errors).await,
        vec![b"error".to_vec(), b"critical".to_vec()]
    );

    let fanout = unique("fanout");
    declare_exchange(&ch, &fanout, ExchangeKind::Fanout, FieldTable::default()).await;
    let a = declare_queue(&ch, "fan-a").await;
    let b = declare_queue(&ch, "fan-b").await;
    bind(&ch, &a, &fanout, "ignored", FieldTable::default()).await;
    bind(&ch, &b, &fanout, "", FieldTable::default()).await;
    publish(&ch, &fanout, "any.key", b"to all").await;
    assert_eq!(drain(&ch, &a).await, vec![b"to all".to_vec()]);
    assert_eq!(drain(&ch, &b).await, vec![b"to all".to_vec()]);

    // The default exchange routes by queue name.
    publish(&ch, "", &a, b"by name").await;
    assert_eq!(drain(&ch, &a).await, vec![b"by name".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_star_is_one_word_and_hash_is_zero_or_more() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let topic = unique("topic");
    declare_exchange(&ch, &topic, ExchangeKind::Topic, FieldTable::default()).await;

    let patterns = [
        "*.orange.*",
        "*.*.rabbit",
        "lazy.#",
        "#",
        "a.#.z",
        "#.end",
        "exact.key",
    ];
    let mut queues = Vec::new();
    for p in patterns {
        let q = declare_queue(&ch, "topic").await;
        bind(&ch, &q, &topic, p, FieldTable::default()).await;
        queues.push(q);
    }
    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy",
        "quick.orange.male.rabbit",
        "orange",
        "a.z",
        "a.b.c.z",
        "end",
        "x.y.end",
        "exact.key",
        "exact.key.more",
        "",
    ];
    for k in keys {
        publish(&ch, &topic, k, k.as_bytes()).await;
    }
    let expected: [&[&str]; 7] = [
        &[
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox",
        ],
        &["quick.orange.rabbit"],
        &["lazy.orange.elephant", "lazy.brown.fox", "lazy"],
        &keys,
        &["a.z", "a.b.c.z"],
        &["end", "x.y.end"],
        &["exact.key"],
    ];
    for ((pattern, q), want) in patterns.iter().zip(&queues).zip(expected) {
        let got: Vec<String> = drain(&ch, q)
            .await
            .into_iter()
            .map(|b| String::from_utf8(b).expect("utf8"))
            .collect();
        assert_eq!(got, want, "pattern {pattern:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_matches_all_any_and_the_with_x_variants() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let headers = unique("headers");
    declare_exchange(&ch, &headers, ExchangeKind::Headers, FieldTable::default()).await;

    let bindings = [
        table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
        // x- keys other than x-match are ignored by all/any ...
        table(&[("x-match", s("any")), ("x-tenant", s("t1"))]),
        // ... and compared by any-with-x / all-with-x (RabbitMQ 3.10+).
        table(&[("x-match", s("any-with-x")), ("x-tenant", s("t1"))]),
        table(&[
            ("x-match", s("all-with-x")),
            ("x-tenant", s("t1")),
            ("format", s("pdf")),
        ]),
        // Without x-match the default is all.
        table(&[("format", s("zip"))]),
    ];
    let mut queues = Vec::new();
    for args in bindings {
        let q = declare_queue(&ch, "hdr").await;
        bind(&ch, &q, &headers, "", args).await;
        queues.push(q);
    }
    let messages = [
        (
            "pdf-report",
            table(&[("format", s("pdf")), ("type", s("report"))]),
        ),
        ("pdf-only", table(&[("format", s("pdf"))])),
        ("tenant", table(&[("x-tenant", s("t1"))])),
        (
            "tenant-pdf",
            table(&[("x-tenant", s("t1")), ("format", s("pdf"))]),
        ),
        (
            "zip",
            table(&[("format", s("zip")), ("extra", AMQPValue::LongInt(1))]),
        ),
        ("none", FieldTable::default()),
    ];
    for (body, h) in messages {
        publish_with(
            &ch,
            &headers,
            "ignored",
            BasicPublishOptions::default(),
            BasicProperties::default().with_headers(h),
            body.as_bytes(),
        )
        .await;
    }
    let expected: [&[&str]; 6] = [
        &["pdf-report"],
        &["pdf-report", "pdf-only", "tenant-pdf"],
        &[],
        &["tenant", "tenant-pdf"],
        &["tenant-pdf"],
        &["zip"],
    ];
    for (i, (q, want)) in queues.iter().zip(expected).enumerate() {
        let got: Vec<String> = drain(&ch, q)
            .await
            .into_iter()
            .map(|b| String::from_utf8(b).expect("utf8"))
            .collect();
        assert_eq!(got, want, "binding #{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_flags_passive_and_redeclare() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = unique("flags");
    let opts = ExchangeDeclareOptions {
        durable: false,
        auto_delete: false,
        ..ExchangeDeclareOptions::default()
    };
    within(
        "declare",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Topic,
            opts,
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    // Same declaration again is fine; passive ignores type and flags.
    within(
        "redeclare",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Topic,
            opts,
            FieldTable::default(),
        ),
    )
    .await
    .expect("identical redeclare");
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    within(
        "passive",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare of an existing exchange");

    // RabbitMQ: 406 "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'X' in vhost
    // '/': received 'fanout' but current is 'topic'" (channel.close 40/10).
    let ch2 = channel(&conn).await;
    let res = within(
        "redeclare other type",
        ch2.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Fanout,
            opts,
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' in vhost \
                 '/': received 'fanout' but current is 'topic'"
            )
        )
    );

    // RabbitMQ: 406 "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'X' in
    // vhost '/': received 'true' but current is 'false'".
    let ch3 = channel(&conn).await;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..opts
    };
    let res = within(
        "redeclare durable",
        ch3.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{name}' in \
                 vhost '/': received 'true' but current is 'false'"
            )
        )
    );

    // RabbitMQ: 404 "NOT_FOUND - no exchange 'X' in vhost '/'" (channel.close 40/10).
    let ch4 = channel(&conn).await;
    let missing = unique("missing");
    let res = within(
        "passive missing",
        ch4.exchange_declare(
            missing.as_str().into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            404,
            format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
        )
    );

    // A channel error leaves the connection and its other channels usable.
    let ch5 = channel(&conn).await;
    declare_queue(&ch5, "still-usable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predeclared_exchanges_exist_and_amq_prefix_is_reserved() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        within(
            "passive amq.*",
            ch.exchange_declare(name.into(), kind.clone(), passive, FieldTable::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("passive {name}: {e:?}"));
        // Redeclaring an existing amq.* exchange with its own properties (durable) is allowed.
        let same = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        within(
            "redeclare amq.*",
            ch.exchange_declare(name.into(), kind, same, FieldTable::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("equivalent redeclare of {name}: {e:?}"));
    }

    // amq.direct routes like any direct exchange.
    let cch = confirm_channel(&conn).await;
    let q = declare_queue(&cch, "amq-direct").await;
    bind(&cch, &q, "amq.direct", &q, FieldTable::default()).await;
    publish(&cch, "amq.direct", &q, b"via amq.direct").await;
    assert_eq!(drain(&cch, &q).await, vec![b"via amq.direct".to_vec()]);

    // RabbitMQ: 403 "ACCESS_REFUSED - exchange name 'amq.X' contains reserved prefix 'amq.*'"
    // (channel.close 40/10).
    let reserved = unique("amq.mine");
    let ch2 = channel(&conn).await;
    let res = within(
        "declare amq.*",
        ch2.exchange_declare(
            reserved.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            403,
            format!("ACCESS_REFUSED - exchange name '{reserved}' contains reserved prefix 'amq.*'")
        )
    );

    // Declaring the default exchange is refused, and so is a passive declare: RabbitMQ does
    // not even say that it exists.
    for passive in [false, true] {
        let ch = channel(&conn).await;
        let res = within(
            "declare the default exchange",
            ch.exchange_declare(
                "".into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        assert_eq!(
            expect_amqp_error(res),
            default_exchange_refused(),
            "passive: {passive}"
        );
    }

    // RabbitMQ: 403 "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/'
    // not allowed" (40/20).
    let ch4 = channel(&conn).await;
    let res = within(
        "delete amq.direct",
        ch4.exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default()),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            403,
            "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
                .into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_and_delete_of_missing() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let x = unique("in-use");
    declare_exchange(&ch, &x, ExchangeKind::Direct, FieldTable::default()).await;
    let q = declare_queue(&ch, "bound").await;
    bind(&ch, &q, &x, "k", FieldTable::default()).await;

    // RabbitMQ: 406 "PRECONDITION_FAILED - exchange 'X' in vhost '/' in use" (40/20).
    let ch2 = channel(&conn).await;
    let if_unused = ExchangeDeleteOptions {
        if_unused: true,
        ..ExchangeDeleteOptions::default()
    };
    let res = within(
        "delete if-unused",
        ch2.exchange_delete(x.as_str().into(), if_unused),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")
        )
    );

    within(
        "unbind",
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.unbind");
    within(
        "delete if-unused",
        ch.exchange_delete(x.as_str().into(), if_unused),
    )
    .await
    .expect("unused exchange deletes");
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let ch3 = channel(&conn).await;
    let res = within(
        "passive after delete",
        ch3.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(expect_amqp_error(res).0, 404);

    // RabbitMQ 3.10: deleting an exchange that does not exist is not an error (delete-ok).
    within(
        "delete missing",
        ch.exchange_delete(
            unique("never").as_str().into(),
            ExchangeDeleteOptions::default(),
        ),
    )
    .await
    .expect("delete of a missing exchange is ok");

    // Deleting an exchange removes its bindings: a queue bound to it can be deleted
    // if-unused... and unbinding from a deleted exchange is fine.
    let y = unique("doomed");
    declare_exchange(&ch, &y, ExchangeKind::Fanout, FieldTable::default()).await;
    bind(&ch, &q, &y, "", FieldTable::default()).await;
    within(
        "delete",
        ch.exchange_delete(y.as_str().into(), ExchangeDeleteOptions::default()),
    )
    .await
    .expect("delete bound exchange");
    declare_exchange(&ch, &y, ExchangeKind::Fanout, FieldTable::default()).await;
    let cch = confirm_channel(&conn).await;
    publish(&cch, &y, "", b"nobody bound").await;
    assert_eq!(message_count(&cch, &q).await, 0, "old binding must be gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_route_and_unbind() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let source = unique("e2e-src");
    let dest = unique("e2e-dst");
    declare_exchange(&ch, &source, ExchangeKind::Topic, FieldTable::default()).await;
    declare_exchange(&ch, &dest, ExchangeKind::Fanout, FieldTable::default()).await;
    let q = declare_queue(&ch, "e2e").await;
    let direct_q = declare_queue(&ch, "e2e-direct").await;
    bind(&ch, &q, &dest, "", FieldTable::default()).await;
    bind(&ch, &direct_q, &source, "a.b", FieldTable::default()).await;
    within(
        "exchange.bind",
        ch.exchange_bind(
            dest.as_str().into(),
            source.as_str().into(),
            "a.*".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind");

    publish(&ch, &source, "a.b", b"both").await;
    publish(&ch, &source, "a.c", b"via dest").await;
    publish(&ch, &source, "b.c", b"nowhere").await;
    assert_eq!(
        drain(&ch, &q).await,
        vec![b"both".to_vec(), b"via dest".to_vec()]
    );
    // A queue reachable twice (directly and through the bound exchange) gets one copy.
    bind(&ch, &direct_q, &dest, "", FieldTable::default()).await;
    publish(&ch, &source, "a.b", b"once").await;
    assert_eq!(
        drain(&ch, &direct_q).await,
        vec![b"both".to_vec(), b"once".to_vec()]
    );
    drain(&ch, &q).await;

    within(
        "exchange.unbind",
        ch.exchange_unbind(
            dest.as_str().into(),
            source.as_str().into(),
            "a.*".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.unbind");
    publish(&ch, &source, "a.c", b"after unbind").await;
    assert_eq!(message_count(&ch, &q).await, 0);

    // Binding to a missing source: RabbitMQ 404 "NOT_FOUND - no exchange 'X' in vhost '/'".
    let ch2 = channel(&conn).await;
    let missing = unique("no-src");
    let res = within(
        "exchange.bind missing",
        ch2.exchange_bind(
            dest.as_str().into(),
            missing.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            404,
            format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_takes_unroutable_messages() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let ae = unique("ae");
    declare_exchange(&ch, &ae, ExchangeKind::Fanout, FieldTable::default()).await;
    let q_ae = declare_queue(&ch, "ae").await;
    bind(&ch, &q_ae, &ae, "", FieldTable::default()).await;
    let x = unique("with-ae");
    declare_exchange(
        &ch,
        &x,
        ExchangeKind::Direct,
        table(&[("alternate-exchange", s(&ae))]),
    )
    .await;
    let q = declare_queue(&ch, "routed").await;
    bind(&ch, &q, &x, "known", FieldTable::default()).await;

    publish(&ch, &x, "known", b"routed").await;
    // Mandatory but routed through the alternate exchange: not returned.
    let confirmation = publish_with(
        &ch,
        &x,
        "unknown",
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        BasicProperties::default(),
        b"to ae",
    )
    .await;
    assert!(confirmation.is_ack());
    assert!(
        confirmation.take_message().is_none(),
        "must not be returned"
    );
    assert_eq!(drain(&ch, &q).await, vec![b"routed".to_vec()]);
    assert_eq!(drain(&ch, &q_ae).await, vec![b"to ae".to_vec()]);

    // Redeclaring without the argument is inequivalent. RabbitMQ: 406 "PRECONDITION_FAILED -
    // inequivalent arg 'alternate-exchange' for exchange 'X' in vhost '/': received none but
    // current is the value 'AE' of type 'longstr'".
    let ch2 = channel(&conn).await;
    let res = within(
        "redeclare without ae",
        ch2.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange \
                 '{x}' in vhost '/': received none but current is the value '{ae}' of type \
                 'longstr'"
            )
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_exchange_refuses_publishes_but_routes_bound_traffic() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let internal = unique("internal");
    within(
        "declare internal",
        ch.exchange_declare(
            internal.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                internal: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare internal");
    let front = unique("front");
    declare_exchange(&ch, &front, ExchangeKind::Fanout, FieldTable::default()).await;
    within(
        "exchange.bind",
        ch.exchange_bind(
            internal.as_str().into(),
            front.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("bind internal behind front");
    let q = declare_queue(&ch, "internal").await;
    bind(&ch, &q, &internal, "", FieldTable::default()).await;
    publish(&ch, &front, "", b"through front").await;
    assert_eq!(drain(&ch, &q).await, vec![b"through front".to_vec()]);

    // RabbitMQ: 403 "ACCESS_REFUSED - cannot publish to internal exchange 'X' in vhost '/'"
    // (channel.close 60/40).
    let ch2 = channel(&conn).await;
    let watch = CloseWatch::on(&ch2).await;
    let _ = within(
        "publish to internal",
        ch2.basic_publish(
            internal.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"refused",
            BasicProperties::default(),
        ),
    )
    .await;
    // basic.publish has no reply: the channel.close comes on its own.
    assert_eq!(
        watch.reason().await,
        (
            403,
            format!(
                "ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'"
            )
        )
    );
    assert_eq!(message_count(&ch, &q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_exchange_type_is_a_channel_error() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = unique("odd-type");
    let res = within(
        "declare unknown type",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Custom("x-no-such-type".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let (code, text) = expect_amqp_error(res);
    // RabbitMQ 3.10.8 closes the whole connection: 503 "COMMAND_INVALID - unknown exchange
    // type 'x-no-such-type'" (40/10). RabbitMQ 3.13+ (rabbitmq-server PR 11214) made it a
    // channel error, 406 "PRECONDITION_FAILED - unknown exchange type 'x-no-such-type'",
    // and that later behaviour is what Warren must do.
    if broker.is_external() && code == 503 {
        assert_eq!(
            text,
            "COMMAND_INVALID - unknown exchange type 'x-no-such-type'"
        );
        skip(
            "unknown_exchange_type_is_a_channel_error",
            "external broker has the pre-3.13 connection-level behaviour",
        );
        return;
    }
    assert_eq!(
        (code, text.as_str()),
        (
            406,
            "PRECONDITION_FAILED - unknown exchange type 'x-no-such-type'"
        )
    );
    // Only the channel closed.
    let ch2 = channel(&conn).await;
    declare_queue(&ch2, "after-bad-type").await;
}
