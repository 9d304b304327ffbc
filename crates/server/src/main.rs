//! The `warren` binary: flags and environment into a `Config`, logging, signals.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use warren::{Config, Server};

/// Warren: an AMQP 0-9-1 message broker, a drop-in replacement for RabbitMQ.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on for AMQP.
    #[arg(long, env = "WARREN_BIND", default_value = "0.0.0.0")]
    bind: IpAddr,
    /// AMQP port (0 picks a free one; the ready line says which).
    #[arg(long, env = "WARREN_PORT", default_value_t = 5672)]
    port: u16,
    /// Where durable state is kept.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = "warren-data")]
    data_dir: PathBuf,
    /// Heartbeat interval offered to clients, in seconds (0 disables).
    #[arg(long, env = "WARREN_HEARTBEAT_SECS", default_value_t = 60)]
    heartbeat_secs: u16,
    /// Largest message body accepted, in bytes.
    #[arg(long, env = "WARREN_MAX_MESSAGE_SIZE_BYTES", default_value_t = 128 * 1024 * 1024)]
    max_message_size_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)?;
    let config = Config {
        bind: args.bind,
        port: args.port,
        data_dir: args.data_dir,
        heartbeat_secs: args.heartbeat_secs,
        max_message_size_bytes: args.max_message_size_bytes,
        ..Config::default()
    };
    let server = Server::bind(config).await?;
    // Scripts and tests wait for this exact line.
    println!(
        "warren {} ready: listening on {} (AMQP 0-9-1)",
        env!("CARGO_PKG_VERSION"),
        server.local_addr()
    );
    server.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
