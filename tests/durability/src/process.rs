//! The `warren` binary as a child process on a data directory that outlives it: finding the
//! binary, starting it and waiting for its ready line, stopping it with SIGTERM or SIGKILL by
//! its own pid, and guards that never leave a child or a temp dir behind. Knows nothing of
//! AMQP.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of the broker binary to run, overriding the workspace's build.
pub const BIN_ENV: &str = "WARREN_BIN";
/// Set (to anything but `0`) to keep a failed test's data directory and logs for inspection.
pub const KEEP_ENV: &str = "WARREN_TEST_KEEP_DATA";

/// How long the broker may take from spawn to its ready line (recovery included).
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Issue 4, item 8: on SIGTERM the broker exits 0 within 5 seconds.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// How often a wait for the child re-checks it (a bounded poll, not a synchronising sleep).
const POLL: Duration = Duration::from_millis(10);

/// The `warren` binary: `$WARREN_BIN`, else `warren` next to this test binary's profile
/// directory (`target/<profile>/`), else `<workspace>/target/debug/warren`. Panics with what
/// to do when none exists: `cargo test` does not build another package's binary.
pub fn warren_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(BIN_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{BIN_ENV}={} does not name a file: build the broker (cargo build -p warren) or fix {BIN_ENV}",
            p.display()
        );
        return p;
    }
    let mut tried = Vec::new();
    // target/<profile>/deps/<test binary>: the broker built with the same profile sits two up.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            tried.push(profile_dir.join("warren"));
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    tried.push(workspace.join("target").join("debug").join("warren"));
    for p in &tried {
        if p.is_file() {
            return p.clone();
        }
    }
    panic!(
        "the warren binary is missing (tried {}): run `cargo build -p warren` (or \
         `cargo build --workspace --bins`) first, or set {BIN_ENV}",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// How a test stops the broker before restarting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the clean stop; the broker must exit 0 within [`STOP_DEADLINE`].
    Term,
    /// SIGKILL: the process vanishes with whatever it had not written.
    Kill,
}

/// A temp directory owned by one test: `data/` is the broker's data directory, kept across
/// every broker the test starts; `warren-<n>.log` is the stderr of the n-th run. Removed at
/// the end unless the test failed and [`KEEP_ENV`] is set.
pub struct TestDir {
    root: Option<tempfile::TempDir>,
    runs: AtomicU32,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        let root = tempfile::Builder::new()
            .prefix(&format!("warren-durability-{label}-"))
            .tempdir()
            .expect("create a temp dir");
        std::fs::create_dir(root.path().join("data")).expect("create the data dir");
        TestDir {
            root: Some(root),
            runs: AtomicU32::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        self.root.as_ref().map(|r| r.path()).expect("temp dir")
    }

    /// The broker's data directory.
    pub fn data(&self) -> PathBuf {
        self.root().join("data")
    }

    /// Starts a broker on this test's data directory.
    pub async fn start(&self) -> Warren {
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let log = self.root().join(format!("warren-{run}.log"));
        Warren::start(&warren_binary(), &self.data(), &log).await
    }

    /// Stops `warren` the given way and starts the next broker on the same data directory.
    pub async fn restart(&self, warren: Warren, how: Stop) -> Warren {
        warren.stop(how).await;
        self.start().await
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() && crate::knobs::flag(KEEP_ENV) {
            if let Some(root) = self.root.take() {
                let kept = root.keep();
                eprintln!("{KEEP_ENV}: kept {}", kept.display());
            }
        }
    }
}

/// A running `warren` child. Dropping it kills the child (SIGKILL by its pid) if it is still
/// running, and a failing test prints the tail of the broker's log.
pub struct Warren {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl Warren {
    /// Spawns `binary --bind 127.0.0.1 --port 0 --data-dir DATA` (HTTP and metrics on free
    /// ports) with stderr to `log`, and
    /// waits for the `listening on <addr>` line on stdout.
    pub async fn start(binary: &Path, data_dir: &Path, log: &Path) -> Warren {
        let stderr = std::fs::File::create(log).expect("create the broker's log file");
        let mut child = Command::new(binary)
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg("0")
            .arg("--data-dir")
            .arg(data_dir)
            // Brokers run side by side: no fixed management or metrics port.
            .args(["--http-port", "0", "--metrics-port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        // Drains stdout for the child's whole life so it never blocks on a full pipe.
        std::thread::Builder::new()
            .name(format!("warren-{pid}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            })
            .expect("spawn the stdout reader");

        let mut warren = Warren {
            child: Some(child),
            pid,
            // Replaced as soon as the ready line names the real one.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    if let Some(addr) = ready_addr(&line) {
                        warren.addr = addr;
                        return warren;
                    }
                    continue;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    let status = warren.wait_exit(STOP_DEADLINE).await;
                    panic!(
                        "warren exited ({status:?}) before printing its ready line{}",
                        warren.log_tail()
                    );
                }
            }
            if let Some(status) = warren.try_exit() {
                panic!(
                    "warren exited ({status}) before printing its ready line{}",
                    warren.log_tail()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "warren printed no 'listening on <addr>' line within {READY_DEADLINE:?}{}",
                    warren.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the broker the given way; [`Stop::Term`] asserts a clean exit (status 0 within
    /// [`STOP_DEADLINE`]).
    pub async fn stop(self, how: Stop) {
        match how {
            Stop::Term => {
                self.terminate_clean().await;
            }
            Stop::Kill => self.kill9(),
        }
    }

    /// Sends SIGTERM (by pid, to this child only).
    pub fn sigterm(&self) {
        if self.child.is_some() {
            let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
            // SAFETY: kill(2) with our own child's pid, which we have not reaped yet, so the
            // pid cannot have been reused by another process.
            let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
            assert_eq!(
                rc,
                0,
                "kill({pid}, SIGTERM): {}",
                std::io::Error::last_os_error()
            );
        }
    }

    /// SIGTERM, then asserts the broker exits with status 0 within [`STOP_DEADLINE`]; returns
    /// how long it took.
    pub async fn terminate_clean(mut self) -> Duration {
        let started = Instant::now();
        self.sigterm();
        let status = self.wait_exit(STOP_DEADLINE).await;
        let took = started.elapsed();
        match status {
            Some(s) if s.success() => took,
            Some(s) => panic!("warren exited with {s} on SIGTERM{}", self.log_tail()),
            None => panic!(
                "warren did not exit within {STOP_DEADLINE:?} of SIGTERM{}",
                self.log_tail()
            ),
        }
    }

    /// SIGKILL and reap: the crash.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL warren");
            child.wait().expect("reap warren");
        }
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => panic!("waitpid warren: {e}"),
        }
    }

    /// The last lines of the broker's stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 6000)
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- warren pid {} ---{}", self.pid, self.log_tail());
        }
    }
}

/// The address in a line like `warren 0.1.0 ready: listening on 127.0.0.1:5672 (AMQP 0-9-1)`.
fn ready_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn log_tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    if buf.is_empty() {
        return String::new();
    }
    format!(
        "\n--- tail of {} ---\n{}",
        path.display(),
        String::from_utf8_lossy(&buf)
    )
}

#[cfg(test)]
mod tests {
    use super::ready_addr;

    #[test]
    fn ready_line_parses() {
        assert_eq!(
            ready_addr("warren 0.1.0 ready: listening on 127.0.0.1:41234 (AMQP 0-9-1)"),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(
            ready_addr("listening on 127.0.0.1:5"),
            Some("127.0.0.1:5".parse().unwrap())
        );
        assert_eq!(ready_addr("starting"), None);
    }
}
