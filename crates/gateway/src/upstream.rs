//! The client side of the gateway: one policy stack per upstream service, and the readiness
//! checks that tell whether each upstream can be reached.

use std::time::Duration;

use async_nats::RequestErrorKind;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{StatusCode, Uri};
use http_body_util::Full;
use kit::ReadinessCheck;
use mesh::rpc::MESH_ERROR_HEADER;
use mesh::{Channel, Transport};
use middleware::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
use middleware::retry::{RetryPolicy, RetrySettings};
use tower::{ServiceBuilder, ServiceExt};

use crate::config::UpstreamConfig;

/// What a forwarded request goes through: retry, then the upstream's breaker, then the mesh.
pub type UpstreamClient = tower::retry::Retry<RetryPolicy, CircuitBreaker<Channel>>;

/// How long a readiness probe waits for an upstream.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The client stack for one upstream. `timeout` is the channel's own budget; a request's
/// deadline (set by the edge) narrows it.
pub fn client(
    transport: Transport,
    upstream: &UpstreamConfig,
    nats: &async_nats::Client,
    metrics: &kit::Metrics,
    timeout: Duration,
) -> UpstreamClient {
    let channel =
        Channel::for_transport(transport, &upstream.name, nats, upstream.http_base.clone())
            .with_timeout(timeout);
    ServiceBuilder::new()
        // Outside the breaker: a transient failure of an idempotent request gets another
        // attempt (within a budget), and the breaker counts every attempt. Its own
        // rejections are not retried: it exists to stop calls.
        .layer(RetryPolicy::new(RetrySettings::default()).layer())
        // One breaker per upstream: a failing service is left alone for a while and callers
        // get a 503 at once instead of waiting on it.
        .layer(CircuitBreakerLayer::new(
            &upstream.name,
            BreakerConfig::default(),
            Some(metrics),
        ))
        .service(channel)
}

/// Ready when the upstream answers: `$SRV.PING.<name>` over NATS, `GET /health` over HTTP.
pub struct UpstreamCheck {
    check_name: String,
    upstream: String,
    probe: Probe,
}

enum Probe {
    Nats(async_nats::Client),
    Http { channel: Channel, base: Uri },
}

impl std::fmt::Debug for UpstreamCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let probe = match &self.probe {
            Probe::Nats(_) => format!("$SRV.PING.{}", self.upstream),
            Probe::Http { base, .. } => format!("GET {base}health"),
        };
        f.debug_struct("UpstreamCheck")
            .field("upstream", &self.upstream)
            .field("probe", &probe)
            .finish()
    }
}

impl UpstreamCheck {
    pub fn new(transport: Transport, upstream: &UpstreamConfig, nats: &async_nats::Client) -> Self {
        let probe = match transport {
            Transport::Nats => Probe::Nats(nats.clone()),
            Transport::Http => Probe::Http {
                channel: Channel::http(upstream.http_base.clone(), &upstream.name)
                    .with_timeout(PROBE_TIMEOUT),
                base: upstream.http_base.clone(),
            },
        };
        Self {
            check_name: format!("upstream:{}", upstream.name),
            upstream: upstream.name.clone(),
            probe,
        }
    }
}

impl ReadinessCheck for UpstreamCheck {
    fn name(&self) -> &str {
        &self.check_name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match &self.probe {
                Probe::Nats(client) => ping(client, &self.upstream).await,
                Probe::Http { channel, base } => {
                    health(channel.clone(), &self.upstream, base).await
                }
            }
        })
    }
}

/// Some instance of `name` answers the NATS service API's ping.
async fn ping(client: &async_nats::Client, name: &str) -> Result<(), String> {
    let subject = format!("$SRV.PING.{name}");
    match tokio::time::timeout(PROBE_TIMEOUT, client.request(subject, Bytes::new())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) if error.kind() == RequestErrorKind::NoResponders => {
            Err(format!("no instance of {name}"))
        }
        Ok(Err(error)) => Err(format!("pinging {name} failed: {error}")),
        Err(_) => Err(format!(
            "{name} did not answer $SRV.PING within {PROBE_TIMEOUT:?}"
        )),
    }
}

/// The upstream's own port answers `GET /health` with 200.
async fn health(channel: Channel, name: &str, base: &Uri) -> Result<(), String> {
    let request = http::Request::get("/health")
        .body(Full::new(Bytes::new()))
        .map_err(|error| error.to_string())?;
    let response = channel
        .oneshot(request)
        .await
        .map_err(|error| format!("{name}: {error}"))?;
    if response.status() == StatusCode::OK {
        return Ok(());
    }
    let detail = response
        .headers()
        .get(MESH_ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|code| format!(" ({code})"))
        .unwrap_or_default();
    Err(format!(
        "{name}: GET {base}health answered {}{detail}",
        response.status()
    ))
}
