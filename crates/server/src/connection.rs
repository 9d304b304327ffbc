//! One client connection: protocol header, handshake (start/tune/open), the frame loop, channels,
//! heartbeats, batched writes, and closing. Owns all of a connection's state in one task.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amqp::{
    encode_heartbeat_frame, encode_method_frame, BasicPublish, ChannelCloseOk, ChannelOpenOk,
    ConnectionClose, ConnectionCloseOk, ConnectionOpen, ConnectionOpenOk, ConnectionStart,
    ConnectionStartOk, ConnectionTune, ConnectionTuneOk, DecodeError, FieldTable, FieldValue,
    Frame, LongStr, Method, ShortStr, FRAME_MIN_SIZE, FRAME_OVERHEAD, PROTOCOL_HEADER,
    SHORTSTR_NOT_UTF8,
};
use broker::consumer::{ConnectionEvent, ConnectionSink};
use broker::permissions::{Access, AccessCheck, Resource};
use broker::{AmqpException, AmqpResult, Broker, Scope};
use bytes::BytesMut;

use crate::outbound::Outbound;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::channel::Channel;
use crate::config::Config;

/// Stop taking deliveries from queues while this much output waits for the socket.
const OUTPUT_HIGH_WATER_BYTES: usize = 1 << 20;
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How long we wait for connection.close-ok after sending connection.close.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long we wait for the peer to close the socket after the last frame.
const LINGER_AFTER_CLOSE: Duration = Duration::from_secs(1);
/// How often channels with unacknowledged deliveries check them against the consumer
/// timeout; a timeout fires at most this much late.
const CONSUMER_TIMEOUT_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingStartOk,
    AwaitingTuneOk,
    AwaitingOpen,
    Open,
    /// We sent connection.close; everything but close/close-ok is discarded.
    Closing,
    /// Flush what is queued and drop the socket.
    Closed,
}

/// What the client told us it understands (client-properties capabilities).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ClientCapabilities {
    pub consumer_cancel_notify: bool,
    pub authentication_failure_close: bool,
}

/// The parts of a connection its channels use while handling a method.
pub(crate) struct Session {
    pub connection_id: u64,
    pub broker: Arc<Broker>,
    pub config: Arc<Config>,
    pub sink: ConnectionSink,
    pub out: Outbound,
    pub frame_max: u32,
    pub capabilities: ClientCapabilities,
    /// The authenticated user, which a message's user_id property must name.
    pub username: String,
    /// A queue with too many publishes waiting: the connection stops reading until it drains
    /// (flow control, as RabbitMQ's credit flow blocks a publisher's reader).
    pub throttled_by: Option<broker::queue::QueueRef>,
    /// The user's permissions in the vhost, from connection.open on.
    pub access: Option<AccessCheck>,
    /// This connection as the management API lists it; dropping it unlists it.
    pub registration: broker::registry::ConnectionRegistration,
}

impl Session {
    pub fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        encode_method_frame(channel, &method.into(), &mut self.out);
    }

    /// Refuses (403) what the user's permissions in the vhost do not allow.
    pub fn check_access(
        &mut self,
        access: Access,
        resource: Resource,
        name: &str,
    ) -> AmqpResult<()> {
        match &mut self.access {
            Some(check) => check.check(access, resource, name),
            None => Err(AmqpException::channel_error("no vhost opened")),
        }
    }

    /// `check_access` of write access to a publish's exchange, for the hot path.
    pub fn check_publish(&mut self, exchange: &ShortStr) -> AmqpResult<()> {
        match &mut self.access {
            Some(check) => check.check_publish(exchange),
            None => Err(AmqpException::channel_error("no vhost opened")),
        }
    }
}

struct Connection {
    session: Session,
    state: State,
    peer: SocketAddr,
    channel_max: u16,
    heartbeat_secs: u16,
    vhost: Option<Arc<broker::vhost::VHost>>,
    /// Boxed: a `Channel` is ~600 bytes and the map allocates room for several, which for the
    /// usual one or two channels was most of an idle connection's memory.
    channels: HashMap<u16, Box<Channel>, BuildHasherDefault<ChannelIdHasher>>,
    /// Counts channel opens, to tell a reused channel number from its predecessor.
    channel_serial: u64,
    closing_since: Option<Instant>,
}

