//! A hand-written AMQP 0-9-1 peer over a plain TCP socket, for the frames a client crate will
//! never send. It encodes and decodes by pushing bytes itself and must not use the project's
//! `amqp` crate: these tests exist to check that codec from the outside.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// What a conforming peer sends first, and what a server answers to a header it refuses.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;

/// Every single read waits at most this long, so a silent broker fails a test instead of
/// hanging it.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Wire order of the basic property flags, highest bit first.
pub mod flag {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const PRIORITY: u16 = 1 << 11;
    pub const CORRELATION_ID: u16 = 1 << 10;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const MESSAGE_ID: u16 = 1 << 7;
    pub const TIMESTAMP: u16 = 1 << 6;
    pub const TYPE: u16 = 1 << 5;
    pub const USER_ID: u16 = 1 << 4;
    pub const APP_ID: u16 = 1 << 3;
    pub const CLUSTER_ID: u16 = 1 << 2;
}

/// A field-table value with RabbitMQ's type tags (the ones pika, amqplib and lapin send).
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal { scale: u8, value: u32 },
    LongStr(Vec<u8>),
    Array(Vec<Field>),
    Timestamp(u64),
    Table(Vec<(String, Field)>),
    Void,
    Bytes(Vec<u8>),
}

impl Field {
    pub fn str(s: &str) -> Field {
        Field::LongStr(s.as_bytes().to_vec())
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Field::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::LongStr(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&[(String, Field)]> {
        match self {
            Field::Table(t) => Some(t),
            _ => None,
        }
    }
}

/// First value under `key` in a decoded table.
pub fn table_get<'a>(table: &'a [(String, Field)], key: &str) -> Option<&'a Field> {
    table.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Big-endian byte pusher for method arguments, content headers and tables.
#[derive(Default, Clone, Debug)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Enc {
        Enc::default()
    }
    pub fn u8(mut self, v: u8) -> Enc {
        self.buf.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Enc {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Enc {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Enc {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn shortstr(mut self, s: &str) -> Enc {
        assert!(s.len() <= 255, "test bug: shortstr too long");
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }
    pub fn longstr(mut self, s: &[u8]) -> Enc {
        self.buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(s);
        self
    }
    /// Packs consecutive bit arguments into octets, first bit in the lowest position.
    pub fn bits(mut self, bits: &[bool]) -> Enc {
        for chunk in bits.chunks(8) {
            let mut octet = 0u8;
            for (i, b) in chunk.iter().enumerate() {
                if *b {
                    octet |= 1 << i;
                }
            }
            self.buf.push(octet);
        }
        self
    }
    pub fn table(mut self, table: &[(String, Field)]) -> Enc {
        let body = encode_table_body(table);
        self.buf
            .extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(&body);
        self
    }
    pub fn empty_table(self) -> Enc {
        self.u32(0)
    }
    pub fn raw(mut self, bytes: &[u8]) -> Enc {
        self.buf.extend_from_slice(bytes);
        self
    }
    pub fn done(self) -> Vec<u8> {
        self.buf
    }
}

fn encode_table_body(table: &[(String, Field)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in table {
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        encode_field(&mut out, v);
    }
    out
}

fn encode_field(out: &mut Vec<u8>, v: &Field) {
    match v {
        Field::Bool(b) => out.extend_from_slice(&[b't', u8::from(*b)]),
        Field::I8(x) => {
            out.push(b'b');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::U8(x) => out.extend_from_slice(&[b'B', *x]),
        Field::I16(x) => {
            out.push(b's');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::U16(x) => {
            out.push(b'u');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::I32(x) => {
            out.push(b'I');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::U32(x) => {
            out.push(b'i');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::I64(x) => {
            out.push(b'l');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::F32(x) => {
            out.push(b'f');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::F64(x) => {
            out.push(b'd');
            out.extend_from_slice(&x.to_be_bytes())
        }
        Field::Decimal { scale, value } => {
            out.extend_from_slice(&[b'D', *scale]);
            out.extend_from_slice(&value.to_be_bytes())
        }
        Field::LongStr(s) => {
            out.push(b'S');
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s)
        }
        Field::Array(items) => {
            let mut body = Vec::new();
            for item in items {
                encode_field(&mut body, item);
            }
            out.push(b'A');
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body)
        }
        Field::Timestamp(t) => {
            out.push(b'T');
            out.extend_from_slice(&t.to_be_bytes())
        }
        Field::Table(t) => {
            let body = encode_table_body(t);
            out.push(b'F');
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body)
        }
        Field::Void => out.push(b'V'),
        Field::Bytes(b) => {
            out.push(b'x');
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b)
        }
    }
}

/// Reads what the server sent; every failure is a message, never a panic.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!(
                "truncated: wanted {n} bytes at offset {} of {}",
                self.pos,
                self.buf.len()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    pub fn shortstr(&mut self) -> Result<String, String> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("shortstr not UTF-8: {e}"))
    }
    pub fn longstr(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub fn table(&mut self) -> Result<Vec<(String, Field)>, String> {
        let n = self.u32()? as usize;
        let mut inner = Dec::new(self.take(n)?);
        let mut out = Vec::new();
        while !inner.remaining().is_empty() {
            let k = inner.shortstr()?;
            let v = inner.field()?;
            out.push((k, v));
        }
        Ok(out)
    }
    pub fn field(&mut self) -> Result<Field, String> {
        let tag = self.u8()?;
        Ok(match tag {
            b't' => Field::Bool(self.u8()? != 0),
            b'b' => Field::I8(self.u8()? as i8),
            b'B' => Field::U8(self.u8()?),
            b's' => Field::I16(self.u16()? as i16),
            b'u' => Field::U16(self.u16()?),
            b'I' => Field::I32(self.u32()? as i32),
            b'i' => Field::U32(self.u32()?),
            b'l' => Field::I64(self.u64()? as i64),
            b'f' => Field::F32(f32::from_bits(self.u32()?)),
            b'd' => Field::F64(f64::from_bits(self.u64()?)),
            b'D' => Field::Decimal {
                scale: self.u8()?,
                value: self.u32()?,
            },
            b'S' => Field::LongStr(self.longstr()?),
            b'A' => {
                let n = self.u32()? as usize;
                let mut inner = Dec::new(self.take(n)?);
                let mut items = Vec::new();
                while !inner.remaining().is_empty() {
                    items.push(inner.field()?);
                }
                Field::Array(items)
            }
            b'T' => Field::Timestamp(self.u64()?),
            b'F' => Field::Table(self.table()?),
            b'V' => Field::Void,
            b'x' => Field::Bytes(self.longstr()?),
            other => return Err(format!("unknown field type tag {:?}", other as char)),
        })
    }
}

/// One frame as read from the socket.
#[derive(Clone, PartialEq)]
pub struct Frame {
    pub frame_type: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// `(class_id, method_id)` of a method frame.
    pub fn method_ids(&self) -> Option<(u16, u16)> {
        if self.frame_type != FRAME_METHOD || self.payload.len() < 4 {
            return None;
        }
        let p = &self.payload;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    }

    /// Decoder positioned after the class and method ids.
    pub fn args(&self) -> Dec<'_> {
        Dec::new(self.payload.get(4..).unwrap_or(&[]))
    }

    pub fn is_method(&self, class_id: u16, method_id: u16) -> bool {
        self.method_ids() == Some((class_id, method_id))
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Frame");
        d.field("type", &self.frame_type)
            .field("channel", &self.channel);
        if let Some(ids) = self.method_ids() {
            d.field("method", &ids);
            if ids == (10, 50) || ids == (20, 40) {
                d.field("close", &Close::parse(self).ok());
            }
        }
        let shown = &self.payload[..self.payload.len().min(64)];
        d.field("payload_len", &self.payload.len())
            .field("payload_head", &shown)
            .finish()
    }
}

/// The arguments of a connection.close or channel.close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    pub reply_code: u16,
    pub reply_text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl Close {
    pub fn parse(frame: &Frame) -> Result<Close, String> {
        let mut a = frame.args();
        Ok(Close {
            reply_code: a.u16()?,
            reply_text: a.shortstr()?,
            class_id: a.u16()?,
            method_id: a.u16()?,
        })
    }
}

/// Frame type, channel, size, payload, frame-end: the whole frame as bytes.
pub fn frame_bytes(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(frame_type);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    out
}

pub fn method_payload(class_id: u16, method_id: u16, args: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(args.len() + 4);
    p.extend_from_slice(&class_id.to_be_bytes());
    p.extend_from_slice(&method_id.to_be_bytes());
    p.extend_from_slice(args);
    p
}

/// Content header payload for class basic, with already-encoded property fields.
pub fn content_header_payload(body_size: u64, property_flags: u16, properties: &[u8]) -> Vec<u8> {
    Enc::new()
        .u16(60)
        .u16(0)
        .u64(body_size)
        .u16(property_flags)
        .raw(properties)
        .done()
}

/// What went wrong while waiting for a frame.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the socket (possibly after a reset).
    Eof,
    Timeout,
    Io(std::io::Error),
    /// Bytes that are not a frame (bad frame-end, ...).
    Malformed(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    AmqPlain,
}

/// Choices a client makes during the handshake.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub username: String,
    pub password: String,
    pub mechanism: Mechanism,
    pub vhost: String,
    /// `None` accepts what connection.tune proposes.
    pub heartbeat: Option<u16>,
    pub frame_max: Option<u32>,
    pub channel_max: Option<u16>,
    /// Announces `authentication_failure_close` in client-properties capabilities.
    pub authentication_failure_close: bool,
    /// Announces `consumer_cancel_notify`: without it a server sends no basic.cancel.
    pub consumer_cancel_notify: bool,
}

impl Default for Handshake {
    fn default() -> Handshake {
        Handshake {
            username: "guest".into(),
            password: "guest".into(),
            mechanism: Mechanism::Plain,
            vhost: "/".into(),
            // Tests that do not care about heartbeats must not see heartbeat frames.
            heartbeat: Some(0),
            frame_max: None,
            channel_max: None,
            authentication_failure_close: true,
            consumer_cancel_notify: true,
        }
    }
}

/// What connection.start and connection.tune said.
#[derive(Clone, Debug, Default)]
pub struct ServerHello {
    pub version_major: u8,
    pub version_minor: u8,
    pub server_properties: Vec<(String, Field)>,
    pub mechanisms: String,
    pub locales: String,
    pub tune_channel_max: u16,
    pub tune_frame_max: u32,
    pub tune_heartbeat: u16,
}

/// How the handshake ended when it did not reach connection.open-ok.
#[derive(Debug)]
pub enum HandshakeError {
    Closed(Close),
    Read(ReadError),
    Unexpected(Frame),
}

pub struct RawClient {
    stream: TcpStream,
    rbuf: Vec<u8>,
    pub hello: ServerHello,
    /// frame_max in force after tune-ok (0 = before tune).
    pub frame_max: u32,
}

impl fmt::Debug for RawClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawClient")
            .field("peer", &self.stream.peer_addr().ok())
            .field("frame_max", &self.frame_max)
            .finish()
    }
}

impl RawClient {
    /// A bare TCP connection; nothing is sent yet.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(READ_DEADLINE, TcpStream::connect(addr))
            .await
            .expect("TCP connect timed out")
            .expect("TCP connect failed");
        stream.set_nodelay(true).expect("set_nodelay");
        RawClient {
            stream,
            rbuf: Vec::new(),
            hello: ServerHello::default(),
            frame_max: 0,
        }
    }

    /// Connects and completes the handshake as guest on vhost `/` with heartbeats off.
    pub async fn open(addr: SocketAddr) -> RawClient {
        match RawClient::handshake(addr, &Handshake::default()).await {
            Ok(c) => c,
            Err(e) => panic!("raw handshake failed: {e:?}"),
        }
    }

    /// Header, start/start-ok, tune/tune-ok, open/open-ok, encoded by hand.
    pub async fn handshake(addr: SocketAddr, h: &Handshake) -> Result<RawClient, HandshakeError> {
        let mut c = RawClient::connect(addr).await;
        c.write_all(PROTOCOL_HEADER).await;

        let start = c.next_non_heartbeat().await.map_err(HandshakeError::Read)?;
        if !start.is_method(10, 10) || start.channel != 0 {
            return Err(HandshakeError::Unexpected(start));
        }
        let mut a = start.args();
        let parse = |a: &mut Dec<'_>| -> Result<ServerHello, String> {
            Ok(ServerHello {
                version_major: a.u8()?,
                version_minor: a.u8()?,
                server_properties: a.table()?,
                mechanisms: String::from_utf8_lossy(&a.longstr()?).into_owned(),
                locales: String::from_utf8_lossy(&a.longstr()?).into_owned(),
                ..ServerHello::default()
            })
        };
        c.hello = parse(&mut a)
            .map_err(|e| HandshakeError::Read(ReadError::Malformed(format!("start: {e}"))))?;

        let response = match h.mechanism {
            Mechanism::Plain => format!("\0{}\0{}", h.username, h.password).into_bytes(),
            // AMQPLAIN's response is a field table without its length prefix.
            Mechanism::AmqPlain => encode_table_body(&[
                ("LOGIN".into(), Field::str(&h.username)),
                ("PASSWORD".into(), Field::str(&h.password)),
            ]),
        };
        let mechanism = match h.mechanism {
            Mechanism::Plain => "PLAIN",
            Mechanism::AmqPlain => "AMQPLAIN",
        };
        let client_properties = vec![
            ("product".to_string(), Field::str("warren raw test client")),
            (
                "capabilities".to_string(),
                Field::Table(vec![
                    (
                        "authentication_failure_close".to_string(),
                        Field::Bool(h.authentication_failure_close),
                    ),
                    (
                        "consumer_cancel_notify".to_string(),
                        Field::Bool(h.consumer_cancel_notify),
                    ),
                ]),
            ),
        ];
        let start_ok = Enc::new()
            .table(&client_properties)
            .shortstr(mechanism)
            .longstr(&response)
            .shortstr("en_US")
            .done();
        c.send_method(0, 10, 11, &start_ok).await;

        let tune = c.next_non_heartbeat().await.map_err(HandshakeError::Read)?;
        if tune.is_method(10, 50) {
            return Err(match Close::parse(&tune) {
                Ok(close) => HandshakeError::Closed(close),
                Err(_) => HandshakeError::Unexpected(tune),
            });
        }
        if !tune.is_method(10, 30) {
            return Err(HandshakeError::Unexpected(tune));
        }
        let mut a = tune.args();
        let tuned =
            (|| -> Result<(u16, u32, u16), String> { Ok((a.u16()?, a.u32()?, a.u16()?)) })()
                .map_err(|e| HandshakeError::Read(ReadError::Malformed(format!("tune: {e}"))))?;
        c.hello.tune_channel_max = tuned.0;
        c.hello.tune_frame_max = tuned.1;
        c.hello.tune_heartbeat = tuned.2;
        let channel_max = h.channel_max.unwrap_or(tuned.0);
        let frame_max = h.frame_max.unwrap_or(tuned.1);
        let heartbeat = h.heartbeat.unwrap_or(tuned.2);
        c.frame_max = frame_max;
        let tune_ok = Enc::new()
            .u16(channel_max)
            .u32(frame_max)
            .u16(heartbeat)
            .done();
        c.send_method(0, 10, 31, &tune_ok).await;

        let open = Enc::new()
            .shortstr(&h.vhost)
            .shortstr("")
            .bits(&[false])
            .done();
        c.send_method(0, 10, 40, &open).await;
        let open_ok = c.next_non_heartbeat().await.map_err(HandshakeError::Read)?;
        if open_ok.is_method(10, 41) {
            return Ok(c);
        }
        if open_ok.is_method(10, 50) {
            if let Ok(close) = Close::parse(&open_ok) {
                return Err(HandshakeError::Closed(close));
            }
        }
        Err(HandshakeError::Unexpected(open_ok))
    }

    pub async fn write_all(&mut self, bytes: &[u8]) {
        // A broker that already closed may reset the socket; the test then learns it from
        // the next read, which is where assertions look.
        let _ = tokio::time::timeout(READ_DEADLINE, self.stream.write_all(bytes)).await;
    }

    pub async fn send_frame(&mut self, frame_type: u8, channel: u16, payload: &[u8]) {
        self.write_all(&frame_bytes(frame_type, channel, payload))
            .await;
    }

    pub async fn send_method(&mut self, channel: u16, class_id: u16, method_id: u16, args: &[u8]) {
        self.send_frame(
            FRAME_METHOD,
            channel,
            &method_payload(class_id, method_id, args),
        )
        .await;
    }

    pub async fn send_heartbeat(&mut self) {
        self.send_frame(FRAME_HEARTBEAT, 0, &[]).await;
    }

    async fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        self.rbuf.reserve(65536);
        match timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
            Err(_) => Err(ReadError::Timeout),
            Ok(Ok(0)) => Err(ReadError::Eof),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(ReadError::Eof),
            Ok(Err(e)) => Err(ReadError::Io(e)),
        }
    }

    /// Reads raw bytes until the peer closes the socket or the deadline passes.
    pub async fn read_to_eof(&mut self, within: Duration) -> Result<Vec<u8>, ReadError> {
        let deadline = Instant::now() + within;
        loop {
            match self.fill(deadline).await {
                Ok(()) => {}
                Err(ReadError::Eof) => return Ok(std::mem::take(&mut self.rbuf)),
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn read_frame_within(&mut self, within: Duration) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + within;
        loop {
            if self.rbuf.len() >= 7 {
                let size =
                    u32::from_be_bytes([self.rbuf[3], self.rbuf[4], self.rbuf[5], self.rbuf[6]])
                        as usize;
                if self.rbuf.len() >= size + 8 {
                    if self.rbuf[size + 7] != FRAME_END {
                        return Err(ReadError::Malformed(format!(
                            "frame-end is {:#x}",
                            self.rbuf[size + 7]
                        )));
                    }
                    let frame = Frame {
                        frame_type: self.rbuf[0],
                        channel: u16::from_be_bytes([self.rbuf[1], self.rbuf[2]]),
                        payload: self.rbuf[7..7 + size].to_vec(),
                    };
                    self.rbuf.drain(..size + 8);
                    return Ok(frame);
                }
            }
            self.fill(deadline).await?;
        }
    }

    pub async fn read_frame(&mut self) -> Result<Frame, ReadError> {
        self.read_frame_within(READ_DEADLINE).await
    }

    /// The next frame that is not a heartbeat.
    pub async fn next_non_heartbeat(&mut self) -> Result<Frame, ReadError> {
        loop {
            let f = self.read_frame().await?;
            if f.frame_type != FRAME_HEARTBEAT {
                return Ok(f);
            }
        }
    }

    /// The next non-heartbeat frame must be this method on this channel.
    pub async fn expect_method(&mut self, channel: u16, class_id: u16, method_id: u16) -> Frame {
        let f = self
            .next_non_heartbeat()
            .await
            .unwrap_or_else(|e| panic!("waiting for {class_id}.{method_id}: {e}"));
        assert!(
            f.channel == channel && f.is_method(class_id, method_id),
            "expected method {class_id}.{method_id} on channel {channel}, got {f:?}"
        );
        f
    }

    /// The next non-heartbeat frame must be connection.close; answers close-ok and checks
    /// that the server then closes the socket.
    pub async fn expect_connection_close(&mut self) -> Close {
        let f = self
            .next_non_heartbeat()
            .await
            .unwrap_or_else(|e| panic!("waiting for connection.close: {e}"));
        assert!(
            f.channel == 0 && f.is_method(10, 50),
            "expected connection.close on channel 0, got {f:?}"
        );
        let close = Close::parse(&f).expect("connection.close arguments");
        self.send_method(0, 10, 51, &[]).await;
        self.expect_eof(READ_DEADLINE).await;
        close
    }

    /// The next non-heartbeat frame must be channel.close on `channel`; answers close-ok.
    pub async fn expect_channel_close(&mut self, channel: u16) -> Close {
        let f = self
            .next_non_heartbeat()
            .await
            .unwrap_or_else(|e| panic!("waiting for channel.close: {e}"));
        assert!(
            f.channel == channel && f.is_method(20, 40),
            "expected channel.close on channel {channel}, got {f:?}"
        );
        let close = Close::parse(&f).expect("channel.close arguments");
        self.send_method(channel, 20, 41, &[]).await;
        close
    }

    /// Frames may still arrive (heartbeats, a close); what matters is that the socket ends
    /// before the deadline.
    pub async fn expect_eof(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame_within(left).await {
                Ok(f) => seen.push(f),
                Err(ReadError::Eof) => return seen,
                Err(ReadError::Timeout) => {
                    panic!("socket still open after {within:?}; frames seen: {seen:?}")
                }
                Err(e) => panic!("waiting for EOF: {e}; frames seen: {seen:?}"),
            }
        }
    }

    pub async fn open_channel(&mut self, channel: u16) {
        self.send_method(channel, 20, 10, &Enc::new().shortstr("").done())
            .await;
        self.expect_method(channel, 20, 11).await;
    }

    /// queue.declare (not passive, not durable, not exclusive, auto-delete off) and waits for
    /// declare-ok.
    pub async fn declare_queue(&mut self, channel: u16, name: &str) {
        let args = Enc::new()
            .u16(0)
            .shortstr(name)
            .bits(&[false, false, false, false, false])
            .empty_table()
            .done();
        self.send_method(channel, 50, 10, &args).await;
        self.expect_method(channel, 50, 11).await;
    }

    pub async fn delete_queue(&mut self, channel: u16, name: &str) {
        let args = Enc::new()
            .u16(0)
            .shortstr(name)
            .bits(&[false, false, false])
            .done();
        self.send_method(channel, 50, 40, &args).await;
        self.expect_method(channel, 50, 41).await;
    }

    /// basic.publish method frame only (no content).
    pub async fn send_publish(&mut self, channel: u16, exchange: &str, routing_key: &str) {
        let args = Enc::new()
            .u16(0)
            .shortstr(exchange)
            .shortstr(routing_key)
            .bits(&[false, false])
            .done();
        self.send_method(channel, 60, 40, &args).await;
    }

    /// basic.publish + header + body frames split at this connection's frame_max.
    pub async fn publish(
        &mut self,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        property_flags: u16,
        properties: &[u8],
        body: &[u8],
    ) {
        self.send_publish(channel, exchange, routing_key).await;
        let header = content_header_payload(body.len() as u64, property_flags, properties);
        self.send_frame(FRAME_HEADER, channel, &header).await;
        let max_body = (self.frame_max as usize).saturating_sub(8).max(1);
        for chunk in body.chunks(max_body) {
            self.send_frame(FRAME_BODY, channel, chunk).await;
        }
    }

    /// basic.consume with no-ack; waits for consume-ok and returns the consumer tag.
    pub async fn consume_no_ack(&mut self, channel: u16, queue: &str) -> String {
        let args = Enc::new()
            .u16(0)
            .shortstr(queue)
            .shortstr("")
            .bits(&[false, true, false, false])
            .empty_table()
            .done();
        self.send_method(channel, 60, 20, &args).await;
        let ok = self.expect_method(channel, 60, 21).await;
        ok.args().shortstr().expect("consume-ok tag")
    }

    /// Reads one delivery: basic.deliver, its content header and all body frames.
    pub async fn read_delivery(&mut self, channel: u16) -> Delivery {
        let deliver = self.expect_method(channel, 60, 60).await;
        let header = self
            .next_non_heartbeat()
            .await
            .unwrap_or_else(|e| panic!("waiting for content header: {e}"));
        assert!(
            header.frame_type == FRAME_HEADER && header.channel == channel,
            "expected content header on channel {channel}, got {header:?}"
        );
        let mut h = Dec::new(&header.payload);
        let class_id = h.u16().expect("header class");
        assert_eq!(class_id, 60, "content header class");
        let _weight = h.u16().expect("header weight");
        let body_size = h.u64().expect("header body size") as usize;
        let property_flags = h.u16().expect("header flags");
        let properties = h.remaining().to_vec();
        let mut body = Vec::with_capacity(body_size);
        let mut body_frame_sizes = Vec::new();
        while body.len() < body_size {
            let f = self
                .next_non_heartbeat()
                .await
                .unwrap_or_else(|e| panic!("waiting for body frame: {e}"));
            assert!(
                f.frame_type == FRAME_BODY && f.channel == channel,
                "expected body frame on channel {channel}, got {f:?}"
            );
            body_frame_sizes.push(f.payload.len());
            body.extend_from_slice(&f.payload);
        }
        assert_eq!(body.len(), body_size, "body longer than the header said");
        Delivery {
            deliver,
            property_flags,
            properties,
            body,
            body_frame_sizes,
        }
    }
}

/// A delivery as it came off the wire.
#[derive(Debug)]
pub struct Delivery {
    pub deliver: Frame,
    pub property_flags: u16,
    /// Property fields exactly as encoded by the server.
    pub properties: Vec<u8>,
    pub body: Vec<u8>,
    pub body_frame_sizes: Vec<usize>,
}
