//! The topic exchange: binding keys are patterns of '.'-separated words where `*` stands for
//! exactly one word and `#` for zero or more. Bindings live in a trie of words so routing
//! costs what the routing key's length and the matching patterns cost, not the number of
//! bindings. Knows nothing of what a destination is.
//!
//! Words follow RabbitMQ: the empty key has no words at all, any other key is split on every
//! '.', so "a..b" is the three words "a", "", "b" and "." is two empty words. `*` matches an
//! empty word too, but not a missing one.

use std::collections::HashMap;

use amqp::{FieldTable, ShortStr};

use super::table::BindingTable;
use super::targets::Targets;
use super::{BindingKey, Destination, Router};

const ROOT: usize = 0;

/// How a node hangs from its parent.
enum Edge {
    Root,
    Word(Box<str>),
    Star,
    Hash,
}

struct Node<D> {
    edge: Edge,
    parent: usize,
    words: HashMap<Box<str>, usize>,
    star: Option<usize>,
    hash: Option<usize>,
    /// Bindings whose key ends at this node.
    targets: Targets<D>,
}

impl<D: Destination> Node<D> {
    fn new(edge: Edge, parent: usize) -> Self {
        Node {
            edge,
            parent,
            words: HashMap::new(),
            star: None,
            hash: None,
            targets: Targets::new(),
        }
    }

