//! Golden byte vectors. Every expected byte string was produced by RabbitMQ 3.10.8's own
//! encoder (rabbit_framing_amqp_0_9_1:encode_method_fields / encode_properties and
//! rabbit_binary_generator:generate_table) for the same values, so these pin Warren's wire
//! format to what RabbitMQ sends and expects.

use amqp::*;
use bytes::{Bytes, BytesMut};

fn hex(s: &str) -> Bytes {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

fn table(entries: Vec<(&str, FieldValue)>) -> FieldTable {
    entries.into_iter().map(|(k, v)| (s(k), v)).collect()
}

/// Encodes `method` and compares with RabbitMQ's bytes, then decodes those bytes back.
fn check(expected_hex: &str, method: impl Into<Method>) {
    let method = method.into();
    let expected = hex(expected_hex);
    let mut out = BytesMut::new();
    method.encode(&mut out);
    assert_eq!(
        &out[..],
        &expected[..],
        "encoding of {} differs from RabbitMQ's",
        method.name()
    );
    let decoded = Method::decode(expected).unwrap();
    assert_eq!(decoded, method);
}

#[test]
fn connection_methods() {
    check(
        "000a000a00090000003c0770726f6475637453000000085261626269744d510c6361706162696c69746965734600000015127075626c69736865725f636f6e6669726d7374010000000e504c41494e20414d51504c41494e00000005656e5f5553",
        ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties: table(vec![
                ("product", "RabbitMQ".into()),
                ("capabilities", FieldValue::Table(table(vec![("publisher_confirms", true.into())]))),
            ]),
            mechanisms: "PLAIN AMQPLAIN".into(),
            locales: "en_US".into(),
        },
    );
    check(
        "000a000b000000110770726f64756374530000000470696b6105504c41494e0000000c00677565737400677565737405656e5f5553",
        ConnectionStartOk {
            client_properties: table(vec![("product", "pika".into())]),
            mechanism: s("PLAIN"),
            response: LongStr::from(b"\0guest\0guest".to_vec()),
            locale: s("en_US"),
        },
    );
    check(
        "000a001e07ff00020000003c",
        ConnectionTune {
            channel_max: 2047,
            frame_max: 131072,
            heartbeat: 60,
        },
    );
    check(
        "000a0028012f0000",
        ConnectionOpen {
            virtual_host: s("/"),
        },
    );
    check("000a002900", ConnectionOpenOk {});
    check(
        "000a003201401c434f4e4e454354494f4e5f464f52434544202d2073687574646f776e00000000",
        ConnectionClose {
            reply_code: 320,
            reply_text: s("CONNECTION_FORCED - shutdown"),
            class_id: 0,
            method_id: 0,
        },
    );
    check(
        "000a003c0d6c6f77206f6e206d656d6f7279",
        ConnectionBlocked {
            reason: s("low on memory"),
        },
    );
    check(
        "000a0046000000067333637233740772656672657368",
        ConnectionUpdateSecret {
            new_secret: "s3cr3t".into(),
            reason: s("refresh"),
        },
    );
}

#[test]
fn channel_methods() {
    check("0014000a00", ChannelOpen {});
    check("0014000b00000000", ChannelOpenOk {});
    check("0014001401", ChannelFlow { active: true });
    check(
        "001400280194254e4f545f464f554e44202d206e6f2071756575652027712720696e2076686f737420272f270032000a",
        ChannelClose {
            reply_code: 404,
            reply_text: s("NOT_FOUND - no queue 'q' in vhost '/'"),
            class_id: 50,
            method_id: 10,
        },
    );
}

#[test]
fn exchange_methods() {
    check(
        "0028000a000002657805746f7069630a0000001a12616c7465726e6174652d65786368616e676553000000026165",
        ExchangeDeclare {
            exchange: s("ex"),
            kind: s("topic"),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: true,
            no_wait: false,
            arguments: table(vec![("alternate-exchange", "ae".into())]),
        },
    );
    check(
        "00280014000002657803",
        ExchangeDelete {
            exchange: s("ex"),
            if_unused: true,
            no_wait: true,
        },
    );
    check(
        "0028001e0000036473740373726303612e230100000000",
        ExchangeBind {
            destination: s("dst"),
            source: s("src"),
            routing_key: s("a.#"),
            no_wait: true,
            arguments: FieldTable::new(),
        },
    );
    // RabbitMQ numbers exchange.unbind-ok 51.
    check("00280033", ExchangeUnbindOk {});
    assert_eq!(ExchangeUnbindOk::METHOD_ID, 51);
}

