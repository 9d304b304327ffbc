//! The helper API other crates rely on: strings, field tables, field value accessors.

use std::collections::HashMap;

use amqp::*;
use bytes::Bytes;

#[test]
fn short_str_construction_and_limits() {
    assert_eq!(ShortStr::new("a".repeat(255)).unwrap().len(), 255);
    assert_eq!(
        ShortStr::new("a".repeat(256)),
        Err(DecodeError::StringTooLong)
    );
    assert_eq!(
        ShortStr::from_bytes(Bytes::from_static(&[0xC3])),
        Err(DecodeError::InvalidUtf8)
    );
    assert!(ShortStr::default().is_empty());
    const NAME: ShortStr = ShortStr::from_static("amq.direct");
    assert_eq!(NAME.as_str(), "amq.direct");
}

#[test]
#[should_panic]
fn short_str_from_static_rejects_programmer_errors() {
    let long: &'static str = Box::leak("x".repeat(256).into_boxed_str());
    let _ = ShortStr::from_static(long);
}

#[test]
fn short_str_behaves_like_str() {
    let q = ShortStr::new("queue").unwrap();
    assert_eq!(q, "queue");
    assert_eq!(q, *"queue");
    assert_eq!("queue", q);
    assert!(q.starts_with("qu")); // via Deref<Target = str>
    assert_eq!(format!("{q}"), "queue");
    assert_eq!(format!("{q:?}"), "\"queue\"");
    assert!(ShortStr::new("a").unwrap() < ShortStr::new("b").unwrap());

    let mut map = HashMap::new();
    map.insert(q.clone(), 1);
    assert_eq!(map.get("queue"), Some(&1));
}

#[test]
fn long_str_conversions() {
    assert_eq!(LongStr::from("hi").as_bytes(), b"hi");
    assert_eq!(
        LongStr::from(String::from("hi")),
        LongStr::from(vec![b'h', b'i'])
    );
    assert_eq!(LongStr::from(Bytes::from_static(b"x")).as_str(), Some("x"));
    assert_eq!(LongStr::from(vec![0xFF]).as_str(), None);
    assert_eq!(
        format!("{:?}", LongStr::from(vec![b'a', 0xFF])),
        "\"a\u{FFFD}\""
    );
}

#[test]
fn field_table_keeps_order_and_duplicates() {
    let k = |s: &str| ShortStr::new(s).unwrap();
    let mut t = FieldTable(vec![
        (k("b"), FieldValue::I32(1)),
        (k("a"), FieldValue::I32(2)),
        (k("b"), FieldValue::I32(3)),
    ]);
    assert_eq!(t.get("b"), Some(&FieldValue::I32(1)), "first match wins");
    t.insert(k("a"), FieldValue::Void);
    t.insert(k("c"), FieldValue::Bool(true));
    let keys: Vec<&str> = t.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "a", "b", "c"]);
    assert_eq!(t.get("a"), Some(&FieldValue::Void));
    assert_eq!(t.remove("b"), Some(FieldValue::I32(1)));
    assert_eq!(t.get("b"), None, "remove drops every duplicate");
    assert_eq!(t.remove("zz"), None);
    assert_eq!(t.len(), 2);
    assert!(!t.is_empty());
    assert!(FieldTable::new().is_empty());
}

#[test]
fn field_value_accessors() {
    for (v, expected) in [
        (FieldValue::I8(-1), Some(-1)),
        (FieldValue::U8(255), Some(255)),
        (FieldValue::I16(-300), Some(-300)),
        (FieldValue::U16(65535), Some(65535)),
        (FieldValue::I32(i32::MIN), Some(i32::MIN as i64)),
        (FieldValue::U32(u32::MAX), Some(u32::MAX as i64)),
        (FieldValue::I64(i64::MAX), Some(i64::MAX)),
        (FieldValue::Timestamp(5), None),
        (FieldValue::Bool(true), None),
        (FieldValue::from("10"), None),
    ] {
        assert_eq!(v.as_i64(), expected, "{v:?}");
    }
    assert_eq!(FieldValue::from("all").as_str(), Some("all"));
    assert_eq!(
        FieldValue::LongStr(LongStr::from(vec![0xFF])).as_str(),
        None
    );
    assert_eq!(
        FieldValue::ByteArray(Bytes::from_static(b"x")).as_str(),
        None
    );
    assert_eq!(FieldValue::Bool(false).as_bool(), Some(false));
    assert_eq!(FieldValue::U8(1).as_bool(), None);
    assert_eq!(FieldValue::from(true).tag(), b't');
}
