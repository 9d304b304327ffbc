//! A virtual host: its exchanges, queues and bindings, declaration rules and routing.
//! Knows nothing of frames or sockets; the server calls it from channel handlers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
use bytes::Bytes;
use parking_lot::RwLock;

use store::{BindingDef, ExchangeDef, QueueDef};

use crate::durability::Durability;
use crate::error::{AmqpException, AmqpResult};
use crate::exchange::{BindingKey, ExchangeKind, Router};
use crate::message::{property_flag, property_flags};
use crate::names::generate_name;
use crate::queue::{Overflow, QueueConfig, QueueHandle, QueueLimits, QueueRef};

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
}

impl Exchange {
    fn new(
        name: ShortStr,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        Exchange {
            router: RwLock::new(kind.new_router()),
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
        }
    }

    pub fn is_default(&self) -> bool {
        self.name.is_empty()
    }

    pub fn alternate_exchange(&self) -> Option<&str> {
        self.arguments.get("alternate-exchange")?.as_str()
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
    self_ref: Weak<VHost>,
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
        let vhost = Arc::new_cyclic(|self_ref| VHost {
            name: name.to_string(),
            durability,
            exchanges: RwLock::new(HashMap::new()),
            exchange_removals: AtomicU64::new(0),
            queues: RwLock::new(HashMap::new()),
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
                let exchange =
                    Exchange::new(name.clone(), kind, true, false, false, FieldTable::new());
                exchanges.insert(name, Arc::new(exchange));
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
            if *seen_removals == removals && exchange.name.as_str() == name {
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
        if passive {
            return self.existing_exchange(name).map(drop);
        }
        // Later RabbitMQ versions close the channel (406), not the connection, for this.
        let kind = ExchangeKind::parse(d.kind).ok_or_else(|| {
            AmqpException::precondition_failed(format!("unknown exchange type '{}'", d.kind))
        })?;
        if name.is_empty() {
            return Err(AmqpException::access_refused(
                "operation not permitted on the default exchange",
            ));
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
        let exchange = Exchange::new(
            d.name.clone(),
            kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        );
        exchanges.insert(d.name.clone(), Arc::new(exchange));
        drop(exchanges);
        if d.durable {
            self.definitions_changed();
        }
        Ok(())
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
        exchanges.remove(name);
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
            return self.queue(d.name, connection_id);
        }
        let name = if d.name.is_empty() {
            generate_name("amq.gen-")
        } else {
            if reserved(d.name) {
                return Err(AmqpException::access_refused(format!(
                    "queue name '{}' contains reserved prefix 'amq.*'",
                    d.name
                )));
            }
            d.name.clone()
        };
        let limits = queue_limits(d.arguments).map_err(|(arg, detail)| {
            AmqpException::precondition_failed(format!(
                "invalid arg '{arg}' for queue '{name}' in vhost '{}': {detail}",
                self.name
            ))
        })?;
        let mut queues = self.queues.write();
        if let Some(existing) = queues.get(name.as_str()) {
            self.check_exclusive_access(existing, connection_id)?;
            if existing.is_exclusive() != d.exclusive {
                return Err(self.locked(&name));
            }
            self.check_queue_equivalence(existing, &d)?;
            return Ok(existing.clone());
        }
        let config = QueueConfig {
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(connection_id),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            limits,
        };
        let queue = self.spawn_queue(name.clone(), config);
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

    /// Starts a queue of this vhost (its owner task knows the vhost and the data directory).
    fn spawn_queue(&self, name: ShortStr, config: QueueConfig) -> QueueRef {
        QueueHandle::spawn(name, config, self.self_ref.clone(), self.durability.clone())
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
        let exchange = Exchange::new(
            name.clone(),
            kind,
            def.durable,
            def.auto_delete,
            def.internal,
            arguments,
        );
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
        let limits = queue_limits(&arguments).map_err(|(arg, detail)| {
            AmqpException::precondition_failed(format!("invalid arg '{arg}': {detail}"))
        })?;
        let mut queues = self.queues.write();
        if queues.contains_key(name.as_str()) {
            return Ok(());
        }
        let config = QueueConfig {
            durable: def.durable,
            exclusive_owner: None,
            auto_delete: def.auto_delete,
            arguments,
            limits,
        };
        let queue = self.spawn_queue(name.clone(), config);
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
        if exchange.is_default() {
            if let Some(queue) = self.queues.read().get(routing_key) {
                out.push(queue.clone());
            }
            return;
        }
        let mut headers = LazyHeaders::new(properties);
        let mut visited: Vec<ShortStr> = Vec::new();
        self.route_exchange(exchange, routing_key, &mut headers, &mut visited, out);
    }

    fn route_exchange(
        &self,
        exchange: &Exchange,
        routing_key: &str,
        headers: &mut LazyHeaders<'_>,
        visited: &mut Vec<ShortStr>,
        out: &mut Vec<QueueRef>,
    ) {
        if visited.contains(&exchange.name) {
            return;
        }
        visited.push(exchange.name.clone());
        let routed_before = out.len();
        let mut destinations = Vec::new();
        {
            let headers = match exchange.kind {
                ExchangeKind::Headers => headers.get(),
                _ => None,
            };
            exchange
                .router
                .read()
                .route(routing_key, headers, &mut destinations);
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
                        self.route_exchange(&next, routing_key, headers, visited, out);
                    }
                }
            }
        }
        if out.len() == routed_before {
            if let Some(alternate) = exchange.alternate_exchange().and_then(|a| self.exchange(a)) {
                self.route_exchange(&alternate, routing_key, headers, visited, out);
            }
        }
    }
}

/// Decodes a message's headers only if a headers exchange asks for them.
struct LazyHeaders<'a> {
    properties: &'a Bytes,
    decoded: Option<Option<FieldTable>>,
}

