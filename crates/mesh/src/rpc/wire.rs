//! How an HTTP exchange is laid onto NATS messages.
//!
//! Request: `Mesh-Request: <METHOD> <path-and-query>` (an HTTP request line without the
//! version) and `Mesh-Timeout-Ms` (the caller's remaining budget) as NATS headers, next to the
//! HTTP headers; the body is the payload. Response: `Mesh-Status`, the HTTP headers, and each
//! trailer as `Mesh-Trailer-<name>`. Everything stays readable with `nats sub 'mesh.>'`.
//!
//! Header maps are most of the mesh's own cost per request (async-nats keeps them in a
//! SipHash map that grows from empty), so the wire uses as few headers as it can, names them
//! with constants (no parsing or allocation), and reads a message's headers in one pass.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

/// `<METHOD> <path-and-query>`: one header instead of two keeps a typical request within
/// the three entries an async-nats header map holds before it has to grow.
const REQUEST_NAME: &str = "Mesh-Request";
const STATUS_NAME: &str = "Mesh-Status";
const TIMEOUT_MS_NAME: &str = "Mesh-Timeout-Ms";
const REQUEST: async_nats::HeaderName = async_nats::HeaderName::from_static(REQUEST_NAME);
const STATUS: async_nats::HeaderName = async_nats::HeaderName::from_static(STATUS_NAME);
const TIMEOUT_MS: async_nats::HeaderName = async_nats::HeaderName::from_static(TIMEOUT_MS_NAME);
const TRAILER_PREFIX: &str = "mesh-trailer-";

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

/// Whether an exchange is gRPC: its failures are then answered as gRPC statuses.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
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

/// The NATS name of an HTTP header. The names nearly every exchange carries are constants:
/// parsing one copies it into a new allocation, on every message.
fn nats_name(name: &HeaderName) -> Option<async_nats::HeaderName> {
    use async_nats::HeaderName as Nats;
    Some(match name.as_str() {
        "content-type" => Nats::from_static("content-type"),
        "accept" => Nats::from_static("accept"),
        "authorization" => Nats::from_static("authorization"),
        "traceparent" => Nats::from_static("traceparent"),
        "tracestate" => Nats::from_static("tracestate"),
        "x-request-id" => Nats::from_static("x-request-id"),
        "user-agent" => Nats::from_static("user-agent"),
        "te" => Nats::from_static("te"),
        "grpc-timeout" => Nats::from_static("grpc-timeout"),
        "grpc-encoding" => Nats::from_static("grpc-encoding"),
        "grpc-accept-encoding" => Nats::from_static("grpc-accept-encoding"),
        // An http header name is always a valid NATS one; the check costs nothing.
        other => return other.parse().ok(),
    })
}

/// The NATS name of an HTTP trailer: `Mesh-Trailer-<name>`; gRPC's two are constants.
fn nats_trailer_name(name: &HeaderName) -> Option<async_nats::HeaderName> {
    use async_nats::HeaderName as Nats;
    Some(match name.as_str() {
        "grpc-status" => Nats::from_static("mesh-trailer-grpc-status"),
        "grpc-message" => Nats::from_static("mesh-trailer-grpc-message"),
        other => return format!("{TRAILER_PREFIX}{other}").parse().ok(),
    })
}

/// Copies HTTP headers into NATS headers, dropping hop-by-hop ones and values that are not
/// visible ASCII (NATS headers are text). Trailers are named with [`nats_trailer_name`].
fn copy_to_nats(src: &HeaderMap, dst: &mut async_nats::HeaderMap, trailers: bool) {
    let mut previous: Option<&HeaderName> = None;
    for (name, value) in src {
        // The http map yields the values of one name one after the other: the first is an
        // insert (one hash), only the following ones need append's lookup.
        let repeated = previous == Some(name);
        previous = Some(name);
        if is_hop_by_hop(name) {
            continue;
        }
        let Ok(text) = value.to_str() else {
            tracing::debug!(header = %name, "Non-text header value not carried over NATS.");
            continue;
        };
        let nats_name = if trailers {
            nats_trailer_name(name)
        } else {
            nats_name(name)
        };
        let Some(nats_name) = nats_name else { continue };
        if repeated {
            dst.append(nats_name, text);
        } else {
            dst.insert(nats_name, text);
        }
    }
}

/// A message's NATS headers, sorted in one pass into the mesh's own and the HTTP ones.
#[derive(Debug, Default)]
struct ReadHeaders<'a> {
    request_line: Option<&'a str>,
    timeout_ms: Option<&'a str>,
    status: Option<&'a str>,
    headers: HeaderMap,
    trailers: HeaderMap,
}

fn read_nats(src: &async_nats::HeaderMap) -> ReadHeaders<'_> {
    let mut read = ReadHeaders::default();
    for (name, values) in src.iter() {
        let name: &str = name.as_ref();
        let first = values.first().map(|v| v.as_str());
        if name.eq_ignore_ascii_case(REQUEST_NAME) {
            read.request_line = first;
            continue;
        }
        if name.eq_ignore_ascii_case(TIMEOUT_MS_NAME) {
            read.timeout_ms = first;
            continue;
        }
        if name.eq_ignore_ascii_case(STATUS_NAME) {
            read.status = first;
            continue;
        }
        let (target, http_name) = match strip_prefix_ignore_case(name, TRAILER_PREFIX) {
            Some(trailer) => (&mut read.trailers, trailer),
            None => (&mut read.headers, name),
        };
        // `from_bytes` lower-cases the name itself.
        let Ok(http_name) = HeaderName::from_bytes(http_name.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                target.append(&http_name, value);
            }
        }
    }
    read
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