/// Hashes a channel number with one multiplication: the map is looked up for every frame, and
/// the default SipHash, made to resist hostile keys, showed up in profiles; a peer choosing
/// its channel numbers can at worst slow its own connection's map down.
#[derive(Default)]
struct ChannelIdHasher(u64);

impl std::hash::Hasher for ChannelIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8 | u64::from(*byte)).wrapping_mul(FIBONACCI_MULTIPLIER);
        }
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = u64::from(id).wrapping_mul(FIBONACCI_MULTIPLIER);
    }
}

/// 2^64 divided by the golden ratio: spreads consecutive channel numbers over the hash bits.
const FIBONACCI_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Serves one accepted socket until it closes.
pub(crate) async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: Arc<Config>,
    stop: watch::Receiver<bool>,
) {
    let local = socket.local_addr().unwrap_or(peer);
    let (reader, writer) = socket.into_split();
    serve_stream(reader, writer, peer, local, broker, config, stop).await;
}

/// Serves one accepted AMQPS socket: the TLS handshake (within the handshake timeout), then
/// AMQP over it as over plain TCP.
pub(crate) async fn serve_tls(
    socket: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    broker: Arc<Broker>,
    config: Arc<Config>,
    stop: watch::Receiver<bool>,
) {
    let local = socket.local_addr().unwrap_or(peer);
    let handshake_timeout = Duration::from_secs(config.handshake_timeout_secs);
    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (reader, writer) = tokio::io::split(stream);
    serve_stream(reader, writer, peer, local, broker, config, stop).await;
}

async fn serve_stream<R, W>(
    mut reader: R,
    mut writer: W,
    peer: SocketAddr,
    local: SocketAddr,
    broker: Arc<Broker>,
    config: Arc<Config>,
    mut stop: watch::Receiver<bool>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let handshake_timeout = Duration::from_secs(config.handshake_timeout_secs);
    let mut header = [0u8; 8];
    match tokio::time::timeout(handshake_timeout, reader.read_exact(&mut header)).await {
        Ok(Ok(_)) if header == PROTOCOL_HEADER => {}
        Ok(Ok(_)) => {
            // Tell the client which protocol we speak, then hang up (AMQP 0-9-1 §4.2.2).
            let _ = writer.write_all(&PROTOCOL_HEADER).await;
            let _ = writer.shutdown().await;
            return;
        }
        _ => return,
    }

    let connection_id = broker.next_connection_id();
    let (sink, mut inbox) = mpsc::unbounded_channel();
    let mut connection = Connection {
        session: Session {
            connection_id,
            registration: broker.registry.register(connection_id, peer, local),
            broker,
            frame_max: config.frame_max_bytes,
            config,
            sink,
            out: Outbound::default(),
            capabilities: ClientCapabilities::default(),
            username: String::new(),
            throttled_by: None,
            access: None,
        },
        state: State::AwaitingStartOk,
        peer,
        channel_max: 0,
        heartbeat_secs: 0,
        vhost: None,
        channels: HashMap::default(),
        channel_serial: 0,
        closing_since: None,
    };
    connection.send_start();

    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let handshake_deadline = Instant::now() + handshake_timeout;
    let mut last_read = Instant::now();
    let mut wrote_since_tick = true;
    let mut heartbeat = HeartbeatTimer::default();
    let mut stopping = false;

    // Once the last frame (close or close-ok) is written, the peer closes the socket, as it
    // does with RabbitMQ; we read and discard until it does, for a while. Closing first, with
    // unread input, would make the kernel send a reset that can destroy that last frame.
    let mut hung_up_at: Option<Instant> = None;
    let mut next_timeout_check = Instant::now();
    loop {
        if connection.state == State::Closed && connection.session.out.is_empty() {
            if stopping {
                break;
            }
            hung_up_at.get_or_insert_with(Instant::now);
        }
        let want_events = connection.session.out.len() < OUTPUT_HIGH_WATER_BYTES
            && connection.state == State::Open;
        let closing_deadline = connection.closing_deadline();
        let checking_timeouts = connection.state == State::Open
            && connection
                .channels
                .values()
                .any(|channel| channel.has_unacked());
        let linger_deadline = hung_up_at.unwrap_or_else(Instant::now) + LINGER_AFTER_CLOSE;
        tokio::select! {
            written = connection.session.out.write_to(&mut writer), if !connection.session.out.is_empty() => {
                match written {
                    Ok(0) | Err(_) => break,
                    Ok(_) => wrote_since_tick = true,
                }
            }
            _ = wait_drained(&connection.session.throttled_by), if connection.session.throttled_by.is_some() => {
                connection.session.throttled_by = None;
                // Not reading while held back is not the peer's silence.
                last_read = Instant::now();
                // Frames already read may be waiting in the buffer.
                connection.handle_input(&mut input).await;
            }
            read = reader.read_buf(&mut input), if connection.session.throttled_by.is_none() => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) if connection.state == State::Closed => input.clear(),
                    Ok(_) => {
                        last_read = Instant::now();
                        connection.handle_input(&mut input).await;
                        if input.capacity() - input.len() < 4096 {
                            input.reserve(READ_CHUNK_BYTES);
                        }
                        if connection.state == State::Open && !heartbeat.armed() {
                            heartbeat.arm(connection.heartbeat_secs);
                        }
                    }
                }
            }
            Some(event) = inbox.recv(), if want_events => {
                connection.handle_event(event);
                while connection.session.out.len() < OUTPUT_HIGH_WATER_BYTES {
                    match inbox.try_recv() {
                        Ok(event) => connection.handle_event(event),
                        Err(_) => break,
                    }
                }
                connection.flush_confirms();
            }
            _ = tokio::time::sleep_until(next_timeout_check), if checking_timeouts => {
                next_timeout_check = Instant::now() + CONSUMER_TIMEOUT_TICK;
                connection.check_consumer_timeouts();
            }
            _ = heartbeat.tick() => {
                let timeout = Duration::from_secs(2 * u64::from(connection.heartbeat_secs));
                if connection.session.throttled_by.is_some() {
                    last_read = Instant::now();
                } else if last_read.elapsed() > timeout {
                    tracing::info!(peer = %connection.peer, "missed heartbeats from client, closing");
                    break;
                }
                if !wrote_since_tick {
                    encode_heartbeat_frame(&mut connection.session.out);
                }
                wrote_since_tick = false;
            }
            _ = tokio::time::sleep_until(handshake_deadline), if matches!(connection.state, State::AwaitingStartOk | State::AwaitingTuneOk | State::AwaitingOpen) => {
                tracing::info!(peer = %connection.peer, "handshake timed out");
                break;
            }
            _ = tokio::time::sleep_until(linger_deadline), if hung_up_at.is_some() => break,
            _ = tokio::time::sleep_until(closing_deadline), if connection.state == State::Closing => {
                connection.state = State::Closed;
            }
            reason = connection.session.registration.close_requested(), if !stopping => {
                connection.close_with(AmqpException::connection_forced(reason), 0, 0);
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                connection.close_with(AmqpException::connection_forced(
                    "broker forced connection closure with reason 'shutdown'",
                ), 0, 0);
            }
        }
    }
    connection.release_all().await;
}

