//! The warren server: the listener, connection and channel state machines, and shutdown.
//! The domain lives in the `broker` crate and the wire format in `amqp`.

mod channel;
pub mod config;
mod connection;
mod outbound;
mod server;

pub use config::Config;
pub use server::Server;
