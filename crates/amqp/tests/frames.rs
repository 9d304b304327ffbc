//! Frame layer: header, size limit, frame end, splitting of bodies, zero-copy decoding.

use amqp::*;
use bytes::{BufMut, Bytes, BytesMut};

fn s(v: &str) -> ShortStr {
    ShortStr::new(v).unwrap()
}

fn publish() -> Method {
    BasicPublish {
        exchange: s("amq.direct"),
        routing_key: s("rk"),
        mandatory: true,
        immediate: false,
    }
    .into()
}

/// basic.publish + content header + two body frames, as a client sends them.
fn publish_sequence(body: &[u8], frame_max: u32) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method_frame(1, &publish(), &mut out);
    let props = BasicProperties {
        content_type: Some(s("text/plain")),
        delivery_mode: Some(2),
        ..Default::default()
    };
    let mut property_bytes = BytesMut::new();
    props.encode(&mut property_bytes);
    encode_content_header_frame(1, 60, body.len() as u64, &property_bytes, &mut out);
    encode_body_frames(1, body, frame_max, &mut out);
    out
}

#[test]
fn decodes_a_publish_sequence_and_consumes_exactly_its_bytes() {
    let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let mut buf = publish_sequence(&body, 4096);
    buf.put_u8(0xAA); // start of the next frame: must be left in place

    assert_eq!(
        Frame::decode(&mut buf, 4096).unwrap(),
        Frame::Method {
            channel: 1,
            method: publish()
        }
    );
    let Frame::Header { channel: 1, header } = Frame::decode(&mut buf, 4096).unwrap() else {
        panic!("expected a content header");
    };
    assert_eq!(
        (header.class_id, header.weight, header.body_size),
        (60, 0, 5000)
    );
    let props = BasicProperties::decode(&header.property_bytes).unwrap();
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert!(props.is_persistent());

    let mut received = Vec::new();
    for expected_len in [4088, 912] {
        let Frame::Body {
            channel: 1,
            payload,
        } = Frame::decode(&mut buf, 4096).unwrap()
        else {
            panic!("expected a body frame");
        };
        assert_eq!(payload.len(), expected_len);
        received.extend_from_slice(&payload);
    }
    assert_eq!(received, body);
    assert_eq!(&buf[..], &[0xAA]);
}

#[test]
fn body_and_strings_share_the_read_buffer() {
    let mut buf = publish_sequence(b"hello", 0);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let inside = |p: *const u8| range.contains(&(p as usize));

    let Frame::Method {
        method: Method::BasicPublish(p),
        ..
    } = Frame::decode(&mut buf, 0).unwrap()
    else {
        panic!("expected basic.publish");
    };
    assert!(inside(p.exchange.as_bytes().as_ptr()));
    assert!(inside(p.routing_key.as_bytes().as_ptr()));
    let Frame::Header { header, .. } = Frame::decode(&mut buf, 0).unwrap() else {
        panic!("expected a header");
    };
    assert!(inside(header.property_bytes.as_ptr()));
    let props = BasicProperties::decode(&header.property_bytes).unwrap();
    assert!(inside(props.content_type.unwrap().as_bytes().as_ptr()));
    let Frame::Body { payload, .. } = Frame::decode(&mut buf, 0).unwrap() else {
        panic!("expected a body");
    };
    assert_eq!(&payload[..], b"hello");
    assert!(inside(payload.as_ptr()));
}

#[test]
fn incomplete_input_leaves_the_buffer_untouched() {
    let full = publish_sequence(b"abc", 0).freeze();
    let first_len = {
        let mut b = BytesMut::from(&full[..]);
        Frame::decode(&mut b, 0).unwrap();
        full.len() - b.len()
    };
    for cut in 0..first_len {
        let mut buf = BytesMut::from(&full[..cut]);
        match Frame::decode(&mut buf, 0) {
            Err(DecodeError::Incomplete { need }) => {
                assert!(need > 0);
                assert!(cut + need <= first_len, "cut {cut} need {need}");
                if cut >= 7 {
                    assert_eq!(cut + need, first_len, "exact need once the size is known");
                }
            }
            other => panic!("cut {cut}: {other:?}"),
        }
        assert_eq!(&buf[..], &full[..cut]);
    }
}

#[test]
fn too_large_is_reported_before_the_payload_arrives() {
    let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0, 0, 0x10, 0x00][..]); // size 4096
    assert_eq!(
        Frame::decode(&mut buf, 4096),
        Err(DecodeError::FrameTooLarge {
            size: 4096,
            max: 4096
        })
    );
    assert_eq!(buf.len(), 7);
    // 4088 + 8 == 4096 fits exactly.
    let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0, 0, 0x0F, 0xF8][..]);
    assert_eq!(
        Frame::decode(&mut buf, 4096),
        Err(DecodeError::Incomplete { need: 4089 })
    );
    // A size near u32::MAX must not overflow the check.
    let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    assert!(matches!(
        Frame::decode(&mut buf, u32::MAX),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    assert!(matches!(
        Frame::decode(&mut buf, 0),
        Err(DecodeError::Incomplete { .. })
    ));
}

#[test]
fn frame_end_missing_and_unknown_type() {
    let mut buf = BytesMut::from(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0x00][..]);
    assert_eq!(
        Frame::decode(&mut buf, 0),
        Err(DecodeError::FrameEndMissing)
    );
    let mut buf = BytesMut::from(&[9, 0, 0, 0, 0, 0, 0, FRAME_END][..]);
    assert_eq!(
        Frame::decode(&mut buf, 0),
        Err(DecodeError::UnknownFrameType(9))
    );
    // The frame end is checked first, as in the contract.
    let mut buf = BytesMut::from(&[9, 0, 0, 0, 0, 0, 0, 0][..]);
    assert_eq!(
        Frame::decode(&mut buf, 0),
        Err(DecodeError::FrameEndMissing)
    );
}

