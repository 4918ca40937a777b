//! How an HTTP exchange is laid onto NATS messages.
//!
//! Request: `Mesh-Request: <METHOD> <path-and-query> [<budget>ms]` (an HTTP request line
//! with the caller's remaining budget where HTTP has its version, e.g. `GET /products/7
//! 2500ms`) as a NATS header, next to the HTTP headers; the body is the payload. Response:
//! `Mesh-Status` unless the status is 200, the HTTP headers, and each trailer as
//! `Mesh-Trailer-<name>`. Everything stays readable with `nats sub 'mesh.>'`.
//!
//! Every NATS header costs about 3k instructions per exchange (async-nats keeps headers in
//! a SipHash map of vectors, parsing and allocating per name and value), as much as the
//! rest of a request's head. So the wire spends one header on the request line and none on
//! the common status, names headers with constants, and reads a message's headers in one
//! pass.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

const REQUEST_NAME: &str = "Mesh-Request";
const STATUS_NAME: &str = "Mesh-Status";
const REQUEST: async_nats::HeaderName = async_nats::HeaderName::from_static(REQUEST_NAME);
const STATUS: async_nats::HeaderName = async_nats::HeaderName::from_static(STATUS_NAME);
const TRAILER_PREFIX: &str = "mesh-trailer-";
/// After the budget in the request line.
const BUDGET_UNIT: &str = "ms";

/// The caller's remaining budget in milliseconds over HTTP/2 (over NATS it ends the
/// request line).
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
    /// The request cannot be carried as it is (a header value that is not text): 400.
    BadRequest,
    /// The service's answer does not fit in one message: 502. Not the path failing and not
    /// the service being unwell: the same request gets the same answer, so it is neither
    /// retried nor counted against the service by a circuit breaker.
    ResponseTooLarge,
    /// The request could not be sent or the answer not read: 502.
    Transport,
}

