//! What counts as an upstream failure (for the breaker) and as worth retrying (for retry).

use http::{Method, Response, StatusCode};
use mesh::rpc::{MESH_ERROR_HEADER, MeshErrorKind};

use crate::breaker::CIRCUIT_OPEN;

fn mesh_error<B>(response: &Response<B>) -> Option<&str> {
    response
        .headers()
        .get(MESH_ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// Whether a gRPC call was refused by the caller's own circuit breaker (the answer is marked
/// `mesh-error: circuit_open`, which tonic keeps as metadata): like [`is_transient`]'s
/// rejection for HTTP, never worth another attempt.
pub fn is_circuit_open(status: &tonic::Status) -> bool {
    status
        .metadata()
        .get(MESH_ERROR_HEADER)
        .is_some_and(|marker| marker == CIRCUIT_OPEN)
}

/// The upstream (or the path to it) failed: an unmarked 5xx, or the mesh finding the
/// upstream unreachable, too slow, or the exchange broken (503, 504, 502 `upstream_error`,
/// also as gRPC statuses inside a 200). Nothing else the mesh answers is the upstream's
/// doing: a request it refused itself (413, 400 for a header it cannot carry), an answer
/// too large for it, a breaker's own rejection. Counted, those would let one client open
/// the circuit for everyone with a few odd requests.
pub fn is_upstream_failure<B>(response: &Response<B>) -> bool {
    match mesh_error(response) {
        Some(code) => matches!(
            MeshErrorKind::from_code(code),
            Some(MeshErrorKind::NoResponder | MeshErrorKind::Timeout | MeshErrorKind::Transport)
        ),
        None => response.status().is_server_error(),
    }
}

/// A failure that another attempt may not meet: the upstream was not reached, did not
/// answer in time, or said it is unavailable. A breaker rejection is not retried: the
/// breaker exists to stop calls.
pub fn is_transient<B>(response: &Response<B>) -> bool {
    match mesh_error(response) {
        Some(CIRCUIT_OPEN) => false,
        Some(code) => matches!(
            MeshErrorKind::from_code(code),
            Some(MeshErrorKind::NoResponder | MeshErrorKind::Timeout | MeshErrorKind::Transport)
        ),
        None => matches!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
    }
}

/// Methods that mean the same when sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, mesh: Option<&str>) -> Response<()> {
        let mut builder = Response::builder().status(status);
        if let Some(code) = mesh {
            builder = builder.header(MESH_ERROR_HEADER, code);
        }
        builder.body(()).expect("response")
    }

    #[test]
    fn transient_failures_are_retried_and_nothing_else() {
        assert!(is_transient(&response(503, None)));
        assert!(is_transient(&response(504, None)));
        assert!(is_transient(&response(503, Some("upstream_unavailable"))));
        assert!(is_transient(&response(504, Some("upstream_timeout"))));
        assert!(!is_transient(&response(503, Some(CIRCUIT_OPEN))));
        assert!(!is_transient(&response(413, Some("payload_too_large"))));
        assert!(
            !is_transient(&response(502, Some("upstream_response_too_large"))),
            "the same request gets the same answer"
        );
        for status in [200, 201, 400, 401, 404, 409, 422, 429, 500] {
            assert!(!is_transient(&response(status, None)), "{status}");
        }
    }

    #[test]
    fn only_idempotent_methods_are_retried() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(is_idempotent(&Method::DELETE));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }

    #[test]
    fn breaker_rejections_do_not_feed_the_breaker() {
        assert!(is_upstream_failure(&response(502, None)));
        assert!(is_upstream_failure(&response(500, None)));
        assert!(!is_upstream_failure(&response(503, Some(CIRCUIT_OPEN))));
        assert!(!is_upstream_failure(&response(404, None)));
        assert!(
            is_upstream_failure(&response(200, Some("upstream_unavailable"))),
            "gRPC-shaped"
        );
        assert!(
            !is_upstream_failure(&response(502, Some("upstream_response_too_large"))),
            "a large answer says nothing of the upstream's health"
        );
        // Requests the mesh refused before sending: the client's doing.
        assert!(!is_upstream_failure(&response(400, Some("bad_request"))));
        assert!(!is_upstream_failure(&response(
            413,
            Some("payload_too_large")
        )));
        for path_failure in ["upstream_unavailable", "upstream_timeout", "upstream_error"] {
            assert!(
                is_upstream_failure(&response(502, Some(path_failure))),
                "{path_failure}"
            );
        }
    }
}
