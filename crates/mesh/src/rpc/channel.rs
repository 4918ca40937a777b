//! `Channel`: the client side, a `tower::Service<http::Request<_>>` over NATS or HTTP/2.
//!
//! A tonic client runs on it unchanged (`ProductServiceClient::new(channel)`), and the
//! gateway forwards through it. Failures of the path itself come back as responses with the
//! DESIGN.md status (503 no responder, 504 deadline, 413 too large, 502 transport) and a
//! `mesh-error` header; for gRPC requests they come back as gRPC statuses instead
//! (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED), which is what a tonic caller expects.

use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::RequestErrorKind;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Deadline;
use super::body::{MeshBody, read_to_end};
use super::wire::{self, MeshErrorKind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a [`Channel`] reaches its service (`MESH_TRANSPORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// NATS request/reply on `mesh.<service>.http`.
    #[default]
    Nats,
    /// Plain HTTP/2 (prior knowledge) to the service's own port.
    Http,
}

#[derive(Debug, thiserror::Error)]
#[error("MESH_TRANSPORT must be nats or http, not {0:?}")]
pub struct TransportParseError(String);

impl FromStr for Transport {
    type Err = TransportParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "nats" => Ok(Self::Nats),
            "http" => Ok(Self::Http),
            _ => Err(TransportParseError(s.to_owned())),
        }
    }
}

/// The request could not even be read.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("reading the request body failed: {0}")]
    Body(#[source] BoxError),
}

#[derive(Clone)]
enum Target {
    Nats {
        client: async_nats::Client,
        // A `Subject` is shared bytes: cloning it per request allocates nothing.
        subject: async_nats::Subject,
    },
    Http {
        // Boxed: the hyper client is several times larger than a NATS handle.
        client: Box<HttpClient<HttpConnector, Full<Bytes>>>,
        base: Uri,
    },
}

/// A client for one service. Cloning it is one reference count: tower clones services per
/// call (the retry layer, tonic), and an async-nats client is costly to clone (it
/// allocates), so the channel's state lives behind one `Arc`.
#[derive(Clone)]
pub struct Channel(Arc<Endpoint>);

#[derive(Clone)]
struct Endpoint {
    service: Box<str>,
    target: Target,
    timeout: Duration,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.0.target {
            Target::Nats { subject, .. } => format!("nats {subject}"),
            Target::Http { base, .. } => format!("http {base}"),
        };
        f.debug_struct("Channel")
            .field("service", &self.0.service)
            .field("target", &target)
            .field("timeout", &self.0.timeout)
            .finish()
    }
}

impl Channel {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn new(service: &str, target: Target) -> Self {
        Self(Arc::new(Endpoint {
            service: service.into(),
            target,
            timeout: Self::DEFAULT_TIMEOUT,
        }))
    }

    /// Reaches `service` over NATS.
    pub fn nats(client: async_nats::Client, service: &str) -> Self {
        let subject = wire::subject_for(service).into();
        Self::new(service, Target::Nats { client, subject })
    }

    /// Reaches `service` over HTTP/2 at `base` (scheme and authority, e.g. `http://127.0.0.1:8081`).
    pub fn http(base: Uri, service: &str) -> Self {
        let mut connector = HttpConnector::new();
        // Without TCP_NODELAY, Nagle and delayed ACK cost ~40 ms per small exchange.
        connector.set_nodelay(true);
        let client = HttpClient::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        let client = Box::new(client);
        Self::new(service, Target::Http { client, base })
    }

    /// The transport is a setting: the same call site gets either channel.
    pub fn for_transport(
        transport: Transport,
        service: &str,
        nats: &async_nats::Client,
        http_base: Uri,
    ) -> Self {
        match transport {
            Transport::Nats => Self::nats(nats.clone(), service),
            Transport::Http => Self::http(http_base, service),
        }
    }

    /// The budget of a request that carries no [`Deadline`] of its own.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.0).timeout = timeout;
        self
    }

    pub fn service(&self) -> &str {
        &self.0.service
    }
}

