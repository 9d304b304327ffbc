//! Every AMQP 0-9-1 method (with RabbitMQ's extensions) as a struct, the `Method` enum over
//! them, and their argument codec, generated from one compact table. Knows nothing of frames
//! or of what a method means to the broker.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::field::FieldTable;
use crate::strings::{LongStr, ShortStr};
use crate::wire::{Reader, Writer};

macro_rules! amqp_type {
    (bit) => {
        bool
    };
    (octet) => {
        u8
    };
    (short) => {
        u16
    };
    (long) => {
        u32
    };
    (longlong) => {
        u64
    };
    (timestamp) => {
        u64
    };
    (shortstr) => {
        ShortStr
    };
    (longstr) => {
        LongStr
    };
    (table) => {
        FieldTable
    };
}

/// Builds a struct from the argument list, leaving out `(_: domain)` reserved arguments.
macro_rules! method_struct {
    ($(#[$m:meta])* $name:ident [$($done:tt)*]) => {
        $(#[$m])*
        pub struct $name { $($done)* }
    };
    ($(#[$m:meta])* $name:ident [$($done:tt)*] (_ : $t:ident) $($rest:tt)*) => {
        method_struct!($(#[$m])* $name [$($done)*] $($rest)*);
    };
    ($(#[$m:meta])* $name:ident [$($done:tt)*] ($f:ident : $t:ident) $($rest:tt)*) => {
        method_struct!($(#[$m])* $name [$($done)* pub $f: amqp_type!($t),] $($rest)*);
    };
}

/// `Self { named, arguments }` from the argument list.
macro_rules! method_ctor {
    ([$($done:ident)*]) => { Self { $($done),* } };
    ([$($done:ident)*] (_ : $t:ident) $($rest:tt)*) => { method_ctor!([$($done)*] $($rest)*) };
    ([$($done:ident)*] ($f:ident : $t:ident) $($rest:tt)*) => {
        method_ctor!([$($done)* $f] $($rest)*)
    };
}

macro_rules! encode_arg {
    ($s:ident, $w:ident, (_ : $t:ident)) => {
        $w.$t(&Default::default())
    };
    ($s:ident, $w:ident, ($f:ident : $t:ident)) => {
        $w.$t(&$s.$f)
    };
}

macro_rules! decode_arg {
    ($r:ident, (_ : $t:ident)) => {
        $r.$t()?;
    };
    ($r:ident, ($f:ident : $t:ident)) => {
        let $f = $r.$t()?;
    };
}

#[cfg(test)]
macro_rules! arbitrary_arg {
    ($g:ident, (_ : $t:ident)) => {};
    ($g:ident, ($f:ident : $t:ident)) => {
        let $f: amqp_type!($t) = crate::arbitrary::Arb::arb($g);
    };
}

macro_rules! methods {
    ($(
        $name:ident = $class:literal , $method:literal $wire:literal { $($arg:tt)* }
    )*) => {
        $(
            method_struct!(
                #[doc = concat!("`", $wire, "` (", $class, ".", $method, ")")]
                #[derive(Debug, Clone, PartialEq, Default)]
                $name [] $($arg)*
            );

            impl $name {
                pub const CLASS_ID: u16 = $class;
                pub const METHOD_ID: u16 = $method;
                pub const NAME: &'static str = $wire;

                #[allow(unused_variables)]
                fn encode_args(&self, w: &mut Writer<'_>) {
                    $( encode_arg!(self, w, $arg); )*
                }

                fn decode_args(r: &mut Reader<'_>) -> Result<Self, &'static str> {
                    $( decode_arg!(r, $arg); )*
                    r.finish()?;
                    Ok(method_ctor!([] $($arg)*))
                }
            }

            #[cfg(test)]
            impl crate::arbitrary::Arb for $name {
                #[allow(unused_variables)]
                fn arb(g: &mut crate::arbitrary::Gen) -> Self {
                    $( arbitrary_arg!(g, $arg); )*
                    method_ctor!([] $($arg)*)
                }
            }

            impl From<$name> for Method {
                fn from(m: $name) -> Method {
                    Method::$name(m)
                }
            }
        )*

        /// Any method, one variant per method struct (same name).
        #[derive(Debug, Clone, PartialEq)]
        pub enum Method {
            $( $name($name), )*
        }

        impl Method {
            pub fn class_id(&self) -> u16 {
                match self { $( Method::$name(_) => $class, )* }
            }

            pub fn method_id(&self) -> u16 {
                match self { $( Method::$name(_) => $method, )* }
            }

            /// The spec's name, e.g. `basic.publish`.
            pub fn name(&self) -> &'static str {
                match self { $( Method::$name(_) => $wire, )* }
            }

            /// The spec's name of any known (class id, method id).
            pub fn name_of(class_id: u16, method_id: u16) -> Option<&'static str> {
                match (class_id, method_id) {
                    $( ($class, $method) => Some($wire), )*
                    _ => None,
                }
            }

            /// Decodes a method frame payload: class id, method id, arguments. Strings share
            /// `payload`'s buffer.
            pub fn decode(payload: Bytes) -> Result<Method, DecodeError> {
                if payload.len() < 4 {
                    return Err(DecodeError::malformed("method frame shorter than class and method ids"));
                }
                let class_id = u16::from_be_bytes([payload[0], payload[1]]);
                let method_id = u16::from_be_bytes([payload[2], payload[3]]);
                let r = &mut Reader::new(&payload, 4);
                let decoded = match (class_id, method_id) {
                    $( ($class, $method) => $name::decode_args(r).map(Method::$name), )*
                    _ => return Err(DecodeError::UnknownMethod { class_id, method_id }),
                };
                decoded.map_err(|reason| DecodeError::Malformed { class_id, method_id, reason })
            }

            /// One random-value constructor per variant, for exhaustive round-trip tests.
            #[cfg(test)]
            pub(crate) fn arbitrary_constructors() -> Vec<fn(&mut crate::arbitrary::Gen) -> Method> {
                vec![$(
                    (|g: &mut crate::arbitrary::Gen| {
                        Method::$name(crate::arbitrary::Arb::arb(g))
                    }) as fn(&mut crate::arbitrary::Gen) -> Method,
                )*]
            }

            /// Writes class id, method id and arguments.
            pub fn encode(&self, out: &mut BytesMut) {
                match self {
                    $( Method::$name(m) => {
                        out.put_u16($class);
                        out.put_u16($method);
                        m.encode_args(&mut Writer::new(out));
                    } )*
                }
            }
        }
    };
}

impl Method {
    /// Whether a content header and body frames follow this method.
    pub fn has_content(&self) -> bool {
        matches!(
            self,
            Method::BasicPublish(_)
                | Method::BasicReturn(_)
                | Method::BasicDeliver(_)
                | Method::BasicGetOk(_)
        )
    }
}

// `(_: domain)` is a reserved argument: written as zero/empty, skipped when read.
methods! {
    ConnectionStart = 10, 10 "connection.start" {
        (version_major: octet) (version_minor: octet) (server_properties: table)
        (mechanisms: longstr) (locales: longstr)
    }
    ConnectionStartOk = 10, 11 "connection.start-ok" {
        (client_properties: table) (mechanism: shortstr) (response: longstr) (locale: shortstr)
    }
    ConnectionSecure = 10, 20 "connection.secure" { (challenge: longstr) }
    ConnectionSecureOk = 10, 21 "connection.secure-ok" { (response: longstr) }
    ConnectionTune = 10, 30 "connection.tune" {
        (channel_max: short) (frame_max: long) (heartbeat: short)
    }
    ConnectionTuneOk = 10, 31 "connection.tune-ok" {
        (channel_max: short) (frame_max: long) (heartbeat: short)
    }
    ConnectionOpen = 10, 40 "connection.open" { (virtual_host: shortstr) (_: shortstr) (_: bit) }
    ConnectionOpenOk = 10, 41 "connection.open-ok" { (_: shortstr) }
    ConnectionClose = 10, 50 "connection.close" {
        (reply_code: short) (reply_text: shortstr) (class_id: short) (method_id: short)
    }
    ConnectionCloseOk = 10, 51 "connection.close-ok" {}
    ConnectionBlocked = 10, 60 "connection.blocked" { (reason: shortstr) }
    ConnectionUnblocked = 10, 61 "connection.unblocked" {}
    ConnectionUpdateSecret = 10, 70 "connection.update-secret" {
        (new_secret: longstr) (reason: shortstr)
    }
    ConnectionUpdateSecretOk = 10, 71 "connection.update-secret-ok" {}

    ChannelOpen = 20, 10 "channel.open" { (_: shortstr) }
    ChannelOpenOk = 20, 11 "channel.open-ok" { (_: longstr) }
    ChannelFlow = 20, 20 "channel.flow" { (active: bit) }
    ChannelFlowOk = 20, 21 "channel.flow-ok" { (active: bit) }
    ChannelClose = 20, 40 "channel.close" {
        (reply_code: short) (reply_text: shortstr) (class_id: short) (method_id: short)
    }
    ChannelCloseOk = 20, 41 "channel.close-ok" {}

    ExchangeDeclare = 40, 10 "exchange.declare" {
        (_: short) (exchange: shortstr) (kind: shortstr) (passive: bit) (durable: bit)
        (auto_delete: bit) (internal: bit) (no_wait: bit) (arguments: table)
    }
    ExchangeDeclareOk = 40, 11 "exchange.declare-ok" {}
    ExchangeDelete = 40, 20 "exchange.delete" {
        (_: short) (exchange: shortstr) (if_unused: bit) (no_wait: bit)
    }
    ExchangeDeleteOk = 40, 21 "exchange.delete-ok" {}
    ExchangeBind = 40, 30 "exchange.bind" {
        (_: short) (destination: shortstr) (source: shortstr) (routing_key: shortstr)
        (no_wait: bit) (arguments: table)
    }
    ExchangeBindOk = 40, 31 "exchange.bind-ok" {}
    ExchangeUnbind = 40, 40 "exchange.unbind" {
        (_: short) (destination: shortstr) (source: shortstr) (routing_key: shortstr)
        (no_wait: bit) (arguments: table)
    }
    // 51, not 41: RabbitMQ's extension spec numbers it so and every client follows.
    ExchangeUnbindOk = 40, 51 "exchange.unbind-ok" {}

    QueueDeclare = 50, 10 "queue.declare" {
        (_: short) (queue: shortstr) (passive: bit) (durable: bit) (exclusive: bit)
        (auto_delete: bit) (no_wait: bit) (arguments: table)
    }
    QueueDeclareOk = 50, 11 "queue.declare-ok" {
        (queue: shortstr) (message_count: long) (consumer_count: long)
    }
    QueueBind = 50, 20 "queue.bind" {
        (_: short) (queue: shortstr) (exchange: shortstr) (routing_key: shortstr)
        (no_wait: bit) (arguments: table)
    }
    QueueBindOk = 50, 21 "queue.bind-ok" {}
    QueuePurge = 50, 30 "queue.purge" { (_: short) (queue: shortstr) (no_wait: bit) }
    QueuePurgeOk = 50, 31 "queue.purge-ok" { (message_count: long) }
    QueueDelete = 50, 40 "queue.delete" {
        (_: short) (queue: shortstr) (if_unused: bit) (if_empty: bit) (no_wait: bit)
    }
    QueueDeleteOk = 50, 41 "queue.delete-ok" { (message_count: long) }
    QueueUnbind = 50, 50 "queue.unbind" {
        (_: short) (queue: shortstr) (exchange: shortstr) (routing_key: shortstr)
        (arguments: table)
    }
    QueueUnbindOk = 50, 51 "queue.unbind-ok" {}

    BasicQos = 60, 10 "basic.qos" {
        (prefetch_size: long) (prefetch_count: short) (global: bit)
    }
    BasicQosOk = 60, 11 "basic.qos-ok" {}
    BasicConsume = 60, 20 "basic.consume" {
        (_: short) (queue: shortstr) (consumer_tag: shortstr) (no_local: bit) (no_ack: bit)
        (exclusive: bit) (no_wait: bit) (arguments: table)
    }
    BasicConsumeOk = 60, 21 "basic.consume-ok" { (consumer_tag: shortstr) }
    BasicCancel = 60, 30 "basic.cancel" { (consumer_tag: shortstr) (no_wait: bit) }
    BasicCancelOk = 60, 31 "basic.cancel-ok" { (consumer_tag: shortstr) }
    BasicPublish = 60, 40 "basic.publish" {
        (_: short) (exchange: shortstr) (routing_key: shortstr) (mandatory: bit) (immediate: bit)
    }
    BasicReturn = 60, 50 "basic.return" {
        (reply_code: short) (reply_text: shortstr) (exchange: shortstr) (routing_key: shortstr)
    }
    BasicDeliver = 60, 60 "basic.deliver" {
        (consumer_tag: shortstr) (delivery_tag: longlong) (redelivered: bit)
        (exchange: shortstr) (routing_key: shortstr)
    }
    BasicGet = 60, 70 "basic.get" { (_: short) (queue: shortstr) (no_ack: bit) }
    BasicGetOk = 60, 71 "basic.get-ok" {
        (delivery_tag: longlong) (redelivered: bit) (exchange: shortstr) (routing_key: shortstr)
        (message_count: long)
    }
    BasicGetEmpty = 60, 72 "basic.get-empty" { (_: shortstr) }
    BasicAck = 60, 80 "basic.ack" { (delivery_tag: longlong) (multiple: bit) }
    BasicReject = 60, 90 "basic.reject" { (delivery_tag: longlong) (requeue: bit) }
    BasicRecoverAsync = 60, 100 "basic.recover-async" { (requeue: bit) }
    BasicRecover = 60, 110 "basic.recover" { (requeue: bit) }
    BasicRecoverOk = 60, 111 "basic.recover-ok" {}
    BasicNack = 60, 120 "basic.nack" {
        (delivery_tag: longlong) (multiple: bit) (requeue: bit)
    }

    TxSelect = 90, 10 "tx.select" {}
    TxSelectOk = 90, 11 "tx.select-ok" {}
    TxCommit = 90, 20 "tx.commit" {}
    TxCommitOk = 90, 21 "tx.commit-ok" {}
    TxRollback = 90, 30 "tx.rollback" {}
    TxRollbackOk = 90, 31 "tx.rollback-ok" {}

    ConfirmSelect = 85, 10 "confirm.select" { (no_wait: bit) }
    ConfirmSelectOk = 85, 11 "confirm.select-ok" {}
}