async fn wait_drained(queue: &Option<broker::queue::QueueRef>) {
    match queue {
        Some(queue) => queue.drained().await,
        None => std::future::pending().await,
    }
}

/// Sends heartbeats at half the negotiated interval, as RabbitMQ does, and checks the peer's.
#[derive(Default)]
struct HeartbeatTimer {
    interval: Option<tokio::time::Interval>,
}

impl HeartbeatTimer {
    fn armed(&self) -> bool {
        self.interval.is_some()
    }

    fn arm(&mut self, heartbeat_secs: u16) {
        if heartbeat_secs > 0 {
            let period = Duration::from_millis(u64::from(heartbeat_secs) * 500);
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            self.interval = Some(interval);
        }
    }

    async fn tick(&mut self) {
        match &mut self.interval {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// The one place an exception becomes a close method, naming the method that caused it.
pub(crate) fn close_method(error: &AmqpException, class_id: u16, method_id: u16) -> Method {
    let reply_text = ShortStr::new(truncate(&error.reply_text)).unwrap_or_default();
    match error.scope {
        Scope::Channel => Method::ChannelClose(amqp::ChannelClose {
            reply_code: error.reply_code,
            reply_text,
            class_id,
            method_id,
        }),
        Scope::Connection => Method::ConnectionClose(ConnectionClose {
            reply_code: error.reply_code,
            reply_text,
            class_id,
            method_id,
        }),
    }
}

/// A content frame where a method was due (RabbitMQ's wording).
pub(crate) fn unexpected_content() -> AmqpException {
    AmqpException::unexpected_frame("expected method frame, got non method frame instead")
}

fn truncate(text: &str) -> String {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Frame-level decode failures are connection errors, with RabbitMQ's codes: 501 for
/// anything that cannot be framed or decoded, 540 for a method we do not know.
fn decode_exception(error: &DecodeError) -> (AmqpException, u16, u16) {
    match *error {
        DecodeError::UnknownMethod {
            class_id,
            method_id,
        } => (
            AmqpException::not_implemented(format!("unknown method {{{class_id},{method_id}}}")),
            class_id,
            method_id,
        ),
        DecodeError::Malformed { reason, .. } if reason == SHORTSTR_NOT_UTF8 => (
            AmqpException::frame_error("Malformed UTF-8 in shortstr"),
            0,
            0,
        ),
        DecodeError::Malformed {
            class_id,
            method_id,
            reason,
        } => (
            AmqpException::frame_error(format!("cannot decode frame: {reason}")),
            class_id,
            method_id,
        ),
        DecodeError::FrameTooLarge { size, max } => (
            AmqpException::frame_error(format!(
                "frame payload of {size} bytes is larger than frame_max {}",
                max.saturating_sub(FRAME_OVERHEAD as u32)
            )),
            0,
            0,
        ),
        DecodeError::UnknownFrameType(t) => (
            AmqpException::frame_error(format!("type {t}: unknown_frame")),
            0,
            0,
        ),
        DecodeError::FrameEndMissing => {
            (AmqpException::frame_error("invalid_frame_end_marker"), 0, 0)
        }
        ref other => (AmqpException::frame_error(other.to_string()), 0, 0),
    }
}

fn server_properties() -> FieldTable {
    let text = |s: &str| FieldValue::LongStr(LongStr::from(s));
    let mut capabilities = FieldTable::new();
    for name in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        capabilities.insert(ShortStr::from_static(name), FieldValue::Bool(true));
    }
    let mut properties = FieldTable::new();
    let mut put = |k: &'static str, v: FieldValue| properties.insert(ShortStr::from_static(k), v);
    put("capabilities", FieldValue::Table(capabilities));
    put("cluster_name", text("warren"));
    put("copyright", text("Copyright (c) the Warren developers"));
    put(
        "information",
        text(concat!(
            "Warren ",
            env!("CARGO_PKG_VERSION"),
            ", licensed under the Apache License 2.0"
        )),
    );
    put("platform", text("Rust"));
    put("product", text("RabbitMQ"));
    put("version", text(crate::RABBITMQ_VERSION));
    properties
}

impl Connection {
    fn send_start(&mut self) {
        self.session.send_method(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties(),
                mechanisms: LongStr::from("PLAIN AMQPLAIN"),
                locales: LongStr::from("en_US"),
            },
        );
    }

    fn closing_deadline(&self) -> Instant {
        self.closing_since.unwrap_or_else(Instant::now) + CLOSE_OK_TIMEOUT
    }

    /// Largest frame accepted: the negotiated frame_max plus the 8 bytes of overhead, because
    /// clients that forget the overhead are common and RabbitMQ tolerates them. Before tune-ok
    /// the server's own frame_max applies.
    fn decode_frame_max(&self) -> u32 {
        let frame_max = match self.state {
            State::AwaitingStartOk | State::AwaitingTuneOk => self.session.config.frame_max_bytes,
            _ => self.session.frame_max,
        };
        frame_max.saturating_add(FRAME_OVERHEAD as u32)
    }

    async fn handle_input(&mut self, input: &mut BytesMut) {
        while !matches!(self.state, State::Closed) && self.session.throttled_by.is_none() {
            match Frame::decode(input, self.decode_frame_max()) {
                Ok(frame) => {
                    if let Some(frame) = self.handle_hot_frame(frame) {
                        // Whatever comes next must see the publishes read before it.
                        self.flush_publishes();
                        self.handle_frame(frame).await;
                    }
                }
                Err(DecodeError::Incomplete { .. }) => break,
                Err(error) => {
                    let (exception, class_id, method_id) = decode_exception(&error);
                    self.close_with(exception, class_id, method_id);
                    // The stream can no longer be framed: hang up once the close is written.
                    self.state = State::Closed;
                    input.clear();
                }
            }
        }
        self.flush_publishes();
        self.flush_confirms();
    }

    fn flush_publishes(&mut self) {
        for channel in self.channels.values_mut() {
            channel.flush_publishes(&mut self.session);
        }
    }

    fn flush_confirms(&mut self) {
        for channel in self.channels.values_mut() {
            channel.flush_confirms(&mut self.session);
        }
    }

    /// Serves the per-message frames (publish with its content, acks) without awaiting, so
    /// that the hot path never builds the futures of the general handlers. Returns the frame
    /// when it needs the general path.
    fn handle_hot_frame(&mut self, frame: Frame) -> Option<Frame> {
        if self.state != State::Open {
            return Some(frame);
        }
        match frame {
            Frame::Header { channel, header } if channel != 0 => {
                self.with_content_channel(channel, |c, session| {
                    c.handle_content_header(header, session)
                });
                None
            }
            Frame::Body { channel, payload } if channel != 0 => {
                self.with_content_channel(channel, |c, session| {
                    c.handle_content_body(payload, session)
                });
                None
            }
            Frame::Method { channel, method }
                if channel != 0 && Channel::is_hot_method(&method) =>
            {
                let ready = self
                    .channels
                    .get(&channel)
                    .is_some_and(|c| !c.is_closing() && !c.expecting_content());
                if !ready {
                    return Some(Frame::Method { channel, method });
                }
                let (class_id, method_id) = (method.class_id(), method.method_id());
                let result = match self.channels.get_mut(&channel) {
                    Some(open) => open.handle_hot_method(method),
                    None => Ok(()),
                };
                if let Err(error) = result {
                    self.channel_failed(channel, error, class_id, method_id);
                }
                None
            }
            other => Some(other),
        }
    }

    async fn handle_frame(&mut self, frame: Frame) {
        match self.state {
            State::AwaitingStartOk | State::AwaitingTuneOk | State::AwaitingOpen => {
                if let Err((e, c, m)) = self.handle_handshake_frame(frame) {
                    self.close_with(e, c, m);
                }
            }
            State::Open => self.handle_open_frame(frame).await,
            State::Closing => match frame {
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionCloseOk(_),
                } => self.state = State::Closed,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(_),
                } => {
                    self.session.send_method(0, ConnectionCloseOk {});
                    self.state = State::Closed;
                }
                _ => {}
            },
            State::Closed => {}
        }
    }

