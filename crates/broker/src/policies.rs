//! Policies: named settings (message-ttl, max-length, dead-letter-exchange, …) that apply to
//! the queues or exchanges whose names match a pattern, the highest priority winning, with
//! RabbitMQ's validation texts and its rules for when a queue's own argument wins. Knows
//! nothing of queue tasks: it answers which settings hold for a name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use amqp::{FieldTable, FieldValue, LongStr, ShortStr};
use parking_lot::RwLock;
use regex::Regex;
use serde_json::{Map, Value};

/// What kinds of object a policy applies to (`apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    All,
    Queues,
    Exchanges,
}

impl ApplyTo {
    pub fn parse(text: &str) -> Option<ApplyTo> {
        match text {
            "all" => Some(ApplyTo::All),
            // Later RabbitMQ versions name queue types; Warren's queues are classic queues.
            "queues" | "classic_queues" => Some(ApplyTo::Queues),
            "exchanges" => Some(ApplyTo::Exchanges),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::All => "all",
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
        }
    }

    fn covers_queues(self) -> bool {
        matches!(self, ApplyTo::All | ApplyTo::Queues)
    }

    fn covers_exchanges(self) -> bool {
        matches!(self, ApplyTo::All | ApplyTo::Exchanges)
    }
}

/// How a policy key meets the queue argument of the same setting (RabbitMQ's classic queue
/// rules): limits take the lower of the two, names and modes take the argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precedence {
    Lower,
    ArgumentWins,
}

/// Each policy key Warren applies: its queue or exchange argument, how it meets that
/// argument, and how its value is checked.
struct Key {
    name: &'static str,
    argument: &'static str,
    precedence: Precedence,
    check: fn(&Value) -> Result<(), String>,
}

const KEYS: &[Key] = &[
    Key {
        name: "message-ttl",
        argument: "x-message-ttl",
        precedence: Precedence::Lower,
        check: |v| non_negative(v, "message TTL"),
    },
    Key {
        name: "expires",
        argument: "x-expires",
        precedence: Precedence::Lower,
        check: |v| positive(v, "queue expiry"),
    },
    Key {
        name: "max-length",
        argument: "x-max-length",
        precedence: Precedence::Lower,
        check: |v| non_negative(v, "maximum length"),
    },
    Key {
        name: "max-length-bytes",
        argument: "x-max-length-bytes",
        precedence: Precedence::Lower,
        check: |v| non_negative(v, "maximum length in bytes"),
    },
    Key {
        name: "delivery-limit",
        argument: "x-delivery-limit",
        precedence: Precedence::Lower,
        check: |v| non_negative(v, "delivery limit"),
    },
    Key {
        name: "overflow",
        argument: "x-overflow",
        precedence: Precedence::ArgumentWins,
        check: |v| match v.as_str() {
            Some("drop-head" | "reject-publish" | "reject-publish-dlx") => Ok(()),
            _ => Err(format!("{} is not a valid overflow value", erlang_term(v))),
        },
    },
    Key {
        name: "dead-letter-exchange",
        argument: "x-dead-letter-exchange",
        precedence: Precedence::ArgumentWins,
        check: |v| string(v, "dead letter exchange name"),
    },
    Key {
        name: "dead-letter-routing-key",
        argument: "x-dead-letter-routing-key",
        precedence: Precedence::ArgumentWins,
        check: |v| string(v, "dead letter routing key"),
    },
    Key {
        name: "queue-mode",
        argument: "x-queue-mode",
        precedence: Precedence::ArgumentWins,
        check: |v| match v.as_str() {
            Some("default" | "lazy") => Ok(()),
            _ => Err(format!(
                "{} is not a valid queue-mode value",
                erlang_term(v)
            )),
        },
    },
    Key {
        name: "alternate-exchange",
        argument: "alternate-exchange",
        precedence: Precedence::ArgumentWins,
        check: |v| string(v, "alternate exchange name"),
    },
];

/// A value as RabbitMQ prints it in validation errors: strings as Erlang binaries.
fn erlang_term(value: &Value) -> String {
    match value {
        Value::String(text) => format!("<<\"{text}\">>"),
        other => other.to_string(),
    }
}

fn non_negative(value: &Value, what: &str) -> Result<(), String> {
    match value.as_i64() {
        Some(n) if n >= 0 => Ok(()),
        _ => Err(format!("{} is not a valid {what}", erlang_term(value))),
    }
}

fn positive(value: &Value, what: &str) -> Result<(), String> {
    match value.as_i64() {
        Some(n) if n > 0 => Ok(()),
        _ => Err(format!("{} is not a valid {what}", erlang_term(value))),
    }
}

fn string(value: &Value, what: &str) -> Result<(), String> {
    match value {
        Value::String(_) => Ok(()),
        other => Err(format!("{} is not a valid {what}", erlang_term(other))),
    }
}

