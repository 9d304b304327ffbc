//! The HTTP side of the broker: the management API (RabbitMQ's management plugin's paths,
//! JSON shapes and field names, so rabbitmqadmin and other tools work) and the Prometheus
//! endpoint. Each resource group is a file with a `routes()` fn merged here; they talk to the
//! broker crate only, never to connection or channel internals.
//!
//! The users, vhosts, permissions and policies endpoints plug in the same way: a file with a
//! `routes()` merged in `management_router`.

mod access;
mod auth;
mod bindings;
mod connections;
mod definitions;
mod error;
mod exchanges;
mod listing;
mod message;
mod metrics;
mod overview;
mod policies;
mod queues;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use broker::queue::{QueueRef, QueueStats};
use broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

pub(crate) use definitions::import_definitions;

/// Where each listener ended up (port 0 picks one), for /api/overview's `listeners`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listeners {
    pub amqp: SocketAddr,
    pub http: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// What every handler may use.
pub(crate) struct ApiState {
    pub broker: Arc<Broker>,
    pub config: Arc<Config>,
    pub listeners: Listeners,
    pub started: Instant,
    pub rates: overview::RateSampler,
    /// Each queue's earlier counts, for its rates.
    pub queue_rates: queues::QueueRates,
    pub churn_rates: overview::RateSampler<broker::registry::Churn>,
    /// Signalled by `POST /api/warren/stop`; the server then stops as on SIGTERM.
    pub stop_requested: tokio::sync::Notify,
}

pub(crate) type State = Arc<ApiState>;

impl ApiState {
    pub fn new(broker: Arc<Broker>, config: Arc<Config>, listeners: Listeners) -> State {
        Arc::new(ApiState {
            broker,
            config,
            listeners,
            started: Instant::now(),
            rates: overview::RateSampler::default(),
            queue_rates: queues::QueueRates::default(),
            churn_rates: overview::RateSampler::default(),
            stop_requested: tokio::sync::Notify::new(),
        })
    }
}

/// The management API: every resource group's routes. Unknown paths answer RabbitMQ's 404.
pub(crate) fn management_router(state: State) -> Router {
    Router::new()
        .merge(overview::routes())
        .merge(queues::routes())
        .merge(exchanges::routes())
        .merge(bindings::routes())
        .merge(connections::routes())
        .merge(definitions::routes())
        .merge(access::routes())
        .merge(policies::routes())
        .merge(ui::routes())
        .fallback(|| async { error::ApiError::not_found() })
        .with_state(state)
}

pub(crate) fn metrics_router(state: State) -> Router {
    metrics::routes().with_state(state)
}

/// Serves `router` on `listener` until `stop` turns true.
pub(crate) async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(error) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(%error, "HTTP listener stopped");
    }
}

/// The stats of many queues at once, asked of their owner tasks in parallel; a queue deleted
/// meanwhile answers `None`.
pub(crate) async fn queue_stats(queues: &[QueueRef]) -> Vec<Option<QueueStats>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, queue) in queues.iter().enumerate() {
        let queue = queue.clone();
        tasks.spawn(async move { (index, queue.stats().await.ok()) });
    }
    let mut stats = vec![None; queues.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, answer)) = joined {
            stats[index] = answer;
        }
    }
    stats
}

/// RabbitMQ's node name shape: `warren@<host>`.
pub(crate) fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("warren@{host}")
}
