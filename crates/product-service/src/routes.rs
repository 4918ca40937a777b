//! The catalogue's REST routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use kit::api::{ApiError, ApiJson};
use middleware::auth::{JwtKeys, RequireAuthLayer};
use serde::Serialize;
use uuid::Uuid;

use crate::cache::ProductCache;
use crate::error;
use crate::store::{Product, Store};
use crate::validate::{self, ProductInput};

#[derive(Debug, Clone)]
pub struct Catalogue {
    pub store: Store,
    pub cache: Arc<ProductCache>,
}

impl Catalogue {
    /// One product, read through the cache (REST and gRPC alike): a hit answers from Redis,
    /// a miss reads Postgres and fills the cache.
    pub async fn get(&self, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
        if let Some(product) = self.cache.get(id).await {
            return Ok(Some(product));
        }
        let Some(product) = self.store.get(id).await? else {
            return Ok(None);
        };
        self.cache.put(&product).await;
        Ok(Some(product))
    }
}

pub fn router(catalogue: Catalogue, keys: JwtKeys) -> Router {
    let writes = Router::new()
        .route("/products", axum::routing::post(create))
        .route("/products/{id}", axum::routing::put(update).delete(remove))
        .route_layer(RequireAuthLayer::new(keys));
    Router::new()
        .route("/products", get(list))
        .route("/products/{id}", get(show))
        .merge(writes)
        .with_state(catalogue)
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Product>,
    total: i64,
}

fn product_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("no product {raw}")))
}

async fn list(
    State(catalogue): State<Catalogue>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page>, ApiError> {
    let (limit, offset) = validate::page(
        query.get("limit").map(String::as_str),
        query.get("offset").map(String::as_str),
    )
    .map_err(ApiError::invalid)?;
    let (items, total) = catalogue
        .store
        .list(limit, offset)
        .await
        .map_err(error::database)?;
    Ok(Json(Page { items, total }))
}

async fn show(
    State(catalogue): State<Catalogue>,
    Path(id): Path<String>,
) -> Result<Json<Product>, ApiError> {
    let id = product_id(&id)?;
    let product = catalogue
        .get(id)
        .await
        .map_err(error::database)?
        .ok_or_else(|| ApiError::not_found(format!("no product {id}")))?;
    Ok(Json(product))
}

async fn create(
    State(catalogue): State<Catalogue>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    let fields = input.validate().map_err(ApiError::invalid)?;
    let product = catalogue
        .store
        .create(&fields)
        .await
        .map_err(error::database)?;
    tracing::info!(product_id = %product.id, "Product created.");
    Ok((StatusCode::CREATED, Json(product)))
}

async fn update(
    State(catalogue): State<Catalogue>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<Json<Product>, ApiError> {
    let id = product_id(&id)?;
    let fields = input.validate().map_err(ApiError::invalid)?;
    let product = catalogue
        .store
        .update(id, &fields)
        .await
        .map_err(error::database)?
        .ok_or_else(|| ApiError::not_found(format!("no product {id}")))?;
    catalogue.cache.invalidate(id).await;
    Ok(Json(product))
}

async fn remove(
    State(catalogue): State<Catalogue>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = product_id(&id)?;
    if !catalogue.store.delete(id).await.map_err(error::database)? {
        return Err(ApiError::not_found(format!("no product {id}")));
    }
    catalogue.cache.invalidate(id).await;
    Ok(StatusCode::NO_CONTENT)
}
