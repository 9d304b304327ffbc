//! Issue item 6: message content. Properties and field tables round-trip exactly, bodies are
//! framed by frame_max, empty and large bodies work, and an oversize message gets the
//! channel.close RabbitMQ sends. Codes and texts are RabbitMQ 3.10.8's.

use client_tests::raw::{flag, Close, Enc, Field, Handshake, RawClient};
use client_tests::*;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::BasicProperties;

fn every_field_type() -> FieldTable {
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString("deep".into()));
    nested.insert("n".into(), AMQPValue::LongInt(-7));
    let array = FieldArray::from(vec![
        AMQPValue::LongString("a".into()),
        AMQPValue::LongInt(1),
        AMQPValue::Boolean(false),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Double(0.25)])),
        AMQPValue::FieldTable(nested.clone()),
    ]);
    let mut t = FieldTable::default();
    t.insert("bool".into(), AMQPValue::Boolean(true));
    t.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    t.insert("u8".into(), AMQPValue::ShortShortUInt(200));
    t.insert("i16".into(), AMQPValue::ShortInt(-16_000));
    t.insert("u16".into(), AMQPValue::ShortUInt(60_000));
    t.insert("i32".into(), AMQPValue::LongInt(-2_000_000_000));
    t.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    t.insert("i64".into(), AMQPValue::LongLongInt(-9_000_000_000_000));
    t.insert("f32".into(), AMQPValue::Float(1.5));
    t.insert("f64".into(), AMQPValue::Double(-2.125));
    t.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    t.insert(
        "longstr".into(),
        AMQPValue::LongString("héllo wörld".into()),
    );
    t.insert("array".into(), AMQPValue::FieldArray(array));
    t.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    t.insert("table".into(), AMQPValue::FieldTable(nested));
    t.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 254, 255])),
    );
    t.insert("void".into(), AMQPValue::Void);
    t
}

fn every_property() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_field_type())
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr-1".into())
        .with_reply_to("reply-queue".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_600_000_000)
        .with_type("event.type".into())
        // RabbitMQ checks user_id against the login.
        .with_user_id("guest".into())
        .with_app_id("client-tests".into())
        .with_cluster_id("cluster-x".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_property_and_field_type_round_trips_through_lapin() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "props").await;
    let props = every_property();
    publish_with(
        &ch,
        "",
        &q,
        BasicPublishOptions::default(),
        props.clone(),
        b"payload",
    )
    .await;
    let mut consumer = consume(&ch, &q, true).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"payload");
    assert_eq!(d.properties, props);

    // And through basic.get, and with no properties at all.
    publish(&ch, "", &q, b"bare").await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, BasicProperties::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_must_be_the_authenticated_user() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, "user-id").await;
    let watch = CloseWatch::on(&ch).await;
    let _ = within(
        "publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_user_id("bob".into()),
        ),
    )
    .await;
    // RabbitMQ: channel.close 406 "PRECONDITION_FAILED - user_id property set to 'bob' but
    // authenticated user was 'guest'" (60/40).
    assert_eq!(
        watch.reason().await,
        (
            406,
            "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was \
             'guest'"
                .into()
        )
    );
}

