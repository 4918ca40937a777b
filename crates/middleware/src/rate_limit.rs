//! Per-client token buckets (governor): the user id when the request is authenticated, the
//! peer IP otherwise. Over the limit: 429 with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::auth::Claims;

type KeyedLimiter = RateLimiter<ClientKey, DefaultKeyedStateStore<ClientKey>, DefaultClock>;

#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<KeyedLimiter>,
    seen: Arc<AtomicU64>,
}

impl RateLimitLayer {
    /// `per_second` requests per second sustained, bursts of `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            seen: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

/// Whose bucket a request draws from. Typed rather than formatted: an address is hashed as
/// it is, with no string built per request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    User(String),
    Ip(IpAddr),
    Anonymous,
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::Ip(ip) => write!(f, "ip:{ip}"),
            Self::Anonymous => f.write_str("anonymous"),
        }
    }
}

pub fn client_key<B>(request: &Request<B>) -> ClientKey {
    if let Some(claims) = request.extensions().get::<Claims>() {
        return ClientKey::User(claims.sub.clone());
    }
    match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => ClientKey::Ip(addr.ip()),
        None => ClientKey::Anonymous,
    }
}

impl<S, B, ResBody> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let limiter = &self.layer.limiter;
        // Forget idle clients now and then so the key map stays bounded.
        if self.layer.seen.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
        }
        let key = client_key(&request);
        if let Err(not_until) = limiter.check_key(&key) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Box::pin(async move { Ok(too_many_requests(seconds)) });
        }
        let mut inner = crate::take_ready(&mut self.inner);
        Box::pin(async move { inner.call(request).await })
    }
}

fn too_many_requests<B: From<Bytes>>(retry_after_seconds: u64) -> Response<B> {
    let mut response = kit::error::error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!("too many requests; retry in {retry_after_seconds} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn ok() -> impl Service<
        Request<()>,
        Response = Response<Bytes>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone {
        tower::service_fn(|_request: Request<()>| async { Ok(Response::new(Bytes::new())) })
    }

    fn from_ip(ip: [u8; 4]) -> Request<()> {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        request
    }

    fn nonzero(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[tokio::test]
    async fn each_client_has_its_own_bucket() {
        let service = RateLimitLayer::new(nonzero(1), nonzero(2)).layer(ok());
        for _ in 0..2 {
            let response = service
                .clone()
                .oneshot(from_ip([10, 0, 0, 1]))
                .await
                .expect("answer");
            assert_eq!(response.status(), 200);
        }
        let limited = service
            .clone()
            .oneshot(from_ip([10, 0, 0, 1]))
            .await
            .expect("answer");
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()[http::header::RETRY_AFTER], "1");
        let other = service
            .oneshot(from_ip([10, 0, 0, 2]))
            .await
            .expect("answer");
        assert_eq!(other.status(), 200, "another client is not limited");
    }

    #[test]
    fn authenticated_requests_are_keyed_by_user() {
        let mut request = from_ip([10, 0, 0, 1]);
        request.extensions_mut().insert(Claims {
            sub: "user-1".into(),
            email: "a@b.c".into(),
            iss: "shopmesh".into(),
            aud: "shopmesh".into(),
            iat: 0,
            nbf: 0,
            exp: 0,
        });
        assert_eq!(client_key(&request).to_string(), "user:user-1");
        assert_eq!(
            client_key(&from_ip([10, 0, 0, 9])).to_string(),
            "ip:10.0.0.9"
        );
        assert_eq!(client_key(&Request::new(())), ClientKey::Anonymous);
    }
}
