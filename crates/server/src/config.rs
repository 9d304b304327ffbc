//! The broker's settings, each limit named with its unit, and where they come from: flags,
//! then `WARREN_*` environment variables, then the TOML config file, then defaults (the same
//! names and ports as RabbitMQ). Tests build a `Config` directly; `load` is for the binary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;

/// Defaults, shared by `Config::default`, `--help` and the config file.
mod defaults {
    pub const PORT: u16 = 5672;
    pub const HTTP_PORT: u16 = 15672;
    pub const METRICS_PORT: u16 = 15692;
    pub const DATA_DIR: &str = "warren-data";
    pub const DEFAULT_USER: &str = "guest";
    pub const DEFAULT_PASS: &str = "guest";
    pub const DEFAULT_VHOST: &str = "/";
    pub const HEARTBEAT_SECS: u16 = 60;
    pub const FRAME_MAX_BYTES: u32 = 131_072;
    pub const CHANNEL_MAX: u16 = 2047;
    pub const MAX_MESSAGE_SIZE_BYTES: usize = 128 * 1024 * 1024;
    pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
    /// RabbitMQ's `consumer_timeout`: 30 minutes.
    pub const CONSUMER_TIMEOUT_MS: u64 = 30 * 60 * 1000;
    pub const LOG_LEVEL: &str = "info";
}

/// The config files read when `--config` is not given, the first that exists.
pub const DEFAULT_CONFIG_FILES: [&str; 2] = ["warren.toml", "/etc/warren/warren.toml"];

/// RabbitMQ's `max_message_size` cannot go above 512 MiB either.
const MAX_MESSAGE_SIZE_LIMIT_BYTES: usize = 512 * 1024 * 1024;
/// The smallest frame_max AMQP 0-9-1 allows.
const FRAME_MIN_BYTES: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// AMQPS (AMQP over TLS): a second AMQP listener on `port` (RabbitMQ's is 5671), on the same
/// address as AMQP, with the certificate chain and key in PEM files; with a CA file, client
/// certificates are verified when presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpsConfig {
    pub port: u16,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub http_bind: IpAddr,
    /// The management API's port; `None` runs no HTTP listener (the default when embedded,
    /// so tests do not fight over 15672; the binary's default is 15672).
    pub http_port: Option<u16>,
    pub metrics_bind: IpAddr,
    /// Prometheus `/metrics`; `None` runs no listener (the binary's default is 15692).
    pub metrics_port: Option<u16>,
    pub amqps: Option<AmqpsConfig>,
    pub data_dir: PathBuf,
    /// A definitions file (RabbitMQ's format) imported at every start, like RabbitMQ's
    /// `load_definitions`.
    pub definitions_file: Option<PathBuf>,
    /// The user and vhost a fresh data directory starts with (RabbitMQ's `default_user`,
    /// `default_pass`, `default_vhost`); ignored once definitions exist.
    pub default_user: String,
    pub default_pass: String,
    pub default_vhost: String,
    /// Offered in connection.tune; 0 disables heartbeats.
    pub heartbeat_secs: u16,
    /// Largest frame, overhead included, offered in connection.tune.
    pub frame_max_bytes: u32,
    pub channel_max: u16,
    /// Largest message body accepted (RabbitMQ's `max_message_size`).
    pub max_message_size_bytes: usize,
    /// Time a client has to complete the connection handshake.
    pub handshake_timeout_secs: u64,
    /// How long a manual-ack delivery may stay unacknowledged before its channel is closed
    /// (RabbitMQ's `consumer_timeout`; 0 = never). A queue's `x-consumer-timeout` overrides it.
    pub consumer_timeout_ms: u64,
    /// A `tracing` filter: a level (`info`) or directives (`warn,warren=debug`).
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: defaults::PORT,
            http_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_port: None,
            metrics_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            metrics_port: None,
            amqps: None,
            data_dir: PathBuf::from(defaults::DATA_DIR),
            definitions_file: None,
            default_user: defaults::DEFAULT_USER.to_string(),
            default_pass: defaults::DEFAULT_PASS.to_string(),
            default_vhost: defaults::DEFAULT_VHOST.to_string(),
            heartbeat_secs: defaults::HEARTBEAT_SECS,
            frame_max_bytes: defaults::FRAME_MAX_BYTES,
            channel_max: defaults::CHANNEL_MAX,
            max_message_size_bytes: defaults::MAX_MESSAGE_SIZE_BYTES,
            handshake_timeout_secs: defaults::HANDSHAKE_TIMEOUT_SECS,
            consumer_timeout_ms: defaults::CONSUMER_TIMEOUT_MS,
            log_level: defaults::LOG_LEVEL.to_string(),
            log_format: LogFormat::Text,
        }
    }
}

