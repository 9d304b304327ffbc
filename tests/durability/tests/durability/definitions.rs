//! Issue 4, item 1 (definitions): durable exchanges, queues with their arguments, queue
//! bindings (headers arguments included) and exchange-to-exchange bindings survive a SIGTERM
//! restart and a kill -9 right after the last declare-ok; non-durable exchanges and queues and
//! exclusive queues do not. What survived is checked by behaviour (routing, length limits,
//! equivalence checks on redeclare), not only by passive declares.

use durability_tests::client::*;
use durability_tests::{Stop, TestDir};
use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

const DIRECT: &str = "d.direct";
const TOPIC: &str = "d.topic";
const HEADERS: &str = "d.headers";
const SOURCE: &str = "d.source";
const AE: &str = "d.ae";
const WITH_AE: &str = "d.with-ae";

const Q_DIRECT: &str = "q-direct";
const Q_TOPIC: &str = "q-topic";
const Q_HEADERS: &str = "q-headers";
const Q_LIMITED: &str = "q-limited";
const Q_AE: &str = "q-ae";
const Q_TRANSIENT_BOUND: &str = "q-transient-bound";

fn limited_args(max_length: i32) -> FieldTable {
    table(&[("x-max-length", AMQPValue::LongInt(max_length))])
}

fn headers_binding() -> FieldTable {
    table(&[
        ("x-match", AMQPValue::LongString("all".into())),
        ("format", AMQPValue::LongString("pdf".into())),
        ("n", AMQPValue::LongInt(7)),
    ])
}

fn headers(entries: &[(&str, AMQPValue)]) -> BasicProperties {
    transient().with_headers(table(entries))
}

/// Declares the durable topology (and one non-durable queue bound to a durable exchange).
async fn declare_durable_topology(ch: &Channel) {
    let none = FieldTable::default;
    declare_exchange(ch, DIRECT, ExchangeKind::Direct, true, none()).await;
    declare_exchange(ch, TOPIC, ExchangeKind::Topic, true, none()).await;
    declare_exchange(ch, HEADERS, ExchangeKind::Headers, true, none()).await;
    declare_exchange(ch, SOURCE, ExchangeKind::Fanout, true, none()).await;
    declare_exchange(ch, AE, ExchangeKind::Fanout, true, none()).await;
    let ae_arg = table(&[("alternate-exchange", AMQPValue::LongString(AE.into()))]);
    declare_exchange(ch, WITH_AE, ExchangeKind::Direct, true, ae_arg).await;

    for q in [Q_DIRECT, Q_TOPIC, Q_HEADERS, Q_AE] {
        declare_queue(ch, q, durable(), none()).await;
    }
    declare_queue(ch, Q_LIMITED, durable(), limited_args(3)).await;
    declare_queue(
        ch,
        Q_TRANSIENT_BOUND,
        QueueDeclareOptions::default(),
        none(),
    )
    .await;

    bind(ch, Q_DIRECT, DIRECT, "k1", none()).await;
    bind(ch, Q_LIMITED, DIRECT, "k-limited", none()).await;
    bind(ch, Q_TRANSIENT_BOUND, DIRECT, "k-transient", none()).await;
    bind(ch, Q_TOPIC, TOPIC, "a.#", none()).await;
    bind(ch, Q_HEADERS, HEADERS, "", headers_binding()).await;
    bind(ch, Q_AE, AE, "", none()).await;
    // Exchange to exchange: everything published to SOURCE also reaches TOPIC.
    within(
        "exchange.bind",
        ch.exchange_bind(
            TOPIC.into(),
            SOURCE.into(),
            "".into(),
            ExchangeBindOptions::default(),
            none(),
        ),
    )
    .await
    .expect("exchange.bind");
}

async fn bodies(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    drain(ch, queue).await.into_iter().map(|g| g.body).collect()
}

