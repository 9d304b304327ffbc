//! The `amqp://user:pass@host:port/vhost` URI (RabbitMQ's URI spec, plain TCP only). Knows
//! nothing of sockets.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    pub username: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    #[error("only amqp:// URIs are supported (got '{0}')")]
    Scheme(String),
    #[error("bad port in URI: '{0}'")]
    Port(String),
    #[error("bad percent-encoding in URI: '{0}'")]
    Percent(String),
}

impl AmqpUri {
    pub fn parse(uri: &str) -> Result<AmqpUri, UriError> {
        let rest = uri
            .strip_prefix("amqp://")
            .ok_or_else(|| UriError::Scheme(uri.to_string()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(info) => match info.find(':') {
                Some(i) => (decode(&info[..i])?, decode(&info[i + 1..])?),
                None => (decode(info)?, String::new()),
            },
            None => ("guest".to_string(), "guest".to_string()),
        };
        let (host, port) = split_host_port(hostport)?;
        // RabbitMQ reads a missing path as the default vhost; an empty one would name the
        // vhost "", which nobody means in a benchmark.
        let vhost = match path {
            None | Some("") => "/".to_string(),
            Some(p) => decode(p)?,
        };
        Ok(AmqpUri {
            username,
            password,
            host: if host.is_empty() {
                "localhost".into()
            } else {
                host
            },
            port,
            vhost,
        })
    }

    pub fn addr(&self) -> (String, u16) {
        (self.host.clone(), self.port)
    }
}

impl fmt::Display for AmqpUri {
    /// The URI without the password, for reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vhost = if self.vhost == "/" {
            "%2f".to_string()
        } else {
            self.vhost.clone()
        };
        write!(
            f,
            "amqp://{}@{}:{}/{}",
            self.username, self.host, self.port, vhost
        )
    }
}

fn split_host_port(s: &str) -> Result<(String, u16), UriError> {
    if let Some(rest) = s.strip_prefix('[') {
        // IPv6 literal: [::1]:5672
        let end = rest.find(']').ok_or_else(|| UriError::Port(s.into()))?;
        let host = rest[..end].to_string();
        let port = match rest[end + 1..].strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| UriError::Port(p.into()))?,
            None => 5672,
        };
        return Ok((host, port));
    }
    match s.rfind(':') {
        Some(i) => {
            let p = &s[i + 1..];
            let port = p.parse().map_err(|_| UriError::Port(p.into()))?;
            Ok((decode(&s[..i])?, port))
        }
        None => Ok((decode(s)?, 5672)),
    }
}

fn decode(s: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| UriError::Percent(s.into()))?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| UriError::Percent(s.into()))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::Percent(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri_with_encoded_default_vhost() {
        let u = AmqpUri::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(u.username, "guest");
        assert_eq!(u.password, "guest");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 5672);
        assert_eq!(u.vhost, "/");
    }

    #[test]
    fn defaults_and_named_vhost() {
        let u = AmqpUri::parse("amqp://localhost").unwrap();
        assert_eq!(
            (u.username.as_str(), u.port, u.vhost.as_str()),
            ("guest", 5672, "/")
        );
        let u = AmqpUri::parse("amqp://a%40b:p%3Aw@[::1]:5700/dev").unwrap();
        assert_eq!(u.username, "a@b");
        assert_eq!(u.password, "p:w");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 5700);
        assert_eq!(u.vhost, "dev");
    }

    #[test]
    fn rejects_other_schemes_and_bad_ports() {
        assert!(matches!(
            AmqpUri::parse("amqps://h"),
            Err(UriError::Scheme(_))
        ));
        assert!(matches!(
            AmqpUri::parse("amqp://h:x/"),
            Err(UriError::Port(_))
        ));
    }
}
