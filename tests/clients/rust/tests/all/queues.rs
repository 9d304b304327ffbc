//! Issue item 3: queue.declare (server-named, passive, exclusive, auto-delete, arguments),
//! bind/unbind, purge and delete with their counts. Codes and texts are RabbitMQ 3.10.8's.

use client_tests::*;
use lapin::options::{
    BasicCancelOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    }
}

fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Whether `queue` exists, asked on a fresh channel (a 404 closes the channel).
async fn queue_exists(conn: &Connection, queue: &str) -> bool {
    let ch = channel(conn).await;
    let res = within(
        "passive queue.declare",
        ch.queue_declare(queue.into(), passive(), FieldTable::default()),
    )
    .await;
    match res {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(
                amqp_error(&e),
                Some((404, format!("NOT_FOUND - no queue '{queue}' in vhost '/'"))),
                "{e:?}"
            );
            false
        }
    }
}

async fn expect_declare_error(
    ch: &Channel,
    name: &str,
    opts: QueueDeclareOptions,
    a: FieldTable,
) -> (u16, String) {
    let res = within("queue.declare", ch.queue_declare(name.into(), opts, a)).await;
    expect_amqp_error(res)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queues_and_passive_counts() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = within(
        "declare server-named",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    let name = q.name().to_string();
    // RabbitMQ: "amq.gen-" followed by 22 URL-safe base64 characters.
    assert!(name.starts_with("amq.gen-"), "{name}");
    assert_eq!(name.len(), "amq.gen-".len() + 22, "{name}");
    assert!(name["amq.gen-".len()..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    let other = within(
        "declare another",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    assert_ne!(other.name().as_str(), name);
    within(
        "delete",
        ch.queue_delete(other.name().clone(), QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");

    publish(&ch, "", &name, b"one").await;
    publish(&ch, "", &name, b"two").await;
    let _consumer = consume(&ch, &name, false).await;
    // The two messages went to the consumer as unacked: passive declare counts ready
    // messages only, and the consumer.
    let ch2 = channel(&conn).await;
    eventually("declare-ok to report 0 ready and 1 consumer", || {
        let ch2 = ch2.clone();
        let name = name.clone();
        async move {
            let q = within(
                "passive",
                ch2.queue_declare(name.as_str().into(), passive(), FieldTable::default()),
            )
            .await
            .expect("passive");
            (q.message_count(), q.consumer_count()) == (0, 1)
        }
    })
    .await;

    // RabbitMQ: 404 "NOT_FOUND - no queue 'X' in vhost '/'" (channel.close 50/10).
    let missing = unique("missing");
    assert!(!queue_exists(&conn, &missing).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_belongs_to_its_connection() {
    let broker = TestBroker::start();
    let owner = connect(&broker).await;
    let other = connect(&broker).await;
    let ch = confirm_channel(&owner).await;
    let name = unique("exclusive");
    within(
        "declare exclusive",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    let locked = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost \
         '/'. It could be originally declared on another connection or the exclusive property \
         value does not match that of the original declaration."
    );

    // RabbitMQ: 405 with the text above, for passive declare (50/10), consume (60/20),
    // delete (50/40) and purge (50/30) from another connection.
    let och = channel(&other).await;
    assert_eq!(
        expect_declare_error(&och, &name, passive(), FieldTable::default()).await,
        (405, locked.clone())
    );
    let och = channel(&other).await;
    let res = within(
        "consume from other connection",
        och.basic_consume(
            name.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(expect_amqp_error(res), (405, locked.clone()));
    let och = channel(&other).await;
    let res = within(
        "delete from other connection",
        och.queue_delete(name.as_str().into(), QueueDeleteOptions::default()),
    )
    .await;
    assert_eq!(expect_amqp_error(res), (405, locked.clone()));
    let och = channel(&other).await;
    let res = within(
        "purge from other connection",
        och.queue_purge(name.as_str().into(), QueuePurgeOptions::default()),
    )
    .await;
    assert_eq!(expect_amqp_error(res), (405, locked.clone()));

    // Publishing to it from elsewhere is allowed.
    let pch = confirm_channel(&other).await;
    publish(&pch, "", &name, b"from other").await;
    assert_eq!(message_count(&ch, &name).await, 1);

    // The owner's other channels may use it.
    let ch_b = channel(&owner).await;
    assert_eq!(message_count(&ch_b, &name).await, 1);

    within("close owner", owner.close(200, "bye".into()))
        .await
        .expect("close");
    // The queue goes with its connection (RabbitMQ deletes it as part of the close).
    eventually("exclusive queue deleted with its connection", || {
        let other = &other;
        let name = &name;
        async move { !queue_exists(other, name).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_when_its_last_consumer_cancels() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = unique("auto-delete");
    within(
        "declare auto-delete",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    // Never consumed: stays.
    assert!(queue_exists(&conn, &name).await);

    let c1 = consume(&ch, &name, true).await;
    let c2 = consume(&ch, &name, true).await;
    within(
        "cancel",
        ch.basic_cancel(c1.tag(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel first");
    assert!(queue_exists(&conn, &name).await, "one consumer is left");
    within(
        "cancel",
        ch.basic_cancel(c2.tag(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel last");
    eventually("auto-delete queue deleted after the last cancel", || {
        let conn = &conn;
        let name = &name;
        async move { !queue_exists(conn, name).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_properties_is_406() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let name = unique("props");
    let kept = args(&[
        ("x-max-length", AMQPValue::LongInt(10)),
        ("x-custom", AMQPValue::LongString("kept".into())),
    ]);
    within(
        "declare",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            kept.clone(),
        ),
    )
    .await
    .expect("declare");
    within(
        "redeclare same",
        ch.queue_declare(name.as_str().into(), QueueDeclareOptions::default(), kept),
    )
    .await
    .expect("equivalent redeclare");
    // RabbitMQ compares only the arguments it knows: an unknown x- argument may differ.
    within(
        "redeclare other custom arg",
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            args(&[
                ("x-max-length", AMQPValue::LongInt(10)),
                ("x-custom", AMQPValue::LongString("other".into())),
            ]),
        ),
    )
    .await
    .expect("unknown arguments are not compared");

    // RabbitMQ: 406 "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'Q' in
    // vhost '/': received '20' but current is '10'" (50/10); both sides have the same type.
    let ch2 = channel(&conn).await;
    assert_eq!(
        expect_declare_error(
            &ch2,
            &name,
            QueueDeclareOptions::default(),
            args(&[("x-max-length", AMQPValue::LongInt(20))])
        )
        .await,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in \
                 vhost '/': received '20' but current is '10'"
            )
        )
    );
    // RabbitMQ: "... received none but current is the value '10' of type 'signedint'".
    let ch3 = channel(&conn).await;
    assert_eq!(
        expect_declare_error(
            &ch3,
            &name,
            QueueDeclareOptions::default(),
            FieldTable::default()
        )
        .await,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in \
                 vhost '/': received none but current is the value '10' of type 'signedint'"
            )
        )
    );
    // RabbitMQ: 406 "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'Q' in vhost
    // '/': received 'true' but current is 'false'".
    let ch4 = channel(&conn).await;
    assert_eq!(
        expect_declare_error(
            &ch4,
            &name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args(&[("x-max-length", AMQPValue::LongInt(10))])
        )
        .await,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost \
                 '/': received 'true' but current is 'false'"
            )
        )
    );
    // RabbitMQ: 406 "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'Q' in
    // vhost '/': received 'true' but current is 'false'".
    let ch5 = channel(&conn).await;
    assert_eq!(
        expect_declare_error(
            &ch5,
            &name,
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args(&[("x-max-length", AMQPValue::LongInt(10))])
        )
        .await,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{name}' in \
                 vhost '/': received 'true' but current is 'false'"
            )
        )
    );

    // RabbitMQ: 403 "ACCESS_REFUSED - queue name 'amq.X' contains reserved prefix 'amq.*'".
    let reserved = unique("amq.q");
    let ch6 = channel(&conn).await;
    assert_eq!(
        expect_declare_error(
            &ch6,
            &reserved,
            QueueDeclareOptions::default(),
            FieldTable::default()
        )
        .await,
        (
            403,
            format!("ACCESS_REFUSED - queue name '{reserved}' contains reserved prefix 'amq.*'")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_unbind_and_their_errors() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "bind").await;
    bind(&ch, &q, "amq.topic", "k.*", FieldTable::default()).await;
    // Binding twice is idempotent: still one copy per message.
    bind(&ch, &q, "amq.topic", "k.*", FieldTable::default()).await;
    publish(&ch, "amq.topic", "k.1", b"bound").await;
    assert_eq!(drain(&ch, &q).await, vec![b"bound".to_vec()]);

    within(
        "unbind",
        ch.queue_unbind(
            q.as_str().into(),
            "amq.topic".into(),
            "k.*".into(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("unbind");
    publish(&ch, "amq.topic", "k.1", b"unbound").await;
    assert_eq!(message_count(&ch, &q).await, 0);
    // RabbitMQ 3.10: unbinding a binding that does not exist is not an error.
    within(
        "unbind again",
        ch.queue_unbind(
            q.as_str().into(),
            "amq.topic".into(),
            "k.*".into(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("unbind of a missing binding is ok");

    // RabbitMQ: 404 "NOT_FOUND - no exchange 'X' in vhost '/'" (50/20).
    let missing_x = unique("no-exchange");
    let ch2 = channel(&conn).await;
    let res = within(
        "bind to missing exchange",
        ch2.queue_bind(
            q.as_str().into(),
            missing_x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            404,
            format!("NOT_FOUND - no exchange '{missing_x}' in vhost '/'")
        )
    );
    // RabbitMQ: 404 "NOT_FOUND - no queue 'Q' in vhost '/'" (50/20).
    let missing_q = unique("no-queue");
    let ch3 = channel(&conn).await;
    let res = within(
        "bind missing queue",
        ch3.queue_bind(
            missing_q.as_str().into(),
            "amq.direct".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            404,
            format!("NOT_FOUND - no queue '{missing_q}' in vhost '/'")
        )
    );
    // RabbitMQ: 403 "ACCESS_REFUSED - operation not permitted on the default exchange".
    let ch4 = channel(&conn).await;
    let res = within(
        "bind to default exchange",
        ch4.queue_bind(
            q.as_str().into(),
            "".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(expect_amqp_error(res), default_exchange_refused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_delete_report_counts_and_honour_if_unused_if_empty() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "counts").await;
    for i in 0..5u8 {
        publish(&ch, "", &q, &[i]).await;
    }
    let purged = within(
        "purge",
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()),
    )
    .await
    .expect("purge");
    assert_eq!(purged, 5);
    for i in 0..3u8 {
        publish(&ch, "", &q, &[i]).await;
    }

    // RabbitMQ: 406 "PRECONDITION_FAILED - queue 'Q' in vhost '/' not empty" (50/40).
    let ch2 = channel(&conn).await;
    let res = within(
        "delete if-empty",
        ch2.queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..QueueDeleteOptions::default()
            },
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")
        )
    );

    let cch = channel(&conn).await;
    let consumer = consume(&cch, &q, false).await;
    // RabbitMQ: 406 "PRECONDITION_FAILED - queue 'Q' in vhost '/' in use" (50/40).
    let ch3 = channel(&conn).await;
    let res = within(
        "delete if-unused",
        ch3.queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..QueueDeleteOptions::default()
            },
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")
        )
    );
    within(
        "cancel",
        cch.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel");
    // Closing the consumer's channel without acking puts the three messages back.
    within("close", cch.close(200, "bye".into()))
        .await
        .expect("close");

    let ch4 = channel(&conn).await;
    let deleted = within(
        "delete",
        ch4.queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..QueueDeleteOptions::default()
            },
        ),
    )
    .await
    .expect("delete");
    assert_eq!(deleted, 3, "delete-ok counts the messages deleted");

    // RabbitMQ 3.10: deleting a queue that does not exist answers delete-ok with 0.
    let gone = within(
        "delete missing",
        ch4.queue_delete(
            unique("never").as_str().into(),
            QueueDeleteOptions::default(),
        ),
    )
    .await
    .expect("delete of a missing queue is ok");
    assert_eq!(gone, 0);
    // RabbitMQ: purge of a missing queue is 404 "NOT_FOUND - no queue 'Q' in vhost '/'".
    let missing = unique("never");
    let res = within(
        "purge missing",
        ch4.queue_purge(missing.as_str().into(), QueuePurgeOptions::default()),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            404,
            format!("NOT_FOUND - no queue '{missing}' in vhost '/'")
        )
    );
}