/// Every property flag set, with a headers table whose keys are deliberately not sorted
/// and that holds every field type, nested.
fn hand_encoded_properties() -> (u16, Vec<u8>) {
    let headers = vec![
        ("zeta".to_string(), Field::str("last key first")),
        ("bool".to_string(), Field::Bool(false)),
        ("i8".to_string(), Field::I8(-1)),
        ("u8".to_string(), Field::U8(255)),
        ("i16".to_string(), Field::I16(i16::MIN)),
        ("u16".to_string(), Field::U16(u16::MAX)),
        ("i32".to_string(), Field::I32(i32::MIN)),
        ("u32".to_string(), Field::U32(u32::MAX)),
        ("i64".to_string(), Field::I64(i64::MIN)),
        ("f32".to_string(), Field::F32(-0.5)),
        ("f64".to_string(), Field::F64(1e300)),
        (
            "decimal".to_string(),
            Field::Decimal {
                scale: 3,
                value: 987_654,
            },
        ),
        ("str".to_string(), Field::LongStr(vec![0, 1, 2, b'x'])),
        (
            "array".to_string(),
            Field::Array(vec![
                Field::I32(1),
                Field::str("two"),
                Field::Array(vec![]),
                Field::Table(vec![("k".to_string(), Field::Void)]),
                Field::Timestamp(42),
            ]),
        ),
        ("ts".to_string(), Field::Timestamp(1_234_567_890)),
        (
            "table".to_string(),
            Field::Table(vec![
                ("b".to_string(), Field::Bool(true)),
                ("a".to_string(), Field::Table(vec![])),
            ]),
        ),
        (
            "bytes".to_string(),
            Field::Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
        ),
        ("void".to_string(), Field::Void),
        ("alpha".to_string(), Field::str("first key last")),
    ];
    let flags = flag::CONTENT_TYPE
        | flag::CONTENT_ENCODING
        | flag::HEADERS
        | flag::DELIVERY_MODE
        | flag::PRIORITY
        | flag::CORRELATION_ID
        | flag::REPLY_TO
        | flag::EXPIRATION
        | flag::MESSAGE_ID
        | flag::TIMESTAMP
        | flag::TYPE
        | flag::USER_ID
        | flag::APP_ID
        | flag::CLUSTER_ID;
    let props = Enc::new()
        .shortstr("text/plain")
        .shortstr("utf-8")
        .table(&headers)
        .u8(1)
        .u8(9)
        .shortstr("correlation")
        .shortstr("reply")
        .shortstr("30000")
        .shortstr("message-id")
        .u64(1_500_000_000)
        .shortstr("kind")
        .shortstr("guest")
        .shortstr("app")
        .shortstr("cluster")
        .done();
    (flags, props)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_bytes_come_back_exactly_as_sent() {
    let broker = TestBroker::start();
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let q = unique("raw-props");
    c.declare_queue(1, &q).await;
    let (flags, props) = hand_encoded_properties();
    c.publish(1, "", &q, flags, &props, b"body").await;
    // A sparse selection of flags too: only headers and timestamp.
    let sparse = Enc::new()
        .table(&[("only".to_string(), Field::I64(1))])
        .u64(7)
        .done();
    c.publish(1, "", &q, flag::HEADERS | flag::TIMESTAMP, &sparse, b"")
        .await;
    c.consume_no_ack(1, &q).await;

    let d = c.read_delivery(1).await;
    assert_eq!(d.property_flags, flags);
    assert_eq!(d.properties, props, "property bytes differ");
    assert_eq!(d.body, b"body");
    let d = c.read_delivery(1).await;
    assert_eq!(d.property_flags, flag::HEADERS | flag::TIMESTAMP);
    assert_eq!(d.properties, sparse);
    assert!(d.body.is_empty());
    assert!(
        d.body_frame_sizes.is_empty(),
        "an empty body has no body frame"
    );
    c.delete_queue(1, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_split_at_the_negotiated_frame_max() {
    let broker = TestBroker::start();
    let h = Handshake {
        frame_max: Some(4096),
        ..Handshake::default()
    };
    let mut c = RawClient::handshake(broker.addr(), &h)
        .await
        .expect("handshake");
    c.open_channel(1).await;
    let q = unique("frames");
    c.declare_queue(1, &q).await;
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    // Published in uneven pieces; delivered in full frames of frame_max - 8 bytes.
    c.send_publish(1, "", &q).await;
    c.send_frame(
        client_tests::raw::FRAME_HEADER,
        1,
        &client_tests::raw::content_header_payload(body.len() as u64, 0, &[]),
    )
    .await;
    for piece in [&body[..1], &body[1..4000], &body[4000..4001], &body[4001..]] {
        for chunk in piece.chunks(4088) {
            c.send_frame(client_tests::raw::FRAME_BODY, 1, chunk).await;
        }
    }
    c.consume_no_ack(1, &q).await;
    let d = c.read_delivery(1).await;
    assert_eq!(d.body, body);
    // RabbitMQ: [4088, 4088, 1824].
    assert_eq!(d.body_frame_sizes, vec![4088, 4088, 1824]);
    c.delete_queue(1, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_large_bodies_round_trip() {
    let broker = TestBroker::start();
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "bodies").await;
    publish(&ch, "", &q, b"").await;
    let large: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    publish(&ch, "", &q, &large).await;
    let mut consumer = consume(&ch, &q, true).await;
    assert!(next_delivery(&mut consumer).await.data.is_empty());
    let got = next_delivery(&mut consumer).await.data;
    assert_eq!(got.len(), large.len());
    assert!(got == large, "20 MiB body differs");
}

/// What the broker's message size limit is, when the test can know it.
fn max_message_size(broker: &TestBroker, wanted: usize) -> Option<usize> {
    if !broker.is_external() {
        return Some(wanted);
    }
    std::env::var("WARREN_TEST_EXTERNAL_MAX_MESSAGE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_closes_the_channel_with_406() {
    const LIMIT: usize = 1024 * 1024;
    let broker = TestBroker::start_with(|cfg| cfg.max_message_size_bytes = LIMIT);
    let Some(limit) = max_message_size(&broker, LIMIT) else {
        skip(
            "oversize_message_closes_the_channel_with_406",
            "set WARREN_TEST_EXTERNAL_MAX_MESSAGE_SIZE to the external broker's max_message_size",
        );
        return;
    };
    let mut c = RawClient::open(broker.addr()).await;
    c.open_channel(1).await;
    let q = unique("size");
    c.declare_queue(1, &q).await;
    // Exactly the limit is accepted.
    c.publish(1, "", &q, 0, &[], &vec![b'x'; limit]).await;
    c.open_channel(2).await;

    // One byte more: RabbitMQ (after the whole body arrived) answers channel.close 406
    // "PRECONDITION_FAILED - message size 1048577 is larger than configured max size
    // 1048576" (60/40). With the default limit (128 MiB) the text says "max size" instead of
    // "configured max size".
    c.publish(1, "", &q, 0, &[], &vec![b'y'; limit + 1]).await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close {
            reply_code: 406,
            reply_text: format!(
                "PRECONDITION_FAILED - message size {} is larger than configured max size {}",
                limit + 1,
                limit
            ),
            class_id: 60,
            method_id: 40,
        }
    );
    // Only the channel closed; the message of exactly the limit is there.
    c.open_channel(3).await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    assert_eq!(message_count(&ch, &q).await, 1);
    c.delete_queue(3, &q).await;
}
