//! Support for the durability tests: the `warren` binary as a child process on a data
//! directory that outlives it ([`process`]), what that directory holds ([`disk`]), lapin
//! helpers with deadlines ([`client`]), self-checking message bodies ([`checked`]) and the
//! environment knobs that scale the tests ([`knobs`]). Knows nothing of the broker's internals:
//! everything goes over TCP, signals, or the file names documented in docs/storage-format.md.

pub mod checked;
pub mod client;
pub mod disk;
pub mod knobs;
pub mod process;

pub use process::{Stop, TestDir, Warren};
