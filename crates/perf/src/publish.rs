//! The bytes of one basic.publish (method frame, content header, body frames), encoded once
//! with the codec and copied per message; and the send-time stamp that rides in the body.
//! Knows nothing of sockets or scenarios.

use std::sync::OnceLock;
use std::time::Instant;

use amqp::{
    encode_basic_header_frame, encode_body_frames, encode_method_frame, BasicProperties,
    BasicPublish, Method,
};
use bytes::BytesMut;

use crate::client::{short, Result};

/// Send times are nanoseconds since this process's first call: producers and consumers of
/// one run share the process, so a monotonic clock is enough and no clock sync is needed.
pub fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    // +1 so that a stamp is never 0, which reads as "no stamp" in a zeroed body.
    epoch.elapsed().as_nanos() as u64 + 1
}

pub struct PublishTemplate {
    channel: u16,
    frame_max: u32,
    /// basic.publish method frame followed by the content header frame.
    prefix: Vec<u8>,
    body: Vec<u8>,
}

impl PublishTemplate {
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        body_size: usize,
        persistent: bool,
        frame_max: u32,
    ) -> Result<PublishTemplate> {
        let mut prefix = BytesMut::new();
        let publish = BasicPublish {
            exchange: short(exchange)?,
            routing_key: short(routing_key)?,
            mandatory: false,
            immediate: false,
        };
        encode_method_frame(channel, &Method::BasicPublish(publish), &mut prefix);
        let properties = BasicProperties {
            delivery_mode: Some(if persistent { 2 } else { 1 }),
            ..Default::default()
        };
        encode_basic_header_frame(channel, body_size as u64, &properties, &mut prefix);
        Ok(PublishTemplate {
            channel,
            frame_max,
            prefix: prefix.to_vec(),
            body: vec![0x2a; body_size],
        })
    }

    /// Sets the send time carried by the next messages (bodies shorter than 8 bytes carry none).
    pub fn stamp(&mut self, nanos: u64) {
        if let Some(head) = self.body.get_mut(..8) {
            head.copy_from_slice(&nanos.to_be_bytes());
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.prefix);
        encode_body_frames(self.channel, &self.body, self.frame_max, out);
    }

    pub fn encoded_len(&self) -> usize {
        let chunk = (self.frame_max as usize).saturating_sub(8).max(1);
        self.prefix.len() + self.body.len() + self.body.len().div_ceil(chunk) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp::Frame;

    #[test]
    fn template_decodes_as_publish_header_and_stamped_body() {
        let mut t = PublishTemplate::new(3, "ex", "rk", 300, true, 4096).unwrap();
        t.stamp(0x0102_0304_0506_0708);
        let mut out = BytesMut::new();
        t.encode(&mut out);
        t.encode(&mut out);
        assert_eq!(out.len(), 2 * t.encoded_len());
        for _ in 0..2 {
            match Frame::decode(&mut out, 0).unwrap() {
                Frame::Method {
                    channel: 3,
                    method: Method::BasicPublish(p),
                } => {
                    assert_eq!(p.exchange, "ex");
                    assert_eq!(p.routing_key, "rk");
                }
                other => panic!("{other:?}"),
            }
            match Frame::decode(&mut out, 0).unwrap() {
                Frame::Header { header, .. } => {
                    assert_eq!(header.body_size, 300);
                    let props = BasicProperties::decode(&header.property_bytes).unwrap();
                    assert!(props.is_persistent());
                }
                other => panic!("{other:?}"),
            }
            match Frame::decode(&mut out, 0).unwrap() {
                Frame::Body { payload, .. } => {
                    assert_eq!(payload.len(), 300);
                    assert_eq!(&payload[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(out.is_empty());
    }

    #[test]
    fn large_bodies_split_by_frame_max() {
        let t = PublishTemplate::new(1, "", "q", 10_000, false, 4096).unwrap();
        let mut out = BytesMut::new();
        t.encode(&mut out);
        assert_eq!(out.len(), t.encoded_len());
        let mut bodies = 0;
        while !out.is_empty() {
            if let Frame::Body { payload, .. } = Frame::decode(&mut out, 0).unwrap() {
                assert!(payload.len() <= 4096 - 8);
                bodies += 1;
            }
        }
        assert_eq!(bodies, 3);
    }
}
