//! The error body every Shopmesh HTTP answer uses (DESIGN.md, "REST contract"):
//! `{"error": {"code": "...", "message": "..."}}`.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

/// The JSON bytes of an error body.
pub fn error_body(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    Bytes::from(body.to_string())
}

/// A complete JSON error response, for any body type that can be built from bytes (axum's
/// body, the mesh's, `Full<Bytes>`).
pub fn error_response<B: From<Bytes>>(
    status: StatusCode,
    code: &str,
    message: &str,
) -> http::Response<B> {
    let mut response = http::Response::new(B::from(error_body(code, message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_contract_shape() {
        let response: http::Response<Bytes> = error_response(
            StatusCode::CONFLICT,
            "email_taken",
            "that email is \"taken\"",
        );
        assert_eq!(response.status(), 409);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["error"]["code"], "email_taken");
        assert_eq!(body["error"]["message"], "that email is \"taken\"");
    }
}