/// A setting that cannot be used, named by its key in the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {detail}")]
    InvalidFile { path: PathBuf, detail: String },
    #[error("invalid setting {key}: {detail}")]
    Invalid { key: &'static str, detail: String },
}

/// Warren: an AMQP 0-9-1 message broker, a drop-in replacement for RabbitMQ.
///
/// Every setting can also be given as an environment variable (shown with each flag) or in a
/// TOML config file; flags win over the environment, which wins over the file. See README.md
/// for the file's keys.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// TOML config file [default: ./warren.toml, else /etc/warren/warren.toml, if present]
    #[arg(long, env = "WARREN_CONFIG_FILE", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on for AMQP and AMQPS; `::` means every address of both IPv4 and IPv6,
    /// as RabbitMQ's default listener; `0.0.0.0` every IPv4 address only (config: amqp.bind).
    #[arg(long, env = "WARREN_BIND", default_value_t = IpAddr::V6(Ipv6Addr::UNSPECIFIED))]
    bind: IpAddr,
    /// AMQP port; 0 picks a free one and the ready line says which (config: amqp.port).
    #[arg(long, env = "WARREN_PORT", default_value_t = defaults::PORT)]
    port: u16,
    /// Address of the HTTP management API (config: http.bind).
    #[arg(long, env = "WARREN_HTTP_BIND", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    http_bind: IpAddr,
    /// Port of the HTTP management API; 0 picks a free one (config: http.port).
    #[arg(long, env = "WARREN_HTTP_PORT", default_value_t = defaults::HTTP_PORT)]
    http_port: u16,
    /// Address of the Prometheus metrics endpoint (config: metrics.bind).
    #[arg(long, env = "WARREN_METRICS_BIND", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    metrics_bind: IpAddr,
    /// Port of the Prometheus metrics endpoint; 0 picks a free one (config: metrics.port).
    #[arg(long, env = "WARREN_METRICS_PORT", default_value_t = defaults::METRICS_PORT)]
    metrics_port: u16,
    /// AMQPS (AMQP over TLS) port; needs --tls-cert-file and --tls-key-file (config: amqps.port).
    #[arg(long, env = "WARREN_AMQPS_PORT")]
    amqps_port: Option<u16>,
    /// PEM certificate chain for AMQPS (config: amqps.cert_file).
    #[arg(long, env = "WARREN_TLS_CERT_FILE", value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key for AMQPS (config: amqps.key_file).
    #[arg(long, env = "WARREN_TLS_KEY_FILE", value_name = "FILE")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA bundle to verify client certificates (config: amqps.ca_file).
    #[arg(long, env = "WARREN_TLS_CA_FILE", value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Where durable state is kept (config: data_dir).
    #[arg(long, env = "WARREN_DATA_DIR", default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// Definitions (RabbitMQ's JSON format) to import at every start (config:
    /// definitions_file).
    #[arg(
        long = "definitions",
        env = "WARREN_DEFINITIONS_FILE",
        value_name = "FILE"
    )]
    definitions_file: Option<PathBuf>,
    /// User created with a fresh data directory, administrator (config: default.user).
    #[arg(long, env = "WARREN_DEFAULT_USER", default_value = defaults::DEFAULT_USER)]
    default_user: String,
    /// That user's password (config: default.pass).
    #[arg(long, env = "WARREN_DEFAULT_PASS", default_value = defaults::DEFAULT_PASS, hide_default_value = true)]
    default_pass: String,
    /// Vhost created with a fresh data directory (config: default.vhost).
    #[arg(long, env = "WARREN_DEFAULT_VHOST", default_value = defaults::DEFAULT_VHOST)]
    default_vhost: String,
    /// Heartbeat interval offered to clients, in seconds; 0 disables (config:
    /// limits.heartbeat_secs).
    #[arg(long, env = "WARREN_HEARTBEAT_SECS", default_value_t = defaults::HEARTBEAT_SECS)]
    heartbeat_secs: u16,
    /// Largest frame offered to clients, in bytes (config: limits.frame_max_bytes).
    #[arg(long, env = "WARREN_FRAME_MAX_BYTES", default_value_t = defaults::FRAME_MAX_BYTES)]
    frame_max_bytes: u32,
    /// Most channels per connection (config: limits.channel_max).
    #[arg(long, env = "WARREN_CHANNEL_MAX", default_value_t = defaults::CHANNEL_MAX)]
    channel_max: u16,
    /// Largest message body accepted, in bytes (config: limits.max_message_size_bytes).
    #[arg(long, env = "WARREN_MAX_MESSAGE_SIZE_BYTES", default_value_t = defaults::MAX_MESSAGE_SIZE_BYTES)]
    max_message_size_bytes: usize,
    /// Time a client has to finish the connection handshake, in seconds (config:
    /// limits.handshake_timeout_secs).
    #[arg(long, env = "WARREN_HANDSHAKE_TIMEOUT_SECS", default_value_t = defaults::HANDSHAKE_TIMEOUT_SECS)]
    handshake_timeout_secs: u64,
    /// How long a delivery may go unacknowledged before its channel is closed with 406, in
    /// milliseconds; 0 = never (config: limits.consumer_timeout_ms).
    #[arg(long, env = "WARREN_CONSUMER_TIMEOUT_MS", default_value_t = defaults::CONSUMER_TIMEOUT_MS)]
    consumer_timeout_ms: u64,
    /// Log level or `tracing` filter, e.g. `debug` or `warn,warren=debug` (config: log.level).
    #[arg(long, env = "WARREN_LOG", default_value = defaults::LOG_LEVEL)]
    log_level: String,
    /// Log line format (config: log.format).
    #[arg(long, env = "WARREN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The config file's layout. Unknown keys are errors, so a typo does not go unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    definitions_file: Option<PathBuf>,
    amqp: ListenerSettings,
    amqps: AmqpsSettings,
    http: ListenerSettings,
    metrics: ListenerSettings,
    default: DefaultSettings,
    limits: LimitSettings,
    log: LogSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ListenerSettings {
    bind: Option<IpAddr>,
    port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AmqpsSettings {
    port: Option<u16>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DefaultSettings {
    user: Option<String>,
    pass: Option<String>,
    vhost: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LimitSettings {
    heartbeat_secs: Option<u16>,
    frame_max_bytes: Option<u32>,
    channel_max: Option<u16>,
    max_message_size_bytes: Option<usize>,
    handshake_timeout_secs: Option<u64>,
    consumer_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LogSettings {
    level: Option<String>,
    format: Option<LogFormat>,
}

/// The binary's configuration from its flags, environment and config file; exits with
/// clap's message on bad flags, returns an error naming the key for a bad setting.
pub fn load() -> Result<Config, ConfigError> {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    let file = match config_file(args.config.as_deref())? {
        Some(path) => read_file(&path)?,
        None => FileSettings::default(),
    };
    merge(&matches, args, file)
}

/// `--config` if given (it must exist), else the first default location that exists.
fn config_file(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = explicit {
        return Ok(Some(path.to_path_buf()));
    }
    Ok(DEFAULT_CONFIG_FILES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file()))
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(&text).map_err(|detail| ConfigError::InvalidFile {
        path: path.to_path_buf(),
        detail,
    })
}

/// Parses the file's text; the error names the key (`http.port: invalid type …`) and the line.
fn parse_file(text: &str) -> Result<FileSettings, String> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| describe_toml_error(text, &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let inner = error.into_inner();
        let detail = describe_toml_error(text, &inner);
        if key.is_empty() || key == "." {
            detail
        } else {
            format!("key '{key}': {detail}")
        }
    })
}

fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{message} (line {line})")
        }
        None => message.to_string(),
    }
}

