//! `serve`: any tower HTTP service (an axum `Router`, a tonic server) answering on NATS.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Waker};

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt as _};

use super::Deadline;
use super::body::read_to_end;
use super::wire::{self, MeshErrorKind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a service is announced and what it accepts.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Shown by `$SRV.INFO` (semver, as the NATS service API requires).
    pub version: String,
    pub description: String,
    /// Largest request body accepted; larger ones are answered 413. NATS itself refuses
    /// messages over the server's `max_payload` (1 MiB by default) before they leave the caller.
    pub max_body: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            version: "0.1.0".into(),
            description: "HTTP over NATS".into(),
            max_body: 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve {service} on NATS: {source}")]
pub struct ServeError {
    service: String,
    source: async_nats::Error,
}

/// A running mesh endpoint. Dropping it keeps it running until the process ends; call
/// [`MeshServer::shutdown`] to stop taking requests and finish the ones in flight.
#[derive(Debug)]
pub struct MeshServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl MeshServer {
    /// Unsubscribes (other instances of the queue group take the traffic), then waits for
    /// the requests in flight.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Shuts down when `token` is cancelled; for use with kit's `Shutdown`.
    pub async fn run_until(self, token: CancellationToken) {
        token.cancelled().await;
        self.shutdown().await;
    }
}

/// Serves `service` on `mesh.<name>.http` in the queue group `<name>`, registered with the
/// NATS service API so `$SRV.PING`, `$SRV.INFO.<name>` and `$SRV.STATS.<name>` find it.
pub async fn serve<S, B>(
    client: async_nats::Client,
    name: &str,
    service: S,
    options: ServeOptions,
) -> Result<MeshServer, ServeError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let error = |source| ServeError {
        service: name.to_owned(),
        source,
    };
    let subject = wire::subject_for(name);
    let registered = client
        .service_builder()
        .description(&options.description)
        .queue_group(name)
        .start(name, &options.version)
        .await
        .map_err(error)?;
    let mut endpoint = registered
        .endpoint_builder()
        .name("http")
        .add(subject.clone())
        .await
        .map_err(error)?;

    confirm_subscribed(&client, name, &registered.info().await.id).await;

    let stop = CancellationToken::new();
    let loop_stop = stop.clone();
    let mut exchanges = Exchanges {
        service,
        client,
        max_body: options.max_body,
        in_flight: TaskTracker::new(),
    };
    let task = tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                () = loop_stop.cancelled() => break,
                request = endpoint.next() => request,
            };
            let Some(request) = request else { break };
            exchanges.start(request);
        }
        // Leave the queue group (other instances take what comes next), then answer what
        // NATS delivered to this instance already: dropped, those callers would wait out
        // their whole budget.
        if let Err(error) = endpoint.stop().await {
            tracing::debug!(%error, "Endpoint stop.");
        }
        while let Some(request) = endpoint.next().await {
            exchanges.start(request);
        }
        exchanges.in_flight.close();
        exchanges.in_flight.wait().await;
        if let Err(error) = registered.stop().await {
            tracing::debug!(%error, "Service stop.");
        }
    });
    Ok(MeshServer { stop, task })
}

/// What answering a request needs, and the requests still being answered.
struct Exchanges<S> {
    service: S,
    /// Asked for the server's `max_payload` per request: a reconnection may change it.
    client: async_nats::Client,
    max_body: usize,
    in_flight: TaskTracker,
}

impl<S, B> Exchanges<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Answers `request`, inline if the service does not have to wait.
    fn start(&mut self, request: async_nats::service::Request) {
        let (service, max_payload, max_body) = (
            self.service.clone(),
            self.client.max_payload(),
            self.max_body,
        );
        let mut exchange = Box::pin(async move {
            // A panicking handler costs its own request a 500, not the endpoint: the
            // first poll runs inline on the receive loop, which a panic would otherwise end.
            let answered = AssertUnwindSafe(answer(service, &request.message, max_body))
                .catch_unwind()
                .await;
            let (head, body) = answered.unwrap_or_else(|_| {
                tracing::error!("The service panicked answering a mesh request.");
                encode_plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            });
            let (head, body) = fit_in_one_message(max_payload, &request.message, head, body);
            if let Err(error) = request.respond_with_headers(Ok(body), head).await {
                tracing::warn!(%error, "Mesh reply not sent.");
            }
        });
        // Most handlers (a cache hit, a validation error) finish without waiting on
        // anything: answering them inline saves a task spawn and a cross-thread wake-up
        // per request. One that is still pending moves to its own task; polling it once
        // with a no-op waker first is sound because every poll registers the waker anew.
        let mut first_poll = Context::from_waker(Waker::noop());
        if exchange.as_mut().poll(&mut first_poll).is_pending() {
            self.in_flight.spawn(exchange);
        }
    }
}

