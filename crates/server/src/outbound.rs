//! The bytes a connection has yet to write: frames encoded into one growing buffer, with large
//! message bodies sent from where they already are (the publisher's read buffer) instead of
//! being copied, all written with one vectored write per turn. Knows nothing of channels.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::{Deref, DerefMut};

use amqp::{body_frame_payload_max, encode_body_frame_header, encode_body_frames, FRAME_END};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bodies from this size on are written in place; smaller ones cost less to copy than to
/// give a slice of their own in the vectored write.
const SHARED_BODY_MIN_BYTES: usize = 512;
/// The most slices one write hands to the kernel (Linux takes up to 1024).
const MAX_SLICES_PER_WRITE: usize = 64;
const INITIAL_CAPACITY_BYTES: usize = 4 * 1024;

/// Encoding goes into the buffer this derefs to; bodies go through `put_body`.
///
/// Shared bodies are not spliced into the encoded bytes: each is noted with the place in the
/// encoded stream it goes before, so the encoded buffer stays one reusable allocation.
pub(crate) struct Outbound {
    encoded: BytesMut,
    /// How many encoded bytes were written before `encoded[0]`.
    encoded_written: usize,
    /// Shared bodies in order, each with the count of encoded bytes (from the connection's
    /// start) that go out before it.
    bodies: VecDeque<(usize, Bytes)>,
    bodies_len: usize,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            encoded: BytesMut::with_capacity(INITIAL_CAPACITY_BYTES),
            encoded_written: 0,
            bodies: VecDeque::new(),
            bodies_len: 0,
        }
    }
}

impl Outbound {
    pub fn len(&self) -> usize {
        self.bodies_len + self.encoded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body frames of a message under `frame_max` (0 = no limit).
    pub fn put_body(&mut self, channel: u16, body: &Bytes, frame_max: u32) {
        if body.len() < SHARED_BODY_MIN_BYTES {
            encode_body_frames(channel, body, frame_max, &mut self.encoded);
            return;
        }
        let chunk = body_frame_payload_max(frame_max, body.len());
        let mut at = 0;
        while at < body.len() {
            let end = body.len().min(at + chunk);
            encode_body_frame_header(channel, end - at, &mut self.encoded);
            let before = self.encoded_written + self.encoded.len();
            self.bodies.push_back((before, body.slice(at..end)));
            self.bodies_len += end - at;
            self.encoded.put_u8(FRAME_END);
            at = end;
        }
    }

    /// Encoded bytes still to go out before the first shared body (all of them without one).
    fn encoded_before_next_body(&self) -> usize {
        match self.bodies.front() {
            Some((before, _)) => before - self.encoded_written,
            None => self.encoded.len(),
        }
    }

    /// One write of as much as the socket takes; returns how many bytes that was.
    pub async fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<usize> {
        if self.bodies.is_empty() {
            let written = writer.write(&self.encoded).await?;
            self.consume(written);
            return Ok(written);
        }
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES_PER_WRITE];
            let mut count = 0;
            let mut from = 0;
            let mut bodies_taken = 0;
            for (before, body) in &self.bodies {
                // Room for this body, the encoded bytes before it and the encoded tail.
                if count + 3 > MAX_SLICES_PER_WRITE {
                    break;
                }
                let to = before - self.encoded_written;
                if to > from {
                    slices[count] = IoSlice::new(&self.encoded[from..to]);
                    count += 1;
                    from = to;
                }
                slices[count] = IoSlice::new(body);
                count += 1;
                bodies_taken += 1;
            }
            if bodies_taken == self.bodies.len() && from < self.encoded.len() {
                slices[count] = IoSlice::new(&self.encoded[from..]);
                count += 1;
            }
            writer.write_vectored(&slices[..count]).await?
        };
        self.consume(written);
        Ok(written)
    }

    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let encoded = self.encoded_before_next_body().min(written);
            if encoded > 0 {
                self.encoded.advance(encoded);
                self.encoded_written += encoded;
                written -= encoded;
                continue;
            }
            let Some((_, body)) = self.bodies.front_mut() else {
                return;
            };
            let taken = written.min(body.len());
            body.advance(taken);
            self.bodies_len -= taken;
            written -= taken;
            if body.is_empty() {
                self.bodies.pop_front();
            }
        }
    }
}

impl Deref for Outbound {
    type Target = BytesMut;

    fn deref(&self) -> &BytesMut {
        &self.encoded
    }
}

impl DerefMut for Outbound {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written_whole(mut out: Outbound, max_per_write: usize) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(max_per_write);
            let reader = tokio::spawn(async move {
                let mut all = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut server, &mut all)
                    .await
                    .unwrap();
                all
            });
            while !out.is_empty() {
                out.write_to(&mut client).await.unwrap();
            }
            drop(client);
            reader.await.unwrap()
        })
    }

    fn expected_frames(channel: u16, body: &[u8], frame_max: u32) -> Vec<u8> {
        let mut expected = BytesMut::new();
        expected.put_slice(b"before");
        encode_body_frames(channel, body, frame_max, &mut expected);
        expected.put_slice(b"after");
        expected.to_vec()
    }

    #[test]
    fn shared_bodies_come_out_as_copied_ones_would() {
        for (size, frame_max, max_per_write) in [
            (100, 0, 7),
            (SHARED_BODY_MIN_BYTES, 0, 64 * 1024),
            (5000, 4096, 13),
            (100_000, 4096, 1000),
            (100_000, 0, 1 << 20),
        ] {
            let body = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            let mut out = Outbound::default();
            out.put_slice(b"before");
            out.put_body(7, &body, frame_max);
            out.put_slice(b"after");
            assert_eq!(out.len(), expected_frames(7, &body, frame_max).len());
            assert_eq!(
                written_whole(out, max_per_write),
                expected_frames(7, &body, frame_max),
                "body of {size} bytes, frame_max {frame_max}"
            );
        }
    }

    #[test]
    fn more_pieces_than_one_write_takes_still_go_out_in_order() {
        let body = Bytes::from(vec![9u8; SHARED_BODY_MIN_BYTES]);
        let mut out = Outbound::default();
        let mut expected = BytesMut::new();
        for channel in 0..(3 * MAX_SLICES_PER_WRITE as u16) {
            out.put_u16(channel);
            expected.put_u16(channel);
            out.put_body(channel, &body, 0);
            encode_body_frames(channel, &body, 0, &mut expected);
        }
        assert_eq!(written_whole(out, 1 << 20), expected.to_vec());
    }
}
