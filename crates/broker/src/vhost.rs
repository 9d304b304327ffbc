//! A virtual host: its exchanges, queues and bindings, declaration rules, the policies that
//! apply to its queues and exchanges, and routing. Knows nothing of frames or sockets; the
//! server calls it from channel handlers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use store::{BindingDef, ExchangeDef, QueueDef};

use crate::dead_letter::DeadLetterTarget;
use crate::delayed::{DelayedExchange, Hold};
use crate::durability::Durability;
use crate::error::{AmqpException, AmqpResult};
use crate::exchange::{delay_of, BindingKey, ExchangeKind, InvalidExchange, Router};
use crate::message::Message;
use crate::names::generate_name;
use crate::policies::{Policies, Policy};
use crate::queue::{
    Lifetimes, Overflow, QueueConfig, QueueHandle, QueueLimits, QueueRef, QueueSettings,
};

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(ShortStr),
    Exchange(ShortStr),
}

/// The exchange a publisher used last, with the vhost's removal count when it was looked up.
#[derive(Default)]
pub struct ExchangeCache {
    last: Option<(u64, Arc<Exchange>)>,
}

pub struct Exchange {
    pub name: ShortStr,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    router: RwLock<Box<dyn Router<Destination>>>,
    /// What a delayed-message exchange holds until it is due.
    pub(crate) delayed: Option<DelayedExchange>,
    policy: RwLock<ExchangePolicy>,
}

/// The policy that applies to an exchange and the alternate exchange it makes of the
/// exchange's arguments (the argument wins, as in RabbitMQ).
#[derive(Default)]
struct ExchangePolicy {
    policy: Option<Arc<Policy>>,
    alternate_exchange: Option<ShortStr>,
}

impl ExchangePolicy {
    fn new(policy: Option<Arc<Policy>>, arguments: &FieldTable) -> Self {
        let alternate = |arguments: &FieldTable| {
            let name = arguments.get("alternate-exchange")?.as_str()?;
            ShortStr::new(name).ok()
        };
        let alternate_exchange = match &policy {
            Some(policy) => alternate(&policy.merged_into(arguments)),
            None => alternate(arguments),
        };
        ExchangePolicy {
            policy,
            alternate_exchange,
        }
    }
}

impl Exchange {
    /// An exchange with no bindings; refuses arguments its kind cannot work with.
    fn new(
        name: ShortStr,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Result<Self, InvalidExchange> {
        Ok(Exchange {
            router: RwLock::new(kind.router(&arguments)?),
            delayed: None,
            policy: RwLock::new(ExchangePolicy::new(None, &arguments)),
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
        })
    }

    pub fn is_default(&self) -> bool {
        self.name.is_empty()
    }

    /// Where messages this exchange routes nowhere go: its `alternate-exchange` argument, or
    /// its policy's.
    pub fn alternate_exchange(&self) -> Option<ShortStr> {
        self.policy.read().alternate_exchange.clone()
    }

    /// The policy that applies to the exchange, if any.
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.policy.read().policy.clone()
    }

    fn has_policy(&self, policy: Option<&Arc<Policy>>) -> bool {
        match (&self.policy.read().policy, policy) {
            (Some(current), Some(policy)) => Arc::ptr_eq(current, policy),
            (current, policy) => current.is_none() && policy.is_none(),
        }
    }

    fn set_policy(&self, policy: Option<Arc<Policy>>) {
        *self.policy.write() = ExchangePolicy::new(policy, &self.arguments);
    }

    pub fn bindings(&self) -> Vec<(Destination, BindingKey)> {
        self.router.read().bindings()
    }
}

/// Declaration parameters of exchange.declare, minus `passive` and `no_wait`.
pub struct ExchangeDeclaration<'a> {
    pub name: &'a ShortStr,
    pub kind: &'a str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: &'a FieldTable,
}

/// Declaration parameters of queue.declare, minus `passive` and `no_wait`.
pub struct QueueDeclaration<'a> {
    pub name: &'a ShortStr,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: &'a FieldTable,
}

/// Queue arguments that must match on redeclaration (RabbitMQ's equivalence check).
const QUEUE_EQUIVALENT_ARGUMENTS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-delivery-limit",
];

pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

pub struct VHost {
    name: String,
    /// Where durable definitions and messages go; `None` for a broker without a data dir.
    pub(crate) durability: Option<Arc<Durability>>,
    exchanges: RwLock<HashMap<ShortStr, Arc<Exchange>>>,
    /// Counts exchange removals, so that a channel's `ExchangeCache` knows when to look again.
    exchange_removals: AtomicU64,
    queues: RwLock<HashMap<ShortStr, QueueRef>>,
    /// The broker's policies (each vhost looks up its own).
    policies: Arc<Policies>,
    /// One application of changed policies at a time, so that the last one wins.
    applying_policies: Mutex<()>,
    self_ref: Weak<VHost>,
}

/// Name equality for the publish path: most publishes name the default exchange, and a
/// zero-length comparison through `memcmp` showed up in profiles of every publish.
fn same_name(name: &ShortStr, other: &str) -> bool {
    name.len() == other.len() && (other.is_empty() || name.as_bytes() == other.as_bytes())
}

