//! How an HTTP exchange is laid onto NATS messages.
//!
//! Request: `Mesh-Method`, `Mesh-Path` (path and query) and `Mesh-Timeout-Ms` (the caller's
//! remaining budget) as NATS headers, next to the HTTP headers; the body is the payload.
//! Response: `Mesh-Status`, the HTTP headers, and each trailer as `Mesh-Trailer-<name>`.
//! Everything stays readable with `nats sub 'mesh.>'`.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

pub(crate) const METHOD: &str = "Mesh-Method";
pub(crate) const PATH: &str = "Mesh-Path";
pub(crate) const STATUS: &str = "Mesh-Status";
pub(crate) const TIMEOUT_MS: &str = "Mesh-Timeout-Ms";
pub(crate) const TRAILER_PREFIX: &str = "mesh-trailer-";

/// The caller's remaining budget in milliseconds, on NATS and HTTP/2 alike.
pub const TIMEOUT_HEADER: &str = "mesh-timeout-ms";

/// Set on responses the mesh made itself (no responder, timeout, too large), so callers and
/// retry policies can tell them from the service's own answers.
pub const MESH_ERROR_HEADER: &str = "mesh-error";

/// The subject a service's HTTP endpoint listens on.
pub fn subject_for(service: &str) -> String {
    format!("mesh.{service}.http")
}

/// Why the mesh answered instead of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshErrorKind {
    /// Nothing serves the subject (or nothing listens on the HTTP address): 503.
    NoResponder,
    /// The deadline passed before the answer came: 504.
    Timeout,
    /// The request does not fit in one message: 413.
    PayloadTooLarge,
    /// The request could not be sent or the answer not read: 502.
    Transport,
}

impl MeshErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoResponder => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Transport => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::NoResponder => "upstream_unavailable",
            Self::Timeout => "upstream_timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Transport => "upstream_error",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::NoResponder,
            Self::Timeout,
            Self::PayloadTooLarge,
            Self::Transport,
        ]
        .into_iter()
        .find(|k| k.code() == code)
    }
}

/// A complete response the mesh synthesises, in the DESIGN.md error shape.
pub(crate) fn error_response(kind: MeshErrorKind, message: &str) -> http::Response<Bytes> {
    let mut response = kit::error::error_response(kind.status(), kind.code(), message);
    response
        .headers_mut()
        .insert(MESH_ERROR_HEADER, HeaderValue::from_static(kind.code()));
    response
}

/// Headers that describe one hop, not the message: never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "host"
    )
}

fn is_mesh_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(METHOD)
        || name.eq_ignore_ascii_case(PATH)
        || name.eq_ignore_ascii_case(STATUS)
        || name.eq_ignore_ascii_case(TIMEOUT_MS)
}

/// Copies HTTP headers into NATS headers, dropping hop-by-hop ones and values that are not
/// visible ASCII (NATS headers are text).
pub(crate) fn copy_to_nats(src: &HeaderMap, dst: &mut async_nats::HeaderMap, prefix: &str) {
    for (name, value) in src {
        if is_hop_by_hop(name) {
            continue;
        }
        match value.to_str() {
            Ok(text) => dst.append(format!("{prefix}{}", name.as_str()), text),
            Err(_) => {
                tracing::debug!(header = %name, "Non-text header value not carried over NATS.")
            }
        }
    }
}

/// Copies NATS headers back into HTTP headers and trailers.
pub(crate) fn copy_from_nats(src: &async_nats::HeaderMap, headers: &mut HeaderMap) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    for (name, values) in src.iter() {
        let name: &str = name.as_ref();
        if is_mesh_header(name) {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let (target, http_name) = match lower.strip_prefix(TRAILER_PREFIX) {
            Some(trailer) => (&mut trailers, trailer.to_owned()),
            None => (&mut *headers, lower),
        };
        let Ok(http_name) = HeaderName::from_bytes(http_name.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                target.append(http_name.clone(), value);
            }
        }
    }
    trailers
}

pub(crate) fn encode_request_head(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    budget: Option<Duration>,
) -> async_nats::HeaderMap {
    let mut nats = async_nats::HeaderMap::new();
    copy_to_nats(headers, &mut nats, "");
    nats.insert(METHOD, method.as_str());
    nats.insert(PATH, path_and_query);
    if let Some(budget) = budget {
        nats.insert(TIMEOUT_MS, budget.as_millis().max(1).to_string());
    }
    nats
}

