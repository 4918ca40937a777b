//! The routing table and the edge stack in front of it.
//!
//! The gateway owns no business routes: a path prefix names the upstream, and the request is
//! forwarded as it came (DESIGN.md, "The mesh"). Anything else is a 404 in the contract's
//! shape. `/health`, `/ready` and `/metrics` come from kit; `/openapi.json` is added here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, RETRY_AFTER,
};
use axum::http::{HeaderName, Method, Uri};
use axum::middleware::{Next, from_fn, from_fn_with_state, map_request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use kit::api::ApiError;
use mesh::rpc::TIMEOUT_HEADER;
use middleware::auth::{AuthError, JwtKeys, bearer_token};
use middleware::deadline::DeadlineLayer;
use middleware::metrics::HttpMetricsLayer;
use middleware::rate_limit::RateLimitLayer;
use middleware::trace::{REQUEST_ID, RequestTraceLayer};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, CorsOrigins};
use crate::forward::{forward, payload_too_large};
use crate::upstream::UpstreamClient;

/// The three upstream clients, shared by every forwarding route.
#[derive(Clone)]
pub struct Upstreams {
    pub user: UpstreamClient,
    pub product: UpstreamClient,
    pub order: UpstreamClient,
}

/// The forwarding routes' state. axum clones it for every request: behind an `Arc`, that is
/// one reference count instead of three client stacks.
#[derive(Clone)]
struct Forwarding {
    upstreams: Arc<Upstreams>,
    max_body: usize,
}

