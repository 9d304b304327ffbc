//! Round-trip and truncation tests over every generated method struct (they need the
//! test-only `Arb` impls the method macro emits, hence unit tests rather than `tests/`).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::arbitrary::{Arb, Gen};
use crate::{encode_method_frame, BasicProperties, DecodeError, Frame, Method};

fn encode(m: &Method) -> Bytes {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    out.freeze()
}

#[test]
fn there_is_one_constructor_per_method_and_ids_are_unique() {
    let ctors = Method::arbitrary_constructors();
    assert_eq!(ctors.len(), 64);
    let mut seen = std::collections::HashSet::new();
    for ctor in &ctors {
        let m = ctor(&mut Gen::new(1));
        assert!(seen.insert((m.class_id(), m.method_id())), "{}", m.name());
        assert_eq!(Method::name_of(m.class_id(), m.method_id()), Some(m.name()));
    }
}

#[test]
fn every_method_round_trips() {
    for (i, ctor) in Method::arbitrary_constructors().iter().enumerate() {
        for seed in 0..200 {
            let m = ctor(&mut Gen::new(seed * 1000 + i as u64));
            let wire = encode(&m);
            assert_eq!(
                Method::decode(wire.clone()).as_ref(),
                Ok(&m),
                "{} seed {seed}",
                m.name()
            );

            let mut frame = BytesMut::new();
            encode_method_frame(7, &m, &mut frame);
            assert_eq!(frame.len(), wire.len() + 8);
            let decoded = Frame::decode(&mut frame, 0).unwrap();
            assert_eq!(
                decoded,
                Frame::Method {
                    channel: 7,
                    method: m
                }
            );
            assert!(frame.is_empty());
        }
    }
}

#[test]
fn every_truncated_method_is_malformed() {
    for (i, ctor) in Method::arbitrary_constructors().iter().enumerate() {
        for seed in 0..10 {
            let m = ctor(&mut Gen::new(seed * 77 + i as u64));
            let wire = encode(&m);
            for cut in 0..wire.len() {
                match Method::decode(wire.slice(..cut)) {
                    Err(DecodeError::Malformed {
                        class_id,
                        method_id,
                        ..
                    }) => {
                        if cut >= 4 {
                            assert_eq!((class_id, method_id), (m.class_id(), m.method_id()));
                        }
                    }
                    other => panic!("{} cut at {cut}: {other:?}", m.name()),
                }
            }
        }
    }
}

#[test]
fn trailing_bytes_after_arguments_are_malformed() {
    // RabbitMQ answers these with a frame error rather than ignoring the extra bytes.
    for ctor in Method::arbitrary_constructors() {
        let m = ctor(&mut Gen::new(5));
        let mut wire = BytesMut::from(&encode(&m)[..]);
        wire.extend_from_slice(&[0]);
        assert!(
            matches!(
                Method::decode(wire.freeze()),
                Err(DecodeError::Malformed { .. })
            ),
            "{}",
            m.name()
        );
    }
}

#[test]
fn every_truncated_property_list_is_malformed() {
    for seed in 0..300 {
        let p = BasicProperties::arb(&mut Gen::new(seed));
        let mut out = BytesMut::new();
        p.encode(&mut out);
        let wire = out.freeze();
        assert_eq!(BasicProperties::decode(&wire).as_ref(), Ok(&p));
        for cut in 0..wire.len() {
            assert!(
                matches!(
                    BasicProperties::decode(&wire.slice(..cut)),
                    Err(DecodeError::Malformed { .. })
                ),
                "seed {seed} cut {cut}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_method_round_trips(variant in 0usize..64, seed in any::<u64>()) {
        let m = Method::arbitrary_constructors()[variant](&mut Gen::new(seed));
        prop_assert_eq!(Method::decode(encode(&m)), Ok(m));
    }

    #[test]
    fn arbitrary_properties_round_trip(seed in any::<u64>()) {
        let p = BasicProperties::arb(&mut Gen::new(seed));
        let mut out = BytesMut::new();
        p.encode(&mut out);
        prop_assert_eq!(BasicProperties::decode(&out.freeze()), Ok(p));
    }
}

/// Valid encodings with a few bytes changed reach deep into the decoder; whatever still
/// decodes must re-encode to bytes that decode to the same value.
#[test]
fn mutated_methods_never_panic_and_stay_stable() {
    let ctors = Method::arbitrary_constructors();
    for seed in 0..20_000u64 {
        let mut g = Gen::new(seed);
        let m = ctors[g.below(ctors.len() as u64) as usize](&mut g);
        let mut wire = BytesMut::from(&encode(&m)[..]);
        for _ in 0..=g.below(3) {
            let at = g.below(wire.len() as u64) as usize;
            wire[at] = g.next() as u8;
        }
        if let Ok(decoded) = Method::decode(wire.freeze()) {
            let once = encode(&decoded);
            let again = Method::decode(once.clone()).expect("re-encoded method decodes");
            assert_eq!(encode(&again), once, "seed {seed}");
        }
    }
}

#[test]
fn mutated_properties_never_panic_and_stay_stable() {
    for seed in 0..20_000u64 {
        let mut g = Gen::new(seed);
        let p = BasicProperties::arb(&mut g);
        let mut wire = BytesMut::new();
        p.encode(&mut wire);
        for _ in 0..=g.below(3) {
            let at = g.below(wire.len() as u64) as usize;
            wire[at] = g.next() as u8;
        }
        if let Ok(decoded) = BasicProperties::decode(&wire.freeze()) {
            let mut once = BytesMut::new();
            decoded.encode(&mut once);
            let once = once.freeze();
            let again = BasicProperties::decode(&once).expect("re-encoded properties decode");
            let mut twice = BytesMut::new();
            again.encode(&mut twice);
            assert_eq!(twice.freeze(), once, "seed {seed}");
        }
    }
}