impl MeshErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoResponder => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Transport | Self::ResponseTooLarge => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::NoResponder => "upstream_unavailable",
            Self::Timeout => "upstream_timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BadRequest => "bad_request",
            Self::Transport => "upstream_error",
            Self::ResponseTooLarge => "upstream_response_too_large",
        }
    }

    /// The API answer for this failure, in the DESIGN.md error shape, for a service that
    /// meets it calling another one itself.
    pub fn api_error(self, message: impl Into<String>) -> kit::api::ApiError {
        kit::api::ApiError::new(self.status(), self.code(), message)
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::NoResponder,
            Self::Timeout,
            Self::PayloadTooLarge,
            Self::BadRequest,
            Self::Transport,
            Self::ResponseTooLarge,
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
pub use kit::api::is_grpc;

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

/// Names the mesh writes itself. An HTTP header of the same name (a client's forged
/// `Mesh-Request`, a handler's own `mesh-status`) would sit next to the mesh's in the NATS
/// map, whose names are case-sensitive, and could be read instead of it: never carried.
fn is_reserved(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.eq_ignore_ascii_case(REQUEST_NAME)
        || name.eq_ignore_ascii_case(STATUS_NAME)
        || strip_prefix_ignore_case(name, TRAILER_PREFIX).is_some()
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

/// Copies HTTP headers into NATS headers, dropping hop-by-hop ones. NATS headers are UTF-8
/// text: a value that is not (opaque bytes, which HTTP allows) cannot be carried and is
/// left out; the name of the first one left out is returned. Trailers are named with
/// [`nats_trailer_name`].
fn copy_to_nats<'a>(
    src: &'a HeaderMap,
    dst: &mut async_nats::HeaderMap,
    trailers: bool,
) -> Option<&'a HeaderName> {
    let mut not_text = None;
    let mut previous: Option<&HeaderName> = None;
    for (name, value) in src {
        // The http map yields the values of one name one after the other: the first is an
        // insert (one hash), only the following ones need append's lookup.
        let repeated = previous == Some(name);
        previous = Some(name);
        if is_hop_by_hop(name) || is_reserved(name) {
            continue;
        }
        // Not `to_str`, which refuses everything but visible ASCII: an `Idempotency-Key` or
        // an `If-Match` in UTF-8 must arrive, not vanish.
        let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
            not_text.get_or_insert(name);
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
    not_text
}

/// A request header the mesh cannot carry.
#[derive(Debug, thiserror::Error)]
#[error("the value of the {0} header is not UTF-8 text, which NATS headers carry")]
pub(crate) struct NotText(pub HeaderName);

/// A message's NATS headers, sorted in one pass into the mesh's own and the HTTP ones.
#[derive(Debug, Default)]
struct ReadHeaders<'a> {
    request_line: Option<&'a str>,
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

/// The request's head as NATS headers; a header value that is not text refuses the request
/// rather than leave it out (a dropped `Idempotency-Key` would place an order twice).
pub(crate) fn encode_request_head(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    budget: Option<Duration>,
) -> Result<async_nats::HeaderMap, NotText> {
    let mut nats = async_nats::HeaderMap::new();
    if let Some(name) = copy_to_nats(headers, &mut nats, false) {
        return Err(NotText(name.clone()));
    }
    // Room for a budget of up to 20 digits and its unit.
    let mut line = String::with_capacity(method.as_str().len() + path_and_query.len() + 24);
    line.push_str(method.as_str());
    line.push(' ');
    line.push_str(path_and_query);
    if let Some(budget) = budget {
        use std::fmt::Write as _;
        let millis = budget.as_millis().max(1);
        // Writing to a String cannot fail.
        let _ = write!(line, " {millis}{BUDGET_UNIT}");
    }
    nats.insert(REQUEST, line);
    Ok(nats)
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
    #[error("a NATS status {0} in place of an answer")]
    NatsStatus(u16),
}

pub(crate) fn decode_request_head(
    nats: Option<&async_nats::HeaderMap>,
) -> Result<RequestHead, DecodeError> {
    const NAME: &str = REQUEST_NAME;
    let invalid = || DecodeError::Invalid(NAME);
    let read = read_nats(nats.ok_or(DecodeError::Missing(NAME))?);
    let line = read.request_line.ok_or(DecodeError::Missing(NAME))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(path_and_query), budget, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let method = method.parse::<Method>().map_err(|_| invalid())?;
    if !path_and_query.starts_with('/') {
        return Err(invalid());
    }
    let budget = match budget {
        None => None,
        Some(budget) => {
            let millis = budget.strip_suffix(BUDGET_UNIT).ok_or_else(invalid)?;
            Some(Duration::from_millis(
                millis.parse().map_err(|_| invalid())?,
            ))
        }
    };
    let uri = http::Uri::try_from(path_and_query).map_err(|_| invalid())?;
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
    // A response cannot be refused: what is not text is left out, and said so.
    // Both copies run whatever the first finds: a header left out must not take the
    // trailers (gRPC's status) with it.
    let headers_not_text = copy_to_nats(headers, &mut nats, false);
    let trailers_not_text = trailers.and_then(|trailers| copy_to_nats(trailers, &mut nats, true));
    let not_text = headers_not_text.or(trailers_not_text);
    if let Some(name) = not_text {
        tracing::debug!(header = %name, "Response header value that is not text left out of the NATS reply.");
    }
    // 200 is what a reply without `Mesh-Status` means.
    if status != StatusCode::OK {
        nats.insert(STATUS, status.as_str());
    }
    nats
}

/// Status, headers and trailers of a response message; without `Mesh-Status` (or without
/// any header) it is a 200. A message carrying a NATS status of its own (the server speaking,
/// not the service) is no answer.
pub(crate) fn decode_response_head(
    nats_status: Option<async_nats::StatusCode>,
    nats: Option<&async_nats::HeaderMap>,
) -> Result<(StatusCode, HeaderMap, HeaderMap), DecodeError> {
    const NAME: &str = STATUS_NAME;
    if let Some(status) = nats_status.filter(|s| *s != async_nats::StatusCode::OK) {
        return Err(DecodeError::NatsStatus(status.as_u16()));
    }
    let Some(nats) = nats else {
        return Ok((StatusCode::OK, HeaderMap::new(), HeaderMap::new()));
    };
    let read = read_nats(nats);
    let status = match read.status {
        None => StatusCode::OK,
        Some(status) => status
            .parse::<u16>()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or(DecodeError::Invalid(NAME))?,
    };
    Ok((status, read.headers, read.trailers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_header_values_are_carried_and_opaque_bytes_refuse_the_request() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "idempotency-key",
            HeaderValue::from_bytes("clé-1 ☕".as_bytes()).expect("obs-text"),
        );
        let nats =
            encode_request_head(&Method::POST, "/orders", &headers, None).expect("UTF-8 is text");
        let head = decode_request_head(Some(&nats)).expect("decodes");
        assert_eq!(
            head.headers["idempotency-key"].as_bytes(),
            "clé-1 ☕".as_bytes()
        );

        headers.insert(
            "if-match",
            HeaderValue::from_bytes(b"\"caf\xe9\"").expect("obs-text"),
        );
        let refused = encode_request_head(&Method::PUT, "/products/1", &headers, None)
            .expect_err("Latin-1 is not UTF-8");
        assert_eq!(refused.0, "if-match");

        // A response cannot be refused: the header is left out, the rest goes.
        let mut response = HeaderMap::new();
        response.insert(
            "x-latin1",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
        );
        response.insert("x-fine", HeaderValue::from_static("yes"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let nats = encode_response_head(StatusCode::OK, &response, Some(&trailers));
        let (_, headers, trailers) = decode_response_head(None, Some(&nats)).expect("decodes");
        assert_eq!(headers["x-fine"], "yes");
        assert!(!headers.contains_key("x-latin1"));
        assert_eq!(trailers["grpc-status"], "0", "the trailers still go");
    }

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
        )
        .expect("text headers");
        let head = decode_request_head(Some(&nats)).expect("decodes");
        assert_eq!(head.method, Method::PUT);
        assert_eq!(head.uri, "/products/1?x=y");
        assert_eq!(head.budget, Some(Duration::from_millis(1500)));
        assert_eq!(head.headers["traceparent"], "00-abc-def-01");
        let multi: Vec<_> = head.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert!(!head.headers.contains_key("connection"));
        assert!(!head.headers.contains_key("mesh-request"));
    }

    #[test]
    fn http_headers_cannot_pose_as_the_mesh_s_own() {
        // A client sends its own request line (method, path, a generous budget)...
        let mut headers = HeaderMap::new();
        headers.insert(
            "mesh-request",
            HeaderValue::from_static("DELETE /admin 999999ms"),
        );
        headers.insert("mesh-trailer-grpc-status", HeaderValue::from_static("0"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        let nats = encode_request_head(
            &Method::GET,
            "/products/1",
            &headers,
            Some(Duration::from_millis(100)),
        )
        .expect("text headers");
        assert_eq!(nats.len(), 2, "the mesh's request line and x-kept only");
        let head = decode_request_head(Some(&nats)).expect("decodes");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/products/1");
        assert_eq!(head.budget, Some(Duration::from_millis(100)));
        assert_eq!(head.headers["x-kept"], "yes");

        // ...and a handler sets mesh-status on a 200.
        let mut headers = HeaderMap::new();
        headers.insert("mesh-status", HeaderValue::from_static("500"));
        let nats = encode_response_head(StatusCode::OK, &headers, None);
        let (status, headers, trailers) = decode_response_head(None, Some(&nats)).expect("decodes");
        assert_eq!(status, StatusCode::OK);
        assert!(headers.is_empty() && trailers.is_empty());
    }

    #[test]
    fn names_from_other_clients_are_read_in_any_case() {
        let mut nats = async_nats::HeaderMap::new();
        nats.insert("MESH-REQUEST", "DELETE /products/7 250ms");
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
        let (status, headers, trailers) =
            decode_response_head(None, Some(&reply)).expect("decodes");
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
        let (status, headers, trailers) = decode_response_head(None, Some(&nats)).expect("decodes");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/grpc");
        assert!(!headers.contains_key("grpc-status"));
        assert_eq!(trailers["grpc-status"], "5");
        assert_eq!(trailers["grpc-message"], "not found");
    }

    #[test]
    fn a_message_without_mesh_headers_is_rejected() {
        assert!(decode_request_head(None).is_err());
        for line in [
            "GET no-slash",
            "GET",
            "G@T /x",
            "GET /a b",
            "GET /x soon",
            "GET /x 10",
            "GET /x -5ms",
            "GET /x 10ms more",
            "GET  /x",
        ] {
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
    }

    #[test]
    fn the_budget_ends_the_request_line() {
        let nats = encode_request_head(
            &Method::GET,
            "/products/7",
            &HeaderMap::new(),
            Some(Duration::from_micros(2_500_400)),
        )
        .expect("text headers");
        let line = nats.get(REQUEST).map(|v| v.as_str().to_owned());
        assert_eq!(line.as_deref(), Some("GET /products/7 2500ms"));
        // A budget under a millisecond still travels as one: zero would mean "already late".
        let nats = encode_request_head(
            &Method::GET,
            "/",
            &HeaderMap::new(),
            Some(Duration::from_micros(10)),
        )
        .expect("text headers");
        assert_eq!(nats.get(REQUEST).map(|v| v.as_str()), Some("GET / 1ms"));
        let head = decode_request_head(Some(&nats)).expect("decodes");
        assert_eq!(head.budget, Some(Duration::from_millis(1)));

        let unbounded = encode_request_head(&Method::POST, "/x?y=1", &HeaderMap::new(), None)
            .expect("text headers");
        assert_eq!(
            unbounded.get(REQUEST).map(|v| v.as_str()),
            Some("POST /x?y=1")
        );
        assert_eq!(
            decode_request_head(Some(&unbounded))
                .expect("decodes")
                .budget,
            None
        );
    }

    #[test]
    fn a_200_travels_without_a_status_header() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let ok = encode_response_head(StatusCode::OK, &headers, None);
        assert!(ok.get(STATUS).is_none());
        let (status, headers, _) = decode_response_head(None, Some(&ok)).expect("decodes");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/plain");
        // A reply with no header at all (a plain NATS responder) reads as a 200 too...
        let (status, headers, trailers) = decode_response_head(None, None).expect("decodes");
        assert_eq!(status, StatusCode::OK);
        assert!(headers.is_empty() && trailers.is_empty());
        // ...but not a NATS status message, which the server sent, not the service.
        let timeout = async_nats::StatusCode::from_u16(408).expect("status");
        assert!(matches!(
            decode_response_head(Some(timeout), None),
            Err(DecodeError::NatsStatus(408))
        ));

        let created = encode_response_head(StatusCode::CREATED, &HeaderMap::new(), None);
        assert_eq!(created.get(STATUS).map(|v| v.as_str()), Some("201"));
        let mut bad = async_nats::HeaderMap::new();
        bad.insert(STATUS, "two hundred");
        assert!(matches!(
            decode_response_head(None, Some(&bad)),
            Err(DecodeError::Invalid("Mesh-Status"))
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
