//! How many heap allocations the broker makes for one transient message, from its publish
//! frames to its delivery frames: a small fixed number, which grows with the body only by the
//! read buffer a large body arrives in, because bodies are shared, never copied into a new
//! allocation. Knows the broker only through its socket and the `warren` library's `Server`.
//!
//! A counting global allocator sees every allocation in the process. The client threads mark
//! themselves so theirs are not counted (and keep them away from the measured window anyway:
//! publish frames are encoded once and written over and over, deliveries are scanned in place
//! in a fixed buffer), so what is counted is the broker's work. Figures are averages over
//! thousands of messages, which keeps one-off growth of buffers and queues out of them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use amqp::{
    encode_basic_header_frame, encode_body_frames, encode_method_frame, BasicAck, BasicConsume,
    BasicProperties, BasicPublish, BasicQos, ChannelOpen, ConnectionOpen, ConnectionStartOk,
    ConnectionTuneOk, DecodeError, FieldTable, Frame, LongStr, Method, QueueDeclare, ShortStr,
    FRAME_BODY, FRAME_END, FRAME_METHOD, PROTOCOL_HEADER,
};
use bytes::BytesMut;

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test's client threads. Const-initialised and without drop glue, so reading
    /// it from inside the allocator never allocates.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if !UNCOUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// atomics and a const thread-local.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    /// A reallocation is counted as an allocation: it may move the block like a new one.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn client_thread() {
    UNCOUNTED.with(|u| u.set(true));
}

fn snapshot() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::SeqCst),
        ALLOCATED_BYTES.load(Ordering::SeqCst),
    )
}