/// A policy RabbitMQ would refuse, with its text (the management API answers it as 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Validation failed\n\n{0}\n")]
pub struct InvalidPolicy(pub String);

#[derive(Debug, Clone)]
pub struct Policy {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    pub apply_to: ApplyTo,
    pub priority: i64,
    pub definition: Map<String, Value>,
    compiled: Regex,
}

impl Policy {
    pub fn new(
        vhost: &str,
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: Map<String, Value>,
    ) -> Result<Policy, InvalidPolicy> {
        let compiled = Regex::new(pattern).map_err(|error| {
            InvalidPolicy(format!(
                "pattern should be regular expression but is invalid: {error}"
            ))
        })?;
        let apply_to = ApplyTo::parse(apply_to).ok_or_else(|| {
            InvalidPolicy(format!(
                "apply-to '{apply_to}' unrecognised; should be 'queues', 'exchanges' or 'all'"
            ))
        })?;
        if definition.is_empty() {
            return Err(InvalidPolicy("no policy provided".into()));
        }
        let unknown: Vec<String> = definition
            .iter()
            .filter(|(key, _)| !KEYS.iter().any(|k| k.name == key.as_str()))
            .map(|(key, value)| format!("{{<<\"{key}\">>,{}}}", erlang_term(value)))
            .collect();
        if !unknown.is_empty() {
            return Err(InvalidPolicy(format!(
                "[{}] are not recognised policy settings",
                unknown.join(",")
            )));
        }
        for key in KEYS {
            if let Some(value) = definition.get(key.name) {
                (key.check)(value).map_err(InvalidPolicy)?;
            }
        }
        Ok(Policy {
            vhost: vhost.to_string(),
            name: name.to_string(),
            pattern: pattern.to_string(),
            apply_to,
            priority,
            definition,
            compiled,
        })
    }

    fn matches(&self, name: &str) -> bool {
        self.compiled.is_match(name)
    }

    /// `arguments` with this policy's settings merged in as the `x-` arguments they stand
    /// for, by RabbitMQ's rules: the lower limit holds, an argument's name or mode wins.
    pub fn merged_into(&self, arguments: &FieldTable) -> FieldTable {
        let mut merged = arguments.clone();
        for key in KEYS {
            let Some(value) = self.definition.get(key.name) else {
                continue;
            };
            let own = arguments.get(key.argument);
            let policy_value = match value {
                Value::String(text) => Some(FieldValue::LongStr(LongStr::from(text.as_str()))),
                other => other.as_i64().map(FieldValue::I64),
            };
            let Some(policy_value) = policy_value else {
                continue;
            };
            let chosen = match (own, key.precedence) {
                (None, _) => policy_value,
                (Some(_), Precedence::ArgumentWins) => continue,
                (Some(own_value), Precedence::Lower) => {
                    match (own_value.as_i64(), value.as_i64()) {
                        (Some(own_number), Some(policy_number)) if policy_number < own_number => {
                            policy_value
                        }
                        _ => continue,
                    }
                }
            };
            merged.insert(ShortStr::from_static(key.argument), chosen);
        }
        merged
    }
}

/// Every vhost's policies, by name.
#[derive(Default)]
pub struct Policies {
    by_vhost: RwLock<HashMap<String, BTreeMap<String, Arc<Policy>>>>,
}

impl Policies {
    /// Adds or replaces a policy; whether it is new.
    pub fn put(&self, policy: Policy) -> bool {
        self.by_vhost
            .write()
            .entry(policy.vhost.clone())
            .or_default()
            .insert(policy.name.clone(), Arc::new(policy))
            .is_none()
    }

    /// Whether there was such a policy.
    pub fn delete(&self, vhost: &str, name: &str) -> bool {
        self.by_vhost
            .write()
            .get_mut(vhost)
            .is_some_and(|policies| policies.remove(name).is_some())
    }

    pub fn delete_vhost(&self, vhost: &str) {
        self.by_vhost.write().remove(vhost);
    }

    pub fn get(&self, vhost: &str, name: &str) -> Option<Arc<Policy>> {
        self.by_vhost.read().get(vhost)?.get(name).cloned()
    }

    /// Every policy (of one vhost, if given), by vhost then name.
    pub fn all(&self, vhost: Option<&str>) -> Vec<Arc<Policy>> {
        let map = self.by_vhost.read();
        let mut vhosts: Vec<&String> = map
            .keys()
            .filter(|v| vhost.is_none_or(|only| only == *v))
            .collect();
        vhosts.sort();
        vhosts
            .into_iter()
            .flat_map(|v| map[v].values().cloned())
            .collect()
    }

