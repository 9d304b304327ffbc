//! The listeners: AMQP connections each handed to their own task, the HTTP management API and
//! the Prometheus endpoint; the data directory opened and recovered; a clean shutdown.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use broker::durability::Durability;
use broker::permissions::Permission;
use broker::users::User;
use broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::connection;
use crate::http;

pub struct Server {
    listener: AmqpListener,
    http_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    /// AMQPS: a second AMQP listener whose connections start with a TLS handshake.
    amqps_listener: Option<(AmqpListener, tokio_rustls::TlsAcceptor)>,
    config: Arc<Config>,
    broker: Arc<Broker>,
}

/// The next AMQPS connection; never, without an AMQPS listener.
async fn accept_tls(
    amqps: &Option<(AmqpListener, tokio_rustls::TlsAcceptor)>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, tokio_rustls::TlsAcceptor)> {
    match amqps {
        Some((listener, acceptor)) => {
            let (socket, peer) = listener.accept().await?;
            Ok((socket, peer, acceptor.clone()))
        }
        None => std::future::pending().await,
    }
}

async fn listen(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Where AMQP (or AMQPS) connections come in. Bound to `::`, it is two sockets, as RabbitMQ's
/// default listener is: every IPv4 address, and every IPv6 address on an IPv6-only socket (so
/// IPv4 peers keep their plain addresses). A machine without IPv6 gets the IPv4 socket alone.
struct AmqpListener {
    primary: TcpListener,
    ipv6: Option<TcpListener>,
}

impl AmqpListener {
    async fn bind(ip: IpAddr, port: u16, what: &str) -> anyhow::Result<AmqpListener> {
        if ip != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            let primary = listen(SocketAddr::new(ip, port), what).await?;
            return Ok(AmqpListener {
                primary,
                ipv6: None,
            });
        }
        let primary = listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), what).await?;
        // Port 0 picked a free port for IPv4: IPv6 takes the same one.
        let port = primary.local_addr()?.port();
        let ipv6 = match listen_ipv6_only(port) {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, port, "not listening on IPv6 ({what}); IPv4 only");
                None
            }
        };
        Ok(AmqpListener { primary, ipv6 })
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        let primary = self.primary.local_addr()?;
        Ok(match self.ipv6 {
            Some(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), primary.port()),
            None => primary,
        })
    }

    async fn accept(&self) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
        match &self.ipv6 {
            None => self.primary.accept().await,
            Some(ipv6) => tokio::select! {
                accepted = self.primary.accept() => accepted,
                accepted = ipv6.accept() => accepted,
            },
        }
    }
}

fn listen_ipv6_only(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port).into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

