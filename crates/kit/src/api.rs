//! What every service's REST handlers share: [`ApiError`] (status + code + message, rendered
//! as the contract's error body, 500 details hidden) and [`ApiJson`] (a JSON extractor whose
//! rejections are that same body: 400 malformed JSON, 422 wrong fields, 415 wrong type).
//!
//! Each service maps its own domain errors into `ApiError` in one place (its `error.rs`).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Whether a request or response is gRPC (`content-type: application/grpc[+proto...]`):
/// its failures are then answered as gRPC statuses, not JSON bodies.
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` values the mesh and the fallbacks answer with themselves.
pub mod grpc_status {
    pub const INVALID_ARGUMENT: &str = "3";
    pub const DEADLINE_EXCEEDED: &str = "4";
    pub const RESOURCE_EXHAUSTED: &str = "8";
    pub const UNIMPLEMENTED: &str = "12";
    pub const UNAVAILABLE: &str = "14";
}

/// An error answer: the status, a stable machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_fields", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A failed database call: 503 when Postgres cannot be reached, is shutting down or is
    /// full (worth retrying later); 422 when it refused a value the request carried (a NUL
    /// character, a number out of range: bad input is never a 500, which the gateway's
    /// breaker would count against the service); otherwise a 500 that hides the cause.
    /// `database` names it in the message ("the order database is unavailable").
    pub fn database(error: sqlx::Error, database: &str) -> Self {
        if crate::db::unreachable(&error) {
            tracing::warn!(%error, "Database unavailable.");
            return Self::unavailable(format!("the {database} database is unavailable"));
        }
        if crate::db::value_refused(&error) {
            // Warned about: almost always the input, but a query of ours can cause it too.
            tracing::warn!(%error, "A value was refused by the database.");
            return Self::invalid("a field holds a value that cannot be stored");
        }
        Self::internal(error)
    }

    /// Logs `error` and answers a 500 that reveals nothing about it.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "Internal error.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::error::error_response::<axum::body::Body>(self.status, self.code, &self.message)
    }
}

/// `Json<T>` with rejections in the contract's shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::invalid(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a body with content-type: application/json",
        ),
        JsonRejection::BytesRejection(e) => {
            // The body could not be read: too large, or the connection broke.
            ApiError::new(e.status(), "bad_body", e.body_text())
        }
        other => ApiError::bad_request(other.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt;

    #[derive(Debug, serde::Deserialize)]
    struct Input {
        #[allow(dead_code)]
        name: String,
    }

    async fn status_and_code(body: &'static str, content_type: Option<&str>) -> (u16, String) {
        let router =
            Router::new().route("/", post(|ApiJson(_input): ApiJson<Input>| async { "ok" }));
        let mut request = axum::http::Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = router
            .oneshot(request.body(axum::body::Body::from(body)).expect("request"))
            .await
            .expect("answer");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let code = if status == 200 {
            String::new()
        } else {
            let json: serde_json::Value = serde_json::from_slice(&bytes).expect("error body");
            json["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        (status, code)
    }

    /// The error the real server answers `sql` with (`$1` bound to `value`).
    async fn failure_of(sql: &str, value: &str) -> sqlx::Error {
        use sqlx::Connection;
        let mut conn =
            sqlx::PgConnection::connect(&format!("{}/postgres", testkit::postgres_base()))
                .await
                .expect("postgres");
        sqlx::query(sql)
            .bind(value)
            .execute(&mut conn)
            .await
            .expect_err("the statement fails")
    }

    /// The error the real server answers a script of several statements with.
    async fn failure_of_script(sql: &str) -> sqlx::Error {
        use sqlx::Connection;
        let mut conn =
            sqlx::PgConnection::connect(&format!("{}/postgres", testkit::postgres_base()))
                .await
                .expect("postgres");
        sqlx::raw_sql(sql)
            .execute(&mut conn)
            .await
            .expect_err("the script fails")
    }

    #[tokio::test]
    async fn database_failures_answer_by_whose_fault_they_are() {
        let status = |error| ApiError::database(error, "test").status.as_u16();
        // A value from the request that Postgres refuses: the input's fault.
        assert_eq!(status(failure_of("SELECT $1::text", "a\u{0}b").await), 422);
        assert_eq!(
            status(failure_of("SELECT $1::int", "99999999999").await),
            422
        );
        // Postgres going away or full: worth another attempt later.
        let terminated = "SELECT pg_terminate_backend(pg_backend_pid()) WHERE $1 = $1";
        assert_eq!(status(failure_of(terminated, "x").await), 503);
        assert_eq!(status(sqlx::Error::PoolClosed), 503);
        assert_eq!(status(sqlx::Error::PoolTimedOut), 503);
        // A statement timeout: the query is too slow, not the database gone.
        let slow = "SET statement_timeout = 10; SELECT pg_sleep(1)";
        assert_eq!(status(failure_of_script(slow).await), 500);
        // A query that is wrong: ours, and nothing of it is shown.
        let wrong = ApiError::database(
            failure_of("SELECT * FROM nowhere_at_all WHERE $1 = $1", "x").await,
            "test",
        );
        assert_eq!(wrong.status.as_u16(), 500);
        assert_eq!(wrong.message, "internal error");
    }

    #[tokio::test]
    async fn rejections_follow_the_contract() {
        let json = Some("application/json");
        assert_eq!(
            status_and_code(r#"{"name":"x"}"#, json).await,
            (200, String::new())
        );
        assert_eq!(
            status_and_code("{not json", json).await,
            (400, "malformed_json".into())
        );
        assert_eq!(
            status_and_code(r#"{"name":3}"#, json).await,
            (422, "invalid_fields".into())
        );
        assert_eq!(
            status_and_code(r#"{}"#, json).await,
            (422, "invalid_fields".into())
        );
        assert_eq!(
            status_and_code(r#"{"name":"x"}"#, None).await,
            (415, "unsupported_media_type".into())
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = ApiError::internal("connection to 10.0.0.5 refused: password=hunter2");
        assert_eq!(error.status, 500);
        assert_eq!(error.message, "internal error");
    }
}