/// The durable topology is all there and routes as it did before the restart.
async fn check_durable_topology(conn: &Connection) {
    for x in [DIRECT, TOPIC, HEADERS, SOURCE, AE, WITH_AE] {
        assert!(
            exchange_exists(conn, x).await,
            "durable exchange {x} is gone"
        );
    }
    for q in [Q_DIRECT, Q_TOPIC, Q_HEADERS, Q_LIMITED, Q_AE] {
        assert!(queue_exists(conn, q).await, "durable queue {q} is gone");
    }
    // Attributes kept: an equal redeclare is fine, a different one is refused as RabbitMQ
    // refuses it (406 "PRECONDITION_FAILED - inequivalent arg ...").
    let ch = confirm_channel(conn).await;
    declare_exchange(
        &ch,
        DIRECT,
        ExchangeKind::Direct,
        true,
        FieldTable::default(),
    )
    .await;
    let (code, text) = declare_exchange_error(
        conn,
        DIRECT,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
    )
    .await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("inequivalent arg 'type'"), "{text}");
    let (code, text) = declare_exchange_error(
        conn,
        DIRECT,
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
    )
    .await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("inequivalent arg 'durable'"), "{text}");

    declare_queue(&ch, Q_LIMITED, durable(), limited_args(3)).await;
    let (code, text) = declare_queue_error(conn, Q_LIMITED, durable(), limited_args(5)).await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("inequivalent arg 'x-max-length'"), "{text}");
    let (code, text) = declare_queue_error(
        conn,
        Q_DIRECT,
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("inequivalent arg 'durable'"), "{text}");

    // Routing: every binding delivers exactly once.
    publish_confirmed(&ch, DIRECT, "k1", transient(), b"direct").await;
    publish_confirmed(&ch, SOURCE, "a.b.c", transient(), b"via exchange binding").await;
    publish_confirmed(&ch, TOPIC, "a.x", transient(), b"topic").await;
    publish_confirmed(&ch, TOPIC, "b.x", transient(), b"unrouted").await;
    let pdf7 = headers(&[
        ("format", AMQPValue::LongString("pdf".into())),
        ("n", AMQPValue::LongInt(7)),
    ]);
    let txt7 = headers(&[
        ("format", AMQPValue::LongString("txt".into())),
        ("n", AMQPValue::LongInt(7)),
    ]);
    publish_confirmed(&ch, HEADERS, "", pdf7, b"headers match").await;
    publish_confirmed(&ch, HEADERS, "", txt7, b"headers differ").await;
    publish_confirmed(&ch, WITH_AE, "nobody", transient(), b"to the alternate").await;
    for i in 0..5u8 {
        publish_confirmed(&ch, DIRECT, "k-limited", transient(), &[b'0' + i]).await;
    }

    assert_eq!(bodies(&ch, Q_DIRECT).await, [b"direct".to_vec()]);
    assert_eq!(
        bodies(&ch, Q_TOPIC).await,
        [b"via exchange binding".to_vec(), b"topic".to_vec()]
    );
    assert_eq!(bodies(&ch, Q_HEADERS).await, [b"headers match".to_vec()]);
    assert_eq!(bodies(&ch, Q_AE).await, [b"to the alternate".to_vec()]);
    // x-max-length 3 with the default overflow (drop-head) keeps the newest three.
    assert_eq!(
        bodies(&ch, Q_LIMITED).await,
        [b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
    );

    // The non-durable queue is gone, and so is its binding: a new queue of the same name
    // gets nothing from the old routing key (RabbitMQ drops a transient queue's bindings).
    assert!(
        !queue_exists(conn, Q_TRANSIENT_BOUND).await,
        "non-durable queue {Q_TRANSIENT_BOUND} came back"
    );
    declare_queue(
        &ch,
        Q_TRANSIENT_BOUND,
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    publish_confirmed(&ch, DIRECT, "k-transient", transient(), b"stale binding").await;
    assert_eq!(bodies(&ch, Q_TRANSIENT_BOUND).await, Vec::<Vec<u8>>::new());
}

async fn durable_definitions_survive(label: &str, how: Stop) {
    let dir = TestDir::new(label);
    let warren = dir.start().await;
    // The connection stays open: a kill -9 lands right after the last bind-ok.
    let (_conn, ch) = open(&warren.url()).await;
    declare_durable_topology(&ch).await;
    let warren = dir.restart(warren, how).await;
    let conn = connect(&warren.url()).await;
    check_durable_topology(&conn).await;
    // Once more with a clean stop: a recovered topology is itself kept.
    let warren = dir.restart(warren, Stop::Term).await;
    let conn = connect(&warren.url()).await;
    check_durable_topology(&conn).await;
    warren.terminate_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_definitions_survive_sigterm_restart() {
    durable_definitions_survive("defs-term", Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_definitions_survive_kill9_after_declare_ok() {
    durable_definitions_survive("defs-kill", Stop::Kill).await;
}

async fn transient_definitions_are_gone(label: &str, how: Stop) {
    let dir = TestDir::new(label);
    let warren = dir.start().await;
    let (conn, ch) = open(&warren.url()).await;
    declare_exchange(
        &ch,
        "t.direct",
        ExchangeKind::Direct,
        false,
        FieldTable::default(),
    )
    .await;
    declare_queue(
        &ch,
        "t-queue",
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await;
    bind(&ch, "t-queue", "t.direct", "k", FieldTable::default()).await;
    // Exclusive queues go with their connection, durable flag or not; the connection is
    // still open when the broker stops.
    let exclusive_durable = QueueDeclareOptions {
        exclusive: true,
        durable: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue(
        &ch,
        "t-exclusive-durable",
        exclusive_durable,
        FieldTable::default(),
    )
    .await;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue(&ch, "t-exclusive", exclusive, FieldTable::default()).await;
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    declare_queue(&ch, "t-auto-delete", auto_delete, FieldTable::default()).await;
    // Messages in them, persistent ones included, make no difference.
    publish_confirmed(&ch, "t.direct", "k", persistent(), b"in a transient queue").await;
    publish_confirmed(&ch, "", "t-exclusive-durable", persistent(), b"exclusive").await;

    let warren = dir.restart(warren, how).await;
    drop(conn);
    let conn = connect(&warren.url()).await;
    assert!(
        !exchange_exists(&conn, "t.direct").await,
        "non-durable exchange came back"
    );
    for q in [
        "t-queue",
        "t-exclusive-durable",
        "t-exclusive",
        "t-auto-delete",
    ] {
        assert!(!queue_exists(&conn, q).await, "queue {q} came back");
    }
    warren.terminate_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_durable_and_exclusive_definitions_are_gone_after_sigterm_restart() {
    transient_definitions_are_gone("transient-defs-term", Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_durable_and_exclusive_definitions_are_gone_after_kill9() {
    transient_definitions_are_gone("transient-defs-kill", Stop::Kill).await;
}
