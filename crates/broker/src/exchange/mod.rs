//! Exchange kinds and their routing tables (bindings → destinations), one file per kind.
//! Knows nothing of queues, vhosts, channels or frames: a destination is an opaque value.

mod consistent_hash;
mod delayed;
mod direct;
mod fanout;
mod headers;
mod table;
mod targets;
mod topic;

pub use consistent_hash::ConsistentHashRouter;
pub use delayed::{delay_of, swap_delay_header, DelayedRouter, MAX_DELAY_MS, X_DELAY};
pub use direct::DirectRouter;
pub use fanout::FanoutRouter;
pub use headers::HeadersRouter;
pub use topic::TopicRouter;

use amqp::{BasicProperties, FieldTable, ShortStr};

/// The exchange types, named as in `exchange.declare`'s `type` field: the built-in ones and
/// those of RabbitMQ's consistent-hash and delayed-message plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    ConsistentHash,
    /// Holds messages that ask for a delay, then routes them as its `x-delayed-type`.
    DelayedMessage,
}

impl ExchangeKind {
    /// Exact, case-sensitive names, as RabbitMQ accepts them.
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        match s {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            "x-consistent-hash" => Some(ExchangeKind::ConsistentHash),
            "x-delayed-message" => Some(ExchangeKind::DelayedMessage),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
            ExchangeKind::DelayedMessage => "x-delayed-message",
        }
    }

    /// An empty routing table for a new exchange of this kind declared with `arguments`, or
    /// why the kind refuses them (RabbitMQ checks them when the exchange is created, never
    /// when it is declared again).
    pub fn router<D: Destination>(
        &self,
        arguments: &FieldTable,
    ) -> Result<Box<dyn Router<D>>, InvalidExchange> {
        Ok(match self {
            ExchangeKind::Direct => Box::new(DirectRouter::new()),
            ExchangeKind::Fanout => Box::new(FanoutRouter::new()),
            ExchangeKind::Topic => Box::new(TopicRouter::new()),
            ExchangeKind::Headers => Box::new(HeadersRouter::new()),
            ExchangeKind::ConsistentHash => Box::new(ConsistentHashRouter::new(arguments)?),
            ExchangeKind::DelayedMessage => Box::new(DelayedRouter::new(arguments)?),
        })
    }
}

impl std::fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A destination of a binding: the broker uses an enum of queue/exchange names here.
pub trait Destination: Clone + Eq + std::hash::Hash + Send + Sync + 'static {}
impl<T: Clone + Eq + std::hash::Hash + Send + Sync + 'static> Destination for T {}

/// What identifies a binding together with its destination.
///
/// `arguments` come back sorted by key (stable, bytewise), because RabbitMQ stores them that
/// way: `{a,b}` and `{b,a}` are one binding, and listings show the sorted form.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingKey {
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}

/// A binding the exchange kind refuses; `reason` is RabbitMQ's text, to be sent as
/// `PRECONDITION_FAILED - {reason}` (406) on the channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidBinding {
    pub reason: String,
}

/// Arguments an exchange kind refuses at declaration, with RabbitMQ's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidExchange {
    /// Sent as `PRECONDITION_FAILED - {text}` (406) on the channel.
    #[error("{0}")]
    PreconditionFailed(String),
    /// An argument RabbitMQ's plugin code crashes on, which closes the connection (541).
    #[error("{0}")]
    InternalError(String),
}