#[test]
fn queue_methods() {
    // passive=0 durable=1 exclusive=0 auto_delete=1 no_wait=0 packs into 0b01010.
    check(
        "0032000a000001710a000000160c782d6d61782d6c656e6774686c000000000000000a",
        QueueDeclare {
            queue: s("q"),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: true,
            no_wait: false,
            arguments: table(vec![("x-max-length", FieldValue::I64(10))]),
        },
    );
    check(
        "0032000b01710000000500000001",
        QueueDeclareOk {
            queue: s("q"),
            message_count: 5,
            consumer_count: 1,
        },
    );
    check(
        "003200140000017102657802726b000000001007782d6d617463685300000003616c6c",
        QueueBind {
            queue: s("q"),
            exchange: s("ex"),
            routing_key: s("rk"),
            no_wait: false,
            arguments: table(vec![("x-match", "all".into())]),
        },
    );
    check("0032001f00000011", QueuePurgeOk { message_count: 17 });
    check(
        "003200280000017105",
        QueueDelete {
            queue: s("q"),
            if_unused: true,
            if_empty: false,
            no_wait: true,
        },
    );
    check(
        "003200320000017102657802726b00000000",
        QueueUnbind {
            queue: s("q"),
            exchange: s("ex"),
            routing_key: s("rk"),
            arguments: FieldTable::new(),
        },
    );
}

#[test]
fn basic_methods() {
    check(
        "003c000a00000000000a01",
        BasicQos {
            prefetch_size: 0,
            prefetch_count: 10,
            global: true,
        },
    );
    check(
        "003c001400000171046374616706000000100a782d7072696f726974794900000005",
        BasicConsume {
            queue: s("q"),
            consumer_tag: s("ctag"),
            no_local: false,
            no_ack: true,
            exclusive: true,
            no_wait: false,
            arguments: table(vec![("x-priority", FieldValue::I32(5))]),
        },
    );
    check(
        "003c001e046374616701",
        BasicCancel {
            consumer_tag: s("ctag"),
            no_wait: true,
        },
    );
    check(
        "003c002800000a616d712e64697265637402726b01",
        BasicPublish {
            exchange: s("amq.direct"),
            routing_key: s("rk"),
            mandatory: true,
            immediate: false,
        },
    );
    check(
        "003c00320138084e4f5f524f55544502657802726b",
        BasicReturn {
            reply_code: 312,
            reply_text: s("NO_ROUTE"),
            exchange: s("ex"),
            routing_key: s("rk"),
        },
    );
    check(
        "003c003c0463746167000000000000002a0102657802726b",
        BasicDeliver {
            consumer_tag: s("ctag"),
            delivery_tag: 42,
            redelivered: true,
            exchange: s("ex"),
            routing_key: s("rk"),
        },
    );
    check(
        "003c00460000017101",
        BasicGet {
            queue: s("q"),
            no_ack: true,
        },
    );
    check(
        "003c004700000000000000070000017100000003",
        BasicGetOk {
            delivery_tag: 7,
            redelivered: false,
            exchange: ShortStr::default(),
            routing_key: s("q"),
            message_count: 3,
        },
    );
    check("003c004800", BasicGetEmpty {});
    check(
        "003c00500000011f71fb04cb01",
        BasicAck {
            delivery_tag: 1234567890123,
            multiple: true,
        },
    );
    check(
        "003c005a000000000000000901",
        BasicReject {
            delivery_tag: 9,
            requeue: true,
        },
    );
    check("003c006e01", BasicRecover { requeue: true });
    // multiple=1 requeue=0 share one octet: 0b01.
    check(
        "003c0078000000000000000901",
        BasicNack {
            delivery_tag: 9,
            multiple: true,
            requeue: false,
        },
    );
}

#[test]
fn confirm_and_tx_methods() {
    check("0055000a01", ConfirmSelect { no_wait: true });
    check("005a0015", TxCommitOk {});
}

#[test]
fn method_metadata() {
    let publish = Method::from(BasicPublish::default());
    assert_eq!((publish.class_id(), publish.method_id()), (60, 40));
    assert_eq!(publish.name(), "basic.publish");
    assert!(publish.has_content());
    for m in [
        Method::from(BasicReturn::default()),
        Method::from(BasicDeliver::default()),
        Method::from(BasicGetOk::default()),
    ] {
        assert!(m.has_content(), "{}", m.name());
    }
    assert!(!Method::from(BasicAck::default()).has_content());
    assert!(!Method::from(BasicGetEmpty::default()).has_content());
    assert_eq!(
        Method::from(ConnectionStartOk::default()).name(),
        "connection.start-ok"
    );
    assert_eq!(
        Method::from(BasicRecoverAsync::default()).name(),
        "basic.recover-async"
    );
    assert_eq!(Method::name_of(40, 51), Some("exchange.unbind-ok"));
    assert_eq!(Method::name_of(40, 41), None);
    assert_eq!(
        Method::decode(hex("00280029")),
        Err(DecodeError::UnknownMethod {
            class_id: 40,
            method_id: 41
        })
    );
}