    pub fn replace_all(&self, policies: impl IntoIterator<Item = Policy>) {
        let mut map = self.by_vhost.write();
        map.clear();
        for policy in policies {
            map.entry(policy.vhost.clone())
                .or_default()
                .insert(policy.name.clone(), Arc::new(policy));
        }
    }

    /// The policy that applies to a queue: the matching one of highest priority (by name
    /// among equals, so that the choice is stable).
    pub fn for_queue(&self, vhost: &str, queue: &str) -> Option<Arc<Policy>> {
        self.best(vhost, queue, ApplyTo::covers_queues)
    }

    pub fn for_exchange(&self, vhost: &str, exchange: &str) -> Option<Arc<Policy>> {
        self.best(vhost, exchange, ApplyTo::covers_exchanges)
    }

    fn best(&self, vhost: &str, name: &str, covers: fn(ApplyTo) -> bool) -> Option<Arc<Policy>> {
        let map = self.by_vhost.read();
        map.get(vhost)?
            .values()
            .filter(|policy| covers(policy.apply_to) && policy.matches(name))
            .max_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then_with(|| b.name.cmp(&a.name))
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn policy(name: &str, pattern: &str, priority: i64, def: Value) -> Policy {
        Policy::new("/", name, pattern, "queues", priority, definition(def)).unwrap()
    }

    #[test]
    fn invalid_policies_are_refused_with_rabbitmqs_texts() {
        let refuse = |pattern: &str, apply_to: &str, def: Value| {
            Policy::new("/", "p", pattern, apply_to, 0, definition(def))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refuse("^q", "all", json!({"foo": 5})),
            "Validation failed\n\n[{<<\"foo\">>,5}] are not recognised policy settings\n"
        );
        assert_eq!(
            refuse("^q", "all", json!({"max-length": "x"})),
            "Validation failed\n\n<<\"x\">> is not a valid maximum length\n"
        );
        assert_eq!(
            refuse("^q", "all", json!({"expires": 0})),
            "Validation failed\n\n0 is not a valid queue expiry\n"
        );
        assert_eq!(
            refuse("^q", "bogus", json!({"max-length": 1})),
            "Validation failed\n\napply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'\n"
        );
        assert_eq!(
            refuse("^q", "all", json!({})),
            "Validation failed\n\nno policy provided\n"
        );
        assert!(refuse("(", "all", json!({"max-length": 1})).contains("pattern should be"));
    }

    #[test]
    fn the_matching_policy_of_highest_priority_applies() {
        let policies = Policies::default();
        policies.put(policy("low", "^q", 0, json!({"max-length": 1})));
        policies.put(policy("high", "^q\\.a", 5, json!({"max-length": 2})));
        policies.put(
            Policy::new(
                "/",
                "ex",
                ".*",
                "exchanges",
                9,
                definition(json!({"alternate-exchange": "ae"})),
            )
            .unwrap(),
        );
        assert_eq!(policies.for_queue("/", "q.a").unwrap().name, "high");
        assert_eq!(policies.for_queue("/", "q.b").unwrap().name, "low");
        assert!(policies.for_queue("/", "other").is_none());
        assert!(policies.for_queue("/other-vhost", "q.a").is_none());
        assert_eq!(policies.for_exchange("/", "q.a").unwrap().name, "ex");
        assert!(policies.delete("/", "high"));
        assert_eq!(policies.for_queue("/", "q.a").unwrap().name, "low");
    }

    #[test]
    fn limits_take_the_lower_value_and_names_take_the_argument() {
        let p = policy(
            "p",
            ".*",
            0,
            json!({"max-length": 5, "message-ttl": 1000, "dead-letter-exchange": "policy-dlx"}),
        );
        let mut arguments = FieldTable::new();
        arguments.insert(ShortStr::from_static("x-max-length"), FieldValue::I32(3));
        arguments.insert(
            ShortStr::from_static("x-message-ttl"),
            FieldValue::I32(60_000),
        );
        arguments.insert(
            ShortStr::from_static("x-dead-letter-exchange"),
            FieldValue::LongStr(LongStr::from("own-dlx")),
        );
        let merged = p.merged_into(&arguments);
        assert_eq!(
            merged.get("x-max-length").and_then(FieldValue::as_i64),
            Some(3)
        );
        assert_eq!(
            merged.get("x-message-ttl").and_then(FieldValue::as_i64),
            Some(1000)
        );
        assert_eq!(
            merged
                .get("x-dead-letter-exchange")
                .and_then(FieldValue::as_str),
            Some("own-dlx")
        );
        let bare = p.merged_into(&FieldTable::new());
        assert_eq!(
            bare.get("x-max-length").and_then(FieldValue::as_i64),
            Some(5)
        );
        assert_eq!(
            bare.get("x-dead-letter-exchange")
                .and_then(FieldValue::as_str),
            Some("policy-dlx")
        );
    }
}