/// Takes each setting from the flags or environment if given there, else from the file,
/// else the default.
fn merge(matches: &ArgMatches, args: Args, file: FileSettings) -> Result<Config, ConfigError> {
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let amqps_port = args.amqps_port.or(file.amqps.port);
    let cert_file = args.tls_cert_file.or(file.amqps.cert_file);
    let key_file = args.tls_key_file.or(file.amqps.key_file);
    let ca_file = args.tls_ca_file.or(file.amqps.ca_file);
    let config = Config {
        bind: choose(given("bind"), args.bind, file.amqp.bind),
        port: choose(given("port"), args.port, file.amqp.port),
        http_bind: choose(given("http_bind"), args.http_bind, file.http.bind),
        http_port: Some(choose(given("http_port"), args.http_port, file.http.port)),
        metrics_bind: choose(given("metrics_bind"), args.metrics_bind, file.metrics.bind),
        metrics_port: Some(choose(
            given("metrics_port"),
            args.metrics_port,
            file.metrics.port,
        )),
        amqps: amqps_config(amqps_port, cert_file, key_file, ca_file)?,
        data_dir: choose(given("data_dir"), args.data_dir, file.data_dir),
        definitions_file: args.definitions_file.or(file.definitions_file),
        default_user: choose(given("default_user"), args.default_user, file.default.user),
        default_pass: choose(given("default_pass"), args.default_pass, file.default.pass),
        default_vhost: choose(
            given("default_vhost"),
            args.default_vhost,
            file.default.vhost,
        ),
        heartbeat_secs: choose(
            given("heartbeat_secs"),
            args.heartbeat_secs,
            file.limits.heartbeat_secs,
        ),
        frame_max_bytes: choose(
            given("frame_max_bytes"),
            args.frame_max_bytes,
            file.limits.frame_max_bytes,
        ),
        channel_max: choose(
            given("channel_max"),
            args.channel_max,
            file.limits.channel_max,
        ),
        max_message_size_bytes: choose(
            given("max_message_size_bytes"),
            args.max_message_size_bytes,
            file.limits.max_message_size_bytes,
        ),
        handshake_timeout_secs: choose(
            given("handshake_timeout_secs"),
            args.handshake_timeout_secs,
            file.limits.handshake_timeout_secs,
        ),
        consumer_timeout_ms: choose(
            given("consumer_timeout_ms"),
            args.consumer_timeout_ms,
            file.limits.consumer_timeout_ms,
        ),
        log_level: choose(given("log_level"), args.log_level, file.log.level),
        log_format: choose(given("log_format"), args.log_format, file.log.format),
    };
    config.validate()?;
    Ok(config)
}