    fn handle_handshake_frame(&mut self, frame: Frame) -> Result<(), (AmqpException, u16, u16)> {
        let (channel, method) = match frame {
            Frame::Heartbeat { .. } => return Ok(()),
            Frame::Method { channel, method } => (channel, method),
            _ => {
                return Err((
                    AmqpException::unexpected_frame("expected a method frame during the handshake"),
                    0,
                    0,
                ))
            }
        };
        let (class_id, method_id) = (method.class_id(), method.method_id());
        let fail = |e: AmqpException| (e, class_id, method_id);
        if channel != 0 {
            return Err(fail(AmqpException::command_invalid(format!(
                "unexpected method on channel {channel} during the handshake"
            ))));
        }
        match (self.state, method) {
            (State::AwaitingStartOk, Method::ConnectionStartOk(start_ok)) => {
                self.handle_connection_start_ok(start_ok).map_err(fail)
            }
            (State::AwaitingTuneOk, Method::ConnectionTuneOk(tune_ok)) => {
                self.handle_connection_tune_ok(tune_ok).map_err(fail)
            }
            (State::AwaitingOpen, Method::ConnectionOpen(open)) => {
                self.handle_connection_open(open).map_err(fail)
            }
            (_, Method::ConnectionClose(_)) => {
                self.session.send_method(0, ConnectionCloseOk {});
                self.state = State::Closed;
                Ok(())
            }
            (_, other) => Err(fail(AmqpException::command_invalid(format!(
                "expected a handshake method, got '{}'",
                other.name()
            )))),
        }
    }