#[test]
fn heartbeats() {
    let mut out = BytesMut::new();
    encode_heartbeat_frame(&mut out);
    assert_eq!(&out[..], &[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    assert_eq!(
        Frame::decode(&mut out, 4096),
        Ok(Frame::Heartbeat { channel: 0 })
    );
    let mut buf = BytesMut::from(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 1, 7, FRAME_END][..]);
    assert!(matches!(
        Frame::decode(&mut buf, 0),
        Err(DecodeError::Malformed {
            class_id: 0,
            method_id: 0,
            ..
        })
    ));
}

#[test]
fn malformed_method_arguments_name_the_method() {
    // queue.declare whose arguments table claims more bytes than the frame holds.
    let payload = [0, 50, 0, 10, 0, 0, 1, b'q', 0, 0, 0, 0, 9];
    let mut buf = BytesMut::new();
    buf.put_u8(FRAME_METHOD);
    buf.put_u16(3);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(&payload);
    buf.put_u8(FRAME_END);
    assert!(matches!(
        Frame::decode(&mut buf, 0),
        Err(DecodeError::Malformed {
            class_id: 50,
            method_id: 10,
            ..
        })
    ));
    let mut buf = BytesMut::from(&[FRAME_METHOD, 0, 0, 0, 0, 0, 4, 0, 60, 0, 99, FRAME_END][..]);
    assert_eq!(
        Frame::decode(&mut buf, 0),
        Err(DecodeError::UnknownMethod {
            class_id: 60,
            method_id: 99
        })
    );
}

#[test]
fn content_header_needs_class_weight_size_and_flags() {
    for len in 0..14 {
        assert!(matches!(
            ContentHeader::decode(Bytes::from(vec![0u8; len])),
            Err(DecodeError::Malformed { .. })
        ));
    }
    let h = ContentHeader::decode(Bytes::from_static(&[
        0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    ]))
    .unwrap();
    assert_eq!(
        (h.class_id, h.body_size, &h.property_bytes[..]),
        (60, 256, &[0u8, 0][..])
    );
}

#[test]
fn body_frames_split_by_frame_max() {
    let body = vec![7u8; 10_000];
    let mut out = BytesMut::new();
    encode_body_frames(5, &body, 4096, &mut out);
    let mut sizes = Vec::new();
    while !out.is_empty() {
        match Frame::decode(&mut out, 4096).unwrap() {
            Frame::Body {
                channel: 5,
                payload,
            } => sizes.push(payload.len()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sizes, [4088, 4088, 1824]);

    let mut out = BytesMut::new();
    encode_body_frames(5, &[], 4096, &mut out);
    assert!(out.is_empty(), "an empty body has no body frame");

    encode_body_frames(5, &body, 0, &mut out);
    assert_eq!(out.len(), body.len() + FRAME_OVERHEAD);
}

#[test]
fn frame_encode_round_trips_every_kind() {
    let frames = [
        Frame::Method {
            channel: 0,
            method: ConnectionTuneOk {
                channel_max: 1,
                frame_max: 4096,
                heartbeat: 0,
            }
            .into(),
        },
        Frame::Header {
            channel: 2,
            header: ContentHeader {
                class_id: 60,
                weight: 0,
                body_size: 9,
                property_bytes: Bytes::from_static(&[0x10, 0, 1]),
            },
        },
        Frame::Body {
            channel: 2,
            payload: Bytes::from_static(b"123456789"),
        },
        Frame::Heartbeat { channel: 0 },
    ];
    let mut out = BytesMut::new();
    for f in &frames {
        f.encode(&mut out);
    }
    for (f, channel) in frames.iter().zip([0, 2, 2, 0]) {
        let decoded = Frame::decode(&mut out, FRAME_MIN_SIZE).unwrap();
        assert_eq!(&decoded, f);
        assert_eq!(decoded.channel(), channel);
    }
    assert!(out.is_empty());
}

#[test]
fn basic_header_frame_helper_matches_generic_encoder() {
    let props = BasicProperties {
        message_id: Some(s("m")),
        ..Default::default()
    };
    let mut a = BytesMut::new();
    encode_basic_header_frame(4, 11, &props, &mut a);
    let mut pb = BytesMut::new();
    props.encode(&mut pb);
    let mut b = BytesMut::new();
    encode_content_header_frame(4, 60, 11, &pb, &mut b);
    assert_eq!(a, b);
}

#[test]
fn protocol_header_constant() {
    assert_eq!(&PROTOCOL_HEADER, b"AMQP\x00\x00\x09\x01");
}
