//! `POST /orders` and `GET /orders/{id}`, for the authenticated user only.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use kit::api::{ApiError, ApiJson};
use middleware::auth::{Claims, JwtKeys, RequireAuthLayer};
use serde::Deserialize;
use uuid::Uuid;

use crate::error;
use crate::orders::Orders;
use crate::store::Order;

pub fn router(orders: Orders, keys: JwtKeys) -> Router {
    Router::new()
        .route("/orders", post(create))
        .route("/orders/{id}", get(show))
        .route_layer(RequireAuthLayer::new(keys))
        .with_state(orders)
}

#[derive(Debug, Deserialize)]
struct LineInput {
    product_id: String,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
struct OrderInput {
    items: Vec<LineInput>,
    card_token: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `Idempotency-Key`, if the request has one. Any UTF-8 text up to 200 characters: a key
/// that cannot be read is refused, never taken for no key (the retry would place a second
/// order).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = std::str::from_utf8(value.as_bytes())
        .map_err(|_| ApiError::invalid("Idempotency-Key must be UTF-8 text"))?;
    if key.is_empty() {
        return Ok(None);
    }
    if key.chars().count() > 200 {
        return Err(ApiError::invalid(
            "Idempotency-Key is longer than 200 characters",
        ));
    }
    Ok(Some(key))
}

async fn create(
    State(orders): State<Orders>,
    claims: Claims,
    headers: HeaderMap,
    ApiJson(input): ApiJson<OrderInput>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let user_id = claims.user_id()?;
    let lines = input
        .items
        .iter()
        .map(|line| {
            let product_id = Uuid::parse_str(&line.product_id).map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_product",
                    format!("no product {}", line.product_id),
                )
            })?;
            Ok((product_id, line.quantity))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let key = idempotency_key(&headers)?;
    let order = orders
        .place(
            user_id,
            &lines,
            input.card_token,
            key,
            // The request's own span (a child of the caller's traceparent): order_created
            // continues from this hop.
            middleware::trace::traceparent_or(header(&headers, "traceparent").map(str::to_owned)),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(order)))
}

async fn show(
    State(orders): State<Orders>,
    claims: Claims,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let user_id = claims.user_id()?;
    let not_found = || ApiError::not_found(format!("no order {id}"));
    let order_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    orders
        .get_for(order_id, user_id)
        .await
        .map_err(error::database)?
        .map(Json)
        .ok_or_else(not_found)
}
