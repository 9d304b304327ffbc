//! A minimal AMQP 0-9-1 client on tokio: the handshake (PLAIN), synchronous setup calls
//! (declare, bind, qos, consume, confirm.select) and, once the hot path starts, a read half
//! that scans many frames per read and a write half that sends many frames per write.
//! Knows nothing of scenarios or statistics.

use std::io;

use amqp::{
    encode_method_frame, ChannelClose, ChannelCloseOk, ChannelOpen, ConnectionClose,
    ConnectionCloseOk, ConnectionOpen, ConnectionStartOk, ConnectionTuneOk, DecodeError,
    FieldTable, FieldValue, Frame, LongStr, Method, ShortStr, FRAME_BODY, FRAME_END, FRAME_HEADER,
    FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER,
};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::uri::AmqpUri;

/// What we offer in connection.tune-ok at most; the broker's figure wins when smaller.
const CLIENT_FRAME_MAX: u32 = 131_072;
/// A read asks for at least this much room, so one read can carry thousands of small frames.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: io::Error },
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("broker closed the TCP connection")]
    Eof,
    #[error("bad frame from broker: {0}")]
    Decode(#[from] DecodeError),
    #[error("broker closed the connection: {code} {text} (class {class_id}, method {method_id})")]
    ConnectionClosed {
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    #[error(
        "broker closed channel {channel}: {code} {text} (class {class_id}, method {method_id})"
    )]
    ChannelClosed {
        channel: u16,
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    #[error("broker cancelled consumer '{0}'")]
    ConsumerCancelled(String),
    #[error("unexpected {got} while waiting for {want}")]
    Unexpected { want: &'static str, got: String },
    #[error("broker offers no PLAIN mechanism (offers '{0}')")]
    NoPlain(String),
    #[error("bad name: {0}")]
    Name(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

pub fn short(s: &str) -> Result<ShortStr> {
    ShortStr::new(s).map_err(|_| ClientError::Name(s.to_string()))
}

/// A connection in its setup phase: every call waits for its reply.
pub struct Connection {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pub frame_max: u32,
}

impl Connection {
    /// TCP connect, protocol header, start/start-ok (PLAIN), tune/tune-ok (no heartbeats: a
    /// benchmark run is short and a missed heartbeat must not end it), open/open-ok.
    pub async fn open(uri: &AmqpUri, connection_name: &str) -> Result<Connection> {
        let addr = uri.addr();
        let stream = TcpStream::connect((addr.0.as_str(), addr.1))
            .await
            .map_err(|reason| ClientError::Connect {
                addr: format!("{}:{}", addr.0, addr.1),
                reason,
            })?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(64 * 1024),
            frame_max: CLIENT_FRAME_MAX,
        };
        conn.stream.write_all(&PROTOCOL_HEADER).await?;
        let start = match conn.recv_method(0).await? {
            Method::ConnectionStart(s) => s,
            other => return Err(unexpected("connection.start", &other)),
        };
        let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !mechanisms.split_whitespace().any(|m| m == "PLAIN") {
            return Err(ClientError::NoPlain(mechanisms));
        }
        let mut response = Vec::with_capacity(uri.username.len() + uri.password.len() + 2);
        response.push(0);
        response.extend_from_slice(uri.username.as_bytes());
        response.push(0);
        response.extend_from_slice(uri.password.as_bytes());
        conn.send(
            0,
            ConnectionStartOk {
                client_properties: client_properties(connection_name)?,
                mechanism: ShortStr::from_static("PLAIN"),
                response: LongStr::from(response),
                locale: ShortStr::from_static("en_US"),
            },
        )
        .await?;
        let tune = match conn.recv_method(0).await? {
            Method::ConnectionTune(t) => t,
            other => return Err(unexpected("connection.tune", &other)),
        };
        let frame_max = match tune.frame_max {
            0 => CLIENT_FRAME_MAX,
            n => n.min(CLIENT_FRAME_MAX),
        };
        conn.frame_max = frame_max;
        let channel_max = match tune.channel_max {
            0 => 2047,
            n => n,
        };
        conn.send(
            0,
            ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat: 0,
            },
        )
        .await?;
        let open = ConnectionOpen {
            virtual_host: short(&uri.vhost)?,
        };
        match conn.rpc(0, open).await? {
            Method::ConnectionOpenOk(_) => {}
            other => return Err(unexpected("connection.open-ok", &other)),
        }
        Ok(conn)
    }

    pub async fn open_channel(&mut self, channel: u16) -> Result<()> {
        match self.rpc(channel, ChannelOpen {}).await? {
            Method::ChannelOpenOk(_) => Ok(()),
            other => Err(unexpected("channel.open-ok", &other)),
        }
    }

    pub async fn send(&mut self, channel: u16, method: impl Into<Method>) -> Result<()> {
        self.wbuf.clear();
        encode_method_frame(channel, &method.into(), &mut self.wbuf);
        self.stream.write_all(&self.wbuf).await?;
        Ok(())
    }

    /// Sends `method` and returns the next method the broker sends on `channel`.
    pub async fn rpc(&mut self, channel: u16, method: impl Into<Method>) -> Result<Method> {
        self.send(channel, method).await?;
        self.recv_method(channel).await
    }

    async fn recv_frame(&mut self) -> Result<Frame> {
        loop {
            match Frame::decode(&mut self.rbuf, 0) {
                Ok(frame) => return Ok(frame),
                Err(DecodeError::Incomplete { .. }) => {
                    self.rbuf.reserve(64 * 1024);
                    if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                        return Err(ClientError::Eof);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next method on `channel`, answering a broker-initiated close (and reporting it as
    /// the error) and skipping heartbeats and anything addressed elsewhere.
    pub async fn recv_method(&mut self, channel: u16) -> Result<Method> {
        loop {
            match self.recv_frame().await? {
                Frame::Method {
                    method: Method::ConnectionClose(c),
                    ..
                } => {
                    let _ = self.send(0, ConnectionCloseOk {}).await;
                    return Err(connection_closed(&c));
                }
                Frame::Method {
                    channel: ch,
                    method: Method::ChannelClose(c),
                } => {
                    let _ = self.send(ch, ChannelCloseOk {}).await;
                    return Err(channel_closed(ch, &c));
                }
                Frame::Method {
                    channel: ch,
                    method,
                } if ch == channel => match method {
                    Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => {}
                    m => return Ok(m),
                },
                _ => {}
            }
        }
    }

    /// connection.close and, within a second, its close-ok; a broker that does not answer
    /// just gets the socket closed.
    pub async fn close(mut self) {
        let close = ConnectionClose {
            reply_code: 200,
            reply_text: ShortStr::from_static("Goodbye"),
            class_id: 0,
            method_id: 0,
        };
        let wait = async {
            self.send(0, close).await?;
            loop {
                if let Frame::Method {
                    method: Method::ConnectionCloseOk(_) | Method::ConnectionClose(_),
                    ..
                } = self.recv_frame().await?
                {
                    return Ok::<(), ClientError>(());
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wait).await;
    }

    /// Hands the socket to the hot path, keeping whatever was already read.
    pub fn into_split(self) -> (FrameReader, FrameWriter) {
        let (read, write) = self.stream.into_split();
        let mut rbuf = self.rbuf;
        rbuf.reserve(READ_CHUNK);
        (
            FrameReader {
                half: read,
                buf: rbuf,
                content: None,
            },
            FrameWriter {
                half: write,
                buf: BytesMut::with_capacity(256 * 1024),
                frame_max: self.frame_max,
            },
        )
    }
}

fn client_properties(connection_name: &str) -> Result<FieldTable> {
    let mut capabilities = FieldTable::new();
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "exchange_exchange_bindings",
        // Asks for a connection.close (403) rather than a bare TCP close on a refused login.
        "authentication_failure_close",
    ] {
        capabilities.insert(short(cap)?, FieldValue::Bool(true));
    }
    let mut props = FieldTable::new();
    props.insert(short("product")?, FieldValue::LongStr("warren-perf".into()));
    props.insert(
        short("version")?,
        FieldValue::LongStr(env!("CARGO_PKG_VERSION").into()),
    );
    props.insert(short("platform")?, FieldValue::LongStr("Rust".into()));
    props.insert(
        short("connection_name")?,
        FieldValue::LongStr(connection_name.into()),
    );
    props.insert(short("capabilities")?, FieldValue::Table(capabilities));
    Ok(props)
}

fn unexpected(want: &'static str, got: &Method) -> ClientError {
    ClientError::Unexpected {
        want,
        got: got.name().to_string(),
    }
}

pub fn connection_closed(c: &ConnectionClose) -> ClientError {
    ClientError::ConnectionClosed {
        code: c.reply_code,
        text: c.reply_text.to_string(),
        class_id: c.class_id,
        method_id: c.method_id,
    }
}

pub fn channel_closed(channel: u16, c: &ChannelClose) -> ClientError {
    ClientError::ChannelClosed {
        channel,
        code: c.reply_code,
        text: c.reply_text.to_string(),
        class_id: c.class_id,
        method_id: c.method_id,
    }
}

/// What the hot-path reader hands out: whole deliveries and confirms are scanned in place
/// without building a `Method`; everything else is decoded with the codec.
#[derive(Debug)]
pub enum Event {
    /// A complete basic.deliver (method, header and all body frames). `stamp` is the first
    /// 8 body bytes, where our producers put their send time.
    Delivery {
        delivery_tag: u64,
        body_size: u64,
        stamp: Option<u64>,
    },
    Ack {
        delivery_tag: u64,
        multiple: bool,
    },
    Nack {
        delivery_tag: u64,
        multiple: bool,
    },
    Other(Frame),
}

/// Content being assembled: a delivery we count, or the content of some other method
/// (basic.return, basic.get-ok) that we only skip.
struct Content {
    delivery_tag: Option<u64>,
    body_size: Option<u64>,
    remaining: u64,
    stamp: Option<u64>,
}

pub struct FrameReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    content: Option<Content>,
}

impl FrameReader {
    /// One read of whatever the socket holds (up to the free buffer space).
    pub async fn fill(&mut self) -> Result<()> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        if self.half.read_buf(&mut self.buf).await? == 0 {
            return Err(ClientError::Eof);
        }
        Ok(())
    }

    /// The next event among the frames already read, or None when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            let buf = &self.buf[..];
            if buf.len() < 7 {
                return Ok(None);
            }
            let frame_type = buf[0];
            let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
            let total = 7 + size + 1;
            if buf.len() < total {
                return Ok(None);
            }
            if buf[total - 1] != FRAME_END {
                return Err(DecodeError::FrameEndMissing.into());
            }
            let payload = &buf[7..7 + size];
            match frame_type {
                FRAME_METHOD if payload.len() >= 4 => {
                    let ids = (
                        u16::from_be_bytes([payload[0], payload[1]]),
                        u16::from_be_bytes([payload[2], payload[3]]),
                    );
                    match ids {
                        (60, 60) => {
                            let delivery_tag = scan_deliver(payload)?;
                            self.content = Some(Content {
                                delivery_tag: Some(delivery_tag),
                                body_size: None,
                                remaining: 0,
                                stamp: None,
                            });
                            self.buf.advance(total);
                        }
                        (60, 80) | (60, 120) => {
                            let (delivery_tag, bits) = scan_tag_and_bits(payload)?;
                            self.buf.advance(total);
                            let multiple = bits & 1 != 0;
                            return Ok(Some(if ids.1 == 80 {
                                Event::Ack {
                                    delivery_tag,
                                    multiple,
                                }
                            } else {
                                Event::Nack {
                                    delivery_tag,
                                    multiple,
                                }
                            }));
                        }
                        _ => return self.decode_slow(total).map(Some),
                    }
                }
                FRAME_HEADER if self.content.is_some() => {
                    let body_size = payload
                        .get(4..12)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
                        .ok_or(DecodeError::Malformed {
                            class_id: 0,
                            method_id: 0,
                            reason: "short content header",
                        })?;
                    self.buf.advance(total);
                    if let Some(content) = &mut self.content {
                        content.body_size = Some(body_size);
                        content.remaining = body_size;
                    }
                    if body_size == 0 {
                        if let Some(ev) = self.finish_content() {
                            return Ok(Some(ev));
                        }
                    }
                }
                FRAME_BODY if self.content.is_some() => {
                    let stamp = payload
                        .get(..8)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                    self.buf.advance(total);
                    let mut done = false;
                    if let Some(content) = &mut self.content {
                        if content.stamp.is_none()
                            && content.remaining == content.body_size.unwrap_or(0)
                        {
                            content.stamp = stamp;
                        }
                        content.remaining = content.remaining.saturating_sub(size as u64);
                        done = content.remaining == 0;
                    }
                    if done {
                        if let Some(ev) = self.finish_content() {
                            return Ok(Some(ev));
                        }
                    }
                }
                FRAME_HEARTBEAT => self.buf.advance(total),
                _ => return self.decode_slow(total).map(Some),
            }
        }
    }

    fn finish_content(&mut self) -> Option<Event> {
        let content = self.content.take()?;
        Some(Event::Delivery {
            delivery_tag: content.delivery_tag?,
            body_size: content.body_size.unwrap_or(0),
            stamp: content.stamp,
        })
    }

    fn decode_slow(&mut self, total: usize) -> Result<Event> {
        let mut bytes = self.buf.split_to(total);
        let frame = Frame::decode(&mut bytes, 0)?;
        if let Frame::Method { method, .. } = &frame {
            if method.has_content() {
                self.content = Some(Content {
                    delivery_tag: None,
                    body_size: None,
                    remaining: 0,
                    stamp: None,
                });
            }
        }
        Ok(Event::Other(frame))
    }
}

fn malformed(reason: &'static str) -> DecodeError {
    DecodeError::Malformed {
        class_id: 60,
        method_id: 60,
        reason,
    }
}

/// basic.deliver: consumer-tag (shortstr), then delivery-tag.
fn scan_deliver(payload: &[u8]) -> Result<u64> {
    let tag_len = *payload.get(4).ok_or(malformed("short basic.deliver"))? as usize;
    let at = 5 + tag_len;
    let bytes = payload
        .get(at..at + 8)
        .ok_or(malformed("short basic.deliver"))?;
    Ok(u64::from_be_bytes(bytes.try_into().unwrap_or_default()))
}

/// basic.ack / basic.nack: delivery-tag then one octet of bits.
fn scan_tag_and_bits(payload: &[u8]) -> Result<(u64, u8)> {
    let bytes = payload.get(4..13).ok_or(malformed("short basic.ack"))?;
    Ok((
        u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default()),
        bytes[8],
    ))
}

pub struct FrameWriter {
    half: OwnedWriteHalf,
    /// Frames waiting for the next `flush`: callers encode many, then write once.
    pub buf: BytesMut,
    pub frame_max: u32,
}

impl FrameWriter {
    pub fn method(&mut self, channel: u16, method: impl Into<Method>) {
        encode_method_frame(channel, &method.into(), &mut self.buf);
    }

    /// Writes the pending frames. Cancel-safe: what was not written yet stays in `buf`, so a
    /// cancelled flush can be finished later without cutting a frame in half.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.half.write_all_buf(&mut self.buf).await?;
        }
        Ok(())
    }
}