/// The flag's (or environment's) value if it was given there, else the file's, else the
/// default that clap filled in.
fn choose<T>(given: bool, from_args: T, from_file: Option<T>) -> T {
    if given {
        from_args
    } else {
        from_file.unwrap_or(from_args)
    }
}

fn amqps_config(
    port: Option<u16>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
) -> Result<Option<AmqpsConfig>, ConfigError> {
    if port.is_none() && cert_file.is_none() && key_file.is_none() && ca_file.is_none() {
        return Ok(None);
    }
    let required = |key: &'static str, file: Option<PathBuf>| {
        let file = file.ok_or_else(|| ConfigError::Invalid {
            key,
            detail: "required when AMQPS is configured".into(),
        })?;
        check_readable(key, &file)?;
        Ok::<_, ConfigError>(file)
    };
    let cert_file = required("amqps.cert_file", cert_file)?;
    let key_file = required("amqps.key_file", key_file)?;
    if let Some(ca_file) = &ca_file {
        check_readable("amqps.ca_file", ca_file)?;
    }
    Ok(Some(AmqpsConfig {
        port: port.unwrap_or(5671),
        cert_file,
        key_file,
        ca_file,
    }))
}

fn check_readable(key: &'static str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|error| ConfigError::Invalid {
            key,
            detail: format!("cannot read {}: {error}", path.display()),
        })
}

