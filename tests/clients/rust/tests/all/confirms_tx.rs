//! Issue item 5: publisher confirms (ack, nack, multiple) and transactions (publishes and
//! acks committed or rolled back). Codes and texts are RabbitMQ 3.10.8's.

use std::collections::BTreeSet;

use client_tests::raw::{Close, Enc, RawClient};
use client_tests::*;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_is_confirmed_once_in_order() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "confirms").await;
    let mut pending = Vec::new();
    for i in 0..200u32 {
        let confirm = within(
            "publish",
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("publish");
        pending.push(confirm);
    }
    for confirm in pending {
        let c = within("confirm", confirm).await.expect("confirm");
        assert!(c.is_ack(), "{c:?}");
    }
    assert_eq!(message_count(&ch, &q).await, 200);
    within("wait_for_confirms", ch.wait_for_confirms())
        .await
        .expect("nothing outstanding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_confirms_cover_each_delivery_tag_exactly_once() {
    let broker = TestBroker::start();
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let q = unique("raw-confirms");
    c.declare_queue(1, &q).await;
    c.send_method(1, 85, 10, &Enc::new().bits(&[false]).done())
        .await;
    c.expect_method(1, 85, 11).await;

    // One write with many publishes gives the broker the chance to confirm with multiple=true.
    const N: u64 = 100;
    let mut batch = Vec::new();
    for i in 0..N {
        let publish = Enc::new()
            .u16(0)
            .shortstr("")
            .shortstr(&q)
            .bits(&[false, false])
            .done();
        batch.extend(client_tests::raw::frame_bytes(
            client_tests::raw::FRAME_METHOD,
            1,
            &client_tests::raw::method_payload(60, 40, &publish),
        ));
        batch.extend(client_tests::raw::frame_bytes(
            client_tests::raw::FRAME_HEADER,
            1,
            &client_tests::raw::content_header_payload(8, 0, &[]),
        ));
        batch.extend(client_tests::raw::frame_bytes(
            client_tests::raw::FRAME_BODY,
            1,
            &i.to_be_bytes(),
        ));
    }
    c.write_all(&batch).await;

    let mut confirmed = BTreeSet::new();
    let mut last_tag = 0;
    while (confirmed.len() as u64) < N {
        let ack = c.expect_method(1, 60, 80).await;
        let mut a = ack.args();
        let tag = a.u64().expect("delivery tag");
        let multiple = a.u8().expect("multiple bit") & 1 == 1;
        assert!(
            tag > last_tag,
            "confirm tags must increase: {tag} after {last_tag}"
        );
        assert!(tag <= N, "confirm for tag {tag} that was never published");
        last_tag = tag;
        if multiple {
            for t in 1..=tag {
                confirmed.insert(t);
            }
        } else {
            assert!(confirmed.insert(tag), "tag {tag} confirmed twice");
        }
    }
    assert_eq!(confirmed, (1..=N).collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_rejects_publishes_gets_them_nacked() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = unique("reject-publish");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    within(
        "declare",
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args),
    )
    .await
    .expect("declare");
    // RabbitMQ: the first is acked, the one over x-max-length is basic.nack'ed.
    assert!(publish(&ch, "", &q, b"fits").await.is_ack());
    let second = publish(&ch, "", &q, b"rejected").await;
    assert!(second.is_nack(), "{second:?}");
    assert_eq!(message_count(&ch, &q).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_and_tx_modes_exclude_each_other() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    within("tx.select", ch.tx_select())
        .await
        .expect("tx.select");
    // RabbitMQ: channel.close 406 "PRECONDITION_FAILED - cannot switch from tx to confirm
    // mode" (85/10).
    let res = within(
        "confirm.select on tx channel",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode".into()
        )
    );
    let ch = confirm_channel(&conn).await;
    // RabbitMQ: 406 "PRECONDITION_FAILED - cannot switch from confirm to tx mode" (90/10).
    let res = within("tx.select on confirm channel", ch.tx_select()).await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback_of_publishes() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let observer = channel(&conn).await;
    let q = declare_queue(&observer, "tx-publish").await;
    let ch = channel(&conn).await;
    within("tx.select", ch.tx_select())
        .await
        .expect("tx.select");

    publish(&ch, "", &q, b"one").await;
    publish(&ch, "", &q, b"two").await;
    assert_eq!(
        message_count(&observer, &q).await,
        0,
        "nothing before commit"
    );
    within("tx.commit", ch.tx_commit()).await.expect("commit");
    assert_eq!(message_count(&observer, &q).await, 2);

    publish(&ch, "", &q, b"rolled back").await;
    within("tx.rollback", ch.tx_rollback())
        .await
        .expect("rollback");
    publish(&ch, "", &q, b"three").await;
    within("tx.commit", ch.tx_commit()).await.expect("commit");
    assert_eq!(
        drain(&observer, &q).await,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );

    // Mandatory and unroutable inside a transaction: returned at commit (RabbitMQ sends
    // basic.return before tx.commit-ok); the commit itself succeeds.
    let key = unique("nowhere");
    publish_with(
        &ch,
        "",
        &key,
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        BasicProperties::default(),
        b"x",
    )
    .await;
    within("tx.commit", ch.tx_commit()).await.expect("commit");
    // lapin keeps returns of a channel without confirms for wait_for_confirms to hand out.
    let returned = within("returned messages", ch.wait_for_confirms())
        .await
        .expect("returned messages");
    assert_eq!(returned.len(), 1, "{returned:?}");
    assert_eq!(
        (returned[0].reply_code, returned[0].reply_text.as_str()),
        (312, "NO_ROUTE")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback_of_acks() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let setup = confirm_channel(&conn).await;
    let q = declare_queue(&setup, "tx-ack").await;
    for i in 1..=3u8 {
        publish(&setup, "", &q, &[i]).await;
    }
    let ch = channel(&conn).await;
    within("tx.select", ch.tx_select())
        .await
        .expect("tx.select");
    let mut tags = Vec::new();
    for _ in 0..3 {
        let m = within(
            "get",
            ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .expect("get")
        .expect("message");
        tags.push(m.delivery.delivery_tag);
    }
    // Rolled-back acks are forgotten: the messages stay unacked.
    within("ack", ch.basic_ack(tags[0], BasicAckOptions::default()))
        .await
        .expect("ack");
    within("tx.rollback", ch.tx_rollback())
        .await
        .expect("rollback");
    // Committed ack and reject(requeue) take effect at commit.
    within("ack", ch.basic_ack(tags[1], BasicAckOptions::default()))
        .await
        .expect("ack");
    within(
        "reject",
        ch.basic_reject(tags[2], BasicRejectOptions { requeue: true }),
    )
    .await
    .expect("reject");
    assert_eq!(
        message_count(&setup, &q).await,
        0,
        "reject not applied before commit"
    );
    within("tx.commit", ch.tx_commit()).await.expect("commit");
    assert_eq!(
        message_count(&setup, &q).await,
        1,
        "rejected message is back"
    );
    // Closing the channel requeues what is still unacked: message 1 (its ack was rolled
    // back), ahead of message 3.
    within("close", ch.close(200, "bye".into()))
        .await
        .expect("close");
    let bodies = drain(&setup, &q).await;
    assert_eq!(bodies, vec![vec![1], vec![3]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_or_rollback_without_select_is_406() {
    let broker = TestBroker::start();
    // RabbitMQ: channel.close 406 "PRECONDITION_FAILED - channel is not transactional",
    // class 90 method 20 (commit) / 30 (rollback).
    for method_id in [20u16, 30] {
        let mut c = RawClient::open(broker.addr()).await;
        c.open_channel(1).await;
        c.send_method(1, 90, method_id, &[]).await;
        assert_eq!(
            c.expect_channel_close(1).await,
            Close {
                reply_code: 406,
                reply_text: "PRECONDITION_FAILED - channel is not transactional".into(),
                class_id: 90,
                method_id,
            }
        );
    }
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let res = within("tx.commit", ch.tx_commit()).await;
    assert_eq!(
        expect_amqp_error(res),
        (
            406,
            "PRECONDITION_FAILED - channel is not transactional".into()
        )
    );
}
