//! The two roles every scenario is built from: a producer (publishes as fast as allowed by
//! its rate and confirm window, many messages per write) and a consumer (counts deliveries,
//! records latency, acks in batches). Each owns one connection with one channel.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp::{
    BasicAck, BasicConsume, BasicQos, ChannelCloseOk, ConfirmSelect, ConnectionClose,
    ConnectionCloseOk, FieldTable, Frame, Method, ShortStr,
};
use tokio::task::JoinHandle;

use crate::client::{
    channel_closed, connection_closed, short, ClientError, Connection, Event, FrameReader,
    FrameWriter,
};
use crate::confirm::ConfirmTracker;
use crate::publish::{now_nanos, PublishTemplate};
use crate::stats::{stopped, Shared};
use crate::uri::AmqpUri;

pub const CHANNEL: u16 = 1;
/// How long a stopping producer waits for its outstanding confirms.
const CONFIRM_WAIT: Duration = Duration::from_secs(30);

pub struct ProducerSpec {
    pub exchange: String,
    pub routing_key: String,
    pub body_size: usize,
    pub persistent: bool,
    /// Publisher confirms with at most this many unconfirmed messages; 0 = no confirms.
    pub confirm: u64,
    /// Messages per second for this producer; 0 = as fast as possible.
    pub rate: f64,
    /// Stop after this many messages (backlog fill); None = until told to stop.
    pub limit: Option<u64>,
    /// Most messages encoded into one write.
    pub batch: usize,
}

pub struct ConsumerSpec {
    pub queue: String,
    pub auto_ack: bool,
    pub prefetch: u16,
    /// With manual acks: one basic.ack(multiple) every this many deliveries.
    pub multi_ack_every: u32,
}

pub async fn connect(uri: &AmqpUri, name: &str) -> Result<Connection, ClientError> {
    let mut conn = Connection::open(uri, name).await?;
    conn.open_channel(CHANNEL).await?;
    Ok(conn)
}

/// Connects, subscribes, and returns once basic.consume-ok arrived, so callers know the
/// consumer exists before producers start.
pub async fn start_consumer(
    uri: &AmqpUri,
    name: &str,
    spec: ConsumerSpec,
    shared: Arc<Shared>,
) -> Result<JoinHandle<()>, ClientError> {
    let mut conn = connect(uri, name).await?;
    if spec.prefetch > 0 {
        let qos = BasicQos {
            prefetch_size: 0,
            prefetch_count: spec.prefetch,
            global: false,
        };
        match conn.rpc(CHANNEL, qos).await? {
            Method::BasicQosOk(_) => {}
            other => return Err(unexpected("basic.qos-ok", other)),
        }
    }
    let consume = BasicConsume {
        queue: short(&spec.queue)?,
        consumer_tag: ShortStr::default(),
        no_local: false,
        no_ack: spec.auto_ack,
        exclusive: false,
        no_wait: false,
        arguments: FieldTable::new(),
    };
    match conn.rpc(CHANNEL, consume).await? {
        Method::BasicConsumeOk(_) => {}
        other => return Err(unexpected("basic.consume-ok", other)),
    }
    let (reader, writer) = conn.into_split();
    Ok(tokio::spawn(async move {
        if let Err(e) = consume_loop(reader, writer, &spec, &shared).await {
            if !shared.stop_consumers.is_set() {
                shared.fail(format!("consumer on '{}': {e}", spec.queue));
            }
        }
    }))
}

async fn consume_loop(
    mut reader: FrameReader,
    mut writer: FrameWriter,
    spec: &ConsumerSpec,
    shared: &Shared,
) -> Result<(), ClientError> {
    let mut stop = shared.stop_consumers.subscribe();
    let ack_every = u64::from(spec.multi_ack_every.max(1));
    let mut unacked = 0u64;
    let mut latencies = Vec::with_capacity(4096);
    // Frames that came in with consume-ok are already buffered: handle them before reading
    // more, or a broker that sent a full prefetch window at once waits forever for acks.
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                r = reader.fill() => r?,
            }
        }
        first = false;
        let now = now_nanos();
        let (mut n, mut bytes) = (0u64, 0u64);
        while let Some(event) = reader.next_event()? {
            match event {
                Event::Delivery {
                    delivery_tag,
                    body_size,
                    stamp,
                } => {
                    n += 1;
                    bytes += body_size;
                    if let Some(sent) = stamp {
                        latencies.push(now.saturating_sub(sent));
                    }
                    if !spec.auto_ack {
                        unacked += 1;
                        if unacked >= ack_every {
                            writer.method(
                                CHANNEL,
                                BasicAck {
                                    delivery_tag,
                                    multiple: ack_every > 1,
                                },
                            );
                            unacked = 0;
                        }
                    }
                }
                Event::Other(frame) => handle_other(frame, &mut writer).await?,
                Event::Ack { .. } | Event::Nack { .. } => {}
            }
        }
        writer.flush().await?;
        if n > 0 {
            shared.counters.consumed.fetch_add(n, Relaxed);
            shared.counters.consumed_bytes.fetch_add(bytes, Relaxed);
        }
        if !latencies.is_empty() {
            shared.latency.lock().record(&latencies);
            latencies.clear();
        }
    }
    close_hot(reader, writer).await;
    Ok(())
}

