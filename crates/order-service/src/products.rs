//! Stock, through product-service's gRPC API over the mesh (or HTTP/2, `MESH_TRANSPORT`).

use contracts::product::product_service_client::ProductServiceClient;
use contracts::product::{Item as ItemMessage, ReleaseStockRequest, ReserveStockRequest};
use mesh::rpc::Channel;
use middleware::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
use middleware::retry::{RetryPolicy, RetrySettings};
use tonic::Code;
use tower::Layer;
use uuid::Uuid;

use crate::store::Item;

/// Why stock could not be reserved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StockError {
    #[error("{0}")]
    Insufficient(String),
    #[error("{0}")]
    UnknownProduct(String),
    #[error("{0}")]
    Invalid(String),
    /// The reservation id was released before (an earlier attempt of the same order
    /// failed and was undone); it cannot reserve again.
    #[error("{0}")]
    Released(String),
    #[error("product-service did not answer in time: {0}")]
    Timeout(String),
    #[error("product-service is unavailable: {0}")]
    Unavailable(String),
    /// Our own circuit breaker refused the call: product-service failed too often lately.
    /// Not retried: the point of the open circuit is to fail fast.
    #[error("{0}")]
    CircuitOpen(String),
    /// product-service answered with an error another attempt would not change (a bug, a
    /// refusal the order flow does not expect, a request too large).
    #[error("product-service failed: {0}")]
    Failed(String),
}

impl From<tonic::Status> for StockError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        if middleware::classify::is_circuit_open(&status) {
            return Self::CircuitOpen(message);
        }
        match status.code() {
            Code::FailedPrecondition => Self::Insufficient(message),
            Code::NotFound => Self::UnknownProduct(message),
            Code::InvalidArgument => Self::Invalid(message),
            Code::Aborted => Self::Released(message),
            Code::DeadlineExceeded => Self::Timeout(message),
            // The mesh answers UNAVAILABLE for no responder and a lost connection; CANCELLED
            // is a call cut short on the way. Both may go through on another attempt.
            Code::Unavailable | Code::Cancelled => Self::Unavailable(message),
            Code::Ok
            | Code::Unknown
            | Code::Internal
            | Code::Unimplemented
            | Code::DataLoss
            | Code::ResourceExhausted
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated => Self::Failed(format!("{}: {message}", status.code())),
        }
    }
}

impl StockError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Unavailable(_))
    }

    /// product-service may have taken the stock though the call failed: the answer was
    /// lost or cut short, or the failure came after its commit. A refusal, or a call our
    /// breaker never let out, took nothing.
    pub fn may_have_reserved(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Unavailable(_) | Self::Failed(_)
        )
    }
}

/// What a failed reservation reports: its last attempt's error, unless that one took
/// nothing (a refusal, or the open circuit that earlier timeouts opened) while an earlier
/// attempt may have reserved; then the earlier one, so the caller gives up and releases the
/// stock that attempt may hold instead of forgetting it.
fn reported_failure(last: StockError, earlier_uncertain: Option<StockError>) -> StockError {
    match earlier_uncertain {
        Some(earlier) if !last.may_have_reserved() => earlier,
        _ => last,
    }
}

/// Reserve and release are idempotent by reservation id, so they are safe to retry. The
/// tower retry layer cannot wrap a tonic client (its request bodies cannot be cloned, and
/// gRPC is always POST), so the same policy runs around each call instead.
#[derive(Debug, Clone)]
pub struct Products {
    client: ProductServiceClient<CircuitBreaker<Channel>>,
    retry: RetryPolicy,
}

impl Products {
    pub fn new(channel: Channel, metrics: &kit::Metrics) -> Self {
        let breaker =
            CircuitBreakerLayer::new("product-service", BreakerConfig::default(), Some(metrics));
        Self {
            client: ProductServiceClient::new(breaker.layer(channel)),
            retry: RetryPolicy::new(RetrySettings::default()),
        }
    }

