//! Command-line flags, in the spirit of RabbitMQ's PerfTest (-x producers, -y consumers,
//! -u queue, -s size, -f persistent, -c confirms, -a auto-ack, -q prefetch, -r rate, -z time).

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator for any AMQP 0-9-1 broker (Warren, RabbitMQ, ...).
#[derive(Parser, Debug, Clone)]
#[command(name = "warren-perf", version, about)]
pub struct Cli {
    /// Broker to measure.
    #[arg(
        long,
        global = true,
        env = "WARREN_PERF_URI",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub uri: String,
    /// The broker's process id: its CPU time and resident memory are read from /proc.
    #[arg(long, global = true)]
    pub broker_pid: Option<u32>,
    /// Print the final report as JSON on stdout (live lines still go to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// No live line each second.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Worker threads of the load generator's runtime.
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Producers and consumers through one or more queues: publish, confirm, consume rates.
    Throughput(ThroughputArgs),
    /// A fixed publish rate; end-to-end latency percentiles from a send time in each body.
    Latency(LatencyArgs),
    /// One producer, a fanout exchange, N queues each with a consumer: deliveries per second.
    Fanout(FanoutArgs),
    /// Fill a queue with M messages and no consumer (fill rate, broker memory), then drain it.
    Backlog(BacklogArgs),
    /// Open K connections with a channel each: open rate and broker memory per connection.
    Connections(ConnectionsArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFlag {
    /// Durable queue, delivery_mode 2.
    Persistent,
    /// Non-durable queue, delivery_mode 1 (the default).
    Transient,
}

pub fn is_persistent(flags: &[MessageFlag]) -> bool {
    flags.contains(&MessageFlag::Persistent)
}

#[derive(Args, Debug, Clone)]
pub struct Timing {
    /// Seconds measured (after the warm-up).
    #[arg(short = 'z', long = "time", default_value_t = 10.0)]
    pub time_secs: f64,
    /// Seconds run before measuring.
    #[arg(long = "warmup", default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// After the measured window, seconds the consumers get to take what is still queued.
    #[arg(long = "drain-timeout", default_value_t = 10.0)]
    pub drain_timeout_secs: f64,
}

#[derive(Args, Debug, Clone)]
pub struct ConsumerArgs {
    /// Auto-ack (no_ack) consumers; without it each delivery is acknowledged.
    #[arg(short = 'a', long)]
    pub auto_ack: bool,
    /// basic.qos prefetch_count per consumer (0 = unlimited).
    #[arg(short = 'q', long, default_value_t = 0)]
    pub prefetch: u16,
    /// With manual acks, one basic.ack(multiple) every K deliveries (capped by the prefetch).
    #[arg(short = 'A', long = "multi-ack-every", default_value_t = 1)]
    pub multi_ack_every: u32,
}

#[derive(Args, Debug, Clone)]
pub struct ThroughputArgs {
    /// Producers (one connection each).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers (one connection each).
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Queue name (with --queues N: NAME-0 .. NAME-N-1).
    #[arg(short = 'u', long, default_value = "perf-q")]
    pub queue: String,
    /// Number of queues; producers and consumers are spread over them.
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Message body size in bytes (8 or more carries a send time).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Message flags: persistent (durable queue, delivery_mode 2) or transient.
    #[arg(short = 'f', long = "flag", value_enum)]
    pub flags: Vec<MessageFlag>,
    /// Publisher confirms with at most N unconfirmed messages per producer (0 = off).
    #[arg(short = 'c', long = "confirm", default_value_t = 0)]
    pub confirm: u64,
    /// Rate limit per producer in msg/s (0 = unlimited).
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,
    /// Most messages per socket write.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[command(flatten)]
    pub timing: Timing,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

#[derive(Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Publish rate in msg/s.
    #[arg(short = 'r', long, default_value_t = 10_000.0)]
    pub rate: f64,
    #[arg(short = 'u', long, default_value = "perf-latency")]
    pub queue: String,
    /// Body size in bytes (at least 8: the send time).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    #[arg(short = 'f', long = "flag", value_enum)]
    pub flags: Vec<MessageFlag>,
    /// Publisher confirms with at most N unconfirmed (0 = off).
    #[arg(short = 'c', long = "confirm", default_value_t = 0)]
    pub confirm: u64,
    #[command(flatten)]
    pub timing: Timing,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Queues bound to the fanout exchange, one consumer each.
    #[arg(long, default_value_t = 10)]
    pub queues: usize,
    #[arg(short = 'e', long, default_value = "perf-fanout")]
    pub exchange: String,
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    #[arg(short = 'f', long = "flag", value_enum)]
    pub flags: Vec<MessageFlag>,
    #[arg(short = 'c', long = "confirm", default_value_t = 0)]
    pub confirm: u64,
    /// Rate limit per producer in msg/s (0 = unlimited).
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[command(flatten)]
    pub timing: Timing,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

#[derive(Args, Debug, Clone)]
pub struct BacklogArgs {
    /// Messages to queue before draining.
    #[arg(short = 'C', long, default_value_t = 1_000_000)]
    pub messages: u64,
    #[arg(short = 'u', long, default_value = "perf-backlog")]
    pub queue: String,
    #[arg(short = 's', long, default_value_t = 100)]
    pub size: usize,
    #[arg(short = 'f', long = "flag", value_enum)]
    pub flags: Vec<MessageFlag>,
    #[arg(short = 'c', long = "confirm", default_value_t = 0)]
    pub confirm: u64,
    /// Producers filling the queue.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers draining it.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Give up when filling or draining takes longer than this many seconds.
    #[arg(long = "timeout", default_value_t = 600.0)]
    pub timeout_secs: f64,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectionsArgs {
    /// Connections to open (each with one channel).
    #[arg(short = 'k', long, default_value_t = 1000)]
    pub connections: usize,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Seconds to hold the connections open before reading the broker's memory.
    #[arg(long = "hold", default_value_t = 2.0)]
    pub hold_secs: f64,
}
