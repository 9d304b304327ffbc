//! The fanout exchange: a message goes to every bound destination; routing keys and
//! arguments are part of a binding's identity but play no part in routing.

use amqp::{FieldTable, ShortStr};

use super::table::BindingTable;
use super::targets::Targets;
use super::{BindingKey, Destination, Router};

pub struct FanoutRouter<D> {
    table: BindingTable<D>,
    targets: Targets<D>,
}

impl<D: Destination> FanoutRouter<D> {
    pub fn new() -> Self {
        FanoutRouter {
            table: BindingTable::new(),
            targets: Targets::new(),
        }
    }
}

impl<D: Destination> Default for FanoutRouter<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Destination> Router<D> for FanoutRouter<D> {
    fn bind(&mut self, destination: D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        if !self
            .table
            .insert(destination.clone(), routing_key, arguments)
        {
            return false;
        }
        self.targets.add(destination);
        true
    }

    fn unbind(&mut self, destination: &D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        if !self.table.remove(destination, routing_key, arguments) {
            return false;
        }
        self.targets.remove_one(destination);
        true
    }

    fn unbind_destination(&mut self, destination: &D) -> usize {
        let removed = self.table.remove_destination(destination).len();
        for _ in 0..removed {
            self.targets.remove_one(destination);
        }
        removed
    }

    fn route(&self, _routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<D>) {
        self.targets.append_to(out);
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

    fn key(s: &str) -> ShortStr {
        ShortStr::new(s).unwrap()
    }

    fn routed(router: &FanoutRouter<u32>, routing_key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        router.route(routing_key, None, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn every_destination_once_whatever_the_key() {
        let mut r = FanoutRouter::new();
        let none = FieldTable::new();
        assert_eq!(routed(&r, "x"), Vec::<u32>::new());
        assert!(r.bind(1, &key(""), &none));
        assert!(r.bind(2, &key("ignored"), &none));
        assert!(
            r.bind(2, &key("other"), &none),
            "another key is another binding"
        );
        assert!(!r.bind(2, &key("other"), &none));
        assert_eq!(routed(&r, ""), vec![1, 2]);
        assert_eq!(routed(&r, "anything.at.all"), vec![1, 2]);
        assert!(r.unbind(&2, &key("ignored"), &none));
        assert_eq!(routed(&r, "x"), vec![1, 2], "still bound through \"other\"");
        assert!(!r.unbind(&2, &key("ignored"), &none));
        assert_eq!(r.unbind_destination(&2), 1);
        assert_eq!(routed(&r, "x"), vec![1]);
        assert!(r.has_destination(&1));
        assert!(!r.has_destination(&2));
    }

    #[test]
    fn ten_thousand_destinations() {
        let mut r = FanoutRouter::new();
        let none = FieldTable::new();
        for d in 0..10_000u32 {
            assert!(r.bind(d, &key(""), &none));
        }
        for d in 0..10_000u32 {
            assert!(!r.bind(d, &key(""), &none));
        }
        for d in (0..10_000u32).step_by(2) {
            assert_eq!(r.unbind_destination(&d), 1);
        }
        let expected: Vec<u32> = (1..10_000).step_by(2).collect();
        assert_eq!(routed(&r, ""), expected);
        assert_eq!(r.bindings().len(), 5_000);
    }
}
