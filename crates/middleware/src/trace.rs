//! Request ids and W3C trace context.
//!
//! [`RequestTraceLayer`] (servers): accepts `x-request-id` or makes one, opens the request's
//! span with it (continuing the caller's trace from `traceparent` when OpenTelemetry is on),
//! and returns the id on the response. [`inject_trace_headers`] (clients): forwards the
//! request id and adds `traceparent` for the current span when the request has none.
//!
//! Events: [`consumer_span`] opens the span a consumed event is handled in, a child of the
//! event's `traceparent`; [`traceparent_or`] is what an event emitted now should carry: the
//! current span's context, so the trace shows each hop, or (OpenTelemetry off) the one the
//! work started from.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response};
use opentelemetry::propagation::{Extractor, Injector};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

/// The request id of the request being served, for handlers and outgoing calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub HeaderValue);

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Adds `traceparent` for the current span unless the headers already carry one.
pub fn inject_trace_headers(headers: &mut HeaderMap) {
    if headers.contains_key(TRACEPARENT) {
        return;
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// A `traceparent` alone, as an event carries it.
struct TraceparentCarrier<'a>(Option<&'a str>);

impl Extractor for TraceparentCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The span a consumed event is handled in: `consume <event type>`, a child of the event's
/// `traceparent` (when OpenTelemetry is on), with the event's id and key.
pub fn consumer_span(event: &mesh::Event) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.name = %format!("consume {}", event.kind),
        otel.kind = "consumer",
        event_id = %event.id,
        event_key = %event.key,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&TraceparentCarrier(event.traceparent.as_deref()))
    });
    let _ = span.set_parent(parent);
    span
}

/// The `traceparent` of the current span, or `fallback` when there is none to give
/// (OpenTelemetry off): what an event emitted now carries.
pub fn traceparent_or(fallback: Option<String>) -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier.remove(TRACEPARENT).or(fallback)
}

fn valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTraceLayer;

impl<S> Layer<S> for RequestTraceLayer {
    type Service = RequestTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTrace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestTrace<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for RequestTrace<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // A caller's id is kept if it is sane; otherwise (or when absent) we make one.
        let id = request
            .headers()
            .get(REQUEST_ID)
            .filter(|v| valid_request_id(v))
            .cloned()
            .unwrap_or_else(|| {
                HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
            });
        request.headers_mut().insert(REQUEST_ID, id.clone());
        request.extensions_mut().insert(RequestId(id.clone()));

        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = %id.to_str().unwrap_or_default(),
            status = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);

        let mut inner = crate::take_ready(&mut self.inner);
        let record = span.clone();
        Box::pin(
            async move {
                let mut result = inner.call(request).await;
                if let Ok(response) = &mut result {
                    record.record("status", response.status().as_u16());
                    response.headers_mut().insert(REQUEST_ID, id);
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn event() -> mesh::Event {
        mesh::Event::new("shopmesh.test", "/test", "k-1", &serde_json::json!({}))
            .expect("event")
            .with_traceparent(Some(INCOMING.to_owned()))
    }

    #[test]
    fn a_consumed_event_is_handled_in_a_child_of_its_trace() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = consumer_span(&event());
            let _entered = span.enter();
            let emitted = traceparent_or(Some("unused".into())).expect("a traceparent");
            let parts: Vec<&str> = emitted.split('-').collect();
            assert_eq!(parts.len(), 4, "{emitted}");
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
            assert_ne!(parts[2], "00f067aa0ba902b7", "a span of its own");
        });
    }

    #[test]
    fn without_opentelemetry_the_incoming_traceparent_is_carried_on() {
        let span = consumer_span(&event());
        let _entered = span.enter();
        assert_eq!(
            traceparent_or(Some(INCOMING.to_owned())).as_deref(),
            Some(INCOMING)
        );
        assert_eq!(traceparent_or(None), None);
    }

    fn echo_id() -> impl Service<
        Request<()>,
        Response = Response<String>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone {
        tower::service_fn(|request: Request<()>| async move {
            let seen = request
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            Ok(Response::new(seen))
        })
    }

    #[tokio::test]
    async fn keeps_a_callers_request_id() {
        let request = Request::builder()
            .header(REQUEST_ID, "abc-123")
            .body(())
            .expect("request");
        let response = RequestTraceLayer
            .layer(echo_id())
            .oneshot(request)
            .await
            .expect("answer");
        assert_eq!(response.headers()[REQUEST_ID], "abc-123");
        assert_eq!(response.body(), "abc-123");
    }

    #[tokio::test]
    async fn makes_one_when_absent_or_unsafe() {
        for request in [
            Request::new(()),
            Request::builder()
                .header(REQUEST_ID, "bad id with spaces")
                .body(())
                .expect("request"),
        ] {
            let response = RequestTraceLayer
                .layer(echo_id())
                .oneshot(request)
                .await
                .expect("answer");
            let id = response.headers()[REQUEST_ID]
                .to_str()
                .expect("text")
                .to_owned();
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
            assert_eq!(response.body(), &id);
        }
    }

    #[test]
    fn an_existing_traceparent_is_forwarded_untouched() {
        let mut headers = HeaderMap::new();
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(TRACEPARENT, HeaderValue::from_static(value));
        inject_trace_headers(&mut headers);
        assert_eq!(headers[TRACEPARENT], value);
    }
}
