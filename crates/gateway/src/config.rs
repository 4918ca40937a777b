//! The gateway's settings: the shared service settings, where the upstreams are, and the
//! edge policy (token checks, rate limit, body limit, deadline, CORS).

use std::num::NonZeroU32;
use std::time::Duration;

use http::{HeaderValue, Uri};
use kit::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use mesh::Transport;
use middleware::auth::JwtSettings;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "gateway",
    http_port: 8000,
    database: None,
};

pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 50;
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 100;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One service the gateway forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Its mesh name: the subject `mesh.<name>.http` and the `$SRV.PING.<name>` discovery name.
    pub name: String,
    /// Its own HTTP port, used when `MESH_TRANSPORT=http`.
    pub http_base: Uri,
}

/// Which browser origins may call the API (`CORS_ALLOW_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (no credentials are involved: tokens travel in `Authorization`).
    Any,
    /// Exactly these origins, e.g. `https://shop.example`.
    List(Vec<HeaderValue>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `MESH_TRANSPORT`: `nats` (default) or `http`.
    pub transport: Transport,
    /// `USER_SERVICE_NAME` / `USER_SERVICE_URL`.
    pub user: UpstreamConfig,
    /// `PRODUCT_SERVICE_NAME` / `PRODUCT_SERVICE_URL`.
    pub product: UpstreamConfig,
    /// `ORDER_SERVICE_NAME` / `ORDER_SERVICE_URL`.
    pub order: UpstreamConfig,
    /// `JWT_*`: the gateway only verifies tokens.
    pub jwt: JwtSettings,
    /// `RATE_LIMIT_PER_SECOND`: sustained requests per second per client.
    pub rate_limit_per_second: NonZeroU32,
    /// `RATE_LIMIT_BURST`: requests a client may make at once.
    pub rate_limit_burst: NonZeroU32,
    /// `MAX_BODY_BYTES`: larger request bodies are answered 413.
    pub max_body_bytes: usize,
    /// `REQUEST_TIMEOUT`: the budget of a request, shared by every hop behind the gateway.
    pub request_timeout: Duration,
    /// `CORS_ALLOW_ORIGINS`: `*` (default) or a comma-separated list of origins.
    pub cors_allow_origins: CorsOrigins,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_body_bytes = env.parse_or("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?;
        if max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "MAX_BODY_BYTES",
                "0",
                "expected a positive number of bytes",
            ));
        }
        let request_timeout =
            env.positive_duration_or("REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT)?;
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            transport: env.parse_or("MESH_TRANSPORT", Transport::Nats)?,
            user: upstream(env, "USER_SERVICE", "user-service", "http://127.0.0.1:8080")?,
            product: upstream(
                env,
                "PRODUCT_SERVICE",
                "product-service",
                "http://127.0.0.1:8081",
            )?,
            order: upstream(
                env,
                "ORDER_SERVICE",
                "order-service",
                "http://127.0.0.1:8082",
            )?,
            jwt: JwtSettings::from_env(env)?,
            rate_limit_per_second: non_zero(
                env,
                "RATE_LIMIT_PER_SECOND",
                DEFAULT_RATE_LIMIT_PER_SECOND,
            )?,
            rate_limit_burst: non_zero(env, "RATE_LIMIT_BURST", DEFAULT_RATE_LIMIT_BURST)?,
            max_body_bytes,
            request_timeout,
            cors_allow_origins: cors_origins(env)?,
        })
    }

    /// The three upstreams, in a fixed order.
    pub fn upstreams(&self) -> [&UpstreamConfig; 3] {
        [&self.user, &self.product, &self.order]
    }
}

fn non_zero(env: &Env, name: &str, default: u32) -> Result<NonZeroU32, ConfigError> {
    let value: u32 = env.parse_or(name, default)?;
    NonZeroU32::new(value)
        .ok_or_else(|| ConfigError::invalid(name, "0", "expected a positive integer"))
}

/// `<PREFIX>_NAME` and `<PREFIX>_URL`.
fn upstream(
    env: &Env,
    prefix: &str,
    default_name: &str,
    default_url: &str,
) -> Result<UpstreamConfig, ConfigError> {
    let name_var = format!("{prefix}_NAME");
    let name = env.string_or(&name_var, default_name);
    if !is_service_name(&name) {
        return Err(ConfigError::invalid(
            &name_var,
            &name,
            "expected letters, digits, '-' or '_' (the name is a NATS subject token)",
        ));
    }
    let url_var = format!("{prefix}_URL");
    let raw = env.string_or(&url_var, default_url);
    let http_base =
        http_base(&raw).map_err(|reason| ConfigError::invalid(&url_var, &raw, reason))?;
    Ok(UpstreamConfig { name, http_base })
}

/// What the NATS service API accepts as a service name.
fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `http://host:port`: the request's own path is appended, and the mesh's HTTP transport is
/// HTTP/2 without TLS.
fn http_base(raw: &str) -> Result<Uri, String> {
    let uri: Uri = raw
        .parse()
        .map_err(|error: http::uri::InvalidUri| error.to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("expected an http:// URL (HTTP/2 without TLS)".to_owned());
    }
    if uri.authority().is_none() {
        return Err("expected a host, e.g. http://127.0.0.1:8080".to_owned());
    }
    if uri.path() != "/" || uri.query().is_some() {
        return Err("expected no path: the request's own path is appended".to_owned());
    }
    Ok(uri)
}

