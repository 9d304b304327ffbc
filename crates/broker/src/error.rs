//! AMQP exceptions raised by the domain, typed by their scope (channel or connection).
//! Knows the reply codes and RabbitMQ's text shape; turning one into a close frame is the server's job.

use std::fmt;

/// Reply codes of AMQP 0-9-1 (and the ones RabbitMQ uses), named as in the spec.
pub mod reply_code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const NO_CONSUMERS: u16 = 313;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;
}

use reply_code::*;

/// Whether an exception closes the channel it happened on or the whole connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
}

/// An error a client caused (or must be told about), with its AMQP reply code and text.
/// `reply_text` already has RabbitMQ's shape: `NOT_FOUND - no queue 'x' in vhost '/'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AmqpException {
    pub scope: Scope,
    pub reply_code: u16,
    pub reply_text: String,
}

impl fmt::Display for AmqpException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.reply_code, self.reply_text)
    }
}

fn code_name(code: u16) -> &'static str {
    match code {
        CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
        NO_ROUTE => "NO_ROUTE",
        NO_CONSUMERS => "NO_CONSUMERS",
        CONNECTION_FORCED => "CONNECTION_FORCED",
        INVALID_PATH => "INVALID_PATH",
        ACCESS_REFUSED => "ACCESS_REFUSED",
        NOT_FOUND => "NOT_FOUND",
        RESOURCE_LOCKED => "RESOURCE_LOCKED",
        PRECONDITION_FAILED => "PRECONDITION_FAILED",
        FRAME_ERROR => "FRAME_ERROR",
        SYNTAX_ERROR => "SYNTAX_ERROR",
        COMMAND_INVALID => "COMMAND_INVALID",
        CHANNEL_ERROR => "CHANNEL_ERROR",
        UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
        RESOURCE_ERROR => "RESOURCE_ERROR",
        NOT_ALLOWED => "NOT_ALLOWED",
        NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
        INTERNAL_ERROR => "INTERNAL_ERROR",
        _ => "UNKNOWN",
    }
}

macro_rules! constructors {
    ($scope:ident: $($name:ident => $code:ident),* $(,)?) => {
        $(
            pub fn $name(detail: impl fmt::Display) -> Self {
                Self::new(Scope::$scope, $code, detail)
            }
        )*
    };
}

impl AmqpException {
    pub fn new(scope: Scope, reply_code: u16, detail: impl fmt::Display) -> Self {
        AmqpException {
            scope,
            reply_code,
            reply_text: format!("{} - {}", code_name(reply_code), detail),
        }
    }

    constructors!(Channel:
        content_too_large => CONTENT_TOO_LARGE,
        access_refused => ACCESS_REFUSED,
        not_found => NOT_FOUND,
        resource_locked => RESOURCE_LOCKED,
        precondition_failed => PRECONDITION_FAILED,
    );

    constructors!(Connection:
        connection_forced => CONNECTION_FORCED,
        invalid_path => INVALID_PATH,
        frame_error => FRAME_ERROR,
        syntax_error => SYNTAX_ERROR,
        command_invalid => COMMAND_INVALID,
        channel_error => CHANNEL_ERROR,
        unexpected_frame => UNEXPECTED_FRAME,
        resource_error => RESOURCE_ERROR,
        not_allowed => NOT_ALLOWED,
        not_implemented => NOT_IMPLEMENTED,
        internal_error => INTERNAL_ERROR,
    );

    /// ACCESS_REFUSED at connection scope (login failures, vhost access).
    pub fn connection_access_refused(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, ACCESS_REFUSED, detail)
    }

    pub fn is_connection_error(&self) -> bool {
        self.scope == Scope::Connection
    }
}

pub type AmqpResult<T> = Result<T, AmqpException>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_rabbitmq_shape_and_scope() {
        let e = AmqpException::not_found("no queue 'x' in vhost '/'");
        assert_eq!(e.reply_code, 404);
        assert_eq!(e.reply_text, "NOT_FOUND - no queue 'x' in vhost '/'");
        assert_eq!(e.scope, Scope::Channel);
        let e = AmqpException::not_allowed("attempt to reuse consumer tag 'a'");
        assert_eq!(e.reply_code, 530);
        assert!(e.is_connection_error());
    }
}