/// Waits (briefly) until the server routes requests to the new endpoint: a ping to this
/// very instance goes through the server after the endpoint's subscription, so its answer
/// proves the subscription is in place. Without it, a caller could see "no responders"
/// just after `serve` returned. If NATS is unreachable it does not wait long: the client
/// subscribes when it connects, and readiness reports the outage meanwhile.
async fn confirm_subscribed(client: &async_nats::Client, name: &str, instance: &str) {
    let ping = client.request(format!("$SRV.PING.{name}.{instance}"), Bytes::new());
    if tokio::time::timeout(std::time::Duration::from_secs(2), ping)
        .await
        .map_or(true, |answer| answer.is_err())
    {
        tracing::warn!(service = %name, "Mesh endpoint not confirmed; NATS may be unreachable.");
    }
}

/// Runs one request through the service and encodes its answer.
async fn answer<S, B>(
    service: S,
    message: &async_nats::Message,
    max_body: usize,
) -> (async_nats::HeaderMap, Bytes)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let head = match wire::decode_request_head(message.headers.as_ref()) {
        Ok(head) => head,
        Err(error) => {
            return encode_plain(StatusCode::BAD_REQUEST, "bad_request", &error.to_string());
        }
    };
    let is_grpc = wire::is_grpc(&head.headers);
    if message.payload.len() > max_body {
        let msg = format!(
            "request body of {} bytes exceeds the limit of {max_body} bytes",
            message.payload.len()
        );
        return encode_mesh_error(is_grpc, MeshErrorKind::PayloadTooLarge, &msg);
    }
    let budget = head.budget;
    let mut request = Request::new(Full::new(message.payload.clone()));
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.headers_mut() = head.headers;
    let call = service.oneshot(request);
    let outcome: Result<Response<B>, BoxError> = match budget {
        // The deadline is current while the service runs (its layers and nested mesh calls
        // see it), and dropping the call when it passes stops the handler's work.
        Some(budget) => {
            let deadline = Deadline::after(budget);
            match tokio::time::timeout_at(deadline.0, deadline.scope(call)).await {
                Ok(outcome) => outcome.map_err(Into::into),
                Err(_) => {
                    let msg = format!("the request's deadline of {budget:?} passed in the service");
                    return encode_mesh_error(is_grpc, MeshErrorKind::Timeout, &msg);
                }
            }
        }
        None => call.await.map_err(Into::into),
    };
    match outcome {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            match read_to_end(body).await {
                Ok((data, trailers)) => {
                    let head =
                        wire::encode_response_head(parts.status, &parts.headers, trailers.as_ref());
                    (head, data)
                }
                Err(error) => {
                    let error: BoxError = error.into();
                    tracing::warn!(%error, "Response body failed.");
                    encode_mesh_error(
                        is_grpc,
                        MeshErrorKind::Transport,
                        "the response body failed",
                    )
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, "Service failed.");
            encode_plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

fn encode_plain(status: StatusCode, code: &str, message: &str) -> (async_nats::HeaderMap, Bytes) {
    let response: Response<Bytes> = kit::error::error_response(status, code, message);
    let (parts, body) = response.into_parts();
    (
        wire::encode_response_head(parts.status, &parts.headers, None),
        body,
    )
}

fn encode_mesh_error(
    is_grpc: bool,
    kind: MeshErrorKind,
    message: &str,
) -> (async_nats::HeaderMap, Bytes) {
    let response = super::channel::mesh_error_response(is_grpc, kind, message);
    let (parts, body) = response.into_parts();
    (
        wire::encode_response_head(parts.status, &parts.headers, None),
        body,
    )
}

/// A response that does not fit in one NATS message becomes a 502 `upstream_response_too_large`
/// (for gRPC, RESOURCE_EXHAUSTED) that says so.
fn fit_in_one_message(
    max_payload: usize,
    request: &async_nats::Message,
    head: async_nats::HeaderMap,
    body: Bytes,
) -> (async_nats::HeaderMap, Bytes) {
    // Headers are small; keep a margin for them rather than serialising twice.
    let limit = max_payload.saturating_sub(64 * 1024);
    if body.len() <= limit {
        return (head, body);
    }
    let msg = format!(
        "the response of {} bytes does not fit in one NATS message",
        body.len()
    );
    let is_grpc = wire::decode_request_head(request.headers.as_ref())
        .is_ok_and(|head| wire::is_grpc(&head.headers));
    encode_mesh_error(is_grpc, MeshErrorKind::ResponseTooLarge, &msg)
}
