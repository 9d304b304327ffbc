//! The `warren` binary: configuration (flags, environment, config file), logging, the ready
//! lines scripts wait for, and signals.

use std::io::IsTerminal;

use warren::config::{self, LogFormat};
use warren::{systemd, Server};

/// Messages are allocated on the publisher's thread and freed on the consumer's: glibc's
/// malloc took 10% of broker CPU on that, with arena lock contention; jemalloc's thread caches
/// cut the CPU per transient 16 B message from 0.99 to 0.64 µs (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start. A queue paging a backlog out frees its messages in
/// bulk; by default jemalloc keeps freed pages resident for 10 s, which held 10 M queued 100 B
/// messages at 90 MiB of RSS instead of 62 MiB. One second costs no measurable CPU.
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        // A start that cannot happen (a port taken, a bad TLS file, a damaged data directory)
        // is one line naming the cause, not a backtrace.
        eprintln!("warren: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let config = match config::load() {
        Ok(config) => config,
        Err(error) => {
            // Before logging is set up, and not a crash: one plain line, like clap's errors.
            eprintln!("warren: {error}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::new(&config.log_level);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // Installed before anything announces readiness: a SIGTERM right after the ready line
    // must stop the broker cleanly, not kill it.
    let shutdown = shutdown_signal()?;
    let server = Server::bind(config).await?;
    let version = env!("CARGO_PKG_VERSION");
    // Scripts and tests wait for this exact line; the other listeners follow it.
    println!(
        "warren {version} ready: listening on {} (AMQP 0-9-1)",
        server.local_addr()
    );
    if let Some(addr) = server.amqps_addr() {
        println!("warren {version} amqps: listening on {addr}");
    }
    if let Some(addr) = server.http_addr() {
        println!("warren {version} http: listening on {addr}");
    }
    if let Some(addr) = server.metrics_addr() {
        println!("warren {version} metrics: listening on {addr}");
    }
    systemd::notify("READY=1");
    tracing::info!(
        amqp = %server.local_addr(),
        http = ?server.http_addr(),
        metrics = ?server.metrics_addr(),
        "listening"
    );
    server.run(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT; both handlers are in place when this returns.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down");
    })
}
