//! Dead-lettering as RabbitMQ 4 does it: why a message dies, where its queue sends it
//! (`x-dead-letter-exchange`, `x-dead-letter-routing-key`), the x-death history and the
//! x-first-death / x-last-death headers it gets, cycle detection, and its republishing through
//! the vhost's normal routing. Knows nothing of how a queue keeps its messages.

use std::sync::Arc;

use amqp::{FieldTable, FieldValue, LongStr, ShortStr};
use bytes::Bytes;

use crate::message::{rewrite_properties, Annotations, Message};
use crate::queue::{QueueCommand, QueueRef};
use crate::vhost::VHost;

/// Why a queue let go of a message, named as in x-death's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL ran out at the head of the queue.
    Expired,
    /// Dropped from the head (drop-head) or refused (reject-publish-dlx) by a length limit.
    MaxLen,
    /// Returned more often than `x-delivery-limit`.
    DeliveryLimit,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Where a queue's dead messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTarget {
    pub exchange: ShortStr,
    /// Replaces the message's routing keys; `None` keeps them (CC and BCC included).
    pub routing_key: Option<ShortStr>,
}

/// One (queue, reason) of a message's death history, most recent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeathKey {
    pub queue: Bytes,
    pub reason: Bytes,
}

const X_DEATH: &str = "x-death";

fn key(name: &'static str) -> ShortStr {
    ShortStr::from_static(name)
}

fn longstr(bytes: impl Into<Bytes>) -> FieldValue {
    FieldValue::LongStr(LongStr(bytes.into()))
}

fn death_key(entry: &FieldValue) -> Option<DeathKey> {
    let table = entry.as_table()?;
    Some(DeathKey {
        queue: Bytes::copy_from_slice(table.get("queue")?.as_bytes()?),
        reason: Bytes::copy_from_slice(table.get("reason")?.as_bytes()?),
    })
}

/// The message that `queue` dead-letters for `reason` to `target`, `now_secs` being the time
/// of death (seconds since the Unix epoch), with its deaths by recency for cycle detection.
/// `None` when its properties cannot be decoded.
pub fn dead_lettered(
    message: &Message,
    reason: DeathReason,
    queue: &str,
    target: &DeadLetterTarget,
    now_secs: u64,
) -> Option<(Message, Vec<DeathKey>)> {
    let bcc: &[ShortStr] = message.annotations.as_ref().map_or(&[], |a| &a.bcc);
    let mut death_routing_keys: Vec<ShortStr> = std::iter::once(&message.routing_key)
        .chain(message.extra_routing_keys())
        .cloned()
        .collect();
    for hidden in bcc {
        if let Some(at) = death_routing_keys.iter().position(|k| k == hidden) {
            death_routing_keys.remove(at);
        }
    }
    let ttl = message.ttl_ms();
    let known_deaths = message.dead_lettered();
    let mut deaths = Vec::new();
    let properties = rewrite_properties(&message.properties, |p| {
        p.expiration = None;
        let headers = p.headers.get_or_insert_with(FieldTable::new);
        let mut history: Vec<FieldValue> = match headers.get(X_DEATH) {
            Some(FieldValue::Array(entries)) if known_deaths => entries.clone(),
            _ => Vec::new(),
        };
        let this = DeathKey {
            queue: Bytes::copy_from_slice(queue.as_bytes()),
            reason: Bytes::from_static(reason.as_str().as_bytes()),
        };
        let earlier = history
            .iter()
            .position(|entry| death_key(entry).as_ref() == Some(&this));
        let entry = match earlier {
            // The first death of this kind keeps its time, exchange and routing keys.
            Some(at) => {
                let mut entry = history.remove(at);
                if let FieldValue::Table(table) = &mut entry {
                    let count = table.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
                    table.insert(key("count"), FieldValue::I64(count.saturating_add(1)));
                }
                entry
            }
            None => {
                let mut table = FieldTable::new();
                if let Some(ttl) = ttl {
                    table.insert(key("original-expiration"), longstr(ttl.to_string()));
                }
                table.insert(key("count"), FieldValue::I64(1));
                table.insert(key("reason"), longstr(reason.as_str()));
                table.insert(key("queue"), longstr(queue.to_string()));
                table.insert(key("time"), FieldValue::Timestamp(now_secs));
                table.insert(
                    key("exchange"),
                    longstr(message.exchange.as_shared_bytes().clone()),
                );
                let keys = death_routing_keys
                    .iter()
                    .map(|k| longstr(k.as_shared_bytes().clone()))
                    .collect();
                table.insert(key("routing-keys"), FieldValue::Array(keys));
                FieldValue::Table(table)
            }
        };
        history.insert(0, entry);
        deaths = history.iter().filter_map(death_key).collect();
        headers.insert(key(X_DEATH), FieldValue::Array(history));
        let exchange = longstr(message.exchange.as_shared_bytes().clone());
        if !known_deaths {
            headers.insert(key("x-first-death-reason"), longstr(reason.as_str()));
            headers.insert(key("x-first-death-queue"), longstr(queue.to_string()));
            headers.insert(key("x-first-death-exchange"), exchange.clone());
        }
        headers.insert(key("x-last-death-reason"), longstr(reason.as_str()));
        headers.insert(key("x-last-death-queue"), longstr(queue.to_string()));
        headers.insert(key("x-last-death-exchange"), exchange);
        sort_by_key(headers);
    })?;
    let (routing_key, extra_routing_keys) = match &target.routing_key {
        Some(routing_key) => (routing_key.clone(), Vec::new()),
        None => (
            message.routing_key.clone(),
            message.extra_routing_keys().to_vec(),
        ),
    };
    let dead = Message {
        exchange: target.exchange.clone(),
        routing_key,
        properties,
        body: message.body.clone(),
        persistent: message.persistent,
        annotations: Some(Box::new(Annotations {
            extra_routing_keys,
            bcc: bcc.to_vec(),
            dead_lettered: true,
        })),
    };
    Some((dead, deaths))
}

