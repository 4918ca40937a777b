//! `GET /payments/{order_id}`: internal and operational use (the gateway does not route
//! here), so no authentication. The port (8083) must stay private to the deployment: the
//! route is also served over the mesh, which is where callers should reach it.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use kit::api::ApiError;
use uuid::Uuid;

use crate::store::{Payment, Store};

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/payments/{order_id}", get(show))
        .with_state(store)
}

async fn show(
    State(store): State<Store>,
    Path(order_id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    let not_found = || ApiError::not_found(format!("no payment for order {order_id}"));
    // A malformed id names no order: 404, as for products.
    let id = Uuid::parse_str(&order_id).map_err(|_| not_found())?;
    store
        .by_order(id)
        .await
        .map_err(database)?
        .map(Json)
        .ok_or_else(not_found)
}

fn database(error: sqlx::Error) -> ApiError {
    ApiError::database(error, "payment")
}