/// The broker with its own multi-threaded runtime, as `main` runs it.
struct Broker {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let config = warren::Config {
            bind: "127.0.0.1".parse().expect("loopback address"),
            port: 0,
            data_dir: data_dir.path().to_path_buf(),
            ..Default::default()
        };
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("broker runtime");
            runtime.block_on(async move {
                let server = warren::Server::bind(config).await.expect("broker binds");
                addr_tx.send(server.local_addr()).expect("test is waiting");
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("broker runs");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("broker started");
        Broker {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            _data_dir: data_dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A blocking AMQP connection with one open channel (number 1), for the setup steps; the
/// measured traffic bypasses it.
struct RawConnection {
    stream: TcpStream,
    input: BytesMut,
    out: BytesMut,
}

const CH: u16 = 1;
const DEADLINE: Duration = Duration::from_secs(20);

fn short(s: &str) -> ShortStr {
    ShortStr::new(s).expect("short string")
}

impl RawConnection {
    fn open(addr: SocketAddr, frame_max: u32) -> RawConnection {
        let stream = TcpStream::connect(addr).expect("connect to broker");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let mut c = RawConnection {
            stream,
            input: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
        };
        c.stream.write_all(&PROTOCOL_HEADER).expect("send header");
        c.expect(0, |m| matches!(m, Method::ConnectionStart(_)));
        c.send(
            0,
            ConnectionStartOk {
                client_properties: FieldTable::new(),
                mechanism: short("PLAIN"),
                response: LongStr::from("\0guest\0guest"),
                locale: short("en_US"),
            },
        );
        c.expect(0, |m| matches!(m, Method::ConnectionTune(_)));
        c.send(
            0,
            ConnectionTuneOk {
                channel_max: 0,
                frame_max,
                heartbeat: 0,
            },
        );
        c.send(
            0,
            ConnectionOpen {
                virtual_host: short("/"),
            },
        );
        c.expect(0, |m| matches!(m, Method::ConnectionOpenOk(_)));
        c.send(CH, ChannelOpen {});
        c.expect(CH, |m| matches!(m, Method::ChannelOpenOk(_)));
        c
    }

    fn send(&mut self, channel: u16, method: impl Into<Method>) {
        self.out.clear();
        encode_method_frame(channel, &method.into(), &mut self.out);
        self.stream.write_all(&self.out).expect("send method");
    }

    /// Reads frames until a method; panics unless `want` accepts it.
    fn expect(&mut self, channel: u16, want: impl Fn(&Method) -> bool) -> Method {
        loop {
            match Frame::decode(&mut self.input, 0) {
                Ok(Frame::Method {
                    channel: got,
                    method,
                }) => {
                    assert!(
                        got == channel && want(&method),
                        "unexpected {method:?} on channel {got}"
                    );
                    return method;
                }
                Ok(other) => panic!("unexpected frame {other:?}"),
                Err(DecodeError::Incomplete { .. }) => {
                    let mut chunk = [0u8; 16 * 1024];
                    let n = self.stream.read(&mut chunk).expect("read from broker");
                    assert!(n > 0, "broker closed the connection");
                    self.input.extend_from_slice(&chunk[..n]);
                }
                Err(e) => panic!("undecodable frame from broker: {e}"),
            }
        }
    }
}

/// One measured case.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    body_size: usize,
    /// The publisher's frame_max: a body larger than it minus 8 arrives in several frames.
    publisher_frame_max: u32,
    /// `None`: no-ack consumer. `Some(n)`: prefetch n, acked with `multiple` every n/2.
    prefetch: Option<u16>,
    warmup: u64,
    messages: u64,
    /// The most allocations per message the broker may make.
    max_allocations: f64,
}

impl Case {
    fn ack_every(&self) -> Option<u64> {
        self.prefetch.map(|p| u64::from(p / 2))
    }
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    allocations_per_message: f64,
    bytes_per_message: f64,
}

/// What the publisher thread is asked to do: write the batch this many times.
type Batches = u64;

fn measure(broker: &Broker, case: Case) -> Measured {
    const FRAME_MAX: u32 = 131_072;
    let queue = format!("allocations-{}", case.name);

    let mut consumer = RawConnection::open(broker.addr, FRAME_MAX);
    consumer.send(
        CH,
        QueueDeclare {
            queue: short(&queue),
            durable: false,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            passive: false,
            arguments: FieldTable::new(),
        },
    );
    consumer.expect(CH, |m| matches!(m, Method::QueueDeclareOk(_)));
    if let Some(prefetch) = case.prefetch {
        consumer.send(
            CH,
            BasicQos {
                prefetch_size: 0,
                prefetch_count: prefetch,
                global: false,
            },
        );
        consumer.expect(CH, |m| matches!(m, Method::BasicQosOk(_)));
    }
    consumer.send(
        CH,
        BasicConsume {
            queue: short(&queue),
            consumer_tag: short("allocations"),
            no_local: false,
            no_ack: case.prefetch.is_none(),
            exclusive: false,
            no_wait: false,
            arguments: FieldTable::new(),
        },
    );
    consumer.expect(CH, |m| matches!(m, Method::BasicConsumeOk(_)));

    // Every message is the same, so one encoded batch is written again and again.
    let publisher = RawConnection::open(broker.addr, case.publisher_frame_max);
    // About a MiB or less per batch.
    let batch_len: u64 = if case.body_size > 8 * 1024 { 10 } else { 100 };
    assert_eq!(case.warmup % batch_len, 0);
    assert_eq!(case.messages % batch_len, 0);
    let body = vec![b'x'; case.body_size];
    let mut batch = BytesMut::new();
    for _ in 0..batch_len {
        encode_method_frame(
            CH,
            &Method::BasicPublish(BasicPublish {
                exchange: ShortStr::default(),
                routing_key: short(&queue),
                mandatory: false,
                immediate: false,
            }),
            &mut batch,
        );
        encode_basic_header_frame(
            CH,
            case.body_size as u64,
            &BasicProperties::default(),
            &mut batch,
        );
        encode_body_frames(CH, &body, case.publisher_frame_max, &mut batch);
    }
    let (jobs, job_rx) = mpsc::channel::<Batches>();
    let writer = {
        let mut stream = publisher
            .stream
            .try_clone()
            .expect("clone publisher socket");
        let batch = batch.freeze();
        thread::spawn(move || {
            client_thread();
            for batches in job_rx {
                for _ in 0..batches {
                    stream.write_all(&batch).expect("publish");
                }
            }
        })
    };

    let mut scanner = DeliveryScanner::new(consumer.stream.try_clone().expect("clone socket"));
    let mut run = |messages: u64, consumer: &mut RawConnection| {
        jobs.send(messages / batch_len)
            .expect("publisher thread alive");
        scanner.deliveries(messages, case.ack_every(), case.body_size as u64);
        // The broker handles this after every ack before it (and the queue after every
        // ack it was sent), so the window closes on a quiet broker.
        consumer.send(
            CH,
            QueueDeclare {
                queue: short(&queue),
                passive: true,
                ..Default::default()
            },
        );
        let Method::QueueDeclareOk(ok) =
            consumer.expect(CH, |m| matches!(m, Method::QueueDeclareOk(_)))
        else {
            unreachable!()
        };
        assert_eq!(
            ok.message_count, 0,
            "every message was delivered and settled"
        );
    };

    run(case.warmup, &mut consumer);
    let before = snapshot();
    run(case.messages, &mut consumer);
    let after = snapshot();

    drop(jobs);
    writer.join().expect("publisher thread");
    drop(publisher);
    drop(consumer);
    let n = case.messages as f64;
    Measured {
        allocations_per_message: (after.0 - before.0) as f64 / n,
        bytes_per_message: (after.1 - before.1) as f64 / n,
    }
}

/// Counts basic.deliver frames and body bytes straight from the socket into a fixed buffer,
/// and acks from a fixed buffer, so the consuming side allocates nothing while measured.
struct DeliveryScanner {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` read but not yet scanned start at `start` and end at `end`.
    start: usize,
    end: usize,
    delivered: u64,
    ack: BytesMut,
}

impl DeliveryScanner {
    fn new(stream: TcpStream) -> DeliveryScanner {
        DeliveryScanner {
            stream,
            // Room for the largest frame (frame_max 131072) twice over.
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            delivered: 0,
            ack: BytesMut::with_capacity(64),
        }
    }

    /// Reads until `messages` more deliveries with all their body bytes have arrived, acking
    /// every `ack_every` with `multiple`.
    fn deliveries(&mut self, messages: u64, ack_every: Option<u64>, body_size: u64) {
        let target = self.delivered + messages;
        let mut body_bytes = 0u64;
        let deadline = Instant::now() + DEADLINE;
        loop {
            while let Some((kind, payload)) = self.next_frame() {
                match kind {
                    FRAME_BODY => body_bytes += payload as u64,
                    FRAME_METHOD => {
                        let ids = &self.buf[self.start - payload - 1..][..4];
                        let (class_id, method_id) = (
                            u16::from_be_bytes([ids[0], ids[1]]),
                            u16::from_be_bytes([ids[2], ids[3]]),
                        );
                        assert_eq!(
                            (class_id, method_id),
                            (60, 60),
                            "only basic.deliver may come while consuming"
                        );
                        self.delivered += 1;
                        if let Some(every) = ack_every {
                            if self.delivered.is_multiple_of(every) {
                                self.send_ack();
                            }
                        }
                    }
                    _ => {}
                }
            }
            if self.delivered >= target && body_bytes >= messages * body_size {
                break;
            }
            assert!(Instant::now() < deadline, "deliveries stopped coming");
            self.fill();
        }
        assert_eq!(self.delivered, target, "no more deliveries than messages");
        assert_eq!(body_bytes, messages * body_size, "whole bodies delivered");
        assert_eq!(self.start, self.end, "nothing after the last delivery");
    }

    /// The next whole frame's type and payload length, consumed from the buffer.
    fn next_frame(&mut self) -> Option<(u8, usize)> {
        let frame = &self.buf[self.start..self.end];
        if frame.len() < 7 {
            return None;
        }
        let size = u32::from_be_bytes([frame[3], frame[4], frame[5], frame[6]]) as usize;
        if frame.len() < 7 + size + 1 {
            return None;
        }
        assert_eq!(frame[7 + size], FRAME_END, "frame end");
        let kind = frame[0];
        self.start += 7 + size + 1;
        Some((kind, size))
    }

    fn fill(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .expect("read deliveries");
        assert!(n > 0, "broker closed the connection");
        self.end += n;
    }

    fn send_ack(&mut self) {
        self.ack.clear();
        encode_method_frame(
            CH,
            &Method::BasicAck(BasicAck {
                delivery_tag: self.delivered,
                multiple: true,
            }),
            &mut self.ack,
        );
        self.stream.write_all(&self.ack).expect("send ack");
    }
}

/// Averages move by a few hundredths between runs; a new allocation per message adds 1.
const SLACK: f64 = 0.5;

/// A body is never copied, but it stays in the read buffer it arrived in (shared, not
/// copied out), so a body as large as a read, 64 KiB, takes a fresh read buffer and bytes'
/// shared header along with it: two allocations that small bodies share with hundreds of
/// other messages. Larger read buffers would spread them over several large bodies.
const READ_BUFFER_ALLOCATIONS: f64 = 2.0;

/// A body that arrives in several frames is joined into one new buffer, and that buffer gets
/// bytes' shared header when the body is written out from where it is instead of copied.
const JOIN_ALLOCATIONS: f64 = 2.0;

#[test]
fn a_transient_message_costs_few_allocations_whatever_its_size() {
    client_thread();
    let broker = Broker::start();
    const KIB: usize = 1024;
    // Today a small message costs one allocation (the shared `Message`) plus a few hundredths:
    // tokio's channel blocks (one per 32 sends, in the queue's and the connection's inboxes)
    // and, with acks, the list of acked message ids sent to the queue.
    let small_body_max = 1.0 + SLACK;
    let large_body_max = small_body_max + READ_BUFFER_ALLOCATIONS;
    let cases = [
        Case {
            name: "16B-auto-ack",
            body_size: 16,
            publisher_frame_max: 131_072,
            prefetch: None,
            warmup: 2_000,
            messages: 20_000,
            max_allocations: small_body_max,
        },
        Case {
            name: "1KiB-auto-ack",
            body_size: KIB,
            publisher_frame_max: 131_072,
            prefetch: None,
            warmup: 2_000,
            messages: 20_000,
            max_allocations: small_body_max,
        },
        Case {
            name: "64KiB-auto-ack",
            body_size: 64 * KIB,
            publisher_frame_max: 131_072,
            prefetch: None,
            warmup: 500,
            messages: 3_000,
            max_allocations: large_body_max,
        },
        Case {
            name: "64KiB-in-2-frames-auto-ack",
            body_size: 64 * KIB,
            publisher_frame_max: 32 * 1024 + 8,
            prefetch: None,
            warmup: 500,
            messages: 3_000,
            max_allocations: large_body_max + JOIN_ALLOCATIONS,
        },
        Case {
            name: "16B-manual-ack",
            body_size: 16,
            publisher_frame_max: 131_072,
            prefetch: Some(200),
            warmup: 2_000,
            messages: 20_000,
            max_allocations: small_body_max,
        },
        Case {
            name: "64KiB-manual-ack",
            body_size: 64 * KIB,
            publisher_frame_max: 131_072,
            prefetch: Some(200),
            warmup: 500,
            messages: 3_000,
            max_allocations: large_body_max,
        },
    ];
    let mut results = Vec::new();
    for case in cases {
        let m = measure(&broker, case);
        println!(
            "{:<28} {:>6} messages: {:>5.2} allocations/message, {:>7.0} bytes allocated/message",
            case.name, case.messages, m.allocations_per_message, m.bytes_per_message
        );
        results.push((case, m));
    }
    drop(broker);

    for (case, m) in &results {
        assert!(
            m.allocations_per_message <= case.max_allocations,
            "{}: {:.2} allocations per message, more than {}",
            case.name,
            m.allocations_per_message,
            case.max_allocations
        );
    }
    let per_message = |name: &str| {
        results
            .iter()
            .find(|(c, _)| c.name == name)
            .map(|(_, m)| m.allocations_per_message)
            .expect("case was measured")
    };
    for (small, large) in [
        ("16B-auto-ack", "64KiB-auto-ack"),
        ("16B-manual-ack", "64KiB-manual-ack"),
    ] {
        let (small_cost, large_cost) = (per_message(small), per_message(large));
        assert!(
            large_cost <= small_cost + READ_BUFFER_ALLOCATIONS + SLACK,
            "{large} costs {large_cost:.2} allocations per message, {small} {small_cost:.2}: \
             beyond its read buffer, something grows with the body (a copy?)"
        );
    }
    let (whole, split) = (
        per_message("64KiB-auto-ack"),
        per_message("64KiB-in-2-frames-auto-ack"),
    );
    assert!(
        split <= whole + JOIN_ALLOCATIONS + SLACK,
        "a body in 2 frames costs {split:.2} allocations per message, in 1 frame {whole:.2}: \
         more than one join"
    );
}
