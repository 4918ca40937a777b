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

/// The upstream (or the path to it) failed: any 5xx, the mesh's own 502/503/504 included. A
/// 4xx is the caller's problem, and a breaker's own rejection is not an upstream outcome;
/// nor is an answer too large for the mesh.
pub fn is_upstream_failure<B>(response: &Response<B>) -> bool {
    match mesh_error(response) {
        Some(CIRCUIT_OPEN) => false,
        // An answer too large for the mesh says nothing of the upstream's health: counted,
        // one caller's large page would open the circuit for everyone.
        Some(code) if MeshErrorKind::from_code(code) == Some(MeshErrorKind::ResponseTooLarge) => {
            false
        }
        // Mesh-made failures count even when they are gRPC statuses inside a 200.
        Some(_) => true,
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
    }
}
