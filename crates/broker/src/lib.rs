//! The broker domain: vhosts, users, exchanges and routing, queues, consumers and credit.
//! Knows nothing of frames or sockets: the server crate drives it.

pub mod confirm;
pub mod consumer;
pub mod credit;
pub mod dead_letter;
pub mod delayed;
pub mod durability;
pub mod error;
pub mod exchange;
pub mod message;
pub mod names;
pub mod permissions;
pub mod policies;
pub mod queue;
pub mod registry;
pub mod users;
pub mod vhost;

pub use error::{AmqpException, AmqpResult, Scope};

/// The version written as `rabbit_version` in exported definitions.
pub const RABBIT_VERSION: &str = env!("CARGO_PKG_VERSION");
mod broker;
pub use broker::{Broker, ReplyConsumer};
