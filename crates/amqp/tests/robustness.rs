//! Hostile input: arbitrary bytes never panic, nesting is bounded, untrusted lengths are not
//! trusted; and property-based encode→decode identity for tables and properties.

use amqp::*;
use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

fn short_str() -> impl Strategy<Value = ShortStr> {
    prop_oneof![
        "[a-z.#*]{0,12}",
        "\\PC{0,40}",
        // Exactly at the limit, with multi-byte characters.
        Just("é".repeat(127) + "a"),
    ]
    .prop_filter_map("fits a shortstr", |s| ShortStr::new(s).ok())
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        // Not NaN: NaN != NaN would fail equality without any codec bug.
        prop::num::f32::NORMAL.prop_map(FieldValue::F32),
        prop::num::f64::NORMAL.prop_map(FieldValue::F64),
        (any::<u8>(), any::<u32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|v| FieldValue::LongStr(LongStr::from(v))),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|v| FieldValue::ByteArray(Bytes::from(v))),
        any::<u64>().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
            prop::collection::vec((short_str(), inner), 0..6)
                .prop_map(|entries| FieldValue::Table(FieldTable(entries))),
        ]
    })
}

fn field_table() -> impl Strategy<Value = FieldTable> {
    prop::collection::vec((short_str(), field_value()), 0..8).prop_map(FieldTable)
}

