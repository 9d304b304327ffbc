//! The TCP listener: accepts connections, hands each to its own task, and shuts down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use broker::durability::Durability;
use broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::connection;

pub struct Server {
    listener: TcpListener,
    config: Arc<Config>,
    broker: Arc<Broker>,
}

impl Server {
    /// Binds the listener; port 0 picks a free port (see `local_addr`).
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let addr = SocketAddr::new(config.bind, config.port);
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let durability = Durability::on_disk(&config.data_dir)
            .with_context(|| format!("cannot use data directory {}", config.data_dir.display()))?;
        let broker = Broker::open(durability).with_context(|| {
            format!(
                "cannot recover from data directory {}",
                config.data_dir.display()
            )
        })?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        Ok(Server {
            listener,
            config: Arc::new(config),
            broker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.config.bind, self.config.port))
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Serves until `shutdown` completes, then closes every connection with 320
    /// CONNECTION_FORCED, as RabbitMQ does when it stops.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let _ = socket.set_nodelay(true);
                        connections.spawn(connection::serve(
                            socket,
                            peer,
                            self.broker.clone(),
                            self.config.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    Err(error) => tracing::warn!(%error, "accept failed"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(self.listener);
        let _ = stop_tx.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            connections.abort_all();
        }
        Ok(())
    }
}
