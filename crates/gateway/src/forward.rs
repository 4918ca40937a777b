//! Forwarding one request to its upstream: buffer the body (bounded), rebuild the request
//! for the next hop, send it through the upstream's client stack, and hand the answer back
//! unchanged apart from the hop-by-hop headers.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use kit::api::ApiError;
use mesh::Deadline;
use mesh::rpc::{MeshBody, MeshErrorKind, TIMEOUT_HEADER};
use middleware::trace::inject_trace_headers;
use tower::ServiceExt;

use crate::upstream::UpstreamClient;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones
/// the next hop sets itself (`host`, `content-length`).
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Sends `request` to the upstream behind `client` and returns its answer. The mesh's own
/// failures (503 no instance, 504 too slow, 413 too large for the transport) are answers
/// too, in the contract's error shape, and are returned as they are.
pub async fn forward(client: UpstreamClient, max_body: usize, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Buffered: the mesh carries one message per request, and a buffered body can be sent
    // again by the retry policy. The edge already refused a too-large Content-Length; this
    // catches bodies that did not declare one.
    let body = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return payload_too_large(max_body),
        Err(error) => {
            tracing::debug!(%error, "Request body unreadable.");
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the request body could not be read",
            )
            .into_response();
        }
    };

    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // The channel sends the remaining budget itself; a client's value is not trusted as is.
    headers.remove(TIMEOUT_HEADER);
    // `x-request-id` is already among the headers: the edge's RequestTraceLayer put it there.
    append_forwarded_for(
        &mut headers,
        parts.extensions.get::<ConnectInfo<SocketAddr>>(),
    );
    inject_trace_headers(&mut headers);

    let mut outbound = http::Request::new(Full::new(body));
    *outbound.method_mut() = parts.method;
    *outbound.uri_mut() = parts
        .uri
        .path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    *outbound.headers_mut() = headers;
    // The edge's deadline; the channel sends what is left of it to the upstream.
    let deadline = Deadline::earliest(
        parts.extensions.get::<Deadline>().copied(),
        Deadline::current(),
    );
    if let Some(deadline) = deadline {
        outbound.extensions_mut().insert(deadline);
    }

    match client.oneshot(outbound).await {
        Ok(response) => into_client_response(response),
        Err(error) => {
            tracing::warn!(%error, "Forwarding failed.");
            MeshErrorKind::Transport
                .api_error("the request could not be forwarded")
                .into_response()
        }
    }
}

/// The contract's 413.
pub fn payload_too_large(max_body: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {max_body} bytes"),
    )
    .into_response()
}

fn into_client_response(response: http::Response<MeshBody>) -> Response {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Removes the hop-by-hop headers, including those the `Connection` header names.
///
/// One pass over the names, then removals only for what is there (usually `host`):
/// removing each of the eleven names blindly parses and hashes every one of them, twice per
/// request (request and response).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(&name.as_str()))
        .cloned()
        .collect();
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in doomed {
        headers.remove(name);
    }
}

/// Appends the client's address to `X-Forwarded-For`, so upstreams can log who called.
fn append_forwarded_for(headers: &mut HeaderMap, peer: Option<&ConnectInfo<SocketAddr>>) {
    let Some(ConnectInfo(addr)) = peer else {
        return;
    };
    let ip = addr.ip().to_string();
    let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_and_the_rest_kept() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "gateway:8000"),
            ("content-length", "12"),
            ("upgrade", "h2c"),
            ("authorization", "Bearer abc"),
            ("x-request-id", "r-1"),
            ("content-type", "application/json"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type", "x-request-id"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let peer = ConnectInfo(SocketAddr::from(([10, 0, 0, 7], 5555)));
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, Some(&peer));
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.7");
        append_forwarded_for(&mut headers, Some(&peer));
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.7, 10.0.0.7");
        let mut none = HeaderMap::new();
        append_forwarded_for(&mut none, None);
        assert!(none.is_empty());
    }
}