fn cors_origins(env: &Env) -> Result<CorsOrigins, ConfigError> {
    const NAME: &str = "CORS_ALLOW_ORIGINS";
    let raw = env.string_or(NAME, "*");
    if raw == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if origin == "*" {
            return Err(ConfigError::invalid(
                NAME,
                &raw,
                "\"*\" cannot be combined with other origins",
            ));
        }
        check_origin(origin).map_err(|reason| ConfigError::invalid(NAME, &raw, reason))?;
        let value = HeaderValue::from_str(origin).map_err(|_| {
            ConfigError::invalid(
                NAME,
                &raw,
                format!("{origin:?} is not a valid header value"),
            )
        })?;
        origins.push(value);
    }
    if origins.is_empty() {
        return Err(ConfigError::invalid(
            NAME,
            &raw,
            "expected * or a comma-separated list of origins",
        ));
    }
    Ok(CorsOrigins::List(origins))
}

/// An origin is `scheme://host[:port]`, exactly as browsers send it in `Origin`.
fn check_origin(origin: &str) -> Result<(), String> {
    let uri: Uri = origin
        .parse()
        .map_err(|_| format!("{origin:?} is not an origin like https://shop.example"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!(
            "{origin:?} is not an origin like https://shop.example"
        ));
    }
    // Browsers send no trailing slash; a configured one would never match.
    if origin.ends_with('/') || uri.path() != "/" || uri.query().is_some() {
        return Err(format!(
            "{origin:?} has a path; an origin is only scheme://host[:port]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut all = vec![("JWT_SECRET", SECRET)];
        all.extend_from_slice(pairs);
        Env::from_pairs(all)
    }

    fn authority(uri: &Uri) -> &str {
        uri.authority().map_or("", |a| a.as_str())
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::from_env(&env(&[])).expect("defaults are valid");
        assert_eq!(config.service.name, "gateway");
        assert_eq!(config.service.http_addr.port(), 8000);
        assert_eq!(config.service.database_url, None);
        assert_eq!(config.transport, Transport::Nats);
        assert_eq!(config.user.name, "user-service");
        assert_eq!(authority(&config.user.http_base), "127.0.0.1:8080");
        assert_eq!(config.product.name, "product-service");
        assert_eq!(authority(&config.product.http_base), "127.0.0.1:8081");
        assert_eq!(config.order.name, "order-service");
        assert_eq!(authority(&config.order.http_base), "127.0.0.1:8082");
        assert_eq!(config.rate_limit_per_second.get(), 50);
        assert_eq!(config.rate_limit_burst.get(), 100);
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.cors_allow_origins, CorsOrigins::Any);
    }

    #[test]
    fn explicit_values_win() {
        let config = Config::from_env(&env(&[
            ("MESH_TRANSPORT", "HTTP"),
            ("USER_SERVICE_NAME", "users_1"),
            ("ORDER_SERVICE_URL", "http://orders.internal:9000/"),
            ("RATE_LIMIT_PER_SECOND", "1"),
            ("RATE_LIMIT_BURST", "2"),
            ("MAX_BODY_BYTES", "1024"),
            ("REQUEST_TIMEOUT", "250ms"),
            (
                "CORS_ALLOW_ORIGINS",
                "https://shop.example, http://localhost:3000",
            ),
        ]))
        .expect("valid");
        assert_eq!(config.transport, Transport::Http);
        assert_eq!(config.user.name, "users_1");
        assert_eq!(authority(&config.order.http_base), "orders.internal:9000");
        assert_eq!(config.rate_limit_per_second.get(), 1);
        assert_eq!(config.rate_limit_burst.get(), 2);
        assert_eq!(config.max_body_bytes, 1024);
        assert_eq!(config.request_timeout, Duration::from_millis(250));
        assert_eq!(
            config.cors_allow_origins,
            CorsOrigins::List(vec![
                HeaderValue::from_static("https://shop.example"),
                HeaderValue::from_static("http://localhost:3000"),
            ])
        );
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (name, value) in [
            ("MESH_TRANSPORT", "grpc"),
            ("USER_SERVICE_NAME", "user.service"),
            ("PRODUCT_SERVICE_NAME", "products >"),
            ("ORDER_SERVICE_URL", "https://orders:8082"),
            ("USER_SERVICE_URL", "http://users:8080/api"),
            ("PRODUCT_SERVICE_URL", "not a url"),
            ("RATE_LIMIT_PER_SECOND", "0"),
            ("RATE_LIMIT_BURST", "lots"),
            ("MAX_BODY_BYTES", "0"),
            ("MAX_BODY_BYTES", "-5"),
            ("REQUEST_TIMEOUT", "0s"),
            ("REQUEST_TIMEOUT", "soon"),
            ("CORS_ALLOW_ORIGINS", "*, https://shop.example"),
            ("CORS_ALLOW_ORIGINS", "https://shop.example/"),
            ("CORS_ALLOW_ORIGINS", "shop.example"),
            ("CORS_ALLOW_ORIGINS", " , "),
            ("HTTP_ADDR", "nowhere"),
        ] {
            let error = Config::from_env(&env(&[(name, value)])).expect_err(value);
            assert_eq!(error.variable(), name, "{value}: {error}");
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn the_jwt_secret_is_required() {
        let error = Config::from_env(&Env::default()).expect_err("no secret");
        assert_eq!(error.variable(), "JWT_SECRET");
    }
}
