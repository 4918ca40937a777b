//! Configuration from environment variables.
//!
//! Every value has a default matching DESIGN.md's ports, so `cargo run` works on a developer
//! machine with nothing set. A value that is set but invalid is a startup error that names the
//! variable: a typo must never silently fall back to a default.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value for environment variable {name}={value:?}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    #[error("missing required environment variable {name}")]
    Missing { name: String },
}

impl ConfigError {
    /// `name` is set to `value`, which cannot be used because of `reason`.
    pub fn invalid(name: &str, value: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name: name.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// The environment variable the error is about.
    pub fn variable(&self) -> &str {
        match self {
            Self::Invalid { name, .. } | Self::Missing { name } => name,
        }
    }
}

/// A snapshot of environment variables.
///
/// Reading from a snapshot rather than `std::env` keeps tests free of process-global state
/// (and of `set_var`, which is unsafe in edition 2024).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `name`, with an empty value treated as unset (as compose files produce).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::Missing { name: name.into() })
    }

    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(name)
            .map(|raw| {
                raw.parse()
                    .map_err(|e: T::Err| ConfigError::invalid(name, raw, e.to_string()))
            })
            .transpose()
    }

    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(name)?.unwrap_or(default))
    }

    /// A duration such as `30s`, `250ms`, `2m` or a bare number of seconds.
    pub fn duration_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => {
                parse_duration(raw).map_err(|reason| ConfigError::invalid(name, raw, reason))
            }
        }
    }
    /// As [`Env::duration_or`], for an interval, timeout or TTL: zero is refused (a zero
    /// sweep interval spins, a zero payment timeout cancels every order, a zero
    /// `tokio::time::interval` panics).
    pub fn positive_duration_or(
        &self,
        name: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = self.duration_or(name, default)?;
        if value.is_zero() {
            return Err(ConfigError::invalid(
                name,
                self.get(name).unwrap_or("0"),
                "expected a duration above zero, such as 10s",
            ));
        }
        Ok(value)
    }
}

/// Parses `250ms`, `30s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 30s or 250ms, got {raw:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for Loki and friends.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

/// What differs between services before any environment is read.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    pub name: &'static str,
    pub http_port: u16,
    /// The Postgres database the service owns, if any (`shop_users`, ...).
    pub database: Option<&'static str>,
}

/// The settings every service shares.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    /// `HTTP_ADDR`: where the service's own REST port listens.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL`: the service's own database; created if missing.
    pub database_url: Option<String>,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `KAFKA_BROKERS`: comma-separated bootstrap servers.
    pub kafka_brokers: String,
    /// `LOG_FORMAT`: `json` or `pretty`.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: traces are exported over OTLP/gRPC when set.
    pub otlp_endpoint: Option<String>,
    /// `SHUTDOWN_GRACE`: how long in-flight work may take after SIGTERM.
    pub shutdown_grace: Duration,
}

pub const DEFAULT_POSTGRES_BASE: &str = "postgres://postgres@127.0.0.1:5432";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";

impl ServiceConfig {
    pub fn from_env(env: &Env, defaults: ServiceDefaults) -> Result<Self, ConfigError> {
        let http_addr = env.parse_or(
            "HTTP_ADDR",
            SocketAddr::from(([0, 0, 0, 0], defaults.http_port)),
        )?;
        let database_url = match defaults.database {
            Some(db) => {
                Some(env.string_or("DATABASE_URL", &format!("{DEFAULT_POSTGRES_BASE}/{db}")))
            }
            None => env.get("DATABASE_URL").map(str::to_owned),
        };
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "DATABASE_URL",
                url,
                "expected a postgres:// URL",
            ));
        }
        let nats_url = env.string_or("NATS_URL", DEFAULT_NATS_URL);
        let kafka_brokers = env.string_or("KAFKA_BROKERS", DEFAULT_KAFKA_BROKERS);
        if kafka_brokers.split(',').any(|b| !b.trim().contains(':')) {
            return Err(ConfigError::invalid(
                "KAFKA_BROKERS",
                &kafka_brokers,
                "expected comma-separated host:port pairs",
            ));
        }
        Ok(Self {
            name: env.string_or("SERVICE_NAME", defaults.name),
            http_addr,
            database_url,
            nats_url,
            kafka_brokers,
            log_format: env.parse_or("LOG_FORMAT", LogFormat::Pretty)?,
            otlp_endpoint: env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_owned),
            shutdown_grace: env.duration_or("SHUTDOWN_GRACE", Duration::from_secs(30))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: ServiceDefaults = ServiceDefaults {
        name: "user-service",
        http_port: 8080,
        database: Some("shop_users"),
    };

    #[test]
    fn defaults_match_the_design_ports() {
        let config = ServiceConfig::from_env(&Env::default(), USERS).expect("defaults are valid");
        assert_eq!(config.http_addr.port(), 8080);
        assert_eq!(
            config.database_url.as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/shop_users")
        );
        assert_eq!(config.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(config.kafka_brokers, "127.0.0.1:9092");
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (name, value) in [
            ("HTTP_ADDR", "not-an-address"),
            ("LOG_FORMAT", "xml"),
            ("SHUTDOWN_GRACE", "soon"),
            ("DATABASE_URL", "mysql://localhost/x"),
            ("KAFKA_BROKERS", "localhost"),
        ] {
            let env = Env::from_pairs([(name, value)]);
            let err = ServiceConfig::from_env(&env, USERS).expect_err(name);
            assert_eq!(err.variable(), name);
            assert!(err.to_string().contains(name), "{err}");
            assert!(err.to_string().contains(value), "{err}");
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("HTTP_ADDR", ""), ("LOG_FORMAT", "  ")]);
        let config = ServiceConfig::from_env(&env, USERS).expect("empty is unset");
        assert_eq!(config.http_addr.port(), 8080);
    }

    #[test]
    fn explicit_values_win() {
        let env = Env::from_pairs([
            ("HTTP_ADDR", "127.0.0.1:0"),
            ("LOG_FORMAT", "JSON"),
            ("SHUTDOWN_GRACE", "250ms"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ]);
        let config = ServiceConfig::from_env(&env, USERS).expect("valid");
        assert_eq!(config.http_addr, "127.0.0.1:0".parse().expect("addr"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.shutdown_grace, Duration::from_millis(250));
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn intervals_and_timeouts_cannot_be_zero() {
        let env = Env::from_pairs([("SWEEP", "0s"), ("TIMEOUT", "0"), ("TTL", "250ms")]);
        let default = Duration::from_secs(1);
        for name in ["SWEEP", "TIMEOUT"] {
            let error = env.positive_duration_or(name, default).expect_err("zero");
            assert_eq!(error.variable(), name);
        }
        assert_eq!(
            env.positive_duration_or("TTL", default),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(env.positive_duration_or("UNSET", default), Ok(default));
        assert_eq!(
            env.duration_or("SWEEP", default),
            Ok(Duration::ZERO),
            "where zero makes sense"
        );
    }

    #[test]
    fn required_reports_missing_variable() {
        let err = Env::default().required("JWT_SECRET").expect_err("missing");
        assert_eq!(
            err,
            ConfigError::Missing {
                name: "JWT_SECRET".into()
            }
        );
    }
}