/// Everything the gateway answers except kit's operational routes.
pub fn router(
    config: &Config,
    upstreams: Upstreams,
    keys: JwtKeys,
    metrics: &kit::Metrics,
    openapi_json: Bytes,
) -> Router {
    // One instance: registering the same metric twice would leave the second one unexported.
    let http_metrics = HttpMetricsLayer::new(metrics);
    let cors = cors(&config.cors_allow_origins);

    let edge = ServiceBuilder::new()
        // Request id and span first, so every answer below (rejections included) carries
        // the id and every log line has it.
        .layer(RequestTraceLayer)
        // Count and time every request, rejections included, by route template.
        .layer(http_metrics.clone())
        // Browsers: answer preflights here and add the CORS headers to every answer,
        // 401 and 429 included, so a page can read them.
        .layer(cors.clone())
        // Refuse a declared body over the limit before anything else reads it.
        .layer(from_fn_with_state(config.max_body_bytes, limit_body))
        // Verify a bearer token when there is one, so the rate limit keys by user.
        .layer(from_fn_with_state(keys, authenticate))
        // Per user (or per IP when anonymous, or when the token failed): 429 with
        // Retry-After.
        .layer(RateLimitLayer::new(
            config.rate_limit_per_second,
            config.rate_limit_burst,
        ))
        // A protected route without a valid token stops here, after the rate limit
        // counted it: guessing tokens costs what any other request costs.
        .layer(from_fn(refuse_unauthenticated))
        // The request's whole budget, set here and nowhere else: a client's own
        // `mesh-timeout-ms` (the mesh's header, not the public contract) is dropped, or a
        // budget of 0 ms would make any upstream look slow and open its circuit for all.
        .layer(map_request(drop_client_budget))
        // The channel sends what is left to the upstream, so every hop behind the gateway
        // shares it.
        .layer(DeadlineLayer::new(config.request_timeout));

    let forwarding = Router::new()
        .route("/register", any(to_user))
        .route("/login", any(to_user))
        .route("/profile", any(to_user))
        .route("/products", any(to_product))
        .route("/products/{*rest}", any(to_product))
        .route("/orders", any(to_order))
        .route("/orders/{*rest}", any(to_order))
        .fallback(no_route)
        .with_state(Forwarding {
            upstreams: Arc::new(upstreams),
            max_body: config.max_body_bytes,
        })
        .layer(edge);

    let docs = Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let document = openapi_json.clone();
                async move { ([(CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .layer(
            ServiceBuilder::new()
                // The same id, metrics and CORS as the API; no token or rate limit for docs.
                .layer(RequestTraceLayer)
                .layer(http_metrics)
                .layer(cors),
        );

    forwarding.merge(docs)
}

async fn to_user(State(state): State<Forwarding>, request: Request) -> Response {
    forward(state.upstreams.user.clone(), state.max_body, request).await
}

async fn to_product(State(state): State<Forwarding>, request: Request) -> Response {
    forward(state.upstreams.product.clone(), state.max_body, request).await
}

async fn to_order(State(state): State<Forwarding>, request: Request) -> Response {
    forward(state.upstreams.order.clone(), state.max_body, request).await
}

async fn drop_client_budget(mut request: Request) -> Request {
    request.headers_mut().remove(TIMEOUT_HEADER);
    request
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

fn cors(origins: &CorsOrigins) -> CorsLayer {
    let request_id = HeaderName::from_static(REQUEST_ID);
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        // Everything the contract lets a client send: `Idempotency-Key` on `POST /orders`,
        // `If-Match` on `PUT /products/{id}`, `traceparent` to join a browser's trace.
        .allow_headers([
            AUTHORIZATION,
            CONTENT_TYPE,
            request_id.clone(),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("traceparent"),
            IF_MATCH,
        ])
        .expose_headers([request_id, RETRY_AFTER, ETAG])
        .max_age(Duration::from_secs(600));
    match origins {
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::List(origins) => {
            layer.allow_origin(AllowOrigin::list(origins.iter().cloned()))
        }
    }
}

/// 413 for a declared `Content-Length` over the limit; undeclared bodies are counted as
/// they are read (see `forward`).
async fn limit_body(State(max_body): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = u64::try_from(max_body).unwrap_or(u64::MAX);
    if declared.is_some_and(|length| length > limit) {
        return payload_too_large(max_body);
    }
    next.run(request).await
}

/// Why a protected route's request will be answered 401, once the rate limit has seen it.
#[derive(Debug, Clone)]
struct Refused(AuthError);

/// The optional token check. A valid token puts its `Claims` in the request (the rate
/// limit keys by user). On a protected route a missing or invalid token marks the request
/// [`Refused`] (answered 401 by `refuse_unauthenticated`, after the rate limit); on a public
/// route a bad token is ignored. The `Authorization` header is forwarded unchanged either
/// way, and the upstream verifies it again.
async fn authenticate(State(keys): State<JwtKeys>, mut request: Request, next: Next) -> Response {
    let required = requires_token(request.method(), request.uri().path());
    let verified = bearer_token(request.headers()).and_then(|token| keys.verify(token));
    match verified {
        Ok(claims) => {
            request.extensions_mut().insert(claims);
        }
        Err(error) if required => {
            request.extensions_mut().insert(Refused(error));
        }
        Err(AuthError::MissingToken) => {}
        Err(error) => {
            tracing::debug!(%error, "Unusable token on a public route; the upstream decides.");
        }
    }
    next.run(request).await
}

async fn refuse_unauthenticated(request: Request, next: Next) -> Response {
    match request.extensions().get::<Refused>() {
        Some(Refused(error)) => error.clone().into_response(),
        None => next.run(request).await,
    }
}

/// The routes the contract guards with a bearer token: `/profile`, every `/orders*`, and
/// the writes on `/products*`.
pub fn requires_token(method: &Method, path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if path == "/profile" || under("/orders") {
        return true;
    }
    if under("/products") {
        return !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_routes_follow_the_contract() {
        for (method, path, want) in [
            (Method::POST, "/register", false),
            (Method::POST, "/login", false),
            (Method::GET, "/profile", true),
            (Method::GET, "/products", false),
            (
                Method::GET,
                "/products/0190c3c4-0000-7000-8000-000000000000",
                false,
            ),
            (Method::HEAD, "/products", false),
            (Method::POST, "/products", true),
            (Method::PUT, "/products/abc", true),
            (Method::DELETE, "/products/abc", true),
            (Method::PATCH, "/products/abc", true),
            (Method::GET, "/orders", true),
            (Method::POST, "/orders", true),
            (Method::GET, "/orders/abc", true),
            (Method::GET, "/ordersx", false),
            (Method::POST, "/productsx", false),
            (Method::GET, "/health", false),
        ] {
            assert_eq!(requires_token(&method, path), want, "{method} {path}");
        }
    }
}