fn basic_properties() -> impl Strategy<Value = BasicProperties> {
    let s = || prop::option::of(short_str());
    (
        (
            s(),
            s(),
            prop::option::of(field_table()),
            prop::option::of(any::<u8>()),
        ),
        (prop::option::of(any::<u8>()), s(), s(), s(), s()),
        (prop::option::of(any::<u64>()), s(), s(), s(), s()),
    )
        .prop_map(
            |(
                (content_type, content_encoding, headers, delivery_mode),
                (priority, correlation_id, reply_to, expiration, message_id),
                (timestamp, kind, user_id, app_id, cluster_id),
            )| BasicProperties {
                content_type,
                content_encoding,
                headers,
                delivery_mode,
                priority,
                correlation_id,
                reply_to,
                expiration,
                message_id,
                timestamp,
                kind,
                user_id,
                app_id,
                cluster_id,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn field_tables_round_trip(table in field_table()) {
        let mut out = BytesMut::new();
        table.encode(&mut out);
        let wire = out.freeze();
        prop_assert_eq!(FieldTable::decode(&wire), Ok(table));
        for cut in 0..wire.len() {
            let is_malformed = matches!(
                FieldTable::decode(&wire.slice(..cut)),
                Err(DecodeError::Malformed { .. })
            );
            prop_assert!(is_malformed);
        }
    }

    #[test]
    fn basic_properties_round_trip(props in basic_properties()) {
        let mut out = BytesMut::new();
        props.encode(&mut out);
        prop_assert_eq!(BasicProperties::decode(&out.freeze()), Ok(props));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let b = Bytes::from(bytes.clone());
        let _ = Method::decode(b.clone());
        let _ = BasicProperties::decode(&b);
        let _ = FieldTable::decode(&b);
        let _ = ContentHeader::decode(b);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(_frame) = Frame::decode(&mut buf, 0) {}
    }

    /// Random argument bytes behind a valid class/method id reach deeper than fully random input.
    #[test]
    fn arbitrary_arguments_never_panic(
        id in prop::sample::select(&[(10u16, 10u16), (10, 11), (40, 10), (50, 10), (60, 20), (60, 40), (60, 60), (60, 71), (60, 120)][..]),
        args in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut payload = BytesMut::new();
        payload.put_u16(id.0);
        payload.put_u16(id.1);
        payload.put_slice(&args);
        if let Err(e) = Method::decode(payload.freeze()) {
            let names_method = matches!(
                e,
                DecodeError::Malformed { class_id, method_id, .. } if (class_id, method_id) == id
            );
            prop_assert!(names_method);
        }
    }

    #[test]
    fn arbitrary_frames_never_panic(
        frame_type in prop::sample::select(&[1u8, 2, 3, 8][..]),
        channel in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        frame_max in prop::sample::select(&[0u32, 9, 4096][..]),
    ) {
        let mut buf = BytesMut::new();
        buf.put_u8(frame_type);
        buf.put_u16(channel);
        buf.put_u32(payload.len() as u32);
        buf.put_slice(&payload);
        buf.put_u8(FRAME_END);
        let before = buf.len();
        match Frame::decode(&mut buf, frame_max) {
            Err(DecodeError::FrameTooLarge { .. }) => prop_assert_eq!(buf.len(), before),
            _ => prop_assert!(buf.is_empty()),
        }
    }
}

/// `levels` tables nested inside each other, as the bytes of the outermost one. Written
/// outside-in (lengths are known in advance) so that huge depths stay linear to build.
fn nested_tables(levels: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 * levels);
    for i in 0..levels - 1 {
        let remaining = levels - 1 - i; // tables inside this one
        out.extend_from_slice(&(7 * remaining as u32).to_be_bytes());
        out.extend_from_slice(&[1, b'k', b'F']);
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

/// A table holding `levels - 1` arrays nested inside each other.
fn nested_arrays(levels: usize) -> Vec<u8> {
    let arrays = levels - 1;
    let mut out = Vec::with_capacity(5 * levels + 3);
    // An array of n-1 nested arrays inside takes 4 + 5 * (n - 1) bytes.
    let array_size = |n: usize| 4 + 5 * (n - 1) as u32;
    out.extend_from_slice(&(3 + array_size(arrays)).to_be_bytes());
    out.extend_from_slice(&[1, b'k', b'A']);
    for n in (2..=arrays).rev() {
        out.extend_from_slice(&(array_size(n) - 4).to_be_bytes());
        out.push(b'A');
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

#[test]
fn nesting_is_bounded() {
    assert!(FieldTable::decode(&Bytes::from(nested_tables(MAX_NESTING_DEPTH))).is_ok());
    assert!(matches!(
        FieldTable::decode(&Bytes::from(nested_tables(MAX_NESTING_DEPTH + 1))),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(FieldTable::decode(&Bytes::from(nested_arrays(MAX_NESTING_DEPTH))).is_ok());
    assert!(matches!(
        FieldTable::decode(&Bytes::from(nested_arrays(MAX_NESTING_DEPTH + 1))),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn hostile_deep_nesting_is_rejected_not_overflowed() {
    // Far deeper than any stack would survive with unbounded recursion.
    for bytes in [nested_tables(200_000), nested_arrays(200_000)] {
        let mut payload = BytesMut::new();
        payload.put_slice(&[0, 50, 0, 10, 0, 0, 1, b'q', 0]); // queue.declare up to arguments
        payload.put_slice(&bytes);
        assert!(matches!(
            Method::decode(payload.freeze()),
            Err(DecodeError::Malformed {
                class_id: 50,
                method_id: 10,
                ..
            })
        ));
    }
}

#[test]
fn untrusted_lengths_are_checked_against_the_input() {
    // Table, array, longstr and byte array each claiming ~4 GiB.
    for bytes in [
        &[0xFF, 0xFF, 0xFF, 0xFF][..],
        &[0, 0, 0, 8, 1, b'k', b'A', 0xFF, 0xFF, 0xFF, 0xFF, 0][..],
        &[0, 0, 0, 7, 1, b'k', b'S', 0xFF, 0xFF, 0xFF, 0xFF][..],
        &[0, 0, 0, 7, 1, b'k', b'x', 0xFF, 0xFF, 0xFF, 0xFF][..],
    ] {
        assert!(matches!(
            FieldTable::decode(&Bytes::copy_from_slice(bytes)),
            Err(DecodeError::Malformed { .. })
        ));
    }
}

#[test]
fn invalid_utf8_in_a_shortstr_is_malformed() {
    // basic.publish with exchange name 0xFF 0xFE.
    let payload = Bytes::from_static(&[0, 60, 0, 40, 0, 0, 2, 0xFF, 0xFE, 0, 0]);
    assert!(matches!(
        Method::decode(payload),
        Err(DecodeError::Malformed {
            class_id: 60,
            method_id: 40,
            ..
        })
    ));
}