/// The routing table of one exchange. One file per implementation: direct.rs, fanout.rs,
/// topic.rs, headers.rs, consistent_hash.rs, delayed.rs.
pub trait Router<D: Destination>: Send + Sync {
    /// Adds a binding; false if the same (destination, routing_key, arguments) already existed.
    fn bind(&mut self, destination: D, routing_key: &ShortStr, arguments: &FieldTable) -> bool;
    /// Removes one binding; false if it was not there.
    fn unbind(&mut self, destination: &D, routing_key: &ShortStr, arguments: &FieldTable) -> bool;
    /// Removes every binding to `destination` (a queue or exchange was deleted); returns how many.
    fn unbind_destination(&mut self, destination: &D) -> usize;
    /// Appends every destination the message goes to; may append duplicates (the caller dedups).
    fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<D>);
    /// Whether `route_message` needs the message's content properties decoded.
    fn reads_properties(&self) -> bool {
        false
    }
    /// `route` with the decoded properties at hand (`None` unless `reads_properties`, or when
    /// the message has none); kinds that route on more than the headers override it.
    fn route_message(
        &self,
        routing_key: &str,
        properties: Option<&BasicProperties>,
        out: &mut Vec<D>,
    ) {
        self.route(
            routing_key,
            properties.and_then(|p| p.headers.as_ref()),
            out,
        )
    }
    /// Every binding, in insertion order.
    fn bindings(&self) -> Vec<(D, BindingKey)>;
    fn has_bindings(&self) -> bool;
    /// Whether any binding leads to `destination`.
    fn has_destination(&self, destination: &D) -> bool;
    /// Checks a binding before `bind` (queue.bind / exchange.bind); headers and consistent-hash
    /// refuse some.
    fn validate_binding(
        &self,
        _routing_key: &ShortStr,
        _arguments: &FieldTable,
    ) -> Result<(), InvalidBinding> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp::FieldValue;
    use std::sync::Arc;

    #[test]
    fn kind_names_round_trip_and_are_case_sensitive() {
        for kind in [
            ExchangeKind::Direct,
            ExchangeKind::Fanout,
            ExchangeKind::Topic,
            ExchangeKind::Headers,
            ExchangeKind::ConsistentHash,
            ExchangeKind::DelayedMessage,
        ] {
            assert_eq!(ExchangeKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(ExchangeKind::parse("Direct"), None);
        assert_eq!(ExchangeKind::parse("x-random"), None);
        assert_eq!(ExchangeKind::parse(""), None);
    }

    #[test]
    fn routers_are_shareable_behind_a_lock() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        let shared = Arc::new(parking_lot::RwLock::new(
            ExchangeKind::Topic
                .router::<String>(&FieldTable::new())
                .unwrap(),
        ));
        assert_send_sync(&shared);
        let key = ShortStr::from_static("a.*");
        assert!(shared
            .write()
            .bind("q".to_owned(), &key, &FieldTable::new()));
        let mut out = Vec::new();
        shared.read().route("a.b", None, &mut out);
        assert_eq!(out, vec!["q".to_owned()]);
    }

    #[test]
    fn every_kind_keeps_binding_identity_the_same_way() {
        // RabbitMQ (3.10.8) answered: binding the same queue to a direct exchange with key "k"
        // and args {a:1,b:2}, then {b:2,a:1}, then no args, then {a:1,b:2,c:3} lists three
        // bindings ({b,a} is the same binding as {a,b}, args shown sorted); unbinding with
        // {b:2,a:1} removes the {a:1,b:2} one.
        let a1 = (ShortStr::from_static("a"), FieldValue::I32(1));
        let b2 = (ShortStr::from_static("b"), FieldValue::I32(2));
        let c3 = (ShortStr::from_static("c"), FieldValue::I32(3));
        let ab = FieldTable(vec![a1.clone(), b2.clone()]);
        let ba = FieldTable(vec![b2.clone(), a1.clone()]);
        let abc = FieldTable(vec![a1, b2, c3]);
        let key = ShortStr::from_static("k");
        let delayed_topic = FieldTable(vec![(
            ShortStr::from_static("x-delayed-type"),
            FieldValue::from("topic"),
        )]);
        for (kind, arguments) in [
            (ExchangeKind::Direct, FieldTable::new()),
            (ExchangeKind::Fanout, FieldTable::new()),
            (ExchangeKind::Topic, FieldTable::new()),
            (ExchangeKind::Headers, FieldTable::new()),
            (ExchangeKind::ConsistentHash, FieldTable::new()),
            (ExchangeKind::DelayedMessage, delayed_topic),
        ] {
            let mut router = kind.router::<u32>(&arguments).unwrap();
            assert!(!router.has_bindings());
            assert!(router.bind(7, &key, &ab), "{kind}");
            assert!(!router.bind(7, &key, &ba), "{kind}");
            assert!(router.bind(7, &key, &FieldTable::new()), "{kind}");
            assert!(router.bind(7, &key, &abc), "{kind}");
            assert!(router.bind(8, &key, &ab), "{kind}");
            let listed = router.bindings();
            assert_eq!(listed.len(), 4, "{kind}");
            assert_eq!(
                listed[0].1.arguments, ab,
                "{kind}: sorted, first inserted first"
            );
            assert!(router.unbind(&7, &key, &ba), "{kind}");
            assert!(!router.unbind(&7, &key, &ab), "{kind}");
            assert!(router.has_destination(&7));
            assert_eq!(router.unbind_destination(&7), 2, "{kind}");
            assert!(!router.has_destination(&7));
            assert_eq!(router.unbind_destination(&7), 0, "{kind}");
            assert!(router.has_bindings());
            assert!(router.unbind(&8, &key, &ab), "{kind}");
            assert!(!router.has_bindings());
            assert!(router.bindings().is_empty());
        }
    }
}