/// Frames other than deliveries and confirms: a broker close or consumer cancel ends the run
/// with its exact reply; the rest is ignored.
async fn handle_other(frame: Frame, writer: &mut FrameWriter) -> Result<(), ClientError> {
    match frame {
        Frame::Method {
            method: Method::ConnectionClose(c),
            ..
        } => {
            writer.method(0, ConnectionCloseOk {});
            let _ = writer.flush().await;
            Err(connection_closed(&c))
        }
        Frame::Method {
            channel,
            method: Method::ChannelClose(c),
        } => {
            writer.method(channel, ChannelCloseOk {});
            let _ = writer.flush().await;
            Err(channel_closed(channel, &c))
        }
        Frame::Method {
            method: Method::BasicCancel(c),
            ..
        } => Err(ClientError::ConsumerCancelled(c.consumer_tag.to_string())),
        Frame::Method {
            method: Method::ConnectionBlocked(b),
            ..
        } => {
            eprintln!("warren-perf: broker blocked a connection: {}", b.reason);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// connection.close, then read (ignoring deliveries) until close-ok or a second passes.
async fn close_hot(mut reader: FrameReader, mut writer: FrameWriter) {
    writer.method(
        0,
        ConnectionClose {
            reply_code: 200,
            reply_text: ShortStr::from_static("Goodbye"),
            class_id: 0,
            method_id: 0,
        },
    );
    let wait = async {
        writer.flush().await?;
        loop {
            reader.fill().await?;
            while let Some(event) = reader.next_event()? {
                if let Event::Other(Frame::Method {
                    method: Method::ConnectionCloseOk(_) | Method::ConnectionClose(_),
                    ..
                }) = event
                {
                    return Ok::<(), ClientError>(());
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
}

pub struct Producer {
    pub task: JoinHandle<()>,
}

/// Connects (and selects confirms) before returning, so setup errors surface at once.
pub async fn start_producer(
    uri: &AmqpUri,
    name: &str,
    spec: ProducerSpec,
    shared: Arc<Shared>,
) -> Result<Producer, ClientError> {
    let mut conn = connect(uri, name).await?;
    if spec.confirm > 0 {
        match conn.rpc(CHANNEL, ConfirmSelect { no_wait: false }).await? {
            Method::ConfirmSelectOk(_) => {}
            other => return Err(unexpected("confirm.select-ok", other)),
        }
    }
    let template = PublishTemplate::new(
        CHANNEL,
        &spec.exchange,
        &spec.routing_key,
        spec.body_size,
        spec.persistent,
        conn.frame_max,
    )?;
    let (reader, writer) = conn.into_split();
    let tracker = Arc::new(ConfirmTracker::default());
    let task = tokio::spawn(async move {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let listen = tokio::spawn(listen_producer(
            reader,
            tracker.clone(),
            shared.clone(),
            done_rx,
        ));
        let result = publish_loop(writer, template, &spec, &tracker, &shared).await;
        let writer = match result {
            Ok(w) => {
                if spec.confirm > 0 {
                    wait_for_confirms(&tracker, &shared).await;
                }
                Some(w)
            }
            Err(e) => {
                shared.fail(format!("producer to '{}': {e}", spec.routing_key));
                None
            }
        };
        if let Some(mut writer) = writer {
            writer.method(
                0,
                ConnectionClose {
                    reply_code: 200,
                    reply_text: ShortStr::from_static("Goodbye"),
                    class_id: 0,
                    method_id: 0,
                },
            );
            let _ = writer.flush().await;
            // The listener ends at close-ok; keep the write half alive until then.
            let _ = tokio::time::timeout(Duration::from_secs(1), listen).await;
            drop(writer);
        } else {
            listen.abort();
        }
        drop(done_tx);
    });
    Ok(Producer { task })
}

async fn publish_loop(
    mut writer: FrameWriter,
    mut template: PublishTemplate,
    spec: &ProducerSpec,
    tracker: &ConfirmTracker,
    shared: &Shared,
) -> Result<FrameWriter, ClientError> {
    let mut stop = shared.stop_producers.subscribe();
    let started = Instant::now();
    let mut sent = 0u64;
    let per_message = template.encoded_len();
    let batch_cap = spec.batch.max(1) as u64;
    // Keep one write near 256 KiB even for big bodies.
    let batch_cap = batch_cap.min((256 * 1024 / per_message.max(1)).max(1) as u64);
    loop {
        if shared.stop_producers.is_set() {
            break;
        }
        let mut n = batch_cap;
        if let Some(limit) = spec.limit {
            if sent >= limit {
                break;
            }
            n = n.min(limit - sent);
        }
        if spec.rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * spec.rate) as u64 + 1;
            if due <= sent {
                let at = started + Duration::from_secs_f64(sent as f64 / spec.rate);
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
                continue;
            }
            n = n.min(due - sent);
        }
        if spec.confirm > 0 {
            let in_flight = tracker.in_flight();
            if in_flight >= spec.confirm {
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    _ = tracker.progress.notified() => {}
                }
                continue;
            }
            n = n.min(spec.confirm - in_flight);
        }
        template.stamp(now_nanos());
        writer.buf.reserve(per_message * n as usize);
        for _ in 0..n {
            template.encode(&mut writer.buf);
        }
        if spec.confirm > 0 {
            tracker.published(n);
        }
        // A broker applying TCP back-pressure may hold this write for long: stay stoppable,
        // then finish the batch so that no frame is left cut in half.
        let stopped_early = tokio::select! {
            _ = stopped(&mut stop) => true,
            r = writer.flush() => { r?; false }
        };
        if stopped_early {
            match tokio::time::timeout(Duration::from_secs(5), writer.flush()).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ClientError::Io(std::io::Error::other(
                        "broker did not read the last batch within 5 s of the stop",
                    )))
                }
            }
        }
        sent += n;
        shared.counters.published.fetch_add(n, Relaxed);
        shared
            .counters
            .published_bytes
            .fetch_add(n * spec.body_size as u64, Relaxed);
        if stopped_early {
            break;
        }
        // Let the confirm listener and others run between batches on a busy runtime.
        tokio::task::yield_now().await;
    }
    Ok(writer)
}

/// Gives the broker time to confirm what was published before the connection closes
/// (unless the run failed, which stops the consumers too).
async fn wait_for_confirms(tracker: &ConfirmTracker, shared: &Shared) {
    let deadline = Instant::now() + CONFIRM_WAIT;
    let mut failed = shared.stop_consumers.subscribe();
    while tracker.in_flight() > 0 && shared.error().is_none() {
        tokio::select! {
            _ = tracker.progress.notified() => {}
            _ = stopped(&mut failed) => return,
            _ = tokio::time::sleep_until(deadline.into()) => return,
        }
    }
}

/// The producer connection's inbound side: confirms, and any close from the broker.
async fn listen_producer(
    mut reader: FrameReader,
    tracker: Arc<ConfirmTracker>,
    shared: Arc<Shared>,
    mut done: tokio::sync::oneshot::Receiver<()>,
) {
    let result: Result<(), ClientError> = async {
        loop {
            tokio::select! {
                biased;
                _ = &mut done => return Ok(()),
                r = reader.fill() => r?,
            }
            let (mut acked, mut nacked) = (0, 0);
            while let Some(event) = reader.next_event()? {
                match event {
                    Event::Ack {
                        delivery_tag,
                        multiple,
                    } => acked += tracker.settle(delivery_tag, multiple, false).acked,
                    Event::Nack {
                        delivery_tag,
                        multiple,
                    } => nacked += tracker.settle(delivery_tag, multiple, true).nacked,
                    Event::Other(Frame::Method {
                        method: Method::ConnectionCloseOk(_),
                        ..
                    }) => return Ok(()),
                    Event::Other(Frame::Method {
                        method: Method::ConnectionClose(c),
                        ..
                    }) => return Err(connection_closed(&c)),
                    Event::Other(Frame::Method {
                        channel,
                        method: Method::ChannelClose(c),
                    }) => return Err(channel_closed(channel, &c)),
                    Event::Other(Frame::Method {
                        method: Method::ConnectionBlocked(b),
                        ..
                    }) => eprintln!("warren-perf: broker blocked a publisher: {}", b.reason),
                    _ => {}
                }
            }
            shared.counters.confirmed.fetch_add(acked, Relaxed);
            shared.counters.nacked.fetch_add(nacked, Relaxed);
        }
    }
    .await;
    if let Err(e) = result {
        // An EOF after we asked to stop is the broker closing a connection we closed.
        if !(shared.stop_producers.is_set() && matches!(e, ClientError::Eof)) {
            shared.fail(format!("producer connection: {e}"));
        }
    }
}

fn unexpected(want: &'static str, got: Method) -> ClientError {
    ClientError::Unexpected {
        want,
        got: got.name().to_string(),
    }
}
