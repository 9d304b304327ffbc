//! Starts a broker for one test: Warren in-process on its own thread and runtime, or the
//! external broker named by `WARREN_TEST_AMQP_URL` (how the suite is checked against
//! RabbitMQ). Knows nothing of what the tests do with it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Set to an `amqp://` URL to run the suite against an already running broker.
pub const EXTERNAL_URL_ENV: &str = "WARREN_TEST_AMQP_URL";

#[cfg(feature = "in-process")]
pub use warren::Config;

/// Stand-in with the fields tests tweak, so the suite builds before `warren::Config` exists.
#[cfg(not(feature = "in-process"))]
#[derive(Clone, Debug)]
pub struct Config {
    pub heartbeat_secs: u16,
    pub frame_max_bytes: u32,
    pub channel_max: u16,
    pub max_message_size_bytes: usize,
}

#[cfg(not(feature = "in-process"))]
impl Default for Config {
    fn default() -> Config {
        Config {
            heartbeat_secs: 60,
            frame_max_bytes: 131_072,
            channel_max: 2047,
            max_message_size_bytes: 128 << 20,
        }
    }
}

/// How long a broker may take to start or to stop before the test fails.
const LIFECYCLE_DEADLINE: Duration = Duration::from_secs(15);

pub struct TestBroker {
    addr: SocketAddr,
    url: String,
    external: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _data_dir: Option<tempfile::TempDir>,
}

impl TestBroker {
    pub fn start() -> TestBroker {
        TestBroker::start_with(|_| {})
    }

    /// `tweak` adjusts the in-process broker's config; it is not called for an external
    /// broker, so tests that depend on it must check [`TestBroker::is_external`].
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestBroker {
        if let Ok(url) = std::env::var(EXTERNAL_URL_ENV) {
            if !url.is_empty() {
                return TestBroker::external(url);
            }
        }
        TestBroker::in_process(tweak)
    }

    fn external(url: String) -> TestBroker {
        let addr = host_port(&url)
            .and_then(|hp| hp.to_socket_addrs().ok()?.next())
            .unwrap_or_else(|| panic!("{EXTERNAL_URL_ENV}={url}: cannot resolve host:port"));
        TestBroker {
            addr,
            url,
            external: true,
            shutdown: None,
            thread: None,
            _data_dir: None,
        }
    }

    #[cfg(not(feature = "in-process"))]
    fn in_process(_tweak: impl FnOnce(&mut Config)) -> TestBroker {
        panic!("built without feature in-process: set {EXTERNAL_URL_ENV}")
    }

    #[cfg(feature = "in-process")]
    fn in_process(tweak: impl FnOnce(&mut Config)) -> TestBroker {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let mut config = Config {
            bind: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 0,
            data_dir: data_dir.path().to_path_buf(),
            ..Config::default()
        };
        tweak(&mut config);

        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("warren-under-test".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let server = match warren::Server::bind(config).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("bind: {e:#}")));
                            return;
                        }
                    };
                    let _ = addr_tx.send(Ok(server.local_addr()));
                    let shutdown = async move {
                        let _ = shutdown_rx.await;
                    };
                    if let Err(e) = server.run(shutdown).await {
                        eprintln!("warren under test stopped with an error: {e:#}");
                    }
                });
            })
            .expect("spawn broker thread");

        let addr = match addr_rx.recv_timeout(LIFECYCLE_DEADLINE) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("broker failed to start: {e}"),
            Err(e) => panic!("broker did not report its address: {e}"),
        };
        TestBroker {
            addr,
            url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", addr.port()),
            external: false,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            _data_dir: Some(data_dir),
        }
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn amqp_url(&self) -> String {
        self.url.clone()
    }

    /// The URL with extra query parameters (`heartbeat=0`, `auth_mechanism=amqplain`, ...).
    pub fn amqp_url_with(&self, query: &str) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", self.url)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_external(&self) -> bool {
        self.external
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A broker that ignores shutdown must not hang the suite: give up on it and say so.
            let deadline = Instant::now() + LIFECYCLE_DEADLINE;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                if thread.join().is_err() && !std::thread::panicking() {
                    panic!("broker thread panicked");
                }
            } else if !std::thread::panicking() {
                panic!("broker did not stop within {LIFECYCLE_DEADLINE:?} of shutdown");
            }
        }
    }
}

/// `host:port` of an amqp URL (default port 5672).
fn host_port(url: &str) -> Option<String> {
    let rest = url.strip_prefix("amqp://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    if host_port.contains(':') {
        Some(host_port.to_string())
    } else {
        Some(format!("{host_port}:5672"))
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(
            host_port("amqp://guest:guest@127.0.0.1:5682/%2f").as_deref(),
            Some("127.0.0.1:5682")
        );
        assert_eq!(
            host_port("amqp://localhost").as_deref(),
            Some("localhost:5672")
        );
    }
}
