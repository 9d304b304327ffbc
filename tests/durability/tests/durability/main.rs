//! Issue 4's promises checked against the real `warren` binary, restarted with SIGTERM or
//! killed with SIGKILL on the same data directory. One test binary (one link step); one module
//! per part of the issue. Run `cargo build -p warren` first (or set WARREN_BIN): this crate
//! deliberately does not build the broker.

mod acks;
mod crash;
mod definitions;
mod messages;
mod reclaim;
mod recovery;
mod shutdown;
