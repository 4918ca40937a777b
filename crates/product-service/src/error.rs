//! Where product-service's failures become HTTP answers and gRPC statuses.

use kit::api::ApiError;

use crate::store::ReserveError;

pub fn database(error: sqlx::Error) -> ApiError {
    ApiError::database(error, "product")
}

pub fn database_status(error: sqlx::Error) -> tonic::Status {
    middleware::grpc::database_status(error, "product")
}

impl From<ReserveError> for tonic::Status {
    fn from(error: ReserveError) -> Self {
        match error {
            ReserveError::UnknownProduct(_) => tonic::Status::not_found(error.to_string()),
            ReserveError::Insufficient { .. } => {
                tonic::Status::failed_precondition(error.to_string())
            }
            ReserveError::Released(_) => tonic::Status::aborted(error.to_string()),
            ReserveError::Database(error) => database_status(error),
        }
    }
}