impl Endpoint {
    /// Owns its `Arc` so the boxed future of [`Channel::call`] is this one, not a wrapper
    /// that moves it once more.
    async fn send<B>(
        self: Arc<Self>,
        request: Request<B>,
    ) -> Result<Response<MeshBody>, ChannelError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let grpc = wire::is_grpc(&parts.headers);
        // A deadline from upstream (extension, or the request this task is serving) narrows
        // the channel's own timeout, never widens it; so does a gRPC caller's `grpc-timeout`.
        let deadline = Deadline::earliest(
            parts.extensions.get::<Deadline>().copied(),
            Deadline::current(),
        );
        let budget = deadline.map_or(self.timeout, |d| d.remaining().min(self.timeout));
        let budget = if grpc {
            grpc_timeout(&parts.headers).map_or(budget, |t| t.min(budget))
        } else {
            budget
        };
        if budget.is_zero() {
            let msg = format!("the deadline passed before {} was called", self.service);
            return Ok(into_mesh_body(mesh_error_response(
                grpc,
                MeshErrorKind::Timeout,
                &msg,
            )));
        }
        // Request trailers have no place on the wire; HTTP clients do not send them.
        let (body, _trailers) = read_to_end(body)
            .await
            .map_err(|e| ChannelError::Body(e.into()))?;
        let response = match &self.target {
            Target::Nats { client, subject } => {
                let headers = match wire::encode_request_head(
                    &parts.method,
                    path_and_query(&parts.uri),
                    &parts.headers,
                    Some(budget),
                ) {
                    Ok(headers) => headers,
                    Err(not_text) => {
                        let kind = MeshErrorKind::BadRequest;
                        let msg = self.describe(kind, budget, &not_text.to_string());
                        return Ok(into_mesh_body(mesh_error_response(grpc, kind, &msg)));
                    }
                };
                let request = async_nats::Request::new()
                    .headers(headers)
                    .payload(body)
                    .timeout(Some(budget));
                match client.send_request(subject.clone(), request).await {
                    Ok(message) => {
                        match wire::decode_response_head(message.status, message.headers.as_ref()) {
                            Ok((status, headers, trailers)) => {
                                let mut response =
                                    Response::new(MeshBody::new(message.payload, Some(trailers)));
                                *response.status_mut() = status;
                                *response.headers_mut() = headers;
                                response
                            }
                            Err(error) => {
                                let msg =
                                    format!("{} sent an unreadable answer: {error}", self.service);
                                into_mesh_body(mesh_error_response(
                                    grpc,
                                    MeshErrorKind::Transport,
                                    &msg,
                                ))
                            }
                        }
                    }
                    Err(error) => {
                        let kind = match error.kind() {
                            RequestErrorKind::NoResponders => MeshErrorKind::NoResponder,
                            RequestErrorKind::TimedOut => MeshErrorKind::Timeout,
                            RequestErrorKind::MaxPayloadExceeded => MeshErrorKind::PayloadTooLarge,
                            _ => MeshErrorKind::Transport,
                        };
                        let msg = self.describe(kind, budget, &error.to_string());
                        into_mesh_body(mesh_error_response(grpc, kind, &msg))
                    }
                }
            }
            // Boxed: hyper's future is large, and a NATS call should not carry (and move)
            // its space.
            Target::Http { client, base } => {
                Box::pin(self.send_http(client, base, parts, body, budget, grpc)).await
            }
        };
        Ok(response)
    }

    async fn send_http(
        &self,
        client: &HttpClient<HttpConnector, Full<Bytes>>,
        base: &Uri,
        parts: http::request::Parts,
        body: Bytes,
        budget: Duration,
        grpc: bool,
    ) -> Response<MeshBody> {
        let uri = match Uri::builder()
            .scheme(base.scheme_str().unwrap_or("http"))
            .authority(base.authority().map_or("127.0.0.1", |a| a.as_str()))
            .path_and_query(path_and_query(&parts.uri))
            .build()
        {
            Ok(uri) => uri,
            Err(error) => {
                let msg = format!("cannot address {}: {error}", self.service);
                return into_mesh_body(mesh_error_response(grpc, MeshErrorKind::Transport, &msg));
            }
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = parts.headers;
        request.headers_mut().remove(http::header::HOST);
        if let Ok(value) = HeaderValue::from_str(&budget.as_millis().max(1).to_string()) {
            request.headers_mut().insert(wire::TIMEOUT_HEADER, value);
        }
        let exchange = async {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let (data, trailers) = read_to_end(body).await?;
            Ok::<_, BoxError>(Response::from_parts(parts, MeshBody::new(data, trailers)))
        };
        match tokio::time::timeout(budget, exchange).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                let refused = error
                    .downcast_ref::<hyper_util::client::legacy::Error>()
                    .is_some_and(|e| e.is_connect());
                let kind = if refused {
                    MeshErrorKind::NoResponder
                } else {
                    MeshErrorKind::Transport
                };
                let msg = self.describe(kind, budget, &error.to_string());
                into_mesh_body(mesh_error_response(grpc, kind, &msg))
            }
            Err(_) => {
                let msg = self.describe(MeshErrorKind::Timeout, budget, "");
                into_mesh_body(mesh_error_response(grpc, MeshErrorKind::Timeout, &msg))
            }
        }
    }

    fn describe(&self, kind: MeshErrorKind, budget: Duration, detail: &str) -> String {
        let service = &self.service;
        match kind {
            MeshErrorKind::NoResponder => format!("no instance of {service} is reachable"),
            MeshErrorKind::Timeout => format!("{service} did not answer within {budget:?}"),
            MeshErrorKind::PayloadTooLarge => {
                format!("the request is larger than the mesh accepts for {service}: {detail}")
            }
            MeshErrorKind::Transport => format!("calling {service} failed: {detail}"),
            MeshErrorKind::ResponseTooLarge => {
                format!("{service}'s answer is larger than the mesh carries: {detail}")
            }
            MeshErrorKind::BadRequest => {
                format!("the request to {service} cannot be sent: {detail}")
            }
        }
    }
}

