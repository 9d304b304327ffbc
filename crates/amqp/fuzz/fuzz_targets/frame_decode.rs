//! Fuzz target: arbitrary bytes as a client's byte stream. Decoding must never panic, and
//! whatever decodes must re-encode to bytes that decode and re-encode to the same bytes.
#![no_main]

use amqp::{BasicProperties, Frame, Method};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn check_method_is_stable(method: &Method) {
    let mut once = BytesMut::new();
    method.encode(&mut once);
    let again = Method::decode(once.clone().freeze()).expect("re-encoded method decodes");
    let mut twice = BytesMut::new();
    again.encode(&mut twice);
    assert_eq!(
        once,
        twice,
        "{} is not stable under re-encoding",
        method.name()
    );
}

fn check_properties_are_stable(props: &BasicProperties) {
    let mut once = BytesMut::new();
    props.encode(&mut once);
    let again =
        BasicProperties::decode(&once.clone().freeze()).expect("re-encoded properties decode");
    let mut twice = BytesMut::new();
    again.encode(&mut twice);
    assert_eq!(once, twice);
}

fuzz_target!(|data: &[u8]| {
    // First byte picks a frame_max so the size check is exercised too.
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let frame_max = match pick % 4 {
        0 => 0,
        1 => 8,
        2 => 4096,
        _ => 131_072,
    };
    let mut buf = BytesMut::from(stream);
    while let Ok(frame) = Frame::decode(&mut buf, frame_max) {
        match &frame {
            Frame::Method { method, .. } => check_method_is_stable(method),
            Frame::Header { header, .. } => {
                if let Ok(props) = BasicProperties::decode(&header.property_bytes) {
                    check_properties_are_stable(&props);
                }
            }
            Frame::Body { .. } | Frame::Heartbeat { .. } => {}
        }
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        let reparsed = Frame::decode(&mut out, 0).expect("an encoded frame decodes");
        let mut out2 = BytesMut::new();
        reparsed.encode(&mut out2);
        let mut out1 = BytesMut::new();
        frame.encode(&mut out1);
        assert_eq!(out1, out2);
    }
});