impl Server {
    /// Opens the data directory and binds every listener; port 0 picks a free port (see
    /// `local_addr`, `http_addr`, `metrics_addr`).
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        config.validate()?;
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let fresh = !data_dir.join(store::DEFINITIONS_FILE).exists();
        let durability = Durability::on_disk(data_dir)
            .with_context(|| format!("cannot use data directory {}", data_dir.display()))?;
        let broker = Broker::open(durability).with_context(|| {
            format!("cannot recover from data directory {}", data_dir.display())
        })?;
        if fresh {
            apply_defaults(&broker, &config).await;
        }
        if let Some(file) = &config.definitions_file {
            load_definitions(&broker, file).await?;
        }
        report_recovery(&broker, &config, fresh);
        let listener = AmqpListener::bind(config.bind, config.port, "AMQP").await?;
        let http_listener = match config.http_port {
            Some(port) => Some(listen(SocketAddr::new(config.http_bind, port), "HTTP").await?),
            None => None,
        };
        let metrics_listener = match config.metrics_port {
            Some(port) => {
                Some(listen(SocketAddr::new(config.metrics_bind, port), "metrics").await?)
            }
            None => None,
        };
        let amqps_listener = match &config.amqps {
            Some(amqps) => {
                let acceptor = crate::tls::acceptor(amqps).context("AMQPS (TLS) settings")?;
                let listener = AmqpListener::bind(config.bind, amqps.port, "AMQPS").await?;
                Some((listener, acceptor))
            }
            None => None,
        };
        Ok(Server {
            listener,
            http_listener,
            metrics_listener,
            amqps_listener,
            config: Arc::new(config),
            broker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.config.bind, self.config.port))
    }

    /// Where AMQPS listens, if it does.
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        self.amqps_listener.as_ref()?.0.local_addr().ok()
    }

    /// Where the management API listens, if it does.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listener.as_ref()?.local_addr().ok()
    }

    /// Where Prometheus `/metrics` listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref()?.local_addr().ok()
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Serves until `shutdown` completes, then closes every connection with 320
    /// CONNECTION_FORCED, as RabbitMQ does when it stops, and stops the broker cleanly.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let api = http::ApiState::new(
            self.broker.clone(),
            self.config.clone(),
            http::Listeners {
                amqp: self.local_addr(),
                http: self.http_addr(),
                metrics: self.metrics_addr(),
            },
        );
        let mut http_servers = JoinSet::new();
        if let Some(listener) = self.http_listener.take() {
            let router = http::management_router(api.clone());
            http_servers.spawn(http::serve(listener, router, stop_rx.clone()));
        }
        if let Some(listener) = self.metrics_listener.take() {
            let router = http::metrics_router(api.clone());
            http_servers.spawn(http::serve(listener, router, stop_rx.clone()));
        }
        let mut connections = JoinSet::new();
        let amqps = self.amqps_listener.take();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = api.stop_requested.notified() => break,
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
                accepted = accept_tls(&amqps) => match accepted {
                    Ok((socket, peer, acceptor)) => {
                        let _ = socket.set_nodelay(true);
                        connections.spawn(connection::serve_tls(
                            socket,
                            peer,
                            acceptor,
                            self.broker.clone(),
                            self.config.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    Err(error) => tracing::warn!(%error, "AMQPS accept failed"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        crate::systemd::notify("STOPPING=1");
        drop(self.listener);
        let _ = stop_tx.send(true);
        let drain = async {
            while connections.join_next().await.is_some() {}
            while http_servers.join_next().await.is_some() {}
        };
        if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            connections.abort_all();
            http_servers.abort_all();
        }
        // Queue logs and delayed messages closed cleanly, definitions written a last time.
        self.broker.shutdown().await;
        Ok(())
    }
}

/// A fresh data directory gets the configured default user and vhost instead of guest and
/// `/`, as RabbitMQ's `default_user` and `default_vhost` do on a node's first start.
async fn apply_defaults(broker: &Broker, config: &Config) {
    let (user, vhost) = (&config.default_user, &config.default_vhost);
    if user != "guest" || config.default_pass != "guest" {
        if user != "guest" {
            broker.delete_user("guest");
        }
        let mut default_user =
            User::with_password(user, &config.default_pass, vec!["administrator".into()]);
        // Like RabbitMQ's loopback_users, which names only guest.
        default_user.loopback_only = user == "guest";
        broker.put_user(default_user);
    }
    if vhost != "/" {
        broker.declare_vhost(vhost);
        broker.delete_vhost("/").await;
    }
    if user != "guest" || vhost != "/" {
        broker.set_permissions(vhost, user, Permission::full());
    }
}

/// Imports a definitions file given in the config; a file that cannot be read or imported
/// stops the start, naming the file and the entry.
async fn load_definitions(broker: &Broker, file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read(file)
        .with_context(|| format!("cannot read definitions file {}", file.display()))?;
    let defs: store::Definitions = serde_json::from_slice(&text)
        .with_context(|| format!("invalid definitions file {}", file.display()))?;
    http::import_definitions(broker, &defs)
        .map_err(|e| anyhow::anyhow!("cannot import definitions file {}: {e}", file.display()))?;
    broker.definitions_synced().await?;
    tracing::info!(file = %file.display(), "imported definitions");
    Ok(())
}

/// Logs where data lives, then, once every durable queue has read its log back, how many
/// queues and messages were recovered (in the background: serving need not wait for it).
fn report_recovery(broker: &Arc<Broker>, config: &Config, fresh: bool) {
    let data_dir = config.data_dir.display().to_string();
    if fresh {
        tracing::info!(data_dir, "data directory is new");
        return;
    }
    let queues: Vec<_> = broker
        .vhosts()
        .iter()
        .flat_map(|v| v.queues())
        .filter(|q| q.is_persistent_definition())
        .collect();
    tracing::info!(
        data_dir,
        durable_queues = queues.len(),
        "recovering from data directory"
    );
    tokio::spawn(async move {
        let stats = http::queue_stats(&queues).await;
        let messages: u64 = stats
            .iter()
            .flatten()
            .map(|s| u64::from(s.message_count) + u64::from(s.unacked_count))
            .sum();
        tracing::info!(
            data_dir,
            queues = queues.len(),
            messages,
            "recovered queues and messages"
        );
    });
}
