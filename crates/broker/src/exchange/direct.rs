//! The direct exchange: a message goes to the bindings whose routing key equals its own,
//! byte for byte. Arguments are part of a binding's identity but play no part in routing.

use std::collections::HashMap;

use amqp::{FieldTable, ShortStr};

use super::table::BindingTable;
use super::targets::Targets;
use super::{BindingKey, Destination, Router};

pub struct DirectRouter<D> {
    table: BindingTable<D>,
    by_routing_key: HashMap<ShortStr, Targets<D>>,
}

impl<D: Destination> DirectRouter<D> {
    pub fn new() -> Self {
        DirectRouter {
            table: BindingTable::new(),
            by_routing_key: HashMap::new(),
        }
    }

    fn forget_route(&mut self, destination: &D, routing_key: &ShortStr) {
        if let Some(targets) = self.by_routing_key.get_mut(routing_key.as_str()) {
            targets.remove_one(destination);
            if targets.is_empty() {
                self.by_routing_key.remove(routing_key.as_str());
            }
        }
    }
}

impl<D: Destination> Default for DirectRouter<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Destination> Router<D> for DirectRouter<D> {
    fn bind(&mut self, destination: D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        if !self
            .table
            .insert(destination.clone(), routing_key, arguments)
        {
            return false;
        }
        self.by_routing_key
            .entry(routing_key.clone())
            .or_insert_with(Targets::new)
            .add(destination);
        true
    }

    fn unbind(&mut self, destination: &D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        if !self.table.remove(destination, routing_key, arguments) {
            return false;
        }
        self.forget_route(destination, routing_key);
        true
    }

    fn unbind_destination(&mut self, destination: &D) -> usize {
        let removed = self.table.remove_destination(destination);
        for record in &removed {
            self.forget_route(destination, &record.routing_key);
        }
        removed.len()
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<D>) {
        if let Some(targets) = self.by_routing_key.get(routing_key) {
            targets.append_to(out);
        }
    }

    fn bindings(&self) -> Vec<(D, BindingKey)> {
        self.table.bindings()
    }

    fn has_bindings(&self) -> bool {
        !self.table.is_empty()
    }

    fn has_destination(&self, destination: &D) -> bool {
        self.table.contains_destination(destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqp::FieldValue;

    fn key(s: &str) -> ShortStr {
        ShortStr::new(s).unwrap()
    }

    fn routed(router: &DirectRouter<&'static str>, routing_key: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        router.route(routing_key, None, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn routes_on_exact_key_only() {
        let mut r = DirectRouter::new();
        let none = FieldTable::new();
        assert!(r.bind("q1", &key("a"), &none));
        assert!(r.bind("q2", &key("a"), &none));
        assert!(r.bind("q3", &key("A"), &none));
        assert!(r.bind("q4", &key(""), &none));
        assert!(r.bind("q5", &key("a.b"), &none));
        assert_eq!(routed(&r, "a"), vec!["q1", "q2"]);
        assert_eq!(routed(&r, "A"), vec!["q3"]);
        assert_eq!(routed(&r, ""), vec!["q4"]);
        assert_eq!(routed(&r, "a.b"), vec!["q5"]);
        assert_eq!(routed(&r, "a.*"), Vec::<&str>::new());
        assert_eq!(routed(&r, "b"), Vec::<&str>::new());
    }

    #[test]
    fn arguments_make_separate_bindings_that_route_alike() {
        // RabbitMQ (3.10.8): one queue bound to "k" with three different argument tables gets
        // one copy of a message published to "k" (duplicates are removed after routing).
        let mut r = DirectRouter::new();
        let args = FieldTable(vec![(key("x"), FieldValue::I32(1))]);
        assert!(r.bind("q", &key("k"), &FieldTable::new()));
        assert!(r.bind("q", &key("k"), &args));
        assert_eq!(routed(&r, "k"), vec!["q"]);
        assert!(r.unbind(&"q", &key("k"), &FieldTable::new()));
        assert_eq!(routed(&r, "k"), vec!["q"], "the other binding still routes");
        assert!(!r.unbind(&"q", &key("k"), &FieldTable::new()));
        assert!(r.unbind(&"q", &key("k"), &args));
        assert_eq!(routed(&r, "k"), Vec::<&str>::new());
        assert!(r.by_routing_key.is_empty(), "no empty slots left behind");
    }

    #[test]
    fn unbind_destination_removes_all_its_keys() {
        let mut r = DirectRouter::new();
        let none = FieldTable::new();
        for k in ["a", "b", "c"] {
            assert!(r.bind("gone", &key(k), &none));
        }
        assert!(r.bind("kept", &key("a"), &none));
        assert_eq!(r.unbind_destination(&"gone"), 3);
        assert_eq!(routed(&r, "a"), vec!["kept"]);
        assert_eq!(routed(&r, "b"), Vec::<&str>::new());
        assert_eq!(r.by_routing_key.len(), 1);
        assert_eq!(
            r.bindings(),
            vec![(
                "kept",
                BindingKey {
                    routing_key: key("a"),
                    arguments: FieldTable::new()
                }
            )]
        );
    }

    #[test]
    fn many_destinations_on_one_key() {
        let mut r = DirectRouter::new();
        let none = FieldTable::new();
        for d in 0..1000u32 {
            assert!(r.bind(d, &key("k"), &none));
        }
        for d in (0..1000u32).filter(|d| d % 3 == 0) {
            assert!(r.unbind(&d, &key("k"), &none));
        }
        let mut out = Vec::new();
        r.route("k", None, &mut out);
        out.sort_unstable();
        let expected: Vec<u32> = (0..1000).filter(|d| d % 3 != 0).collect();
        assert_eq!(out, expected);
    }
}
