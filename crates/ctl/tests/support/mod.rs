//! A stand-in for the management API: a tiny HTTP/1.1 server on a loopback port that answers
//! canned JSON per method and path and records every request, plus a runner for warrenctl.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::Value;

/// "Basic " + base64("guest:guest"): the only credentials the fake accepts.
pub const GUEST_AUTH: &str = "Basic Z3Vlc3Q6Z3Vlc3Q=";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    /// Stop listening after answering (a broker that was asked to stop).
    then_shut_down: bool,
}

pub struct FakeApi {
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<(String, String), Answer>>>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    stopped: Arc<AtomicBool>,
}

impl FakeApi {
    pub fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        Self::serve(listener)
    }

    /// Serves on a port chosen earlier (see `free_port`).
    pub fn start_on(port: u16) -> FakeApi {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the reserved port");
        Self::serve(listener)
    }

    fn serve(listener: TcpListener) -> FakeApi {
        let addr = listener.local_addr().expect("local addr");
        let api = FakeApi {
            addr,
            routes: Arc::default(),
            recorded: Arc::default(),
            stopped: Arc::default(),
        };
        let (routes, recorded, stopped) = (
            api.routes.clone(),
            api.recorded.clone(),
            api.stopped.clone(),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                if handle(stream, &routes, &recorded) {
                    stopped.store(true, Ordering::SeqCst);
                    return; // dropping the listener refuses further connections
                }
            }
        });
        api
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers `method path` with `status` and the JSON `body`.
    pub fn route(&self, method: &str, path: &str, status: u16, body: Value) -> &Self {
        self.answer(method, path, status, body, false)
    }

    /// Answers once more, then closes the listener.
    pub fn route_then_shut_down(&self, method: &str, path: &str, status: u16) -> &Self {
        self.answer(method, path, status, Value::Null, true)
    }

    fn answer(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: Value,
        then_shut_down: bool,
    ) -> &Self {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.routes.lock().unwrap().insert(
            (method.to_string(), path.to_string()),
            Answer {
                status,
                body,
                then_shut_down,
            },
        );
        self
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// The requests other than GETs: what the command changed.
    pub fn changes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Runs warrenctl against this server.
    pub fn ctl(&self, args: &[&str]) -> Run {
        run_ctl(self.port(), args, None)
    }

    pub fn ctl_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run_ctl(self.port(), args, Some(stdin))
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            // Wakes the accept loop so that it sees the flag and ends.
            let _ = TcpStream::connect(self.addr);
        }
    }
}

/// Reads one request, answers it, and says whether the server should shut down.
fn handle(
    stream: TcpStream,
    routes: &Mutex<HashMap<(String, String), Answer>>,
    recorded: &Mutex<Vec<Recorded>>,
) -> bool {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return false; // the Drop wake-up, or a client that gave up
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let authorized = headers.get("authorization").map(String::as_str) == Some(GUEST_AUTH);
    recorded.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });

    let answer = if !authorized {
        Answer {
            status: 401,
            body: r#"{"error":"not_authorized","reason":"Login failed"}"#.to_string(),
            then_shut_down: false,
        }
    } else {
        routes
            .lock()
            .unwrap()
            .get(&(method, path))
            .cloned()
            .unwrap_or(Answer {
                status: 404,
                body: r#"{"error":"Object Not Found","reason":"Not Found"}"#.to_string(),
                then_shut_down: false,
            })
    };
    let mut stream = reader.into_inner();
    let response = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        answer.status,
        answer.body.len(),
        answer.body
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    answer.then_shut_down
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn ctl_command(port: u16, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warrenctl"));
    command
        .args(["--node", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .env_remove("WARRENCTL_NODE")
        .env_remove("WARRENCTL_PORT")
        .env_remove("WARRENCTL_USER")
        .env_remove("WARRENCTL_PASSWORD");
    command
}

pub fn run_ctl(port: u16, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = ctl_command(port, args);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run warrenctl");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    finish(child.wait_with_output().expect("wait for warrenctl"))
}

pub fn finish(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
