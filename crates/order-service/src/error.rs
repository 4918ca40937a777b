//! Where order-service's failures become HTTP answers and gRPC statuses.

use axum::http::StatusCode;
use kit::api::ApiError;
use mesh::rpc::MeshErrorKind;

use crate::orders::PlaceError;
use crate::products::StockError;

pub fn database(error: sqlx::Error) -> ApiError {
    ApiError::database(error, "order")
}

pub fn database_status(error: sqlx::Error) -> tonic::Status {
    middleware::grpc::database_status(error, "order")
}

impl From<PlaceError> for ApiError {
    fn from(error: PlaceError) -> Self {
        match error {
            PlaceError::Invalid(message) => ApiError::invalid(message),
            PlaceError::Stock(StockError::Insufficient(message)) => {
                ApiError::conflict("insufficient_stock", message)
            }
            PlaceError::Stock(StockError::UnknownProduct(message)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_product", message)
            }
            PlaceError::Stock(StockError::Invalid(message)) => ApiError::invalid(message),
            PlaceError::Stock(StockError::Released(_)) | PlaceError::KeySpent => {
                ApiError::conflict(
                    "idempotency_key_spent",
                    "an earlier request with this Idempotency-Key failed and was undone; \
                     send the order again with a new key",
                )
            }
            PlaceError::Stock(error @ StockError::Timeout(_)) => upstream(
                &error,
                MeshErrorKind::Timeout,
                "product-service did not answer in time",
            ),
            PlaceError::Stock(
                error @ (StockError::Unavailable(_) | StockError::CircuitOpen(_)),
            ) => upstream(
                &error,
                MeshErrorKind::NoResponder,
                "product-service is unavailable",
            ),
            PlaceError::Stock(error @ StockError::Failed(_)) => upstream(
                &error,
                MeshErrorKind::Transport,
                "product-service could not reserve the stock",
            ),
            PlaceError::Database(error) => database(error),
            PlaceError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "order-service is shutting down; send the order again",
            ),
        }
    }
}

/// A failed stock call, answered with the status and code the mesh gives the same failure
/// (DESIGN.md's upstream errors). The detail (a transport error, the mesh's own text) is
/// for the log, not the client.
fn upstream(error: &StockError, kind: MeshErrorKind, message: &str) -> ApiError {
    match kind {
        MeshErrorKind::Transport => tracing::error!(%error, "Stock call failed."),
        _ => tracing::warn!(%error, "Stock call failed."),
    }
    kind.api_error(message)
}

impl From<PlaceError> for tonic::Status {
    fn from(error: PlaceError) -> Self {
        let api = ApiError::from(error);
        let message = api.message.clone();
        match api.status {
            StatusCode::CONFLICT => tonic::Status::failed_precondition(message),
            StatusCode::UNPROCESSABLE_ENTITY => tonic::Status::invalid_argument(message),
            StatusCode::GATEWAY_TIMEOUT => tonic::Status::deadline_exceeded(message),
            StatusCode::SERVICE_UNAVAILABLE => tonic::Status::unavailable(message),
            _ => tonic::Status::internal(message),
        }
    }
}
