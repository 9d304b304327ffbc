//! warren-perf: a load generator for any AMQP 0-9-1 broker, with its own small client on
//! Warren's codec so that the client is not what limits the figures. Knows nothing of any
//! broker's internals: it measures over the network and reads /proc.

pub mod actors;
pub mod cli;
pub mod client;
pub mod confirm;
pub mod publish;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod sys;
pub mod uri;

pub use cli::Cli;
pub use report::Report;
pub use scenario::run;
