//! AMQP 0-9-1 wire format (with RabbitMQ's extensions): frames, methods, field tables and
//! content properties. Pure: knows nothing of sockets, tasks, queues or exchanges.

#[cfg(test)]
mod arbitrary;
mod error;
mod field;
mod frame;
mod methods;
mod properties;
mod strings;
mod wire;

#[cfg(test)]
mod roundtrip_tests;

pub use error::{DecodeError, SHORTSTR_NOT_UTF8};
pub use field::{Decimal, FieldTable, FieldValue, MAX_NESTING_DEPTH};
pub use frame::{
    body_frame_payload_max, encode_basic_header_frame, encode_body_frame_header,
    encode_body_frames, encode_content_header_frame, encode_heartbeat_frame, encode_method_frame,
    Frame, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE,
    FRAME_OVERHEAD, PROTOCOL_HEADER,
};
pub use methods::*;
pub use properties::{BasicProperties, ContentHeader, CLASS_BASIC};
pub use strings::{LongStr, ShortStr, SHORT_STR_MAX};