    fn is_unused(&self) -> bool {
        self.targets.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

pub struct TopicRouter<D> {
    table: BindingTable<D>,
    /// Arena of trie nodes; `ROOT` is never freed.
    nodes: Vec<Node<D>>,
    /// Indices of freed nodes in `nodes`, reused before the arena grows.
    free: Vec<usize>,
}

/// RabbitMQ's split: "" has no words; otherwise every '.' separates two (possibly empty) words.
fn words(key: &str) -> impl Iterator<Item = &str> {
    (!key.is_empty())
        .then(|| key.split('.'))
        .into_iter()
        .flatten()
}

impl<D: Destination> TopicRouter<D> {
    pub fn new() -> Self {
        TopicRouter {
            table: BindingTable::new(),
            nodes: vec![Node::new(Edge::Root, ROOT)],
            free: Vec::new(),
        }
    }

    fn child(&self, node: usize, word: &str) -> Option<usize> {
        let node = &self.nodes[node];
        match word {
            "*" => node.star,
            "#" => node.hash,
            _ => node.words.get(word).copied(),
        }
    }

    fn alloc(&mut self, edge: Edge, parent: usize) -> usize {
        let node = Node::new(edge, parent);
        match self.free.pop() {
            Some(at) => {
                self.nodes[at] = node;
                at
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    fn find_or_create(&mut self, binding_key: &str) -> usize {
        let mut at = ROOT;
        for word in words(binding_key) {
            at = match self.child(at, word) {
                Some(next) => next,
                None => {
                    let edge = match word {
                        "*" => Edge::Star,
                        "#" => Edge::Hash,
                        w => Edge::Word(w.into()),
                    };
                    let next = self.alloc(edge, at);
                    let parent = &mut self.nodes[at];
                    match word {
                        "*" => parent.star = Some(next),
                        "#" => parent.hash = Some(next),
                        w => {
                            parent.words.insert(w.into(), next);
                        }
                    }
                    next
                }
            };
        }
        at
    }

    fn find(&self, binding_key: &str) -> Option<usize> {
        words(binding_key).try_fold(ROOT, |at, word| self.child(at, word))
    }

    /// Forgets one binding of `destination` at the end of `binding_key`, then frees the nodes
    /// that no longer lead anywhere so that churn of distinct keys does not grow the trie.
    fn forget(&mut self, destination: &D, binding_key: &str) {
        let Some(mut at) = self.find(binding_key) else {
            return;
        };
        self.nodes[at].targets.remove_one(destination);
        while at != ROOT && self.nodes[at].is_unused() {
            let parent = self.nodes[at].parent;
            let edge = std::mem::replace(&mut self.nodes[at].edge, Edge::Root);
            let p = &mut self.nodes[parent];
            match edge {
                Edge::Word(w) => {
                    p.words.remove(&w);
                }
                Edge::Star => p.star = None,
                Edge::Hash => p.hash = None,
                Edge::Root => {}
            }
            self.nodes[at] = Node::new(Edge::Root, ROOT);
            self.free.push(at);
            at = parent;
        }
    }

    /// Adds the nodes reachable from `states` without consuming a word (through `#` edges),
    /// then removes duplicates so each node is visited once per position.
    fn close_over_hashes(&self, states: &mut Vec<usize>) {
        let mut i = 0;
        while i < states.len() {
            if let Some(h) = self.nodes[states[i]].hash {
                states.push(h);
            }
            i += 1;
        }
        states.sort_unstable();
        states.dedup();
    }

    #[cfg(test)]
    fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

impl<D: Destination> Default for TopicRouter<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Destination> Router<D> for TopicRouter<D> {
    fn bind(&mut self, destination: D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        if !self
            .table
            .insert(destination.clone(), routing_key, arguments)
        {
            return false;
        }
        let at = self.find_or_create(routing_key.as_str());
        self.nodes[at].targets.add(destination);
        true
    }

    fn unbind(&mut self, destination: &D, routing_key: &ShortStr, arguments: &FieldTable) -> bool {
        if !self.table.remove(destination, routing_key, arguments) {
            return false;
        }
        self.forget(destination, routing_key.as_str());
        true
    }

    fn unbind_destination(&mut self, destination: &D) -> usize {
        let removed = self.table.remove_destination(destination);
        for record in &removed {
            self.forget(destination, record.routing_key.as_str());
        }
        removed.len()
    }

    /// Runs the trie as an automaton over the routing key's words, keeping the set of nodes
    /// alive after each word. A `#` node stays alive on any word and is entered without one,
    /// so patterns like "#.#.#" cost a few extra states, never a branch per way of splitting
    /// the key (a plain backtracking walk is exponential in the number of `#`).
    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<D>) {
        let mut states = vec![ROOT];
        self.close_over_hashes(&mut states);
        let mut next = Vec::new();
        for word in words(routing_key) {
            next.clear();
            for &at in &states {
                let node = &self.nodes[at];
                if matches!(node.edge, Edge::Hash) {
                    next.push(at);
                }
                // A literal "*" or "#" in a routing key is only a word: it reaches the `*`
                // child like any word, and the `#` child like any word does.
                if let Some(&child) = node.words.get(word) {
                    next.push(child);
                }
                if let Some(child) = node.star {
                    next.push(child);
                }
            }
            if next.is_empty() {
                return;
            }
            self.close_over_hashes(&mut next);
            std::mem::swap(&mut states, &mut next);
        }
        for at in states {
            self.nodes[at].targets.append_to(out);
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
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap as Map};

    fn key(s: &str) -> ShortStr {
        ShortStr::new(s).unwrap()
    }

    fn routed<D: Destination + Ord>(router: &TopicRouter<D>, routing_key: &str) -> Vec<D> {
        let mut out = Vec::new();
        router.route(routing_key, None, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Backtracking matcher straight from the definition, for comparison.
    fn naive_match(pattern: &[&str], words: &[&str]) -> bool {
        match pattern.split_first() {
            None => words.is_empty(),
            Some((&"#", rest)) => (0..=words.len()).any(|skip| naive_match(rest, &words[skip..])),
            Some((&"*", rest)) => !words.is_empty() && naive_match(rest, &words[1..]),
            Some((w, rest)) => words.first() == Some(w) && naive_match(rest, &words[1..]),
        }
    }

    fn naive(binding_key: &str, routing_key: &str) -> bool {
        let pattern: Vec<&str> = words(binding_key).collect();
        let words: Vec<&str> = words(routing_key).collect();
        naive_match(&pattern, &words)
    }

    /// What RabbitMQ 3.10.8 answered: for each routing key, the binding keys (of the list
    /// below) whose queue received the message.
    const BINDING_KEYS: &[&str] = &[
        "", "#", "#.#", "*", "*.*", ".", "a.#.#.b", "#.a", "a.*.#", "a.#", "#.#.#", "*.#", "#.*",
        "a..b", "a.*.b", "a.", ".a", "a.#.b", "*.*.#", "#.a.#", "a.b.#",
    ];
    const RABBITMQ_ANSWERS: &[(&str, &[&str])] = &[
        ("", &["", "#", "#.#", "#.#.#"]),
        (
            ".",
            &["#", "#.#", "*.*", ".", "#.#.#", "*.#", "#.*", "*.*.#"],
        ),
        ("..", &["#", "#.#", "#.#.#", "*.#", "#.*", "*.*.#"]),
        (
            "a",
            &[
                "#", "#.#", "*", "#.a", "a.#", "#.#.#", "*.#", "#.*", "#.a.#",
            ],
        ),
        (
            "a.",
            &[
                "#", "#.#", "*.*", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "a.", "*.*.#", "#.a.#",
            ],
        ),
        (
            ".a",
            &[
                "#", "#.#", "*.*", "#.a", "#.#.#", "*.#", "#.*", ".a", "*.*.#", "#.a.#",
            ],
        ),
        (
            "a..b",
            &[
                "#", "#.#", "a.#.#.b", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "a..b", "a.*.b",
                "a.#.b", "*.*.#", "#.a.#",
            ],
        ),
        (
            "a.b",
            &[
                "#", "#.#", "*.*", "a.#.#.b", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "a.#.b",
                "*.*.#", "#.a.#", "a.b.#",
            ],
        ),
        (
            "a.x.b",
            &[
                "#", "#.#", "a.#.#.b", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "a.*.b", "a.#.b",
                "*.*.#", "#.a.#",
            ],
        ),
        (
            "a.x.y.b",
            &[
                "#", "#.#", "a.#.#.b", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "a.#.b", "*.*.#",
                "#.a.#",
            ],
        ),
        (
            "x.a",
            &[
                "#", "#.#", "*.*", "#.a", "#.#.#", "*.#", "#.*", "*.*.#", "#.a.#",
            ],
        ),
        (
            "a.x",
            &[
                "#", "#.#", "*.*", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "*.*.#", "#.a.#",
            ],
        ),
        (
            "a.x.y",
            &[
                "#", "#.#", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "*.*.#", "#.a.#",
            ],
        ),
        ("*", &["#", "#.#", "*", "#.#.#", "*.#", "#.*"]),
        ("#", &["#", "#.#", "*", "#.#.#", "*.#", "#.*"]),
        (
            "a.*",
            &[
                "#", "#.#", "*.*", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "*.*.#", "#.a.#",
            ],
        ),
        (
            "a.#",
            &[
                "#", "#.#", "*.*", "a.*.#", "a.#", "#.#.#", "*.#", "#.*", "*.*.#", "#.a.#",
            ],
        ),
        ("*.#", &["#", "#.#", "*.*", "#.#.#", "*.#", "#.*", "*.*.#"]),
        ("#.*", &["#", "#.#", "*.*", "#.#.#", "*.#", "#.*", "*.*.#"]),
    ];

    #[test]
    fn edge_cases_match_rabbitmq() {
        let mut r = TopicRouter::new();
        for (i, k) in BINDING_KEYS.iter().enumerate() {
            assert!(r.bind(i, &key(k), &FieldTable::new()));
        }
        for (routing_key, expected) in RABBITMQ_ANSWERS {
            let got: Vec<&str> = routed(&r, routing_key)
                .into_iter()
                .map(|i| BINDING_KEYS[i])
                .collect();
            let mut expected: Vec<&str> = expected.to_vec();
            expected.sort_by_key(|k| BINDING_KEYS.iter().position(|b| b == k));
            assert_eq!(got, expected, "routing key {routing_key:?}");
            for b in BINDING_KEYS {
                assert_eq!(
                    naive(b, routing_key),
                    expected.contains(b),
                    "naive matcher: {b:?} vs {routing_key:?}"
                );
            }
        }
    }

    #[test]
    fn plain_patterns() {
        let mut r = TopicRouter::new();
        let none = FieldTable::new();
        assert!(r.bind("stock", &key("stock.*.nyse"), &none));
        assert!(r.bind("all", &key("#"), &none));
        assert!(r.bind("usd", &key("stock.usd.#"), &none));
        assert!(r.bind("exact", &key("stock.usd.nyse"), &none));
        assert_eq!(
            routed(&r, "stock.usd.nyse"),
            vec!["all", "exact", "stock", "usd"]
        );
        assert_eq!(routed(&r, "stock.eur.nyse"), vec!["all", "stock"]);
        assert_eq!(routed(&r, "stock.usd"), vec!["all", "usd"]);
        assert_eq!(routed(&r, "stock.nyse"), vec!["all"]);
        assert_eq!(routed(&r, "stock"), vec!["all"]);
    }

    #[test]
    fn a_destination_bound_through_two_patterns_may_come_twice() {
        let mut r = TopicRouter::new();
        let none = FieldTable::new();
        assert!(r.bind(1, &key("a.*"), &none));
        assert!(r.bind(1, &key("*.b"), &none));
        let mut out = Vec::new();
        r.route("a.b", None, &mut out);
        assert_eq!(out, vec![1, 1]);
    }

    #[test]
    fn arguments_are_identity_only() {
        let mut r = TopicRouter::new();
        let args = FieldTable(vec![(key("x"), FieldValue::Bool(true))]);
        assert!(r.bind(1, &key("a.#"), &FieldTable::new()));
        assert!(r.bind(1, &key("a.#"), &args));
        assert!(r.unbind(&1, &key("a.#"), &FieldTable::new()));
        assert_eq!(routed(&r, "a.b"), vec![1]);
        assert!(r.unbind(&1, &key("a.#"), &args));
        assert_eq!(routed(&r, "a.b"), Vec::<i32>::new());
    }

    #[test]
    fn unbinding_frees_the_trie() {
        let mut r = TopicRouter::new();
        let none = FieldTable::new();
        assert!(r.bind(1, &key("a.b.c"), &none));
        assert!(r.bind(2, &key("a.#.*"), &none));
        assert!(r.bind(2, &key("a.b"), &none));
        assert_eq!(r.live_nodes(), 1 + 3 + 2);
        assert!(!r.unbind(&1, &key("a.b"), &none));
        assert!(r.unbind(&1, &key("a.b.c"), &none));
        assert_eq!(r.live_nodes(), 1 + 2 + 2);
        assert_eq!(r.unbind_destination(&2), 2);
        assert_eq!(r.live_nodes(), 1);
        assert!(!r.has_bindings());
        assert!(r.bind(3, &key("x.y.z"), &none));
        assert_eq!(r.nodes.len(), 6, "freed nodes are reused");
        assert_eq!(routed(&r, "x.y.z"), vec![3]);
    }

    #[test]
    fn ten_thousand_bindings_route_by_trie() {
        let mut r = TopicRouter::new();
        let none = FieldTable::new();
        for i in 0..10_000u32 {
            let k = format!("orders.{}.{}", i % 100, i);
            assert!(r.bind(i, &key(&k), &none));
        }
        assert!(r.bind(10_000, &key("orders.*.77"), &none));
        assert!(r.bind(10_001, &key("orders.5.#"), &none));
        assert_eq!(routed(&r, "orders.77.77"), vec![77, 10_000]);
        assert_eq!(routed(&r, "orders.5.77"), vec![10_000, 10_001]);
        assert_eq!(routed(&r, "orders.5.105"), vec![105, 10_001]);
        assert_eq!(routed(&r, "orders.6.105"), Vec::<u32>::new());
    }

    #[test]
    fn many_hashes_do_not_blow_up() {
        // A backtracking matcher tries every way to split 60 words among 30 `#`s.
        let mut r = TopicRouter::new();
        let pattern = vec!["#"; 30].join(".") + ".end";
        assert!(r.bind(1, &key(&pattern), &FieldTable::new()));
        assert!(r.bind(2, &key(&vec!["#.x"; 20].join(".")), &FieldTable::new()));
        let long = vec!["w"; 60].join(".");
        assert_eq!(routed(&r, &long), Vec::<i32>::new());
        assert_eq!(routed(&r, &(long.clone() + ".end")), vec![1]);
        assert_eq!(routed(&r, &vec!["x"; 60].join(".")), vec![2]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Bind(u8, String, bool),
        Unbind(u8, String, bool),
        UnbindDestination(u8),
        Route(String),
    }

    fn topic_key() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "", "*", "#"]), 0..5)
            .prop_map(|w| w.join("."))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..4u8, topic_key(), any::<bool>()).prop_map(|(d, k, a)| Op::Bind(d, k, a)),
            1 => (0..4u8, topic_key(), any::<bool>()).prop_map(|(d, k, a)| Op::Unbind(d, k, a)),
            1 => (0..4u8).prop_map(Op::UnbindDestination),
            4 => topic_key().prop_map(Op::Route),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn trie_agrees_with_naive_matcher(ops in prop::collection::vec(op(), 1..60)) {
            let args = |with: bool| {
                if with {
                    FieldTable(vec![(key("x-arg"), FieldValue::I8(1))])
                } else {
                    FieldTable::new()
                }
            };
            let mut r = TopicRouter::new();
            let mut model: Vec<(u8, String, bool)> = Vec::new();
            for op in ops {
                match op {
                    Op::Bind(d, k, a) => {
                        let fresh = !model.contains(&(d, k.clone(), a));
                        prop_assert_eq!(r.bind(d, &key(&k), &args(a)), fresh);
                        if fresh {
                            model.push((d, k, a));
                        }
                    }
                    Op::Unbind(d, k, a) => {
                        let at = model.iter().position(|b| *b == (d, k.clone(), a));
                        prop_assert_eq!(r.unbind(&d, &key(&k), &args(a)), at.is_some());
                        if let Some(at) = at {
                            model.remove(at);
                        }
                    }
                    Op::UnbindDestination(d) => {
                        let before = model.len();
                        model.retain(|b| b.0 != d);
                        prop_assert_eq!(r.unbind_destination(&d), before - model.len());
                    }
                    Op::Route(k) => {
                        let mut out = Vec::new();
                        r.route(&k, None, &mut out);
                        let mut counts: Map<u8, usize> = Map::new();
                        for d in &out {
                            *counts.entry(*d).or_default() += 1;
                        }
                        let expected: BTreeSet<u8> = model
                            .iter()
                            .filter(|b| naive(&b.1, &k))
                            .map(|b| b.0)
                            .collect();
                        prop_assert_eq!(counts.keys().copied().collect::<BTreeSet<u8>>(), expected);
                        for (d, n) in counts {
                            let bound = model.iter().filter(|b| b.0 == d).count();
                            prop_assert!(n <= bound, "{} copies for {} bindings", n, bound);
                        }
                    }
                }
                let listed: Vec<(u8, String, bool)> = r
                    .bindings()
                    .into_iter()
                    .map(|(d, b)| (d, b.routing_key.as_str().to_owned(), !b.arguments.is_empty()))
                    .collect();
                prop_assert_eq!(&listed, &model, "insertion order kept");
                prop_assert_eq!(r.has_bindings(), !model.is_empty());
                for d in 0..4u8 {
                    prop_assert_eq!(r.has_destination(&d), model.iter().any(|b| b.0 == d));
                }
            }
            prop_assert_eq!(r.unbind_destination(&0) + r.unbind_destination(&1)
                + r.unbind_destination(&2) + r.unbind_destination(&3), model.len());
            prop_assert_eq!(r.live_nodes(), 1, "an empty router has only its root");
        }
    }
}
