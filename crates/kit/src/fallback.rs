//! Answers the routes do not give themselves, in the contract's error shape.
//!
//! axum answers a path no route matches with an empty 404, a method a route lacks with an
//! empty 405, and its own extractor rejections (a path parameter that is not UTF-8, a query
//! it cannot parse) with plain text; a router that merged tonic's routes even answers an
//! unknown path with tonic's empty gRPC UNIMPLEMENTED, HTTP 200. [`contract_errors`] makes
//! all of these `{"error": {"code", "message"}}` with the same status (a 405 keeps its
//! `Allow`), and keeps gRPC's answer for gRPC requests.

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, grpc_status, is_grpc};
use crate::error::error_body;

/// The most of a plain-text error body read back to become the message.
const MESSAGE_LIMIT: usize = 4096;

/// `router` with a JSON 404 for unknown paths (UNIMPLEMENTED for gRPC requests) and every
/// plain or empty error answer turned into the contract's body. Apply it to the routes
/// themselves, before merging routes that must answer as they are.
pub fn contract_errors(router: Router) -> Router {
    router
        .fallback(no_route)
        .layer(axum::middleware::map_response(as_contract_error))
}

async fn no_route(request: Request) -> Response {
    if is_grpc(request.headers()) {
        // What tonic answers for a method it does not serve: trailers only, UNIMPLEMENTED.
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from_static(grpc_status::UNIMPLEMENTED),
        );
        return response;
    }
    ApiError::not_found(format!("no route for {}", request.uri().path())).into_response()
}

/// The contract's code for an error status that arrived without one.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_fields",
        status if status.is_server_error() => "internal",
        _ => "error",
    }
}

async fn as_contract_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // JSON (the contract's own errors) and anything else typed stays as it is.
    if response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| !v.as_bytes().starts_with(b"text/plain"))
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MESSAGE_LIMIT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() || status.is_server_error() {
        // A 500's text may hold details the contract keeps inside.
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(error_body(code_for(status), &message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Path;
    use axum::http::{HeaderMap, Method};
    use axum::routing::get;
    use tower::ServiceExt;

    fn router() -> Router {
        contract_errors(
            Router::new()
                .route(
                    "/items/{id}",
                    get(|Path(id): Path<String>| async move { id }),
                )
                .route(
                    "/plain",
                    get(|| async { (StatusCode::BAD_REQUEST, "plain words") }),
                )
                .route(
                    "/json",
                    get(|| async { ApiError::invalid("its own error") }),
                ),
        )
    }

    async fn call(method: Method, uri: &str, grpc: bool) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if grpc {
            request = request.header(CONTENT_TYPE, "application/grpc");
        }
        let response = router()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    fn code_of(body: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        value["error"]["code"].as_str().expect("code").to_owned()
    }

    #[tokio::test]
    async fn what_axum_answers_by_itself_takes_the_contract_shape() {
        let (status, _, body) = call(Method::GET, "/nowhere/at/all", false).await;
        assert_eq!((status.as_u16(), code_of(&body)), (404, "not_found".into()));

        let (status, headers, body) = call(Method::DELETE, "/items/1", false).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(code_of(&body), "method_not_allowed");
        assert!(
            headers
                .get("allow")
                .is_some_and(|allow| allow.to_str().unwrap_or("").contains("GET")),
            "{headers:?}"
        );

        // A path parameter that is not UTF-8: axum's plain-text rejection.
        let (status, headers, body) = call(Method::GET, "/items/%FF", false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(code_of(&body), "bad_request");

        let (status, _, body) = call(Method::GET, "/plain", false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let value: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(value["error"]["message"], "plain words");
    }

    #[tokio::test]
    async fn answers_that_have_a_shape_keep_it() {
        let (status, _, body) = call(Method::GET, "/json", false).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(code_of(&body), "invalid_fields");
        let (status, _, body) = call(Method::GET, "/items/7", false).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "7"));
        // A gRPC request to no route gets gRPC's answer, not a JSON 404.
        let (status, headers, body) = call(Method::POST, "/pkg.Svc/Nope", true).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["grpc-status"], "12");
        assert!(body.is_empty());
    }
}