impl<'a> LazyHeaders<'a> {
    fn new(properties: &'a Bytes) -> Self {
        LazyHeaders {
            properties,
            decoded: None,
        }
    }

    fn get(&mut self) -> Option<&FieldTable> {
        let properties = self.properties;
        self.decoded
            .get_or_insert_with(|| {
                if property_flags(properties) & property_flag::HEADERS == 0 {
                    return None;
                }
                BasicProperties::decode(properties).ok()?.headers
            })
            .as_ref()
    }
}

/// Reads the length-limit arguments, refusing values RabbitMQ refuses; the error names the
/// argument and says what is wrong in RabbitMQ's words.
fn queue_limits(arguments: &FieldTable) -> Result<QueueLimits, (&'static str, String)> {
    let non_negative = |arg: &'static str| -> Result<Option<u64>, (&'static str, String)> {
        match arguments.get(arg) {
            None => Ok(None),
            Some(value) => match value.as_i64() {
                Some(n) if n >= 0 => Ok(Some(n as u64)),
                Some(n) => Err((arg, format!("{{value_negative,{n}}}"))),
                None => Err((arg, format!("{{unacceptable_type,{}}}", value.type_name()))),
            },
        }
    };
    let overflow = match arguments.get("x-overflow") {
        None => Overflow::DropHead,
        Some(value) => match value.as_str() {
            Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(other) => return Err(("x-overflow", format!("{{unacceptable_value,{other}}}"))),
            None => {
                return Err((
                    "x-overflow",
                    format!("{{unacceptable_type,{}}}", value.type_name()),
                ))
            }
        },
    };
    Ok(QueueLimits {
        max_length: non_negative("x-max-length")?,
        max_length_bytes: non_negative("x-max-length-bytes")?,
        overflow,
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
    use super::*;
    use crate::error::Scope;

    fn s(v: &str) -> ShortStr {
        ShortStr::new(v).unwrap()
    }

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

    fn declare_exchange(
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