impl Config {
    /// Refuses values the broker cannot run with, naming the config file's key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, detail: String| Err(ConfigError::Invalid { key, detail });
        if self.frame_max_bytes < FRAME_MIN_BYTES {
            return invalid(
                "limits.frame_max_bytes",
                format!(
                    "{} is below the minimum of {FRAME_MIN_BYTES}",
                    self.frame_max_bytes
                ),
            );
        }
        if self.channel_max == 0 {
            return invalid("limits.channel_max", "must be at least 1".into());
        }
        if self.max_message_size_bytes == 0
            || self.max_message_size_bytes > MAX_MESSAGE_SIZE_LIMIT_BYTES
        {
            return invalid(
                "limits.max_message_size_bytes",
                format!(
                    "{} is not between 1 and {MAX_MESSAGE_SIZE_LIMIT_BYTES}",
                    self.max_message_size_bytes
                ),
            );
        }
        if self.default_user.is_empty() {
            return invalid("default.user", "must not be empty".into());
        }
        if self.default_vhost.is_empty() {
            return invalid("default.vhost", "must not be empty".into());
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return invalid("log.level", format!("'{}': {error}", self.log_level));
        }
        let listeners = [
            ("amqp.port", Some(self.port)),
            ("http.port", self.http_port),
            ("metrics.port", self.metrics_port),
            ("amqps.port", self.amqps.as_ref().map(|a| a.port)),
        ];
        for (i, (key, port)) in listeners.iter().enumerate() {
            let Some(port) = port.filter(|p| *p != 0) else {
                continue;
            };
            if let Some((other, _)) = listeners[..i].iter().find(|(_, p)| *p == Some(port)) {
                return invalid(key, format!("port {port} is already used by {other}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(argv: &[&str], file: &str) -> Result<Config, ConfigError> {
        let mut full = vec!["warren"];
        full.extend_from_slice(argv);
        let matches = Args::command().try_get_matches_from(full).unwrap();
        let args = Args::from_arg_matches(&matches).unwrap();
        let file = parse_file(file).map_err(|detail| ConfigError::InvalidFile {
            path: PathBuf::from("test.toml"),
            detail,
        })?;
        merge(&matches, args, file)
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let file =
            "data_dir = \"/srv/warren\"\n[http]\nport = 8080\n[limits]\nheartbeat_secs = 5\n";
        let config = merged(&[], file).unwrap();
        assert_eq!(config.http_port, Some(8080));
        assert_eq!(config.metrics_port, Some(defaults::METRICS_PORT));
        assert_eq!(config.data_dir, PathBuf::from("/srv/warren"));
        assert_eq!(config.heartbeat_secs, 5);
        let config = merged(&["--http-port", "0", "--heartbeat-secs", "7"], file).unwrap();
        assert_eq!(config.http_port, Some(0));
        assert_eq!(config.heartbeat_secs, 7);
    }

    #[test]
    fn a_bad_file_names_the_key_and_the_line() {
        let error = parse_file("[http]\nport = \"eighty\"\n").unwrap_err();
        assert!(error.contains("key 'http.port'"), "{error}");
        assert!(error.contains("line 2"), "{error}");
        let error = parse_file("[htp]\nport = 1\n").unwrap_err();
        assert!(error.contains("htp"), "{error}");
        let error = parse_file("[limits]\nframe_max = 1\n").unwrap_err();
        assert!(error.contains("frame_max"), "{error}");
        let error = parse_file("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(error.contains("log.format"), "{error}");
    }

    #[test]
    fn values_the_broker_cannot_use_are_refused_by_key() {
        let error = merged(&[], "[limits]\nframe_max_bytes = 100\n").unwrap_err();
        assert!(error.to_string().contains("limits.frame_max_bytes"));
        let error = merged(&["--http-port", "5672"], "").unwrap_err();
        assert!(error.to_string().contains("http.port"), "{error}");
        let error = merged(&[], "[amqps]\nport = 5671\n").unwrap_err();
        assert!(error.to_string().contains("amqps.cert_file"), "{error}");
        let error = merged(&[], "[amqps]\ncert_file = \"/nonexistent.pem\"\n").unwrap_err();
        assert!(
            error.to_string().contains("cannot read /nonexistent.pem"),
            "{error}"
        );
    }

    #[test]
    fn embedded_configs_run_no_extra_listeners() {
        let config = Config::default();
        assert_eq!((config.http_port, config.metrics_port), (None, None));
        assert!(config.validate().is_ok());
    }
}