    fn handle_connection_start_ok(
        &mut self,
        start_ok: ConnectionStartOk,
    ) -> Result<(), AmqpException> {
        if let Some(FieldValue::Table(capabilities)) =
            start_ok.client_properties.get("capabilities")
        {
            let flag = |name| {
                capabilities
                    .get(name)
                    .and_then(FieldValue::as_bool)
                    .unwrap_or(false)
            };
            self.session.capabilities = ClientCapabilities {
                consumer_cancel_notify: flag("consumer_cancel_notify"),
                authentication_failure_close: flag("authentication_failure_close"),
            };
        }
        let mechanism = start_ok.mechanism.as_str();
        let credentials = match mechanism {
            "PLAIN" => parse_plain(start_ok.response.as_bytes()),
            "AMQPLAIN" => parse_amqplain(start_ok.response.as_bytes()),
            _ => None,
        };
        let Some((username, password)) = credentials else {
            // RabbitMQ hangs up without connection.close on an unknown mechanism or a
            // response it cannot parse.
            tracing::info!(peer = %self.peer, mechanism, "unusable authentication response");
            self.state = State::Closed;
            return Ok(());
        };
        let from_loopback = self.peer.ip().is_loopback();
        let user = self
            .session
            .broker
            .users
            .authenticate(&username, &password, from_loopback);
        if let Some(user) = &user {
            self.session.username = user.name.clone();
            self.session
                .registration
                .logged_in(&user.name, mechanism, &start_ok.client_properties);
        }
        if user.is_none() {
            let error = AmqpException::connection_access_refused(format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            ));
            if self.session.capabilities.authentication_failure_close {
                self.close_with(error, 0, 0);
            } else {
                // Old clients expect the socket to just close.
                self.state = State::Closed;
            }
            return Ok(());
        }
        self.session.send_method(
            0,
            ConnectionTune {
                channel_max: self.session.config.channel_max,
                frame_max: self.session.config.frame_max_bytes,
                heartbeat: self.session.config.heartbeat_secs,
            },
        );
        self.state = State::AwaitingTuneOk;
        Ok(())
    }

    fn handle_connection_tune_ok(
        &mut self,
        tune_ok: ConnectionTuneOk,
    ) -> Result<(), AmqpException> {
        let server_frame_max = self.session.config.frame_max_bytes;
        let frame_max = tune_ok.frame_max;
        // frame_max 0 means "no limit", which is above ours (RabbitMQ refuses it too).
        if frame_max == 0 || frame_max > server_frame_max {
            return Err(AmqpException::not_allowed(format!(
                "negotiated frame_max = {frame_max} is higher than the maximum allowed value ({server_frame_max})"
            )));
        }
        if frame_max < FRAME_MIN_SIZE {
            return Err(AmqpException::not_allowed(format!(
                "negotiated frame_max = {frame_max} is lower than the minimum allowed value ({FRAME_MIN_SIZE})"
            )));
        }
        let server_channel_max = self.session.config.channel_max;
        if tune_ok.channel_max > server_channel_max {
            return Err(AmqpException::not_allowed(format!(
                "negotiated channel_max = {} is higher than the maximum allowed value ({server_channel_max})",
                tune_ok.channel_max
            )));
        }
        self.channel_max = match tune_ok.channel_max {
            0 => server_channel_max,
            n => n,
        };
        self.session.frame_max = frame_max;
        self.heartbeat_secs = tune_ok.heartbeat;
        self.state = State::AwaitingOpen;
        Ok(())
    }

    fn handle_connection_open(&mut self, open: ConnectionOpen) -> Result<(), AmqpException> {
        let name = open.virtual_host.as_str();
        let vhost = self
            .session
            .broker
            .vhost(name)
            .ok_or_else(|| AmqpException::not_allowed(format!("vhost {name} not found")))?;
        self.session.access = Some(AccessCheck::open(
            self.session.broker.permissions.clone(),
            &self.session.username,
            name,
        )?);
        self.vhost = Some(vhost);
        self.session.registration.opened(
            name,
            self.session.frame_max,
            self.channel_max,
            self.heartbeat_secs,
        );
        self.session.send_method(0, ConnectionOpenOk {});
        self.state = State::Open;
        Ok(())
    }

    async fn handle_open_frame(&mut self, frame: Frame) {
        let channel_id = frame.channel();
        if channel_id == 0 {
            match frame {
                Frame::Heartbeat { .. } => {}
                Frame::Method {
                    method: Method::ConnectionClose(_),
                    ..
                } => {
                    // Like RabbitMQ, the connection's exclusive queues are gone before the
                    // client learns that it is closed.
                    self.release_all().await;
                    self.session.send_method(0, ConnectionCloseOk {});
                    self.state = State::Closed;
                }
                Frame::Method { method, .. } => self.handle_connection_method(method),
                _ => self.close_with(
                    AmqpException::unexpected_frame("content frame on channel 0"),
                    0,
                    0,
                ),
            }
            return;
        }
        match frame {
            Frame::Method { method, .. } => self.handle_channel_method(channel_id, method).await,
            Frame::Header { header, .. } => self
                .with_content_channel(channel_id, |channel, session| {
                    channel.handle_content_header(header, session)
                }),
            Frame::Body { payload, .. } => self
                .with_content_channel(channel_id, |channel, session| {
                    channel.handle_content_body(payload, session)
                }),
            Frame::Heartbeat { .. } => self.close_with(
                AmqpException::unexpected_frame(format!("heartbeat frame on channel {channel_id}")),
                0,
                0,
            ),
        }
    }

    /// Runs a content-frame handler and turns its error into a close. Errors that complete a
    /// publish name basic.publish, as RabbitMQ does.
    fn with_content_channel(
        &mut self,
        channel_id: u16,
        f: impl FnOnce(&mut Channel, &mut Session) -> Result<(), AmqpException>,
    ) {
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            self.close_with(unexpected_content(), 0, 0);
            return;
        };
        if channel.is_closing() {
            return;
        }
        let (class_id, method_id) = if channel.expecting_content() {
            (BasicPublish::CLASS_ID, BasicPublish::METHOD_ID)
        } else {
            (0, 0)
        };
        if let Err(error) = f(channel, &mut self.session) {
            self.channel_failed(channel_id, error, class_id, method_id);
        }
    }

    fn handle_connection_method(&mut self, method: Method) {
        match method {
            Method::ConnectionClose(_) => {
                self.session.send_method(0, ConnectionCloseOk {});
                self.state = State::Closed;
            }
            Method::ConnectionCloseOk(_) => self.state = State::Closed,
            Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => {}
            Method::ConnectionUpdateSecret(_) => {
                self.session
                    .send_method(0, amqp::ConnectionUpdateSecretOk {});
            }
            other => {
                let (class_id, method_id) = (other.class_id(), other.method_id());
                self.close_with(
                    AmqpException::channel_error("unexpected method in connection state running"),
                    class_id,
                    method_id,
                );
            }
        }
    }

    async fn handle_channel_method(&mut self, channel_id: u16, method: Method) {
        let (class_id, method_id) = (method.class_id(), method.method_id());
        if class_id == ConnectionStart::CLASS_ID {
            self.close_with(
                AmqpException::command_invalid("unimplemented method"),
                class_id,
                method_id,
            );
            return;
        }
        if let Method::ChannelOpen(_) = method {
            self.open_channel(channel_id, class_id, method_id);
            return;
        }
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            self.close_with(
                AmqpException::channel_error("expected 'channel.open'"),
                class_id,
                method_id,
            );
            return;
        };
        match method {
            Method::ChannelClose(_) => {
                if let Some(mut channel) = self.channels.remove(&channel_id) {
                    channel.release(&mut self.session);
                }
                self.session.send_method(channel_id, ChannelCloseOk {});
            }
            Method::ChannelCloseOk(_) => {
                if channel.is_closing() {
                    self.channels.remove(&channel_id);
                }
            }
            _ if channel.is_closing() => {}
            _ if channel.expecting_content() => {
                let error = channel.unexpected_method_error();
                self.close_with(error, BasicPublish::CLASS_ID, BasicPublish::METHOD_ID);
            }
            method => {
                if let Err(error) = channel.handle_method(method, &mut self.session).await {
                    self.channel_failed(channel_id, error, class_id, method_id);
                }
            }
        }
    }

    fn open_channel(&mut self, channel_id: u16, class_id: u16, method_id: u16) {
        if self.channels.contains_key(&channel_id) {
            self.close_with(
                AmqpException::channel_error("second 'channel.open' seen"),
                class_id,
                method_id,
            );
            return;
        }
        if self.channels.len() >= usize::from(self.channel_max) {
            self.close_with(
                AmqpException::not_allowed(format!(
                    "number of channels opened ({}) has reached the negotiated channel_max ({})",
                    self.channels.len(),
                    self.channel_max
                )),
                0,
                0,
            );
            return;
        }
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        self.channel_serial += 1;
        self.channels.insert(
            channel_id,
            Box::new(Channel::new(
                channel_id,
                self.channel_serial,
                vhost,
                self.session.registration.open_channel(channel_id),
            )),
        );
        self.session.send_method(channel_id, ChannelOpenOk {});
    }

    /// A channel's handler failed: close the channel, or the connection for connection errors.
    fn check_consumer_timeouts(&mut self) {
        let now = Instant::now();
        let default_ms = self.session.config.consumer_timeout_ms;
        let timed_out: Vec<(u16, AmqpException)> = self
            .channels
            .iter_mut()
            .filter_map(|(id, channel)| {
                channel
                    .check_consumer_timeout(now, default_ms)
                    .map(|error| (*id, error))
            })
            .collect();
        for (channel_id, error) in timed_out {
            self.channel_failed(channel_id, error, 0, 0);
        }
    }

    fn channel_failed(
        &mut self,
        channel_id: u16,
        error: AmqpException,
        class_id: u16,
        method_id: u16,
    ) {
        if error.is_connection_error() {
            self.close_with(error, class_id, method_id);
            return;
        }
        if let Some(channel) = self.channels.get_mut(&channel_id) {
            channel.release(&mut self.session);
            channel.mark_closing();
        }
        encode_method_frame(
            channel_id,
            &close_method(&error, class_id, method_id),
            &mut self.session.out,
        );
    }

    /// Sends connection.close and stops serving channels; their messages go back to queues now.
    fn close_with(&mut self, error: AmqpException, class_id: u16, method_id: u16) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        tracing::debug!(peer = %self.peer, %error, "closing connection");
        let close = match error.scope {
            Scope::Connection => close_method(&error, class_id, method_id),
            Scope::Channel => close_method(
                &AmqpException::new(Scope::Connection, error.reply_code, ""),
                class_id,
                method_id,
            ),
        };
        encode_method_frame(0, &close, &mut self.session.out);
        for (_, mut channel) in self.channels.drain() {
            channel.release(&mut self.session);
        }
        self.state = State::Closing;
        self.closing_since = Some(Instant::now());
    }

    fn handle_event(&mut self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Deliver(delivery) => match self.channels.get_mut(&delivery.channel_id)
            {
                Some(channel) => channel.deliver(delivery, &mut self.session),
                None => Channel::return_undelivered(delivery),
            },
            ConnectionEvent::Confirm { channel, seq, ack } => {
                if let Some(open) = self.channels.get_mut(&channel.channel_id) {
                    open.confirm_settled(channel.serial, seq, ack);
                }
            }
            ConnectionEvent::ConsumerCancelled {
                channel_id,
                consumer_tag,
            } => {
                if let Some(channel) = self.channels.get_mut(&channel_id) {
                    channel.consumer_cancelled_by_queue(consumer_tag, &mut self.session);
                }
            }
        }
    }

    /// Puts back what the connection's channels hold and deletes its exclusive queues.
    async fn release_all(&mut self) {
        for (_, mut channel) in self.channels.drain() {
            channel.release(&mut self.session);
        }
        if let Some(vhost) = &self.vhost {
            vhost.connection_closed(self.session.connection_id).await;
        }
    }
}

