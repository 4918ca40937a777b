//! gRPC statuses for failures every service shares, so a tonic handler answers a database
//! failure the way a REST route does (`kit::api::ApiError::database`).

/// `UNAVAILABLE` when Postgres cannot be reached or no pooled connection freed up in time
/// (worth retrying), otherwise `INTERNAL`; neither reveals the cause, which is logged.
/// `database` names it in the message ("the order database is unavailable").
pub fn database_status(error: sqlx::Error, database: &str) -> tonic::Status {
    if kit::db::unreachable(&error) {
        tracing::warn!(%error, "Database unavailable.");
        return tonic::Status::unavailable(format!("the {database} database is unavailable"));
    }
    if kit::db::value_refused(&error) {
        tracing::info!(%error, "A value was refused by the database.");
        return tonic::Status::invalid_argument("a field holds a value that cannot be stored");
    }
    tracing::error!(%error, "Internal error.");
    tonic::Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_databases_are_unavailable_and_the_rest_hides_its_cause() {
        let down = database_status(sqlx::Error::PoolTimedOut, "order");
        assert_eq!(down.code(), tonic::Code::Unavailable);
        assert_eq!(down.message(), "the order database is unavailable");
        let broken = database_status(sqlx::Error::Protocol("secret detail".into()), "order");
        assert_eq!(broken.code(), tonic::Code::Internal);
        assert!(!broken.message().contains("secret"));
    }
}