    /// Reserves every item under `reservation_id`; returns the items with their prices.
    pub async fn reserve(
        &self,
        reservation_id: &str,
        items: &[(Uuid, i64)],
    ) -> Result<Vec<Item>, StockError> {
        let request = ReserveStockRequest {
            reservation_id: reservation_id.to_owned(),
            items: items
                .iter()
                .map(|(product_id, quantity)| ItemMessage {
                    product_id: product_id.to_string(),
                    quantity: *quantity,
                })
                .collect(),
        };
        // The first failure of an attempt that may have reserved, for `reported_failure`.
        let uncertain: std::sync::Mutex<Option<StockError>> = std::sync::Mutex::new(None);
        let reserved = self
            .with_retries(|mut client| {
                let request = request.clone();
                let uncertain = &uncertain;
                async move {
                    let answer = client.reserve_stock(request).await;
                    if let Err(status) = &answer {
                        let error = StockError::from(status.clone());
                        if error.may_have_reserved() {
                            let mut first = uncertain.lock().unwrap_or_else(|e| e.into_inner());
                            first.get_or_insert(error);
                        }
                    }
                    answer
                }
            })
            .await
            .map_err(|last| {
                let earlier = uncertain.lock().unwrap_or_else(|e| e.into_inner()).take();
                reported_failure(last, earlier)
            })?;
        reserved
            .items
            .into_iter()
            .map(|item| {
                let product_id = Uuid::parse_str(&item.product_id).map_err(|_| {
                    StockError::Failed("product-service sent a bad product id".into())
                })?;
                Ok(Item {
                    product_id,
                    quantity: item.quantity,
                    unit_price_cents: item.unit_price_cents,
                })
            })
            .collect()
    }

    /// Gives the stock of `reservation_id` back (a no-op when nothing is held).
    pub async fn release(&self, reservation_id: &str) -> Result<bool, StockError> {
        let request = ReleaseStockRequest {
            reservation_id: reservation_id.to_owned(),
        };
        let answer = self
            .with_retries(|mut client| {
                let request = request.clone();
                async move { client.release_stock(request).await }
            })
            .await?;
        Ok(answer.released)
    }

    async fn with_retries<T, F, Fut>(&self, call: F) -> Result<T, StockError>
    where
        F: Fn(ProductServiceClient<CircuitBreaker<Channel>>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retry
            .run(
                || {
                    let response = call(self.client.clone());
                    async move {
                        response
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(StockError::from)
                    }
                },
                StockError::is_transient,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_that_may_have_gone_through_once_is_reported_as_such() {
        let timeout = || StockError::Timeout("t".into());
        let open = || StockError::CircuitOpen("open".into());
        // A timeout, then the breaker it helped open: the first attempt may hold stock.
        assert!(reported_failure(open(), Some(timeout())).may_have_reserved());
        assert!(matches!(
            reported_failure(StockError::Insufficient("none".into()), Some(timeout())),
            StockError::Timeout(_)
        ));
        // Nothing uncertain before: the refusal stands, and the stock is not released.
        assert!(!reported_failure(open(), None).may_have_reserved());
        // The last failure is uncertain itself: it is the one reported.
        assert!(matches!(
            reported_failure(StockError::Unavailable("u".into()), Some(timeout())),
            StockError::Unavailable(_)
        ));
    }

    #[test]
    fn only_unavailable_and_timeouts_are_worth_another_attempt() {
        let transient = [Code::Unavailable, Code::Cancelled, Code::DeadlineExceeded];
        let refusals = [
            Code::FailedPrecondition,
            Code::NotFound,
            Code::InvalidArgument,
            Code::Aborted,
        ];
        let failures = [
            Code::Unknown,
            Code::Internal,
            Code::Unimplemented,
            Code::DataLoss,
            Code::ResourceExhausted,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ];
        for code in transient {
            let error = StockError::from(tonic::Status::new(code, "x"));
            assert!(error.is_transient(), "{code:?} -> {error:?}");
            assert!(
                error.may_have_reserved(),
                "{code:?}: the answer may be lost"
            );
        }
        for code in refusals {
            let error = StockError::from(tonic::Status::new(code, "x"));
            assert!(!error.is_transient(), "{code:?} -> {error:?}");
            assert!(
                !error.may_have_reserved(),
                "{code:?}: a refusal takes nothing"
            );
        }
        for code in failures {
            let error = StockError::from(tonic::Status::new(code, "boom"));
            assert!(
                matches!(error, StockError::Failed(_)),
                "{code:?} -> {error:?}"
            );
            assert!(!error.is_transient(), "{code:?}");
            assert!(
                error.may_have_reserved(),
                "{code:?}: it may come after the commit"
            );
        }
        let released = StockError::from(tonic::Status::aborted("reservation was released"));
        assert!(matches!(released, StockError::Released(_)), "{released:?}");
    }

    #[test]
    fn an_open_circuit_is_not_retried() {
        // What the breaker answers a gRPC call while open, as tonic reads it.
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        headers.insert("grpc-message", http::HeaderValue::from_static("failing"));
        headers.insert(
            mesh::rpc::MESH_ERROR_HEADER,
            http::HeaderValue::from_static(middleware::breaker::CIRCUIT_OPEN),
        );
        let status = tonic::Status::from_header_map(&headers).expect("a status");
        let error = StockError::from(status);
        assert!(matches!(error, StockError::CircuitOpen(_)), "{error:?}");
        assert!(!error.is_transient());
        assert!(!error.may_have_reserved(), "the call never left");
    }
}