/// PLAIN: `authzid NUL authcid NUL password`.
fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|&b| b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, password))
}

/// AMQPLAIN: a field table (without its length prefix) with LOGIN and PASSWORD.
fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    let mut framed = BytesMut::with_capacity(response.len() + 4);
    framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
    framed.extend_from_slice(response);
    let table = FieldTable::decode(&framed.freeze()).ok()?;
    let field = |name| match table.get(name)? {
        FieldValue::LongStr(s) => s.as_str().map(str::to_string),
        _ => None,
    };
    Some((field("LOGIN")?, field("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_response_is_split_on_nul() {
        assert_eq!(
            parse_plain(b"\0guest\0secret"),
            Some(("guest".into(), "secret".into()))
        );
        assert_eq!(parse_plain(b"guest"), None);
    }

    #[test]
    fn close_method_names_the_failing_method() {
        let e = AmqpException::not_found("no queue 'q' in vhost '/'");
        match close_method(&e, 50, 10) {
            Method::ChannelClose(c) => {
                assert_eq!((c.reply_code, c.class_id, c.method_id), (404, 50, 10));
                assert_eq!(
                    c.reply_text.as_str(),
                    "NOT_FOUND - no queue 'q' in vhost '/'"
                );
            }
            other => panic!("expected channel.close, got {other:?}"),
        }
    }
}
