//! The broker's settings, each limit named with its unit. Filled from flags and environment
//! by `main`; tests build it directly.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Offered in connection.tune; 0 disables heartbeats.
    pub heartbeat_secs: u16,
    /// Largest frame, overhead included, offered in connection.tune.
    pub frame_max_bytes: u32,
    pub channel_max: u16,
    /// Largest message body accepted (RabbitMQ's `max_message_size`).
    pub max_message_size_bytes: usize,
    /// Time a client has to complete the connection handshake.
    pub handshake_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 5672,
            data_dir: PathBuf::from("warren-data"),
            heartbeat_secs: 60,
            frame_max_bytes: 131_072,
            channel_max: 2047,
            max_message_size_bytes: 128 * 1024 * 1024,
            handshake_timeout_secs: 10,
        }
    }
}
