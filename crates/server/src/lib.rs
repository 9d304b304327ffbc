//! The warren server: the listeners, connection and channel state machines, the HTTP
//! management API and metrics, and shutdown.
//! The domain lives in the `broker` crate and the wire format in `amqp`.

mod channel;
pub mod config;
mod connection;
mod http;
mod outbound;
mod server;
pub mod systemd;
mod tls;

pub use config::Config;
pub use server::Server;