#[test]
fn every_field_value_type_matches_rabbitmq() {
    // RabbitMQ's generate_table output (without the 32-bit length prefix).
    let entries = hex("016173fffe0162750003016349fffffffc0164690000000501656cfffffffffffffffa0166780000000201020167540000000000000007016844020000013a016956016a62ff016b42ff016c663fc00000016d644004000000000000016e7401016f530000000268690170410000000e4600000007017141000000007400");
    let expected = table(vec![
        ("a", FieldValue::I16(-2)),
        ("b", FieldValue::U16(3)),
        ("c", FieldValue::I32(-4)),
        ("d", FieldValue::U32(5)),
        ("e", FieldValue::I64(-6)),
        ("f", FieldValue::ByteArray(Bytes::from_static(&[1, 2]))),
        ("g", FieldValue::Timestamp(7)),
        (
            "h",
            FieldValue::Decimal(Decimal {
                scale: 2,
                value: 314,
            }),
        ),
        ("i", FieldValue::Void),
        ("j", FieldValue::I8(-1)),
        ("k", FieldValue::U8(255)),
        ("l", FieldValue::F32(1.5)),
        ("m", FieldValue::F64(2.5)),
        ("n", FieldValue::Bool(true)),
        ("o", "hi".into()),
        (
            "p",
            FieldValue::Array(vec![
                FieldValue::Table(table(vec![("q", FieldValue::Array(vec![]))])),
                FieldValue::Bool(false),
            ]),
        ),
    ]);
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    wire.extend_from_slice(&entries);
    let wire = wire.freeze();

    let mut out = BytesMut::new();
    expected.encode(&mut out);
    assert_eq!(&out[..], &wire[..]);
    assert_eq!(FieldTable::decode(&wire).unwrap(), expected);
}

#[test]
fn rabbitmq_table_quirks() {
    // RabbitMQ's parser accepts 'L' as a signed 64-bit alias and any non-zero bool as true.
    let t = FieldTable::decode(&hex("00000013016b4cfffffffffffffffe0162740701637400")).unwrap();
    assert_eq!(t.get("k"), Some(&FieldValue::I64(-2)));
    assert_eq!(t.get("b"), Some(&FieldValue::Bool(true)));
    assert_eq!(t.get("c"), Some(&FieldValue::Bool(false)));
    // Unknown tags are refused, as RabbitMQ does.
    assert!(matches!(
        FieldTable::decode(&hex("00000004016b5100")),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn basic_properties_all_present() {
    let wire = hex("fffc106170706c69636174696f6e2f6a736f6e04677a69700000000f0168530000000176016e49ffffffff020904636f727215616d712e7261626269746d712e7265706c792d746f053630303030056d73672d31000000006553f100046b696e640567756573740361707002636c");
    let props = BasicProperties {
        content_type: Some(s("application/json")),
        content_encoding: Some(s("gzip")),
        headers: Some(table(vec![("h", "v".into()), ("n", FieldValue::I32(-1))])),
        delivery_mode: Some(2),
        priority: Some(9),
        correlation_id: Some(s("corr")),
        reply_to: Some(s("amq.rabbitmq.reply-to")),
        expiration: Some(s("60000")),
        message_id: Some(s("msg-1")),
        timestamp: Some(1_700_000_000),
        kind: Some(s("kind")),
        user_id: Some(s("guest")),
        app_id: Some(s("app")),
        cluster_id: Some(s("cl")),
    };
    let mut out = BytesMut::new();
    props.encode(&mut out);
    assert_eq!(&out[..], &wire[..]);
    assert_eq!(BasicProperties::decode(&wire).unwrap(), props);
    assert!(props.is_persistent());
}

#[test]
fn basic_properties_some_present() {
    let wire = hex("90000a746578742f706c61696e01");
    let props = BasicProperties {
        content_type: Some(s("text/plain")),
        delivery_mode: Some(1),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    props.encode(&mut out);
    assert_eq!(&out[..], &wire[..]);
    assert_eq!(BasicProperties::decode(&wire).unwrap(), props);
    assert!(!props.is_persistent());

    let mut out = BytesMut::new();
    BasicProperties::default().encode(&mut out);
    assert_eq!(&out[..], &[0, 0]);
}

#[test]
fn basic_properties_continuation_flag_words_are_skipped() {
    // Flags: content-type + continuation; a second flag word (ignored); then the property.
    let wire = hex("800100000174");
    let props = BasicProperties::decode(&wire).unwrap();
    assert_eq!(props.content_type.as_deref(), Some("t"));
}

#[test]
fn basic_properties_trailing_bytes_are_refused() {
    assert!(matches!(
        BasicProperties::decode(&hex("1000026362")),
        Err(DecodeError::Malformed { .. })
    ));
}
