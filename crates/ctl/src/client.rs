//! The HTTP side: where the management API is, basic auth, JSON in and out, and what each
//! failure means. Knows the API's paths only as strings handed in by the commands.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::error::{CtlError, EX_DATAERR, EX_NOPERM, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE};

/// The management plugin's port, as in RabbitMQ.
pub const DEFAULT_HTTP_PORT: u16 = 15672;

/// A definitions export of a large broker is many megabytes; ureq's default cap is 10 MB.
const MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// Path segments (vhost and object names) are percent-encoded whole, so "/" becomes "%2F".
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `/api/<segments...>` with each segment encoded.
pub fn api_path(segments: &[&str]) -> String {
    let mut path = String::from("/api");
    for segment in segments {
        path.push('/');
        path.extend(utf8_percent_encode(segment, SEGMENT));
    }
    path
}

/// Where the management API listens, from `--node` and `--port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `--node` takes what rabbitmqctl users type (`rabbit@host`) as well as `host`,
    /// `host:port` and `http://host:port/`. An explicit `--port` wins over a port in `--node`.
    pub fn resolve(node: &str, port: Option<u16>) -> Result<Endpoint, CtlError> {
        let mut rest = node.trim();
        if let Some(stripped) = rest.strip_prefix("http://") {
            rest = stripped;
        } else if rest.starts_with("https://") {
            return Err(CtlError::bare(
                EX_USAGE,
                format!("Error: {node}: warrenctl speaks plain HTTP only (no TLS)"),
            ));
        }
        let rest = rest.trim_end_matches('/');
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let (host, node_port) = split_host_port(rest)
            .ok_or_else(|| CtlError::bare(EX_USAGE, format!("Error: invalid node '{node}'")))?;
        if host.is_empty() {
            return Err(CtlError::bare(
                EX_USAGE,
                format!("Error: invalid node '{node}': no host"),
            ));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port: port.or(node_port).unwrap_or(DEFAULT_HTTP_PORT),
        })
    }

    pub fn base_url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; None if a port is not a number.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.split_once(':') {
        // More than one colon: a bare IPv6 address, no port.
        Some((_, after)) if after.contains(':') => Some((text, None)),
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

/// Why a request to the API did not give the answer the command wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No HTTP answer at all: refused, unresolvable, timed out.
    Unreachable { base_url: String, reason: String },
    /// An HTTP answer with a status other than 2xx; `error` and `reason` come from the
    /// management API's `{"error": .., "reason": ..}` body when it has one.
    Status {
        method: &'static str,
        path: String,
        status: u16,
        error: String,
        reason: String,
    },
    /// A 2xx answer whose body is not the JSON the command expects.
    BadResponse { path: String, reason: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's own explanation (`reason`, else `error`), for messages that pass it on.
    pub fn reason(&self) -> &str {
        match self {
            ApiError::Status { error, reason, .. } if reason.is_empty() => error,
            ApiError::Status { reason, .. } => reason,
            ApiError::Unreachable { reason, .. } | ApiError::BadResponse { reason, .. } => reason,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unreachable { base_url, reason } => write!(
                f,
                "Error: unable to connect to the management API at {base_url}: {reason}"
            ),
            ApiError::Status {
                method,
                path,
                status,
                ..
            } => {
                write!(f, "{method} {path} answered {status}")?;
                if let Some(text) = canonical_reason(*status) {
                    write!(f, " {text}")?;
                }
                let reason = self.reason();
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
            ApiError::BadResponse { path, reason } => {
                write!(
                    f,
                    "GET {path}: the answer is not the management API's JSON: {reason}"
                )
            }
        }
    }
}

fn canonical_reason(status: u16) -> Option<&'static str> {
    ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
}

/// The generic mapping, for answers a command has no specific message for.
impl From<ApiError> for CtlError {
    fn from(error: ApiError) -> Self {
        match &error {
            ApiError::Unreachable { .. } => CtlError::unreachable(error.to_string()),
            ApiError::Status { status, .. } => {
                let code = match status {
                    401 | 403 => EX_NOPERM,
                    400 | 404 => EX_DATAERR,
                    500.. => EX_UNAVAILABLE,
                    _ => EX_SOFTWARE,
                };
                CtlError::bare(code, format!("Error: {error}"))
            }
            ApiError::BadResponse { .. } => CtlError::software(error),
        }
    }
}

/// A blocking client for one management API endpoint with one set of credentials.
pub struct ApiClient {
    agent: ureq::Agent,
    base_url: String,
    authorization: String,
}

impl ApiClient {
    pub fn new(endpoint: &Endpoint, user: &str, password: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        ApiClient {
            agent,
            base_url: endpoint.base_url(),
            authorization: format!("Basic {credentials}"),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        let response = self
            .agent
            .get(self.url(path))
            .header("authorization", &self.authorization)
            .call();
        let body = self.check("GET", path, response)?;
        serde_json::from_str(&body).map_err(|e| ApiError::BadResponse {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// GET where 404 is an answer ("no such object"), not a failure.
    pub fn get_optional(&self, path: &str) -> Result<Option<Value>, ApiError> {
        match self.get(path) {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET of a list endpoint: the answer must be a JSON array.
    pub fn get_list(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        match self.get(path)? {
            Value::Array(items) => Ok(items),
            other => Err(ApiError::BadResponse {
                path: path.to_string(),
                reason: format!("expected a JSON array, got {}", json_kind(&other)),
            }),
        }
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        let response = self
            .agent
            .put(self.url(path))
            .header("authorization", &self.authorization)
            .content_type("application/json")
            .send(body.to_string());
        self.check("PUT", path, response).map(drop)
    }

    /// POST a JSON body given as text (definitions are passed through as read from the file).
    pub fn post_text(&self, path: &str, body: &str) -> Result<(), ApiError> {
        let response = self
            .agent
            .post(self.url(path))
            .header("authorization", &self.authorization)
            .content_type("application/json")
            .send(body);
        self.check("POST", path, response).map(drop)
    }

    pub fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Result<(), ApiError> {
        let mut request = self
            .agent
            .delete(self.url(path))
            .header("authorization", &self.authorization);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.check("DELETE", path, request.call()).map(drop)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The body of a 2xx answer, or the error that explains any other outcome.
    fn check(
        &self,
        method: &'static str,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String, ApiError> {
        let mut response = response.map_err(|e| ApiError::Unreachable {
            base_url: self.base_url.clone(),
            reason: describe_transport_error(&e),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|e| ApiError::Unreachable {
                base_url: self.base_url.clone(),
                reason: describe_transport_error(&e),
            })?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let (error, reason) = error_body(&body);
        Err(ApiError::Status {
            method,
            path: path.to_string(),
            status,
            error,
            reason,
        })
    }
}

fn describe_transport_error(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::Timeout(which) => format!("timed out ({which})"),
        other => other.to_string(),
    }
}

/// The management API answers errors with `{"error": "...", "reason": "..."}`; RabbitMQ
/// HTML-escapes the reason, which a terminal should not show.
fn error_body(body: &str) -> (String, String) {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(fields)) => {
            let text = |key: &str| match fields.get(key) {
                Some(Value::String(s)) => unescape_html(s),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (text("error"), text("reason"))
        }
        _ => (String::new(), body.trim().to_string()),
    }
}

fn unescape_html(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_whole() {
        assert_eq!(
            api_path(&["queues", "/", "a b/c"]),
            "/api/queues/%2F/a%20b%2Fc"
        );
        assert_eq!(api_path(&["queues", "v-1.x_y~"]), "/api/queues/v-1.x_y~");
    }

    #[test]
    fn node_accepts_rabbitmqctl_and_url_forms() {
        let resolve = |node, port| Endpoint::resolve(node, port).map(|e| e.base_url());
        assert_eq!(
            resolve("localhost", None),
            Ok("http://localhost:15672".into())
        );
        assert_eq!(
            resolve("rabbit@host1", None),
            Ok("http://host1:15672".into())
        );
        assert_eq!(
            resolve("127.0.0.1:15698", None),
            Ok("http://127.0.0.1:15698".into())
        );
        assert_eq!(resolve("http://h:1/", Some(2)), Ok("http://h:2".into()));
        assert_eq!(resolve("::1", None), Ok("http://[::1]:15672".into()));
        assert_eq!(resolve("[::1]:99", None), Ok("http://[::1]:99".into()));
        assert_eq!(
            resolve("h:notaport", None).map_err(|e| e.exit_code),
            Err(EX_USAGE)
        );
        assert_eq!(
            resolve("https://h", None).map_err(|e| e.exit_code),
            Err(EX_USAGE)
        );
    }

    #[test]
    fn error_bodies_lose_html_escapes() {
        let (error, reason) =
            error_body(r#"{"error":"bad_request","reason":"[{&lt;&lt;\"k\"&gt;&gt;,1}] bad"}"#);
        assert_eq!(error, "bad_request");
        assert_eq!(reason, r#"[{<<"k">>,1}] bad"#);
        assert_eq!(error_body("oops\n"), (String::new(), "oops".to_string()));
    }
}
