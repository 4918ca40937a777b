//! The bridge on the NATS service API: `$SRV.PING|INFO|STATS.bridge` find it (and
//! `meshctl services` lists it), the stats carry the bridge's status as the endpoint's data,
//! and the `status` endpoint (`bridge.status` by default) answers the same JSON on request.

use std::sync::Arc;

use async_nats::service::endpoint::Endpoint;
use async_nats::service::{Service, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::status::State;

/// The service name every bridge instance registers under.
pub const SERVICE_NAME: &str = "bridge";

/// Registers the service and its status endpoint.
pub(crate) async fn register(
    client: &async_nats::Client,
    state: Arc<State>,
    status_subject: &str,
) -> Result<(Service, Endpoint), async_nats::Error> {
    let service = client
        .service_builder()
        .description("Mirrors Kafka topics into JetStream; per topic: mirrored, retries, lag")
        .stats_handler(move |_endpoint, _stats| state.status_json())
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await?;
    let endpoint = service
        .endpoint_builder()
        .name("status")
        .add(status_subject)
        .await?;
    Ok((service, endpoint))
}

/// Answers status requests until `stop`.
pub(crate) async fn answer(mut endpoint: Endpoint, state: Arc<State>, stop: CancellationToken) {
    loop {
        let request = tokio::select! {
            () = stop.cancelled() => break,
            request = endpoint.next() => request,
        };
        let Some(request) = request else { break };
        let body = serde_json::to_vec(&state.status())
            .map(Bytes::from)
            .unwrap_or_default();
        if let Err(error) = request.respond(Ok(body)).await {
            tracing::debug!(%error, "Status reply not sent.");
        }
    }
    if let Err(error) = endpoint.stop().await {
        tracing::debug!(%error, "Status endpoint stop.");
    }
}
