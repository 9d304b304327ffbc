//! Issue item 4: publish (mandatory, missing exchange), consume/cancel (tags, exclusive,
//! server-sent cancel), get, ack/nack/reject, recover, qos, round-robin dispatch and requeue
//! on channel close. Codes and texts are RabbitMQ 3.10.8's.

use std::time::Duration;

use client_tests::raw::{Close, Enc, RawClient};
use client_tests::*;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRecoverOptions, BasicRejectOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

async fn get(ch: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    within(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .expect("basic.get")
}

/// The broker's verdict on the acks sent so far: a synchronous method after them either
/// succeeds or fails with the channel.close they caused.
async fn sync_point(ch: &Channel) -> lapin::Result<()> {
    within(
        "basic.qos as a sync point",
        ch.basic_qos(0, BasicQosOptions::default()),
    )
    .await
}

async fn publish_n(ch: &Channel, queue: &str, n: u8) {
    for i in 1..=n {
        publish(ch, "", queue, &[i]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_with_312_no_route() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let key = unique("nobody-home");
    let props = BasicProperties::default()
        .with_message_id("m-1".into())
        .with_content_type("text/plain".into());
    let confirmation = publish_with(
        &ch,
        "amq.direct",
        &key,
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        props.clone(),
        b"returned body",
    )
    .await;
    // RabbitMQ: basic.return 312 "NO_ROUTE" carrying exchange, routing key, properties and
    // body, then basic.ack for the publish (an unroutable message is still confirmed).
    assert!(confirmation.is_ack(), "{confirmation:?}");
    let returned = confirmation.take_message().expect("basic.return");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.exchange.as_str(), "amq.direct");
    assert_eq!(returned.routing_key.as_str(), key);
    assert_eq!(returned.data, b"returned body");
    assert_eq!(returned.properties, props);

    // Not mandatory: dropped silently, still acked.
    let confirmation = publish(&ch, "amq.direct", &key, b"dropped").await;
    assert!(confirmation.is_ack());
    assert!(confirmation.take_message().is_none());

    // By hand, on a channel without confirms: basic.return, content header, body.
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let args = Enc::new()
        .u16(0)
        .shortstr("")
        .shortstr(&key)
        .bits(&[true, false])
        .done();
    c.send_method(1, 60, 40, &args).await;
    let header = client_tests::raw::content_header_payload(3, 0, &[]);
    c.send_frame(client_tests::raw::FRAME_HEADER, 1, &header)
        .await;
    c.send_frame(client_tests::raw::FRAME_BODY, 1, b"abc").await;
    let ret = c.expect_method(1, 60, 50).await;
    let mut a = ret.args();
    assert_eq!(a.u16().expect("reply code"), 312);
    assert_eq!(a.shortstr().expect("reply text"), "NO_ROUTE");
    assert_eq!(a.shortstr().expect("exchange"), "");
    assert_eq!(a.shortstr().expect("routing key"), key);
    let h = c.read_frame().await.expect("content header");
    assert_eq!(h.frame_type, client_tests::raw::FRAME_HEADER);
    let b = c.read_frame().await.expect("body");
    assert_eq!(
        (b.frame_type, b.payload.as_slice()),
        (client_tests::raw::FRAME_BODY, &b"abc"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_missing_exchange_closes_the_channel_with_404() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let watch = CloseWatch::on(&ch).await;
    let missing = unique("no-such-exchange");
    let _ = within(
        "publish",
        ch.basic_publish(
            missing.as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"lost",
            BasicProperties::default(),
        ),
    )
    .await;
    // RabbitMQ: channel.close 404 "NOT_FOUND - no exchange 'X' in vhost '/'" (60/40).
    assert_eq!(
        watch.reason().await,
        (
            404,
            format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
        )
    );
    // The class and method ids, by hand.
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_publish(1, &missing, "k").await;
    c.send_frame(
        client_tests::raw::FRAME_HEADER,
        1,
        &client_tests::raw::content_header_payload(0, 0, &[]),
    )
    .await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close {
            reply_code: 404,
            reply_text: format!("NOT_FOUND - no exchange '{missing}' in vhost '/'"),
            class_id: 60,
            method_id: 40,
        }
    );
    // The connection carries on.
    c.open_channel(2).await;
    let other = channel(&conn).await;
    declare_queue(&other, "after-404").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_tags_are_generated_and_reuse_is_530() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, "ctag").await;
    let generated = consume(&ch, &q, true).await;
    let tag = generated.tag().to_string();
    // RabbitMQ: "amq.ctag-" followed by 22 URL-safe base64 characters.
    assert!(tag.starts_with("amq.ctag-"), "{tag}");
    assert_eq!(tag.len(), "amq.ctag-".len() + 22, "{tag}");
    let mine = within(
        "consume with a tag",
        ch.basic_consume(
            q.as_str().into(),
            "my-tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");
    assert_eq!(mine.tag().as_str(), "my-tag");
    // The same tag on another channel is fine: tags are per channel.
    let ch2 = channel(&conn).await;
    within(
        "same tag on another channel",
        ch2.basic_consume(
            q.as_str().into(),
            "my-tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("consume");

    // RabbitMQ: connection.close 530 "NOT_ALLOWED - attempt to reuse consumer tag 'my-tag'"
    // (60/20): a connection error, not a channel error.
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let consume_args = Enc::new()
        .u16(0)
        .shortstr(&q)
        .shortstr("my-tag")
        .bits(&[false, true, false, false])
        .empty_table()
        .done();
    c.send_method(1, 60, 20, &consume_args).await;
    c.expect_method(1, 60, 21).await;
    c.send_method(1, 60, 20, &consume_args).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close {
            reply_code: 530,
            reply_text: "NOT_ALLOWED - attempt to reuse consumer tag 'my-tag'".into(),
            class_id: 60,
            method_id: 20,
        }
    );

    // lapin sees the same as a hard error.
    let res = within(
        "duplicate tag",
        ch.basic_consume(
            q.as_str().into(),
            "my-tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            530,
            "NOT_ALLOWED - attempt to reuse consumer tag 'my-tag'".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_deliveries_and_consume_on_missing_queue_is_404() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "cancel").await;
    let mut consumer = consume(&ch, &q, true).await;
    publish(&ch, "", &q, b"before").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"before");
    within(
        "cancel",
        ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel");
    publish(&ch, "", &q, b"after").await;
    assert_eq!(message_count(&ch, &q).await, 1, "no consumer took it");
    // Cancelling an unknown tag is not an error (RabbitMQ answers cancel-ok).
    within(
        "cancel unknown",
        ch.basic_cancel("no-such-tag".into(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel of an unknown tag");

    // RabbitMQ: 404 "NOT_FOUND - no queue 'Q' in vhost '/'" (60/20).
    let ch2 = channel(&conn).await;
    let missing = unique("nothing");
    let res = within(
        "consume missing",
        ch2.basic_consume(
            missing.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_locks_out_others() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, "excl-consumer").await;
    let exclusive = BasicConsumeOptions {
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    // lapin cancels a consumer when its handle is dropped: keep them alive.
    let _owner = within(
        "exclusive consume",
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            exclusive,
            FieldTable::default(),
        ),
    )
    .await
    .expect("exclusive consume");
    // RabbitMQ: 403 "ACCESS_REFUSED - queue 'Q' in vhost '/' in exclusive use" (60/20).
    let ch2 = channel(&conn).await;
    let res = within(
        "second consumer",
        ch2.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            403,
            format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")
        )
    );

    // And an exclusive consume on a queue that already has a consumer: the same 403.
    let q2 = declare_queue(&ch, "has-consumer").await;
    let _existing = consume(&ch, &q2, true).await;
    let ch3 = channel(&conn).await;
    let res = within(
        "exclusive after another",
        ch3.basic_consume(
            q2.as_str().into(),
            "".into(),
            exclusive,
            FieldTable::default(),
        ),
    )
    .await;
    assert_eq!(
        expect_amqp_error(res),
        (
            403,
            format!("ACCESS_REFUSED - queue '{q2}' in vhost '/' in exclusive use")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_cancels_its_consumers() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, "doomed").await;
    let mut consumer = consume(&ch, &q, true).await;
    let other = channel(&conn).await;
    within(
        "delete",
        other.queue_delete(q.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
    // RabbitMQ sends basic.cancel (consumer_cancel_notify); lapin then ends the stream.
    let next = within("server-sent basic.cancel", consumer.next()).await;
    assert!(next.is_none(), "stream must end, got {next:?}");
    // The channel stays open.
    declare_queue(&ch, "after-cancel").await;

    // By hand: basic.cancel carries the consumer tag and nowait set, on the consumer's channel.
    let q2 = declare_queue(&ch, "doomed-raw").await;
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let tag = c.consume_no_ack(1, &q2).await;
    within(
        "delete",
        other.queue_delete(q2.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
    let cancel = c.expect_method(1, 60, 30).await;
    let mut a = cancel.args();
    assert_eq!(a.shortstr().expect("tag"), tag);
    assert_eq!(
        a.u8().expect("nowait bit"),
        1,
        "server-sent cancel has nowait set"
    );

    // A client without consumer_cancel_notify is told nothing: the next frame it gets is
    // the reply to its own next method.
    let q3 = declare_queue(&ch, "doomed-quiet").await;
    let h = client_tests::raw::Handshake {
        consumer_cancel_notify: false,
        ..client_tests::raw::Handshake::default()
    };
    let mut c = RawClient::handshake(broker.addr(), &h)
        .await
        .expect("handshake");
    c.open_channel(1).await;
    c.consume_no_ack(1, &q3).await;
    within(
        "delete",
        other.queue_delete(q3.as_str().into(), QueueDeleteOptions::default()),
    )
    .await
    .expect("delete");
    c.send_method(1, 60, 10, &Enc::new().u32(0).u16(0).bits(&[false]).done())
        .await;
    c.expect_method(1, 60, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_get_empty_with_message_count() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "get").await;
    assert!(get(&ch, &q).await.is_none(), "get-empty on an empty queue");
    publish_n(&ch, &q, 3).await;
    let mut tags = Vec::new();
    for (i, left) in [(1u8, 2u32), (2, 1), (3, 0)] {
        let m = get(&ch, &q).await.expect("get-ok");
        assert_eq!(m.delivery.data, vec![i]);
        assert_eq!(m.message_count, left, "message_count after get #{i}");
        assert!(!m.delivery.redelivered);
        assert_eq!(m.delivery.routing_key.as_str(), q);
        tags.push(m.delivery.delivery_tag);
    }
    // Delivery tags count up from 1 per channel.
    assert_eq!(tags, vec![1, 2, 3]);
    assert!(get(&ch, &q).await.is_none());
    within(
        "ack all",
        ch.basic_ack(3, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("ack");
    sync_point(&ch).await.expect("acks accepted");

    // RabbitMQ: 404 "NOT_FOUND - no queue 'Q' in vhost '/'" (60/70).
    let ch2 = channel(&conn).await;
    let missing = unique("nothing");
    let res = within(
        "get missing",
        ch2.basic_get(missing.as_str().into(), BasicGetOptions::default()),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_nack_reject_with_multiple_and_requeue() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "acks").await;
    publish_n(&ch, &q, 6).await;
    for _ in 0..6 {
        get(&ch, &q).await.expect("get");
    }
    // ack 1..=2 (multiple), nack 3 requeue, reject 4 requeue=false, nack 5..=6 (multiple)
    // requeue=false.
    within("ack", ch.basic_ack(2, BasicAckOptions { multiple: true }))
        .await
        .expect("ack");
    within(
        "nack",
        ch.basic_nack(
            3,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        ),
    )
    .await
    .expect("nack");
    within(
        "reject",
        ch.basic_reject(4, BasicRejectOptions { requeue: false }),
    )
    .await
    .expect("reject");
    within(
        "nack multiple",
        ch.basic_nack(
            6,
            BasicNackOptions {
                multiple: true,
                requeue: false,
            },
        ),
    )
    .await
    .expect("nack multiple");
    sync_point(&ch).await.expect("all tags were valid");

    // Only message 3 is back, marked redelivered.
    let m = get(&ch, &q).await.expect("requeued message");
    assert_eq!(m.delivery.data, vec![3]);
    assert!(m.delivery.redelivered);
    assert_eq!(m.message_count, 0);
    within(
        "reject requeue",
        ch.basic_reject(
            m.delivery.delivery_tag,
            BasicRejectOptions { requeue: true },
        ),
    )
    .await
    .expect("reject");
    let m = get(&ch, &q).await.expect("requeued again");
    assert_eq!(m.delivery.data, vec![3]);
    assert!(m.delivery.redelivered);
    // ack with delivery_tag 0 and multiple acknowledges everything outstanding.
    within(
        "ack all",
        ch.basic_ack(0, BasicAckOptions { multiple: true }),
    )
    .await
    .expect("ack all");
    sync_point(&ch).await.expect("tag 0 multiple is valid");
    assert!(get(&ch, &q).await.is_none());
    within("close", ch.close(200, "bye".into()))
        .await
        .expect("close");
    let ch2 = channel(&conn).await;
    assert_eq!(message_count(&ch2, &q).await, 0, "nothing was left unacked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_repeated_delivery_tags_are_406() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let setup = confirm_channel(&conn).await;
    let q = declare_queue(&setup, "bad-tags").await;
    publish_n(&setup, &q, 3).await;

    // RabbitMQ: channel.close 406 "PRECONDITION_FAILED - unknown delivery tag 99" (60/80).
    let ch = channel(&conn).await;
    let watch = CloseWatch::on(&ch).await;
    within("ack", ch.basic_ack(99, BasicAckOptions::default()))
        .await
        .expect("send ack");
    assert_eq!(
        watch.reason().await,
        (406, "PRECONDITION_FAILED - unknown delivery tag 99".into())
    );

    // Acking the same tag twice: RabbitMQ "PRECONDITION_FAILED - unknown delivery tag 1".
    let ch = channel(&conn).await;
    let watch = CloseWatch::on(&ch).await;
    let m = get(&ch, &q).await.expect("get");
    let tag = m.delivery.delivery_tag;
    within("ack", ch.basic_ack(tag, BasicAckOptions::default()))
        .await
        .expect("ack");
    within("ack again", ch.basic_ack(tag, BasicAckOptions::default()))
        .await
        .expect("send second ack");
    assert_eq!(
        watch.reason().await,
        (
            406,
            format!("PRECONDITION_FAILED - unknown delivery tag {tag}")
        )
    );

    // The ids of the failing method, by hand, for ack (60/80), reject (60/90), nack (60/120).
    for (method_id, args) in [
        (80u16, Enc::new().u64(7).bits(&[false]).done()),
        (90, Enc::new().u64(7).bits(&[true]).done()),
        (120, Enc::new().u64(7).bits(&[false, true]).done()),
    ] {
        let mut c = RawClient::open(broker.addr()).await;
        c.open_channel(1).await;
        c.send_method(1, 60, method_id, &args).await;
        assert_eq!(
            c.expect_channel_close(1).await,
            Close {
                reply_code: 406,
                reply_text: "PRECONDITION_FAILED - unknown delivery tag 7".into(),
                class_id: 60,
                method_id,
            }
        );
    }
    // Those failed channels did not requeue anything twice: two messages left.
    assert_eq!(message_count(&setup, &q).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_requeues_unacked_messages_as_redelivered() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "recover").await;
    publish_n(&ch, &q, 2).await;
    let first = get(&ch, &q).await.expect("get");
    let second = get(&ch, &q).await.expect("get");
    assert!(!first.delivery.redelivered && !second.delivery.redelivered);
    within(
        "recover",
        ch.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .expect("recover");
    let again: Vec<_> = [get(&ch, &q).await, get(&ch, &q).await]
        .into_iter()
        .map(|m| m.expect("redelivered"))
        .collect();
    assert_eq!(again[0].delivery.data, vec![1]);
    assert_eq!(again[1].delivery.data, vec![2]);
    assert!(again.iter().all(|m| m.delivery.redelivered));
    // The old tags are void after recover; the new ones are fresh numbers.
    assert_eq!(again[0].delivery.delivery_tag, 3);
    within("ack", ch.basic_ack(4, BasicAckOptions { multiple: true }))
        .await
        .expect("ack");
    sync_point(&ch).await.expect("new tags valid");

    // RabbitMQ: basic.recover requeue=false is connection.close 540 "NOT_IMPLEMENTED -
    // requeue=false" (60/110).
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(1, 60, 110, &Enc::new().bits(&[false]).done())
        .await;
    assert_eq!(
        c.expect_connection_close().await,
        Close {
            reply_code: 540,
            reply_text: "NOT_IMPLEMENTED - requeue=false".into(),
            class_id: 60,
            method_id: 110,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_prefetch_count_is_per_consumer_unless_global() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let setup = confirm_channel(&conn).await;
    let q1 = declare_queue(&setup, "qos-1").await;
    let q2 = declare_queue(&setup, "qos-2").await;
    publish_n(&setup, &q1, 5).await;
    publish_n(&setup, &q2, 5).await;

    // global=false: each new consumer on the channel may hold 2 unacked messages.
    let ch = channel(&conn).await;
    within("qos", ch.basic_qos(2, BasicQosOptions { global: false }))
        .await
        .expect("qos");
    let mut c1 = consume(&ch, &q1, false).await;
    let mut c2 = consume(&ch, &q2, false).await;
    let a = [next_delivery(&mut c1).await, next_delivery(&mut c1).await];
    let b = [next_delivery(&mut c2).await, next_delivery(&mut c2).await];
    assert_eq!(message_count(&setup, &q1).await, 3);
    assert_eq!(message_count(&setup, &q2).await, 3);
    // Acking one frees exactly one slot of that consumer.
    a[0].acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let a3 = next_delivery(&mut c1).await;
    assert_eq!(a3.data, vec![3]);
    assert_eq!(message_count(&setup, &q1).await, 2);
    drop((b, c2));
    within("close", ch.close(200, "bye".into()))
        .await
        .expect("close");

    // global=true: the consumers of the channel share 3.
    let q3 = declare_queue(&setup, "qos-3").await;
    let q4 = declare_queue(&setup, "qos-4").await;
    publish_n(&setup, &q3, 5).await;
    publish_n(&setup, &q4, 5).await;
    let ch = channel(&conn).await;
    within(
        "qos global",
        ch.basic_qos(3, BasicQosOptions { global: true }),
    )
    .await
    .expect("qos");
    let mut c3 = consume(&ch, &q3, false).await;
    for _ in 0..3 {
        next_delivery(&mut c3).await;
    }
    let _c4 = consume(&ch, &q4, false).await;
    assert_eq!(message_count(&setup, &q3).await, 2);
    // Nothing for the second consumer: the channel's 3 are used.
    assert_eq!(message_count(&setup, &q4).await, 5);
    within("close", ch.close(200, "bye".into()))
        .await
        .expect("close");

    // RabbitMQ 3.10 refuses a non-zero prefetch_size: connection.close 540
    // "NOT_IMPLEMENTED - prefetch_size!=0 (1000)" (60/10).
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        60,
        10,
        &Enc::new().u32(1000).u16(0).bits(&[false]).done(),
    )
    .await;
    assert_eq!(
        c.expect_connection_close().await,
        Close {
            reply_code: 540,
            reply_text: "NOT_IMPLEMENTED - prefetch_size!=0 (1000)".into(),
            class_id: 60,
            method_id: 10,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_a_queue_get_messages_round_robin() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let setup = confirm_channel(&conn).await;
    let q = declare_queue(&setup, "round-robin").await;
    let ch_a = channel(&conn).await;
    let ch_b = channel(&conn).await;
    let mut a = consume(&ch_a, &q, true).await;
    let mut b = consume(&ch_b, &q, true).await;
    publish_n(&setup, &q, 6).await;
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..3 {
        got_a.push(next_delivery(&mut a).await.data[0]);
        got_b.push(next_delivery(&mut b).await.data[0]);
    }
    assert_eq!(got_a, vec![1, 3, 5]);
    assert_eq!(got_b, vec![2, 4, 6]);

    // A consumer without credit is skipped: with prefetch 1 and no acks, the other
    // consumer takes the rest.
    let q2 = declare_queue(&setup, "credit").await;
    let ch_c = channel(&conn).await;
    within("qos", ch_c.basic_qos(1, BasicQosOptions::default()))
        .await
        .expect("qos");
    let ch_d = channel(&conn).await;
    let mut c = consume(&ch_c, &q2, false).await;
    let mut d = consume(&ch_d, &q2, false).await;
    publish_n(&setup, &q2, 4).await;
    assert_eq!(next_delivery(&mut c).await.data, vec![1]);
    let rest: Vec<u8> = [
        next_delivery(&mut d).await,
        next_delivery(&mut d).await,
        next_delivery(&mut d).await,
    ]
    .iter()
    .map(|m| m.data[0])
    .collect();
    assert_eq!(rest, vec![2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_requeues_unacked_in_original_order() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let setup = confirm_channel(&conn).await;
    let q = declare_queue(&setup, "requeue").await;
    publish_n(&setup, &q, 6).await;

    // basic.get keeps the test free of prefetch: 5 and 6 are never delivered.
    let ch = channel(&conn).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(get(&ch, &q).await.expect("get"));
    }
    assert_eq!(
        held.iter().map(|m| m.delivery.data[0]).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Ack 2 and 4; 1 and 3 stay unacked; 5 and 6 are still ready in the queue.
    within(
        "ack 2",
        ch.basic_ack(held[1].delivery.delivery_tag, BasicAckOptions::default()),
    )
    .await
    .expect("ack 2");
    within(
        "ack 4",
        ch.basic_ack(held[3].delivery.delivery_tag, BasicAckOptions::default()),
    )
    .await
    .expect("ack 4");
    sync_point(&ch).await.expect("acks ok");
    within("close", ch.close(200, "bye".into()))
        .await
        .expect("close");

    let after = channel(&conn).await;
    let mut seen = Vec::new();
    while let Some(m) = get(&after, &q).await {
        seen.push((m.delivery.data[0], m.delivery.redelivered));
    }
    // RabbitMQ puts them back where they were: ahead of the never-delivered ones.
    assert_eq!(seen, vec![(1, true), (3, true), (5, false), (6, false)]);

    // Closing the whole connection does the same.
    let q2 = declare_queue(&setup, "requeue-conn").await;
    publish_n(&setup, &q2, 3).await;
    let conn2 = connect(&broker).await;
    let ch2 = channel(&conn2).await;
    let mut consumer = consume(&ch2, &q2, false).await;
    for _ in 0..3 {
        next_delivery(&mut consumer).await;
    }
    within("close connection", conn2.close(200, "bye".into()))
        .await
        .expect("close");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seen.len() < 3 && tokio::time::Instant::now() < deadline {
        if let Some(m) = get(&after, &q2).await {
            seen.push((m.delivery.data[0], m.delivery.redelivered));
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(seen, vec![(1, true), (2, true), (3, true)]);
}
