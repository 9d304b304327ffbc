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

/// The RabbitMQ release clients are told they talk to (connection.start's `product` and
/// `version`, the management API's `rabbitmq_version`). Client libraries and their test suites
/// pick features and semantics by these: kombu and Celery, for one, choose how they use
/// basic.qos by them. Warren follows this release's AMQP behaviour, or a later one's where
/// they differ.
pub const RABBITMQ_VERSION: &str = "3.13.7";
pub use server::Server;