pub(crate) fn encode_request_head(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    budget: Option<Duration>,
) -> async_nats::HeaderMap {
    let mut nats = async_nats::HeaderMap::new();
    copy_to_nats(headers, &mut nats, false);
    let mut line = String::with_capacity(method.as_str().len() + 1 + path_and_query.len());
    line.push_str(method.as_str());
    line.push(' ');
    line.push_str(path_and_query);
    nats.insert(REQUEST, line);
    if let Some(budget) = budget {
        nats.insert(TIMEOUT_MS, budget.as_millis().max(1).to_string());
    }
    nats
}

/// The parts of a request read back from a NATS message.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: Method,
    /// Only a path and query: the authority is the subject.
    pub uri: http::Uri,
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
    const NAME: &str = REQUEST_NAME;
    const TIMEOUT: &str = TIMEOUT_MS_NAME;
    let read = read_nats(nats.ok_or(DecodeError::Missing(NAME))?);
    let line = read.request_line.ok_or(DecodeError::Missing(NAME))?;
    let (method, path_and_query) = line.split_once(' ').ok_or(DecodeError::Invalid(NAME))?;
    let method = method
        .parse::<Method>()
        .map_err(|_| DecodeError::Invalid(NAME))?;
    if !path_and_query.starts_with('/') {
        return Err(DecodeError::Invalid(NAME));
    }
    let budget = read
        .timeout_ms
        .map(|v| v.parse::<u64>().map_err(|_| DecodeError::Invalid(TIMEOUT)))
        .transpose()?
        .map(Duration::from_millis);
    let uri = http::Uri::try_from(path_and_query).map_err(|_| DecodeError::Invalid(NAME))?;
    Ok(RequestHead {
        method,
        uri,
        headers: read.headers,
        budget,
    })
}

pub(crate) fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
) -> async_nats::HeaderMap {
    let mut nats = async_nats::HeaderMap::new();
    copy_to_nats(headers, &mut nats, false);
    if let Some(trailers) = trailers {
        copy_to_nats(trailers, &mut nats, true);
    }
    nats.insert(STATUS, status.as_str());
    nats
}

/// Status, headers and trailers of a response message.
pub(crate) fn decode_response_head(
    nats: Option<&async_nats::HeaderMap>,
) -> Result<(StatusCode, HeaderMap, HeaderMap), DecodeError> {
    const NAME: &str = STATUS_NAME;
    let read = read_nats(nats.ok_or(DecodeError::Missing(NAME))?);
    let status = read
        .status
        .ok_or(DecodeError::Missing(NAME))?
        .parse::<u16>()
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or(DecodeError::Invalid(NAME))?;
    Ok((status, read.headers, read.trailers))
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
        assert_eq!(head.uri, "/products/1?x=y");
        assert_eq!(head.budget, Some(Duration::from_millis(1500)));
        assert_eq!(head.headers["traceparent"], "00-abc-def-01");
        let multi: Vec<_> = head.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert!(!head.headers.contains_key("connection"));
        assert!(!head.headers.contains_key("mesh-request"));
        assert!(!head.headers.contains_key("mesh-timeout-ms"));
    }

    #[test]
    fn names_from_other_clients_are_read_in_any_case() {
        let mut nats = async_nats::HeaderMap::new();
        nats.insert("MESH-REQUEST", "DELETE /products/7");
        nats.insert("mesh-timeout-ms", "250");
        nats.insert("Content-Type", "application/json");
        let head = decode_request_head(Some(&nats)).expect("decodes");
        assert_eq!(head.method, Method::DELETE);
        assert_eq!(head.uri, "/products/7");
        assert_eq!(head.budget, Some(Duration::from_millis(250)));
        assert_eq!(head.headers["content-type"], "application/json");
        assert_eq!(head.headers.len(), 1);

        let mut reply = async_nats::HeaderMap::new();
        reply.insert("mesh-status", "404");
        reply.insert("MESH-TRAILER-Grpc-Status", "5");
        let (status, headers, trailers) = decode_response_head(Some(&reply)).expect("decodes");
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(headers.is_empty());
        assert_eq!(trailers["grpc-status"], "5");
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
        for line in ["GET no-slash", "GET", "G@T /x", "GET /a b"] {
            let mut nats = async_nats::HeaderMap::new();
            nats.insert(REQUEST, line);
            assert!(
                matches!(
                    decode_request_head(Some(&nats)),
                    Err(DecodeError::Invalid(_))
                ),
                "{line}"
            );
        }
        let mut bad_budget = async_nats::HeaderMap::new();
        bad_budget.insert(REQUEST, "GET /x");
        bad_budget.insert(TIMEOUT_MS, "soon");
        assert!(matches!(
            decode_request_head(Some(&bad_budget)),
            Err(DecodeError::Invalid("Mesh-Timeout-Ms"))
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