impl<B> tower::Service<Request<B>> for Channel
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = ChannelError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(Arc::clone(&self.0).send(request))
    }
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The `grpc-timeout` header: an integer of at most 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let raw = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

fn into_mesh_body(response: Response<Bytes>) -> Response<MeshBody> {
    response.map(MeshBody::from)
}

/// The answer the mesh gives for its own failures: the DESIGN.md error body, or for gRPC a
/// trailers-only response with the matching `grpc-status`.
pub(crate) fn mesh_error_response(
    grpc: bool,
    kind: MeshErrorKind,
    message: &str,
) -> Response<Bytes> {
    if !grpc {
        return wire::error_response(kind, message);
    }
    let code = match kind {
        MeshErrorKind::NoResponder | MeshErrorKind::Transport => grpc_status::UNAVAILABLE,
        MeshErrorKind::Timeout => grpc_status::DEADLINE_EXCEEDED,
        MeshErrorKind::PayloadTooLarge | MeshErrorKind::ResponseTooLarge => {
            grpc_status::RESOURCE_EXHAUSTED
        }
        MeshErrorKind::BadRequest => grpc_status::INVALID_ARGUMENT,
    };
    grpc_error_response(code, message, kind.code())
}

/// A trailers-only gRPC answer (HTTP 200, `grpc-status`, `grpc-message`) marked with
/// `mesh-error: <mesh_error>`: how the mesh and its layers fail a gRPC call they answer
/// themselves. tonic keeps the other headers as the status's metadata, so a caller can
/// tell these from the service's own statuses.
pub fn grpc_error_response(
    grpc_status: &'static str,
    message: &str,
    mesh_error: &'static str,
) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static(grpc_status));
    // grpc-message is percent-encoded text; keep it to visible ASCII.
    let printable: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&printable.replace('%', "%25")) {
        headers.insert("grpc-message", value);
    }
    headers.insert(
        wire::MESH_ERROR_HEADER,
        HeaderValue::from_static(mesh_error),
    );
    response
}

/// The gRPC status codes the mesh produces (grpc/doc/statuscodes.md).
pub use kit::api::grpc_status;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_parses_case_insensitively() {
        assert_eq!("NATS".parse::<Transport>().expect("nats"), Transport::Nats);
        assert_eq!("http".parse::<Transport>().expect("http"), Transport::Http);
        assert!("grpc".parse::<Transport>().is_err());
    }

    #[test]
    fn grpc_timeout_header_is_understood() {
        let mut headers = http::HeaderMap::new();
        for (raw, want) in [
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("5u", Some(Duration::from_micros(5))),
            ("123456789m", None),
            ("m", None),
            ("10x", None),
        ] {
            headers.insert("grpc-timeout", raw.parse().expect("value"));
            assert_eq!(grpc_timeout(&headers), want, "{raw}");
        }
    }

    #[test]
    fn grpc_failures_are_grpc_statuses() {
        let response = mesh_error_response(true, MeshErrorKind::Timeout, "slow 100%");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "4");
        assert_eq!(response.headers()["grpc-message"], "slow 100%25");
        let rest = mesh_error_response(false, MeshErrorKind::NoResponder, "gone");
        assert_eq!(rest.status(), 503);
    }
}