fn reserved(name: &str) -> bool {
    name.starts_with("amq.")
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

impl VHost {
    /// A vhost with the default exchange and the predeclared `amq.*` exchanges.
    pub fn new(name: &str) -> Arc<VHost> {
        Self::with_durability(name, None)
    }

    pub fn with_durability(name: &str, durability: Option<Arc<Durability>>) -> Arc<VHost> {
        Self::with_policies(name, durability, Arc::default())
    }

    /// A vhost of a broker: its queues and exchanges follow the broker's `policies`.
    pub fn with_policies(
        name: &str,
        durability: Option<Arc<Durability>>,
        policies: Arc<Policies>,
    ) -> Arc<VHost> {
        let vhost = Arc::new_cyclic(|self_ref| VHost {
            name: name.to_string(),
            durability,
            exchanges: RwLock::new(HashMap::new()),
            exchange_removals: AtomicU64::new(0),
            queues: RwLock::new(HashMap::new()),
            policies,
            applying_policies: Mutex::new(()),
            self_ref: self_ref.clone(),
        });
        let predeclared = [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ];
        {
            let mut exchanges = vhost.exchanges.write();
            for (name, kind) in predeclared {
                let name = ShortStr::from_static(name);
                // Built-in kinds take any arguments.
                if let Ok(exchange) =
                    Exchange::new(name.clone(), kind, true, false, false, FieldTable::new())
                {
                    exchanges.insert(name, Arc::new(exchange));
                }
            }
        }
        vhost
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.read().get(name).cloned()
    }

    /// `existing_exchange` for a publisher, which names the same exchange publish after
    /// publish: the cache answers until an exchange of the vhost is removed.
    pub fn cached_exchange(
        &self,
        cache: &mut ExchangeCache,
        name: &str,
    ) -> AmqpResult<Arc<Exchange>> {
        let removals = self.exchange_removals.load(Ordering::Acquire);
        if let Some((seen_removals, exchange)) = &cache.last {
            if *seen_removals == removals && same_name(&exchange.name, name) {
                return Ok(exchange.clone());
            }
        }
        let exchange = self.existing_exchange(name)?;
        cache.last = Some((removals, exchange.clone()));
        Ok(exchange)
    }

    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    pub fn queues(&self) -> Vec<QueueRef> {
        self.queues.read().values().cloned().collect()
    }

    fn no_exchange(&self, name: &str) -> AmqpException {
        AmqpException::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> AmqpException {
        AmqpException::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    /// Looks up an exchange that exists, for publish, bind and passive declare.
    pub fn existing_exchange(&self, name: &str) -> AmqpResult<Arc<Exchange>> {
        self.exchange(name).ok_or_else(|| self.no_exchange(name))
    }

    pub fn declare_exchange(&self, d: ExchangeDeclaration<'_>, passive: bool) -> AmqpResult<()> {
        let name = d.name.as_str();
        let default_exchange_refused =
            || AmqpException::access_refused("operation not permitted on the default exchange");
        if passive {
            // RabbitMQ refuses even to check the default exchange's existence.
            if name.is_empty() {
                return Err(default_exchange_refused());
            }
            return self.existing_exchange(name).map(drop);
        }
        // Later RabbitMQ versions close the channel (406), not the connection, for this.
        let kind = ExchangeKind::parse(d.kind).ok_or_else(|| {
            AmqpException::precondition_failed(format!("unknown exchange type '{}'", d.kind))
        })?;
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if let Some(existing) = self.exchange(name) {
            return self.check_exchange_equivalence(&existing, kind, &d);
        }
        if reserved(name) {
            return Err(AmqpException::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut exchanges = self.exchanges.write();
        if let Some(existing) = exchanges.get(name) {
            return self.check_exchange_equivalence(existing, kind, &d);
        }
        let exchange = self.new_exchange(
            d.name.clone(),
            kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        )?;
        if let Some(delayed) = &exchange.delayed {
            delayed.start();
        }
        exchanges.insert(d.name.clone(), Arc::new(exchange));
        drop(exchanges);
        if d.durable {
            self.definitions_changed();
        }
        Ok(())
    }

    /// An exchange of this vhost, with the policy that applies to it and the holder a
    /// delayed-message exchange keeps its messages in (not started yet).
    fn new_exchange(
        &self,
        name: ShortStr,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> AmqpResult<Exchange> {
        let mut exchange = Exchange::new(name, kind, durable, auto_delete, internal, arguments)
            .map_err(|refused| match refused {
                InvalidExchange::PreconditionFailed(text) => {
                    AmqpException::precondition_failed(text)
                }
                InvalidExchange::InternalError(text) => AmqpException::internal_error(text),
            })?;
        if let Some(policy) = self.policies.for_exchange(&self.name, &exchange.name) {
            exchange.set_policy(Some(policy));
        }
        if kind == ExchangeKind::DelayedMessage {
            exchange.delayed = Some(DelayedExchange::new(
                self.self_ref.clone(),
                &self.name,
                &exchange.name,
                durable,
                self.durability.clone(),
            ));
        }
        Ok(exchange)
    }

    /// Starts the delayed-message exchanges restored from definitions, once their bindings
    /// are restored too (messages already due must find their queues).
    pub fn start_delayed_exchanges(&self) {
        for exchange in self.exchanges() {
            if let Some(delayed) = &exchange.delayed {
                delayed.start();
            }
        }
    }

    /// Messages a delayed-message exchange holds (RabbitMQ's `messages_delayed`).
    pub fn messages_delayed(&self, exchange: &str) -> Option<u64> {
        let exchange = self.exchange(exchange)?;
        exchange
            .delayed
            .as_ref()
            .map(DelayedExchange::messages_delayed)
    }

    fn check_exchange_equivalence(
        &self,
        existing: &Exchange,
        kind: ExchangeKind,
        d: &ExchangeDeclaration<'_>,
    ) -> AmqpResult<()> {
        let mismatch = |arg: &str, received: &str, current: &str| {
            AmqpException::precondition_failed(format!(
                "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{received}' but current is '{current}'",
                existing.name, self.name
            ))
        };
        if existing.kind != kind {
            return Err(mismatch("type", kind.as_str(), existing.kind.as_str()));
        }
        if existing.durable != d.durable {
            return Err(mismatch(
                "durable",
                bool_text(d.durable),
                bool_text(existing.durable),
            ));
        }
        if existing.auto_delete != d.auto_delete {
            return Err(mismatch(
                "auto_delete",
                bool_text(d.auto_delete),
                bool_text(existing.auto_delete),
            ));
        }
        if existing.internal != d.internal {
            return Err(mismatch(
                "internal",
                bool_text(d.internal),
                bool_text(existing.internal),
            ));
        }
        let received = d.arguments.get("alternate-exchange");
        let current = existing.arguments.get("alternate-exchange");
        if received != current {
            return Err(self.inequivalent_argument(
                "exchange",
                &existing.name,
                "alternate-exchange",
                received,
                current,
            ));
        }
        Ok(())
    }

    fn inequivalent_argument(
        &self,
        what: &str,
        name: &str,
        arg: &str,
        received: Option<&FieldValue>,
        current: Option<&FieldValue>,
    ) -> AmqpException {
        let detail = match (received, current) {
            (Some(r), Some(c)) if r.tag() == c.tag() => {
                format!(
                    "received '{}' but current is '{}'",
                    render_value(r),
                    render_value(c)
                )
            }
            _ => format!(
                "received {} but current is {}",
                describe_value(received),
                describe_value(current)
            ),
        };
        AmqpException::precondition_failed(format!(
            "inequivalent arg '{arg}' for {what} '{name}' in vhost '{}': {detail}",
            self.name
        ))
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(AmqpException::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if reserved(name) {
            return Err(AmqpException::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let mut exchanges = self.exchanges.write();
        let Some(exchange) = exchanges.get(name) else {
            // RabbitMQ answers delete-ok for a missing exchange.
            return Ok(());
        };
        if if_unused && exchange.router.read().has_bindings() {
            return Err(AmqpException::precondition_failed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        let durable = exchange.durable;
        if let Some(delayed) = exchanges
            .remove(name)
            .as_ref()
            .and_then(|x| x.delayed.as_ref())
        {
            delayed.discard();
        }
        self.exchange_removals.fetch_add(1, Ordering::Release);
        let destination = Destination::Exchange(ShortStr::new(name).unwrap_or_default());
        drop(exchanges);
        self.remove_bindings_to(&destination);
        if durable {
            self.definitions_changed();
        }
        Ok(())
    }

    /// Removes bindings whose destination is gone, then auto-delete exchanges left unbound.
    fn remove_bindings_to(&self, destination: &Destination) {
        let mut emptied = Vec::new();
        for exchange in self.exchanges.read().values() {
            let mut router = exchange.router.write();
            if router.unbind_destination(destination) > 0
                && exchange.auto_delete
                && !router.has_bindings()
            {
                emptied.push(exchange.name.clone());
            }
        }
        for name in emptied {
            self.auto_delete_exchange(&name);
        }
    }

    fn auto_delete_exchange(&self, name: &ShortStr) {
        let removed = self.exchanges.write().remove(name.as_str());
        self.exchange_removals.fetch_add(1, Ordering::Release);
        if let Some(exchange) = removed {
            if let Some(delayed) = &exchange.delayed {
                delayed.discard();
            }
            self.remove_bindings_to(&Destination::Exchange(name.clone()));
            if exchange.durable {
                self.definitions_changed();
            }
        }
    }

    fn definitions_changed(&self) {
        if let Some(durability) = &self.durability {
            durability.definitions_changed();
        }
    }

    /// Whether a binding's destination outlives a restart (so the binding must too).
    pub fn is_durable_destination(&self, destination: &Destination) -> bool {
        match destination {
            Destination::Queue(name) => self
                .queues
                .read()
                .get(name.as_str())
                .is_some_and(|q| q.is_persistent_definition()),
            Destination::Exchange(name) => self.exchange(name).is_some_and(|x| x.durable),
        }
    }

    /// A binding change between durable ends must reach definitions.json.
    fn binding_changed(&self, source: &Exchange, destination: &Destination) {
        if source.durable && self.is_durable_destination(destination) {
            self.definitions_changed();
        }
    }

    fn bindable_source(&self, name: &str) -> AmqpResult<Arc<Exchange>> {
        if name.is_empty() {
            return Err(AmqpException::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        self.existing_exchange(name)
    }

    pub fn bind_queue(
        &self,
        queue: &QueueRef,
        exchange: &str,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> AmqpResult<()> {
        let source = self.bindable_source(exchange)?;
        let destination = Destination::Queue(queue.name.clone());
        let mut router = source.router.write();
        router
            .validate_binding(routing_key, arguments)
            .map_err(AmqpException::precondition_failed)?;
        let added = router.bind(destination.clone(), routing_key, arguments);
        drop(router);
        if added {
            self.binding_changed(&source, &destination);
        }
        Ok(())
    }

    pub fn unbind_queue(
        &self,
        queue: &QueueRef,
        exchange: &str,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> AmqpResult<()> {
        let source = self.bindable_source(exchange)?;
        let destination = Destination::Queue(queue.name.clone());
        let (removed, emptied) = {
            let mut router = source.router.write();
            let removed = router.unbind(&destination, routing_key, arguments);
            (removed, removed && !router.has_bindings())
        };
        if removed {
            self.binding_changed(&source, &destination);
        }
        if emptied && source.auto_delete {
            self.auto_delete_exchange(&source.name);
        }
        Ok(())
    }

    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> AmqpResult<()> {
        let destination_exchange = self.bindable_source(destination)?;
        let source = self.bindable_source(source)?;
        let destination = Destination::Exchange(destination_exchange.name.clone());
        let mut router = source.router.write();
        router
            .validate_binding(routing_key, arguments)
            .map_err(AmqpException::precondition_failed)?;
        let added = router.bind(destination.clone(), routing_key, arguments);
        drop(router);
        if added {
            self.binding_changed(&source, &destination);
        }
        Ok(())
    }

    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &ShortStr,
        arguments: &FieldTable,
    ) -> AmqpResult<()> {
        let destination_exchange = self.bindable_source(destination)?;
        let source = self.bindable_source(source)?;
        let destination = Destination::Exchange(destination_exchange.name.clone());
        let (removed, emptied) = {
            let mut router = source.router.write();
            let removed = router.unbind(&destination, routing_key, arguments);
            (removed, removed && !router.has_bindings())
        };
        if removed {
            self.binding_changed(&source, &destination);
        }
        if emptied && source.auto_delete {
            self.auto_delete_exchange(&source.name);
        }
        Ok(())
    }

    /// Finds a queue the connection may use: an exclusive queue of another connection is locked.
    pub fn queue(&self, name: &str, connection_id: u64) -> AmqpResult<QueueRef> {
        let queue = self
            .queues
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_queue(name))?;
        self.check_exclusive_access(&queue, connection_id)?;
        Ok(queue)
    }

    fn check_exclusive_access(&self, queue: &QueueHandle, connection_id: u64) -> AmqpResult<()> {
        match queue.config.exclusive_owner {
            Some(owner) if owner != connection_id => Err(self.locked(&queue.name)),
            _ => Ok(()),
        }
    }

    fn locked(&self, name: &str) -> AmqpException {
        AmqpException::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            self.name
        ))
    }

    /// queue.declare. An empty name gets a server-generated `amq.gen-…` name.
    pub fn declare_queue(
        &self,
        d: QueueDeclaration<'_>,
        passive: bool,
        connection_id: u64,
    ) -> AmqpResult<QueueRef> {
        if passive {
            let queue = self.queue(d.name, connection_id)?;
            queue.declared_again();
            return Ok(queue);
        }
        let name = self.queue_name_to_declare(d.name)?;
        self.declare_named_queue(name, d, connection_id)
    }

    /// The name a non-passive queue.declare creates: a generated `amq.gen-…` for an empty
    /// one; names with the reserved prefix are refused.
    pub fn queue_name_to_declare(&self, requested: &ShortStr) -> AmqpResult<ShortStr> {
        if requested.is_empty() {
            return Ok(generate_name("amq.gen-"));
        }
        if reserved(requested) {
            return Err(AmqpException::access_refused(format!(
                "queue name '{requested}' contains reserved prefix 'amq.*'"
            )));
        }
        Ok(requested.clone())
    }

    /// `declare_queue` (not passive) under a name from `queue_name_to_declare`.
    pub fn declare_named_queue(
        &self,
        name: ShortStr,
        d: QueueDeclaration<'_>,
        connection_id: u64,
    ) -> AmqpResult<QueueRef> {
        let declared = queue_arguments(d.arguments)
            .map_err(|error| error.into_exception(&name, &self.name))?;
        let mut queues = self.queues.write();
        if let Some(existing) = queues.get(name.as_str()) {
            self.check_exclusive_access(existing, connection_id)?;
            if existing.is_exclusive() != d.exclusive {
                return Err(self.locked(&name));
            }
            self.check_queue_equivalence(existing, &d)?;
            existing.declared_again();
            return Ok(existing.clone());
        }
        let config = QueueConfig {
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(connection_id),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            max_priority: declared.max_priority,
            single_active_consumer: declared.single_active_consumer,
        };
        // Looked up under the lock: a policy change either sees this queue or came first.
        let queue = self.spawn_queue(name.clone(), config, declared.settings);
        queues.insert(name, queue.clone());
        drop(queues);
        if queue.is_persistent_definition() {
            self.definitions_changed();
        }
        // Every queue is bound to the default exchange implicitly; routing looks it up by name.
        Ok(queue)
    }

    fn check_queue_equivalence(
        &self,
        existing: &QueueHandle,
        d: &QueueDeclaration<'_>,
    ) -> AmqpResult<()> {
        let config = &existing.config;
        let mismatch = |arg: &str, received: bool, current: bool| {
            AmqpException::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received '{}' but current is '{}'",
                existing.name,
                self.name,
                bool_text(received),
                bool_text(current)
            ))
        };
        if config.durable != d.durable {
            return Err(mismatch("durable", d.durable, config.durable));
        }
        if config.auto_delete != d.auto_delete {
            return Err(mismatch("auto_delete", d.auto_delete, config.auto_delete));
        }
        for arg in QUEUE_EQUIVALENT_ARGUMENTS {
            let received = d.arguments.get(arg);
            let current = config.arguments.get(arg);
            if !same_argument(received, current) {
                return Err(self.inequivalent_argument(
                    "queue",
                    &existing.name,
                    arg,
                    received,
                    current,
                ));
            }
        }
        Ok(())
    }

    /// Removes a queue from the registry and every binding to it. Called by the queue's owner
    /// task when it is deleted, whatever the reason.
    pub fn unregister_queue(&self, queue: &QueueHandle) {
        {
            let mut queues = self.queues.write();
            match queues.get(queue.name.as_str()) {
                Some(current) if std::ptr::eq(Arc::as_ptr(current), queue) => {
                    queues.remove(queue.name.as_str());
                }
                _ => return,
            }
        }
        self.remove_bindings_to(&Destination::Queue(queue.name.clone()));
        if queue.is_persistent_definition() {
            self.definitions_changed();
        }
    }

    /// Starts a queue of this vhost (its owner task knows the vhost and the data directory),
    /// with the policy that applies to it merged into `own`, what its arguments make of it.
    fn spawn_queue(&self, name: ShortStr, config: QueueConfig, own: QueueSettings) -> QueueRef {
        let policy = self.policies.for_queue(&self.name, &name);
        let settings = settings_under(policy.as_deref(), &config.arguments, own);
        QueueHandle::spawn(
            name,
            config,
            settings,
            policy,
            self.self_ref.clone(),
            self.durability.clone(),
        )
    }

    /// The consumer priority (`x-priority`) a basic.consume on `queue` asks for: 0 without;
    /// anything but an integer is refused, in RabbitMQ's words.
    pub fn consumer_priority(&self, arguments: &FieldTable, queue: &str) -> AmqpResult<i32> {
        let Some(value) = arguments.get("x-priority") else {
            return Ok(0);
        };
        let priority = value.as_i64().ok_or_else(|| {
            ArgumentError::Invalid {
                arg: "x-priority",
                detail: format!("\"expected integer, got {}\"", value.type_name()),
            }
            .into_exception(queue, &self.name)
        })?;
        // Only the order of priorities matters; none a client uses is beyond i32.
        Ok(priority.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
    }

    /// Gives every queue and exchange of the vhost the policy that applies to it now (after a
    /// policy was added, changed or deleted). A queue whose settings change applies them at
    /// once: a lower drop-head limit trims it, a lifted limit lets it grow, a new dead-letter
    /// exchange takes its next dead messages.
    pub fn apply_policies(&self) {
        let _one_at_a_time = self.applying_policies.lock();
        for queue in self.queues() {
            let policy = self.policies.for_queue(&self.name, &queue.name);
            if queue.has_policy(policy.as_ref()) {
                continue;
            }
            // The arguments were checked when the queue was declared.
            let Ok(declared) = queue_arguments(&queue.config.arguments) else {
                continue;
            };
            let settings = settings_under(
                policy.as_deref(),
                &queue.config.arguments,
                declared.settings,
            );
            queue.set_policy(policy, settings);
        }
        for exchange in self.exchanges() {
            if exchange.is_default() {
                continue;
            }
            let policy = self.policies.for_exchange(&self.name, &exchange.name);
            if !exchange.has_policy(policy.as_ref()) {
                exchange.set_policy(policy);
            }
        }
    }

    /// Recreates a durable exchange from definitions (startup or import).
    pub fn restore_exchange(&self, def: &ExchangeDef, arguments: FieldTable) -> AmqpResult<()> {
        let name = ShortStr::new(def.name.as_str())
            .map_err(|_| AmqpException::precondition_failed("exchange name too long"))?;
        let kind = ExchangeKind::parse(&def.exchange_type).ok_or_else(|| {
            AmqpException::precondition_failed(format!(
                "unknown exchange type '{}'",
                def.exchange_type
            ))
        })?;
        let exchange = self.new_exchange(
            name.clone(),
            kind,
            def.durable,
            def.auto_delete,
            def.internal,
            arguments,
        )?;
        self.exchanges
            .write()
            .entry(name)
            .or_insert_with(|| Arc::new(exchange));
        Ok(())
    }

    /// Recreates a durable queue from definitions; its task recovers the logged messages.
    pub fn restore_queue(&self, def: &QueueDef, arguments: FieldTable) -> AmqpResult<()> {
        let name = ShortStr::new(def.name.as_str())
            .map_err(|_| AmqpException::precondition_failed("queue name too long"))?;
        let declared =
            queue_arguments(&arguments).map_err(|error| error.into_exception(&name, &self.name))?;
        let mut queues = self.queues.write();
        if queues.contains_key(name.as_str()) {
            return Ok(());
        }
        let config = QueueConfig {
            durable: def.durable,
            exclusive_owner: None,
            auto_delete: def.auto_delete,
            arguments,
            max_priority: declared.max_priority,
            single_active_consumer: declared.single_active_consumer,
        };
        let queue = self.spawn_queue(name.clone(), config, declared.settings);
        queues.insert(name, queue);
        Ok(())
    }

    pub fn restore_binding(&self, def: &BindingDef, arguments: &FieldTable) -> AmqpResult<()> {
        let routing_key = ShortStr::new(def.routing_key.as_str())
            .map_err(|_| AmqpException::precondition_failed("routing key too long"))?;
        match def.destination_type.as_str() {
            "queue" => {
                let queue = self.queue(&def.destination, 0)?;
                self.bind_queue(&queue, &def.source, &routing_key, arguments)
            }
            _ => self.bind_exchange(&def.destination, &def.source, &routing_key, arguments),
        }
    }

    /// Stops every queue, closing their logs cleanly.
    pub async fn shutdown(&self) {
        // Delayed exchanges first: they must not route into queues that are stopping.
        for exchange in self.exchanges() {
            if let Some(delayed) = &exchange.delayed {
                delayed.shutdown().await;
            }
        }
        for queue in self.queues() {
            queue.shutdown().await;
        }
    }

    /// Deletes the exclusive queues of a connection that closed.
    pub async fn connection_closed(&self, connection_id: u64) {
        let owned: Vec<QueueRef> = self
            .queues
            .read()
            .values()
            .filter(|q| q.config.exclusive_owner == Some(connection_id))
            .cloned()
            .collect();
        for queue in owned {
            let _ = queue.delete(false, false).await;
        }
    }

    /// Every queue a message published to `exchange` with `routing_key` goes to, following
    /// exchange-to-exchange bindings and alternate exchanges. `out` gets each queue once.
    pub fn route(
        &self,
        exchange: &Arc<Exchange>,
        routing_key: &str,
        properties: &Bytes,
        out: &mut Vec<QueueRef>,
    ) {
        let keys = RoutingKeys {
            first: routing_key,
            extra: &[],
        };
        self.route_keys(exchange, keys, LazyHeaders::new(properties, None), out);
    }

    /// `route` for a message with all its routing keys (CC and BCC ones too: sender-selected
    /// distribution routes the message once per key, to each queue once). Delayed exchanges on
    /// the way that are to hold it get it now, with nobody waiting for a confirm.
    pub fn route_message(
        &self,
        exchange: &Arc<Exchange>,
        message: &Message,
        out: &mut Vec<QueueRef>,
    ) {
        let mut held = Vec::new();
        self.route_publish(exchange, message, out, &mut held);
        for hold in held {
            hold.hold(message, None);
        }
    }

    /// `route_message` for a publisher that may wait for a confirm: the delayed exchanges on
    /// the way that are to hold the message are left in `held`, for the publisher to hand the
    /// message over with its confirm token (`Hold::hold`).
    pub fn route_publish(
        &self,
        exchange: &Arc<Exchange>,
        message: &Message,
        out: &mut Vec<QueueRef>,
        held: &mut Vec<Hold>,
    ) {
        let keys = RoutingKeys {
            first: &message.routing_key,
            extra: message.extra_routing_keys(),
        };
        let message_at_hand = LazyHeaders::new(&message.properties, Some(held));
        self.route_keys(exchange, keys, message_at_hand, out);
    }

    fn route_keys(
        &self,
        exchange: &Arc<Exchange>,
        keys: RoutingKeys<'_>,
        mut headers: LazyHeaders<'_>,
        out: &mut Vec<QueueRef>,
    ) {
        if exchange.is_default() {
            let queues = self.queues.read();
            for key in keys.iter() {
                if let Some(queue) = queues.get(key) {
                    if !out.iter().any(|q| Arc::ptr_eq(q, queue)) {
                        out.push(queue.clone());
                    }
                }
            }
            return;
        }
        let mut visited: Vec<ShortStr> = Vec::new();
        self.route_exchange(exchange, keys, &mut headers, &mut visited, out);
    }

    fn route_exchange(
        &self,
        exchange: &Exchange,
        keys: RoutingKeys<'_>,
        headers: &mut LazyHeaders<'_>,
        visited: &mut Vec<ShortStr>,
        out: &mut Vec<QueueRef>,
    ) {
        if visited.contains(&exchange.name) {
            return;
        }
        visited.push(exchange.name.clone());
        let mut destinations = Vec::new();
        if !hold_for_later(exchange, headers) {
            let router = exchange.router.read();
            let properties = if router.reads_properties() {
                headers.properties()
            } else {
                None
            };
            for key in keys.iter() {
                router.route_message(key, properties, &mut destinations);
            }
        }
        // As in RabbitMQ, the alternate exchange takes what this exchange's own bindings
        // match nothing of; a match with an exchange that routes nowhere is still a match.
        if destinations.is_empty() {
            if let Some(alternate) = exchange
                .alternate_exchange()
                .and_then(|a| self.exchange(&a))
            {
                self.route_exchange(&alternate, keys, headers, visited, out);
            }
            return;
        }
        for destination in destinations {
            match destination {
                Destination::Queue(name) => {
                    if let Some(queue) = self.queues.read().get(name.as_str()) {
                        if !out.iter().any(|q| Arc::ptr_eq(q, queue)) {
                            out.push(queue.clone());
                        }
                    }
                }
                Destination::Exchange(name) => {
                    if let Some(next) = self.exchange(&name) {
                        self.route_exchange(&next, keys, headers, visited, out);
                    }
                }
            }
        }
    }
}

/// The routing keys of one publish: the one it was published with, then its CC and BCC ones.
#[derive(Clone, Copy)]
struct RoutingKeys<'a> {
    first: &'a str,
    extra: &'a [ShortStr],
}

impl<'a> RoutingKeys<'a> {
    fn iter(self) -> impl Iterator<Item = &'a str> {
        std::iter::once(self.first).chain(self.extra.iter().map(|k| k.as_str()))
    }
}

/// A delayed-message exchange keeps a message that asks for a delay, to route it when it is
/// due (`crate::delayed`); like RabbitMQ's plugin, it routes the message nowhere now. Only a
/// whole message can be kept: routing that knows just the properties routes it at once. The
/// exchange goes into the message's `held` list: the caller hands the message over.
fn hold_for_later(exchange: &Exchange, message: &mut LazyHeaders<'_>) -> bool {
    let Some(delayed) = &exchange.delayed else {
        return false;
    };
    if message.held.is_none() {
        return false;
    }
    let Some(delay_ms) = delay_of(message.properties().and_then(|p| p.headers.as_ref())) else {
        return false;
    };
    if let Some(held) = &mut message.held {
        held.push(delayed.to_hold(delay_ms));
    }
    true
}

/// The message being routed; its properties are decoded only if an exchange on the way
/// looks into them (headers, consistent-hash on a header or property, delayed-message).
struct LazyHeaders<'a> {
    properties: &'a Bytes,
    /// Where the delayed exchanges that are to hold the message go, when the caller routes a
    /// whole message (only then may one keep it).
    held: Option<&'a mut Vec<Hold>>,
    decoded: Option<Option<BasicProperties>>,
}

impl<'a> LazyHeaders<'a> {
    fn new(properties: &'a Bytes, held: Option<&'a mut Vec<Hold>>) -> Self {
        LazyHeaders {
            properties,
            held,
            decoded: None,
        }
    }

    fn properties(&mut self) -> Option<&BasicProperties> {
        let properties = self.properties;
        self.decoded
            .get_or_insert_with(|| BasicProperties::decode(properties).ok())
            .as_ref()
    }
}

/// What a queue's arguments make of it: the settings a policy may change, and those only an
/// argument sets.
struct QueueArguments {
    settings: QueueSettings,
    max_priority: Option<u8>,
    single_active_consumer: bool,
}

/// The settings of a queue with these (valid) arguments under `policy`: the arguments merged
/// with the policy by RabbitMQ's precedence rules.
fn settings_under(
    policy: Option<&Policy>,
    arguments: &FieldTable,
    own: QueueSettings,
) -> QueueSettings {
    let Some(policy) = policy else {
        return own;
    };
    let mut merged = policy.merged_into(arguments);
    // A policy's dead-letter routing key without any dead-letter exchange is simply unused.
    if merged.get("x-dead-letter-exchange").is_none() {
        merged.remove("x-dead-letter-routing-key");
    }
    queue_arguments(&merged).map_or(own, |merged| merged.settings)
}

/// Why queue arguments are refused, in RabbitMQ's words.
#[derive(Debug, PartialEq, Eq)]
enum ArgumentError {
    Invalid {
        arg: &'static str,
        detail: String,
    },
    /// RabbitMQ checks the dead-letter exchange's type before the other arguments, with a
    /// message of its own.
    DeadLetterExchangeType(&'static str),
}

impl ArgumentError {
    fn into_exception(self, queue: &str, vhost: &str) -> AmqpException {
        AmqpException::precondition_failed(match self {
            ArgumentError::Invalid { arg, detail } => {
                format!("invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {detail}")
            }
            ArgumentError::DeadLetterExchangeType(type_name) => format!(
                "invalid type '{type_name}' for arg 'x-dead-letter-exchange' in queue '{queue}' in vhost '{vhost}'"
            ),
        })
    }
}

/// Reads the arguments that shape a queue, refusing what RabbitMQ refuses, in the order it
/// checks them (so that of several bad arguments the same one is named).
fn queue_arguments(arguments: &FieldTable) -> Result<QueueArguments, ArgumentError> {
    let invalid = |arg: &'static str, detail: String| ArgumentError::Invalid { arg, detail };
    let string = |arg: &'static str| -> Result<Option<&[u8]>, ArgumentError> {
        match arguments.get(arg) {
            None => Ok(None),
            Some(FieldValue::LongStr(s)) => Ok(Some(s.as_bytes())),
            Some(other) => Err(invalid(
                arg,
                format!("{{unacceptable_type,{}}}", other.type_name()),
            )),
        }
    };
    let integer = |arg: &'static str| -> Result<Option<i64>, ArgumentError> {
        match arguments.get(arg) {
            None => Ok(None),
            Some(value) => match value.as_i64() {
                Some(n) => Ok(Some(n)),
                None => Err(invalid(
                    arg,
                    format!("\"expected integer, got {}\"", value.type_name()),
                )),
            },
        }
    };
    let non_negative = |arg: &'static str| -> Result<Option<u64>, ArgumentError> {
        match integer(arg)? {
            Some(n) if n < 0 => Err(invalid(arg, format!("{{value_negative,{n}}}"))),
            n => Ok(n.map(|n| n.unsigned_abs())),
        }
    };
    let dead_letter_exchange = match arguments.get("x-dead-letter-exchange") {
        None => None,
        Some(FieldValue::LongStr(name)) => Some(name.0.clone()),
        Some(other) => return Err(ArgumentError::DeadLetterExchangeType(other.type_name())),
    };
    let queue_expires = match integer("x-expires")? {
        Some(0) => return Err(invalid("x-expires", "{value_zero,0}".to_string())),
        Some(n) if n < 0 => return Err(invalid("x-expires", format!("{{value_negative,{n}}}"))),
        n => n.map(|n| Duration::from_millis(n.unsigned_abs())),
    };
    let message_ttl = non_negative("x-message-ttl")?.map(Duration::from_millis);
    let dead_letter_routing_key = string("x-dead-letter-routing-key")?;
    if dead_letter_routing_key.is_some() && dead_letter_exchange.is_none() {
        return Err(invalid(
            "x-dead-letter-routing-key",
            "routing_key_but_no_dlx_defined".to_string(),
        ));
    }
    let max_length = non_negative("x-max-length")?;
    let max_length_bytes = non_negative("x-max-length-bytes")?;
    let max_priority = match non_negative("x-max-priority")? {
        Some(n) => Some(
            u8::try_from(n)
                .map_err(|_| invalid("x-max-priority", format!("{{max_value_exceeded,{n}}}")))?,
        ),
        None => None,
    };
    let overflow = match string("x-overflow")? {
        None | Some(b"drop-head") => Overflow::DropHead,
        Some(b"reject-publish") => Overflow::RejectPublish,
        Some(b"reject-publish-dlx") => Overflow::RejectPublishDlx,
        Some(_) => return Err(invalid("x-overflow", "invalid_overflow".to_string())),
    };
    let single_active_consumer = match arguments.get("x-single-active-consumer") {
        None => false,
        Some(FieldValue::Bool(on)) => *on,
        Some(other) => {
            return Err(invalid(
                "x-single-active-consumer",
                format!("{{unacceptable_type,{}}}", other.type_name()),
            ))
        }
    };
    let delivery_limit = non_negative("x-delivery-limit")?;
    // Names no exchange or routing key can have (over 255 bytes, not UTF-8) route nowhere:
    // such a queue drops its dead messages, as RabbitMQ ends up doing.
    let dead_letter = match (dead_letter_exchange, dead_letter_routing_key) {
        (Some(exchange), routing_key) => {
            let exchange = ShortStr::from_bytes(exchange).ok();
            let routing_key = match routing_key {
                Some(key) => ShortStr::from_bytes(Bytes::copy_from_slice(key))
                    .ok()
                    .map(Some),
                None => Some(None),
            };
            exchange
                .zip(routing_key)
                .map(|(exchange, routing_key)| DeadLetterTarget {
                    exchange,
                    routing_key,
                })
        }
        (None, _) => None,
    };
    Ok(QueueArguments {
        settings: QueueSettings {
            limits: QueueLimits {
                max_length,
                max_length_bytes,
                overflow,
            },
            lifetimes: Lifetimes {
                message_ttl,
                queue_expires,
                delivery_limit,
            },
            dead_letter,
        },
        max_priority,
        single_active_consumer,
    })
}

/// RabbitMQ compares numeric queue arguments by value whatever their integer type.
fn same_argument(a: Option<&FieldValue>, b: Option<&FieldValue>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        (None, None) => true,
        _ => false,
    }
}

fn render_value(v: &FieldValue) -> String {
    match v {
        FieldValue::LongStr(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        FieldValue::Bool(b) => b.to_string(),
        other => match other.as_i64() {
            Some(n) => n.to_string(),
            None => format!("{other:?}"),
        },
    }
}

fn describe_value(v: Option<&FieldValue>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) => format!(
            "the value '{}' of type '{}'",
            render_value(v),
            v.type_name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::argument_test_support::{declare_exchange, s};
    use super::*;
    use crate::error::Scope;

    fn declare_queue(
        vhost: &VHost,
        name: &str,
        owner: u64,
        exclusive: bool,
    ) -> AmqpResult<QueueRef> {
        vhost.declare_queue(
            QueueDeclaration {
                name: &s(name),
                durable: false,
                exclusive,
                auto_delete: false,
                arguments: &FieldTable::new(),
            },
            false,
            owner,
        )
    }

    fn routed_names(vhost: &VHost, exchange: &str, key: &str) -> Vec<String> {
        let exchange = vhost.existing_exchange(exchange).unwrap();
        let mut out = Vec::new();
        vhost.route(&exchange, key, &Bytes::new(), &mut out);
        let mut names: Vec<String> = out.iter().map(|q| q.name.to_string()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn default_exchange_routes_by_queue_name() {
        let vhost = VHost::new("/");
        declare_queue(&vhost, "q", 1, false).unwrap();
        assert_eq!(routed_names(&vhost, "", "q"), ["q"]);
        assert!(routed_names(&vhost, "", "other").is_empty());
    }

    #[tokio::test]
    async fn exchange_to_exchange_bindings_are_followed_once_even_in_cycles() {
        let vhost = VHost::new("/");
        let q = declare_queue(&vhost, "q", 1, false).unwrap();
        declare_exchange(&vhost, "a", "fanout", FieldTable::new()).unwrap();
        declare_exchange(&vhost, "b", "fanout", FieldTable::new()).unwrap();
        let empty = FieldTable::new();
        vhost.bind_exchange("b", "a", &s(""), &empty).unwrap();
        vhost.bind_exchange("a", "b", &s(""), &empty).unwrap();
        vhost.bind_queue(&q, "b", &s(""), &empty).unwrap();
        vhost.bind_queue(&q, "a", &s(""), &empty).unwrap();
        assert_eq!(routed_names(&vhost, "a", "x"), ["q"]);
    }

    #[tokio::test]
    async fn alternate_exchange_takes_unroutable_messages() {
        let vhost = VHost::new("/");
        let q = declare_queue(&vhost, "unrouted", 1, false).unwrap();
        declare_exchange(&vhost, "ae", "fanout", FieldTable::new()).unwrap();
        vhost
            .bind_queue(&q, "ae", &s(""), &FieldTable::new())
            .unwrap();
        let mut args = FieldTable::new();
        args.insert(s("alternate-exchange"), FieldValue::from("ae"));
        declare_exchange(&vhost, "main", "direct", args).unwrap();
        assert_eq!(routed_names(&vhost, "main", "nothing-bound"), ["unrouted"]);
    }

    #[tokio::test]
    async fn exclusive_queue_is_locked_to_its_connection() {
        let vhost = VHost::new("/");
        declare_queue(&vhost, "mine", 7, true).unwrap();
        assert!(vhost.queue("mine", 7).is_ok());
        let err = vhost.queue("mine", 8).unwrap_err();
        assert_eq!(err.reply_code, 405);
        vhost.connection_closed(7).await;
        assert_eq!(vhost.queue("mine", 7).unwrap_err().reply_code, 404);
    }

    #[tokio::test]
    async fn redeclaring_with_other_type_is_precondition_failed() {
        let vhost = VHost::new("/");
        declare_exchange(&vhost, "x", "direct", FieldTable::new()).unwrap();
        let err = declare_exchange(&vhost, "x", "fanout", FieldTable::new()).unwrap_err();
        assert_eq!(
            err.reply_text,
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'"
        );
        let err = declare_exchange(&vhost, "y", "nonsense", FieldTable::new()).unwrap_err();
        assert_eq!((err.reply_code, err.scope), (406, Scope::Channel));
    }

    #[tokio::test]
    async fn deleting_a_queue_removes_its_bindings_and_auto_delete_exchanges() {
        let vhost = VHost::new("/");
        let q = declare_queue(&vhost, "q", 1, false).unwrap();
        vhost
            .declare_exchange(
                ExchangeDeclaration {
                    name: &s("auto"),
                    kind: "fanout",
                    durable: false,
                    auto_delete: true,
                    internal: false,
                    arguments: &FieldTable::new(),
                },
                false,
            )
            .unwrap();
        vhost
            .bind_queue(&q, "auto", &s(""), &FieldTable::new())
            .unwrap();
        assert_eq!(q.delete(false, false).await.unwrap(), 0);
        assert!(
            vhost.exchange("auto").is_none(),
            "auto-delete exchange lost its last binding"
        );
    }
}

#[cfg(test)]
mod argument_test_support {
    use super::*;

    pub fn s(v: &str) -> ShortStr {
        ShortStr::new(v).unwrap()
    }

    pub fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(entries.iter().map(|(k, v)| (s(k), v.clone())).collect())
    }

    pub fn declare(vhost: &VHost, name: &str, arguments: &FieldTable) -> AmqpResult<QueueRef> {
        vhost.declare_queue(
            QueueDeclaration {
                name: &s(name),
                durable: false,
                exclusive: false,
                auto_delete: false,
                arguments,
            },
            false,
            1,
        )
    }

    pub fn declare_exchange(
        vhost: &VHost,
        name: &str,
        kind: &str,
        arguments: FieldTable,
    ) -> AmqpResult<()> {
        vhost.declare_exchange(
            ExchangeDeclaration {
                name: &s(name),
                kind,
                durable: false,
                auto_delete: false,
                internal: false,
                arguments: &arguments,
            },
            false,
        )
    }

    /// The reply text of a queue.declare of `q` with these arguments, which must be refused.
    pub fn refusal(entries: &[(&str, FieldValue)]) -> String {
        match declare(&VHost::new("/"), "q", &table(entries)) {
            Err(e) => e.reply_text,
            Ok(_) => panic!("{entries:?} was accepted"),
        }
    }
}

#[cfg(test)]
mod queue_argument_and_routing_tests {
    use super::*;

    use super::argument_test_support::*;

    #[tokio::test]
    async fn lifetime_and_dead_letter_arguments_are_refused_in_rabbitmqs_words_and_order() {
        let prefix = "PRECONDITION_FAILED - invalid arg";
        assert_eq!(
            refusal(&[("x-message-ttl", FieldValue::from("abc"))]),
            format!("{prefix} 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got longstr\"")
        );
        assert_eq!(
            refusal(&[
                ("x-message-ttl", FieldValue::I32(-1)),
                ("x-expires", FieldValue::I32(0))
            ]),
            format!("{prefix} 'x-expires' for queue 'q' in vhost '/': {{value_zero,0}}")
        );
        assert_eq!(
            refusal(&[("x-dead-letter-routing-key", FieldValue::from("k"))]),
            format!("{prefix} 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined")
        );
        assert_eq!(
            refusal(&[
                ("x-max-length", FieldValue::I32(-1)),
                ("x-dead-letter-exchange", FieldValue::I32(5))
            ]),
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        assert_eq!(
            refusal(&[("x-overflow", FieldValue::from("nope"))]),
            format!("{prefix} 'x-overflow' for queue 'q' in vhost '/': invalid_overflow")
        );
        assert_eq!(
            refusal(&[("x-delivery-limit", FieldValue::I64(-2))]),
            format!(
                "{prefix} 'x-delivery-limit' for queue 'q' in vhost '/': {{value_negative,-2}}"
            )
        );
        let vhost = VHost::new("/");
        let queue = declare(
            &vhost,
            "ok",
            &table(&[
                ("x-message-ttl", FieldValue::I64(1_500)),
                ("x-expires", FieldValue::U16(60_000)),
                ("x-delivery-limit", FieldValue::I8(3)),
                ("x-dead-letter-exchange", FieldValue::from("dlx")),
                ("x-dead-letter-routing-key", FieldValue::from("dead")),
                ("x-overflow", FieldValue::from("reject-publish-dlx")),
            ]),
        )
        .unwrap();
        let settings = queue.settings();
        assert_eq!(
            settings.lifetimes,
            Lifetimes {
                message_ttl: Some(Duration::from_millis(1_500)),
                queue_expires: Some(Duration::from_millis(60_000)),
                delivery_limit: Some(3),
            }
        );
        assert_eq!(
            settings.dead_letter,
            Some(DeadLetterTarget {
                exchange: s("dlx"),
                routing_key: Some(s("dead")),
            })
        );
        assert_eq!(settings.limits.overflow, Overflow::RejectPublishDlx);
    }

    fn routed(vhost: &VHost, exchange: &str, message: &Message) -> Vec<String> {
        let mut out = Vec::new();
        vhost.route_message(&vhost.exchange(exchange).unwrap(), message, &mut out);
        let mut names: Vec<String> = out.iter().map(|q| q.name.to_string()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn extra_routing_keys_route_once_per_queue_through_any_exchange() {
        let vhost = VHost::new("/");
        declare_exchange(&vhost, "x", "direct", FieldTable::new()).unwrap();
        let empty = FieldTable::new();
        for name in ["a", "b", "c"] {
            let q = declare(&vhost, name, &empty).unwrap();
            vhost.bind_queue(&q, "x", &s(name), &empty).unwrap();
        }
        let c = vhost.queue("c", 1).unwrap();
        vhost.bind_queue(&c, "x", &s("a"), &empty).unwrap();
        let mut message = Message::new(s("x"), s("a"), Bytes::new(), Bytes::new());
        message.annotations = Some(Box::new(crate::message::Annotations {
            extra_routing_keys: vec![s("b"), s("c")],
            ..Default::default()
        }));
        assert_eq!(routed(&vhost, "x", &message), ["a", "b", "c"]);
        message.exchange = ShortStr::default();
        assert_eq!(routed(&vhost, "", &message), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_match_with_an_exchange_that_routes_nowhere_does_not_go_to_the_alternate() {
        let vhost = VHost::new("/");
        declare_exchange(&vhost, "ae", "fanout", FieldTable::new()).unwrap();
        let unrouted = declare(&vhost, "unrouted", &FieldTable::new()).unwrap();
        vhost
            .bind_queue(&unrouted, "ae", &s(""), &FieldTable::new())
            .unwrap();
        declare_exchange(
            &vhost,
            "main",
            "direct",
            table(&[("alternate-exchange", FieldValue::from("ae"))]),
        )
        .unwrap();
        declare_exchange(&vhost, "empty", "fanout", FieldTable::new()).unwrap();
        vhost
            .bind_exchange("empty", "main", &s("k"), &FieldTable::new())
            .unwrap();
        let to = |key: &str| Message::new(s("main"), s(key), Bytes::new(), Bytes::new());
        assert!(routed(&vhost, "main", &to("k")).is_empty());
        assert_eq!(routed(&vhost, "main", &to("other")), ["unrouted"]);
    }
}

#[cfg(test)]
mod priority_sac_and_policy_tests {
    use super::*;
    use crate::queue::QueueCommand;
    use serde_json::json;

    use super::argument_test_support::*;

    #[tokio::test]
    async fn priority_and_single_active_consumer_arguments_are_checked_as_rabbitmq_does() {
        let prefix = "PRECONDITION_FAILED - invalid arg";
        assert_eq!(
            refusal(&[("x-max-priority", FieldValue::I32(256))]),
            format!(
                "{prefix} 'x-max-priority' for queue 'q' in vhost '/': {{max_value_exceeded,256}}"
            )
        );
        assert_eq!(
            refusal(&[("x-max-priority", FieldValue::I32(-1))]),
            format!("{prefix} 'x-max-priority' for queue 'q' in vhost '/': {{value_negative,-1}}")
        );
        assert_eq!(
            refusal(&[
                ("x-max-priority", FieldValue::from("5")),
                ("x-overflow", FieldValue::from("bad"))
            ]),
            format!("{prefix} 'x-max-priority' for queue 'q' in vhost '/': \"expected integer, got longstr\"")
        );
        assert_eq!(
            refusal(&[
                ("x-single-active-consumer", FieldValue::I32(1)),
                ("x-delivery-limit", FieldValue::I32(-1))
            ]),
            format!("{prefix} 'x-single-active-consumer' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}")
        );
        let vhost = VHost::new("/");
        for max in [0, 1, 255] {
            let q = declare(
                &vhost,
                &format!("p{max}"),
                &table(&[("x-max-priority", FieldValue::I32(max))]),
            )
            .unwrap();
            assert_eq!(q.config.max_priority, Some(max as u8));
        }
        let sac = declare(
            &vhost,
            "sac",
            &table(&[("x-single-active-consumer", FieldValue::Bool(true))]),
        )
        .unwrap();
        assert!(sac.config.single_active_consumer);
        let err = declare(
            &vhost,
            "p1",
            &table(&[("x-max-priority", FieldValue::I32(6))]),
        )
        .unwrap_err();
        assert_eq!(
            err.reply_text,
            "PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'p1' in vhost '/': received '6' but current is '1'"
        );
    }

    fn policy(
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: serde_json::Value,
    ) -> Policy {
        Policy::new(
            "/",
            name,
            pattern,
            apply_to,
            priority,
            definition.as_object().cloned().unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_queue_takes_its_policy_at_declaration_and_follows_its_changes() {
        let policies = Arc::new(Policies::default());
        let vhost = VHost::with_policies("/", None, policies.clone());
        policies.put(policy(
            "len",
            "^pol\\.",
            "queues",
            0,
            json!({"max-length": 3, "dead-letter-exchange": "dlx"}),
        ));
        let own = table(&[("x-max-length", FieldValue::I32(2))]);
        let limited = declare(&vhost, "pol.own", &own).unwrap();
        let open = declare(&vhost, "pol.open", &FieldTable::new()).unwrap();
        let other = declare(&vhost, "other", &FieldTable::new()).unwrap();
        assert_eq!(
            limited.settings().limits.max_length,
            Some(2),
            "the lower limit wins"
        );
        assert_eq!(open.settings().limits.max_length, Some(3));
        assert_eq!(
            open.settings().dead_letter.map(|t| t.exchange),
            Some(s("dlx"))
        );
        assert_eq!(
            open.policy().map(|p| p.name.clone()).as_deref(),
            Some("len")
        );
        assert!(other.policy().is_none());
        // Redeclaring compares the declared arguments, not the effective ones.
        declare(&vhost, "pol.own", &own).unwrap();
        declare(&vhost, "pol.open", &FieldTable::new()).unwrap();

        for _ in 0..5 {
            open.send(QueueCommand::Publish {
                message: Arc::new(Message::new(
                    s(""),
                    s("pol.open"),
                    Bytes::new(),
                    Bytes::new(),
                )),
                confirm: None,
            });
        }
        assert_eq!(open.stats().await.unwrap().message_count, 3);
        policies.put(policy(
            "len",
            "^pol\\.",
            "queues",
            0,
            json!({"max-length": 1}),
        ));
        vhost.apply_policies();
        assert_eq!(
            open.stats().await.unwrap().message_count,
            1,
            "trimmed at once"
        );
        assert!(open.settings().dead_letter.is_none());
        policies.put(policy(
            "wide",
            ".*",
            "queues",
            5,
            json!({"message-ttl": 1000}),
        ));
        vhost.apply_policies();
        assert_eq!(
            other.policy().map(|p| p.name.clone()).as_deref(),
            Some("wide")
        );
        assert_eq!(
            open.settings().limits.max_length,
            None,
            "only the highest priority policy applies"
        );
        assert!(policies.delete("/", "wide") && policies.delete("/", "len"));
        vhost.apply_policies();
        assert!(open.policy().is_none() && other.policy().is_none());
        assert_eq!(open.settings(), QueueSettings::default());
        assert_eq!(limited.settings().limits.max_length, Some(2));
    }

    #[tokio::test]
    async fn an_exchange_takes_its_alternate_exchange_from_a_policy_unless_it_names_one() {
        let policies = Arc::new(Policies::default());
        let vhost = VHost::with_policies("/", None, policies.clone());
        let exchange = |name: &str, arguments: FieldTable| {
            vhost
                .declare_exchange(
                    ExchangeDeclaration {
                        name: &s(name),
                        kind: "direct",
                        durable: false,
                        auto_delete: false,
                        internal: false,
                        arguments: &arguments,
                    },
                    false,
                )
                .unwrap();
            vhost.exchange(name).unwrap()
        };
        policies.put(policy(
            "ae",
            "^x",
            "exchanges",
            0,
            json!({"alternate-exchange": "from-policy"}),
        ));
        let plain = exchange("x.plain", FieldTable::new());
        let own = exchange(
            "x.own",
            table(&[("alternate-exchange", FieldValue::from("own"))]),
        );
        assert_eq!(plain.alternate_exchange(), Some(s("from-policy")));
        assert_eq!(own.alternate_exchange(), Some(s("own")));
        assert_eq!(
            plain.policy().map(|p| p.name.clone()).as_deref(),
            Some("ae")
        );
        policies.delete("/", "ae");
        vhost.apply_policies();
        assert_eq!(plain.alternate_exchange(), None);
        assert_eq!(own.alternate_exchange(), Some(s("own")));
        assert!(plain.policy().is_none());
    }
}
