//! What a failed command prints and the exit code it returns; knows nothing of HTTP.
//!
//! Exit codes are the sysexits.h values rabbitmqctl uses, so scripts written for it keep
//! working: 64 usage, 65 data error, 67 no such user, 69 unavailable, 70 internal software
//! error, 74 I/O error, 75 temporary failure (timeout), 77 permission denied.

use std::fmt;

pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_SOFTWARE: u8 = 70;
pub const EX_IOERR: u8 = 74;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_NOPERM: u8 = 77;

/// A command's failure: the text for stderr, already in rabbitmqctl's shape, and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlError {
    pub message: String,
    pub exit_code: u8,
    /// No answer from the broker at all: the error line is all there is to say.
    pub unreachable: bool,
}

impl CtlError {
    fn new(exit_code: u8, message: impl Into<String>) -> Self {
        CtlError {
            message: message.into(),
            exit_code,
            unreachable: false,
        }
    }

    /// rabbitmqctl prints most command failures as "Error:" on a line of its own, then the reason.
    fn with_error_line(exit_code: u8, reason: impl fmt::Display) -> Self {
        Self::new(exit_code, format!("Error:\n{reason}"))
    }

    pub fn usage(reason: impl fmt::Display) -> Self {
        Self::with_error_line(EX_USAGE, reason)
    }

    pub fn data_err(reason: impl fmt::Display) -> Self {
        Self::with_error_line(EX_DATAERR, reason)
    }

    pub fn no_user(reason: impl fmt::Display) -> Self {
        Self::with_error_line(EX_NOUSER, reason)
    }

    pub fn unavailable(reason: impl fmt::Display) -> Self {
        Self::with_error_line(EX_UNAVAILABLE, reason)
    }

    pub fn software(reason: impl fmt::Display) -> Self {
        Self::with_error_line(EX_SOFTWARE, reason)
    }

    pub fn io_err(reason: impl fmt::Display) -> Self {
        Self::with_error_line(EX_IOERR, reason)
    }

    pub fn temp_fail(reason: impl fmt::Display) -> Self {
        Self::with_error_line(EX_TEMPFAIL, reason)
    }

    /// A failure printed as one line exactly as given, without the "Error:" line (rabbitmqctl
    /// does this for a missing vhost, and warrenctl for an unreachable broker).
    pub fn bare(exit_code: u8, message: impl Into<String>) -> Self {
        Self::new(exit_code, message)
    }

    /// The broker did not answer (refused, unresolvable, timed out).
    pub fn unreachable(message: impl Into<String>) -> Self {
        CtlError {
            unreachable: true,
            ..Self::new(EX_UNAVAILABLE, message)
        }
    }

    /// rabbitmqctl's answer when a command names a vhost that does not exist.
    pub fn vhost_not_found(vhost: &str) -> Self {
        Self::bare(EX_DATAERR, format!("Virtual host '{vhost}' does not exist"))
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CtlError {}