/// The parts of a request read back from a NATS message.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub budget: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("the message has no {0} header")]
    Missing(&'static str),
    #[error("invalid {0} header")]
    Invalid(&'static str),
}

pub(crate) fn decode_request_head(
    nats: Option<&async_nats::HeaderMap>,
) -> Result<RequestHead, DecodeError> {
    let nats = nats.ok_or(DecodeError::Missing(METHOD))?;
    let method = nats
        .get(METHOD)
        .ok_or(DecodeError::Missing(METHOD))?
        .as_str()
        .parse::<Method>()
        .map_err(|_| DecodeError::Invalid(METHOD))?;
    let path_and_query = nats.get(PATH).ok_or(DecodeError::Missing(PATH))?.as_str();
    if !path_and_query.starts_with('/') {
        return Err(DecodeError::Invalid(PATH));
    }
    let budget = nats
        .get(TIMEOUT_MS)
        .map(|v| {
            v.as_str()
                .parse::<u64>()
                .map_err(|_| DecodeError::Invalid(TIMEOUT_MS))
        })
        .transpose()?
        .map(Duration::from_millis);
    let mut headers = HeaderMap::new();
    let _ = copy_from_nats(nats, &mut headers);
    Ok(RequestHead {
        method,
        path_and_query: path_and_query.to_owned(),
        headers,
        budget,
    })
}

pub(crate) fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
) -> async_nats::HeaderMap {
    let mut nats = async_nats::HeaderMap::new();
    copy_to_nats(headers, &mut nats, "");
    if let Some(trailers) = trailers {
        copy_to_nats(trailers, &mut nats, TRAILER_PREFIX);
    }
    nats.insert(STATUS, status.as_str());
    nats
}

/// Status, headers and trailers of a response message.
pub(crate) fn decode_response_head(
    nats: Option<&async_nats::HeaderMap>,
) -> Result<(StatusCode, HeaderMap, HeaderMap), DecodeError> {
    let nats = nats.ok_or(DecodeError::Missing(STATUS))?;
    let status = nats
        .get(STATUS)
        .ok_or(DecodeError::Missing(STATUS))?
        .as_str()
        .parse::<u16>()
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or(DecodeError::Invalid(STATUS))?;
    let mut headers = HeaderMap::new();
    let trailers = copy_from_nats(nats, &mut headers);
    Ok((status, headers, trailers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_round_trips() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        let nats = encode_request_head(
            &Method::PUT,
            "/products/1?x=y",
            &headers,
            Some(Duration::from_millis(1500)),
        );
        let head = decode_request_head(Some(&nats)).expect("decodes");
        assert_eq!(head.method, Method::PUT);
        assert_eq!(head.path_and_query, "/products/1?x=y");
        assert_eq!(head.budget, Some(Duration::from_millis(1500)));
        assert_eq!(head.headers["traceparent"], "00-abc-def-01");
        let multi: Vec<_> = head.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert!(!head.headers.contains_key("connection"));
        assert!(!head.headers.contains_key("mesh-method"));
    }

    #[test]
    fn response_trailers_come_back_as_trailers() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        trailers.insert("grpc-message", HeaderValue::from_static("not found"));
        let nats = encode_response_head(StatusCode::OK, &headers, Some(&trailers));
        let (status, headers, trailers) = decode_response_head(Some(&nats)).expect("decodes");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/grpc");
        assert!(!headers.contains_key("grpc-status"));
        assert_eq!(trailers["grpc-status"], "5");
        assert_eq!(trailers["grpc-message"], "not found");
    }

    #[test]
    fn a_message_without_mesh_headers_is_rejected() {
        assert!(decode_request_head(None).is_err());
        let mut nats = async_nats::HeaderMap::new();
        nats.insert(METHOD, "GET");
        nats.insert(PATH, "no-slash");
        assert!(matches!(
            decode_request_head(Some(&nats)),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn error_kinds_map_to_design_statuses() {
        assert_eq!(MeshErrorKind::NoResponder.status(), 503);
        assert_eq!(MeshErrorKind::Timeout.status(), 504);
        assert_eq!(MeshErrorKind::PayloadTooLarge.status(), 413);
        let response = error_response(MeshErrorKind::Timeout, "slow");
        assert_eq!(response.headers()[MESH_ERROR_HEADER], "upstream_timeout");
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["error"]["code"], "upstream_timeout");
    }
}