/// RabbitMQ 4 hands a message with broker-written headers out with its headers sorted by
/// key, one entry per key.
fn sort_by_key(headers: &mut FieldTable) {
    headers
        .0
        .sort_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
    headers.0.dedup_by(|(a, _), (b, _)| a == b);
}

/// Whether dead-lettering into `target_queue` closes a cycle that no client took part in:
/// the message died in that queue before, and no death since (that one included) was a
/// rejection. Such a message is dropped instead of going round forever.
pub fn is_cycle(target_queue: &str, deaths: &[DeathKey]) -> bool {
    let Some(at) = deaths
        .iter()
        .position(|d| d.queue.as_ref() == target_queue.as_bytes())
    else {
        return false;
    };
    deaths[..=at]
        .iter()
        .all(|d| d.reason.as_ref() != DeathReason::Rejected.as_str().as_bytes())
}

/// Dead-letters `message` from `queue`: routes its dead-lettered form through the target
/// exchange like any publish (a target exchange that does not exist drops it, as in
/// RabbitMQ) and hands it to every queue routed to that it would not cycle into.
pub fn publish(
    vhost: &VHost,
    message: &Message,
    reason: DeathReason,
    queue: &str,
    target: &DeadLetterTarget,
) {
    let Some(exchange) = vhost.exchange(&target.exchange) else {
        return;
    };
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Some((dead, deaths)) = dead_lettered(message, reason, queue, target, now_secs) else {
        tracing::warn!(
            queue,
            "cannot dead-letter a message whose properties do not decode"
        );
        return;
    };
    let mut routed: Vec<QueueRef> = Vec::new();
    vhost.route_message(&exchange, &dead, &mut routed);
    let dead = Arc::new(dead);
    for target_queue in routed {
        if reason != DeathReason::Rejected && is_cycle(&target_queue.name, &deaths) {
            tracing::debug!(
                queue,
                target = %target_queue.name,
                "dropping a message that would dead-letter in a cycle"
            );
            continue;
        }
        target_queue.send(QueueCommand::Publish {
            message: dead.clone(),
            confirm: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp::BasicProperties;
    use bytes::BytesMut;

    fn s(v: &str) -> ShortStr {
        ShortStr::new(v).unwrap()
    }

    fn published(properties: BasicProperties) -> Message {
        let mut out = BytesMut::new();
        properties.encode(&mut out);
        Message::published(s("orders"), s("rk"), out.freeze(), Bytes::from_static(b"b")).unwrap()
    }

    fn headers(message: &Message) -> FieldTable {
        BasicProperties::decode(&message.properties)
            .unwrap()
            .headers
            .unwrap()
    }

    fn deaths_of(message: &Message) -> Vec<FieldTable> {
        let headers = headers(message);
        headers
            .get(X_DEATH)
            .and_then(FieldValue::as_array)
            .unwrap()
            .iter()
            .map(|e| e.as_table().unwrap().clone())
            .collect()
    }

    fn text(v: Option<&FieldValue>) -> &str {
        std::str::from_utf8(v.unwrap().as_bytes().unwrap()).unwrap()
    }

    fn target(exchange: &str, routing_key: Option<&str>) -> DeadLetterTarget {
        DeadLetterTarget {
            exchange: s(exchange),
            routing_key: routing_key.map(s),
        }
    }

    #[test]
    fn the_first_death_writes_x_death_and_first_and_last_headers() {
        let cc = FieldValue::Array(vec![FieldValue::from("c1")]);
        let bcc = FieldValue::Array(vec![FieldValue::from("b1")]);
        let message = published(BasicProperties {
            expiration: Some(s("60000")),
            headers: Some(FieldTable(vec![(s("CC"), cc), (s("BCC"), bcc)])),
            ..Default::default()
        });
        let (dead, deaths) = dead_lettered(
            &message,
            DeathReason::Rejected,
            "src",
            &target("dlx", None),
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(
            BasicProperties::decode(&dead.properties)
                .unwrap()
                .expiration,
            None
        );
        assert_eq!(
            (dead.exchange.as_str(), dead.routing_key.as_str()),
            ("dlx", "rk")
        );
        let keys: Vec<&str> = dead
            .extra_routing_keys()
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["c1", "b1"], "routed again with CC and BCC");
        let entries = deaths_of(&dead);
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry.get("count"), Some(&FieldValue::I64(1)));
        assert_eq!(text(entry.get("reason")), "rejected");
        assert_eq!(text(entry.get("queue")), "src");
        assert_eq!(
            entry.get("time"),
            Some(&FieldValue::Timestamp(1_700_000_000))
        );
        assert_eq!(text(entry.get("exchange")), "orders");
        assert_eq!(text(entry.get("original-expiration")), "60000");
        let routing_keys: Vec<&str> = entry
            .get("routing-keys")
            .and_then(FieldValue::as_array)
            .unwrap()
            .iter()
            .map(|v| std::str::from_utf8(v.as_bytes().unwrap()).unwrap())
            .collect();
        assert_eq!(routing_keys, ["rk", "c1"], "BCC keys are left out");
        let headers = headers(&dead);
        for (name, value) in [
            ("x-first-death-reason", "rejected"),
            ("x-first-death-queue", "src"),
            ("x-first-death-exchange", "orders"),
            ("x-last-death-reason", "rejected"),
            ("x-last-death-queue", "src"),
            ("x-last-death-exchange", "orders"),
        ] {
            assert_eq!(text(headers.get(name)), value, "{name}");
        }
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(
            deaths,
            vec![DeathKey {
                queue: Bytes::from_static(b"src"),
                reason: Bytes::from_static(b"rejected")
            }]
        );
    }

    #[test]
    fn a_repeated_death_counts_up_and_moves_to_the_front() {
        let message = published(BasicProperties::default());
        let to_b = target("", Some("b"));
        let to_a = target("", Some("a"));
        let (m, _) = dead_lettered(&message, DeathReason::Rejected, "a", &to_b, 10).unwrap();
        let (m, _) = dead_lettered(&m, DeathReason::Expired, "b", &to_a, 20).unwrap();
        let (m, deaths) = dead_lettered(&m, DeathReason::Rejected, "a", &to_b, 30).unwrap();
        let entries = deaths_of(&m);
        let summary: Vec<(String, i64, u64)> = entries
            .iter()
            .map(|e| {
                let time = match e.get("time") {
                    Some(FieldValue::Timestamp(t)) => *t,
                    _ => 0,
                };
                (
                    text(e.get("queue")).to_string(),
                    e.get("count").and_then(FieldValue::as_i64).unwrap(),
                    time,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![("a".to_string(), 2, 10), ("b".to_string(), 1, 20)]
        );
        let headers = headers(&m);
        assert_eq!(text(headers.get("x-first-death-queue")), "a");
        assert_eq!(text(headers.get("x-first-death-exchange")), "orders");
        assert_eq!(text(headers.get("x-last-death-reason")), "rejected");
        assert_eq!(text(headers.get("x-last-death-exchange")), "");
        assert!(!is_cycle("a", &deaths), "a rejection breaks the cycle");
        assert!(!is_cycle("c", &deaths));
    }

    #[test]
    fn an_automatic_cycle_is_detected() {
        let message = published(BasicProperties::default());
        let (m, _) = dead_lettered(
            &message,
            DeathReason::Expired,
            "a",
            &target("", Some("b")),
            1,
        )
        .unwrap();
        let (_, deaths) =
            dead_lettered(&m, DeathReason::MaxLen, "b", &target("", Some("a")), 2).unwrap();
        assert!(is_cycle("a", &deaths));
        assert!(is_cycle("b", &deaths));
        assert!(!is_cycle("elsewhere", &deaths));
    }

    #[test]
    fn a_client_supplied_x_death_starts_over() {
        let forged = FieldValue::Array(vec![FieldValue::Table(FieldTable(vec![
            (s("queue"), FieldValue::from("q")),
            (s("reason"), FieldValue::from("expired")),
            (s("count"), FieldValue::I64(7)),
        ]))]);
        let message = published(BasicProperties {
            headers: Some(FieldTable(vec![
                (s("x-death"), forged),
                (s("x-first-death-queue"), FieldValue::from("elsewhere")),
            ])),
            ..Default::default()
        });
        let (m, deaths) =
            dead_lettered(&message, DeathReason::Expired, "q", &target("", None), 1).unwrap();
        let entries = deaths_of(&m);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].get("count"), Some(&FieldValue::I64(1)));
        assert_eq!(text(headers(&m).get("x-first-death-queue")), "q");
        assert_eq!(deaths.len(), 1);
    }

    #[test]
    fn a_dead_letter_routing_key_replaces_the_routing_keys() {
        let cc = FieldValue::Array(vec![FieldValue::from("c1")]);
        let message = published(BasicProperties {
            headers: Some(FieldTable(vec![(s("CC"), cc)])),
            ..Default::default()
        });
        let (dead, _) = dead_lettered(
            &message,
            DeathReason::Expired,
            "q",
            &target("dlx", Some("dead")),
            1,
        )
        .unwrap();
        assert_eq!(dead.routing_key.as_str(), "dead");
        assert!(dead.extra_routing_keys().is_empty());
        assert!(headers(&dead).get("CC").is_some(), "RabbitMQ 4 keeps CC");
    }
}
