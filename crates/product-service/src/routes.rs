//! The catalogue's REST routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use kit::api::{ApiError, ApiJson};
use middleware::auth::{JwtKeys, RequireAuthLayer};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::cache::ProductCache;
use crate::error;
use crate::store::{Product, Store, Updated};
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

/// The most a page's items may take, serialised: well within one mesh message (NATS's
/// `max_payload`, 1 MiB by default) whatever the products hold. A page that reaches it holds
/// fewer items than `limit` asked for (always at least one); `total`, and the next `offset`
/// (this one plus the items returned), tell the caller what is left.
const PAGE_BUDGET_BYTES: usize = 512 * 1024;

#[derive(Debug, Serialize)]
struct Page {
    /// Each product already serialised, so the budget is counted exactly, once.
    items: Vec<Box<RawValue>>,
    total: i64,
}

/// The first of `products` that fit in `budget` bytes of JSON, at least one.
fn within_budget(
    products: Vec<Product>,
    budget: usize,
) -> Result<Vec<Box<RawValue>>, serde_json::Error> {
    let mut used = 0;
    let mut items = Vec::with_capacity(products.len());
    for product in products {
        let item = serde_json::value::to_raw_value(&product)?;
        // The comma between items.
        used += item.get().len() + 1;
        if used > budget && !items.is_empty() {
            break;
        }
        items.push(item);
    }
    Ok(items)
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
    let (products, total) = catalogue
        .store
        .list(limit, offset)
        .await
        .map_err(error::database)?;
    let items = within_budget(products, PAGE_BUDGET_BYTES)
        .map_err(|error| ApiError::internal(format!("a product did not serialise: {error}")))?;
    Ok(Json(Page { items, total }))
}

/// A product's version as an entity tag: its `updated_at` in microseconds, which every
/// change (an update, a reservation, a release) moves on.
fn etag(product: &Product) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", product.updated_at.timestamp_micros()))
        .expect("digits and quotes make a valid header value")
}

/// A product with its `ETag`.
fn versioned(product: Product) -> ([(HeaderName, HeaderValue); 1], Json<Product>) {
    ([(ETAG, etag(&product))], Json(product))
}

/// What `If-Match` asks for: `Ok(None)` for any version (absent, or `*`), else the versions
/// it lists (`"a", "b"`); `Err` if it lists only tags this service never gave out, which
/// match nothing.
fn expected_versions(headers: &HeaderMap) -> Result<Option<Vec<DateTime<Utc>>>, ApiError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    if value == "*" {
        return Ok(None);
    }
    let versions: Vec<DateTime<Utc>> = value.split(',').filter_map(version_of).collect();
    if versions.is_empty() {
        return Err(changed());
    }
    Ok(Some(versions))
}

/// The version an entity tag of ours names: a quoted count of microseconds since 1970,
/// before the year 10000 (a tag out of that range was never given out).
fn version_of(tag: &str) -> Option<DateTime<Utc>> {
    const YEAR_10000: i64 = 253_402_300_800_000_000;
    let micros: i64 = tag
        .trim()
        .strip_prefix('"')?
        .strip_suffix('"')?
        .parse()
        .ok()?;
    (0..YEAR_10000)
        .contains(&micros)
        .then(|| DateTime::from_timestamp_micros(micros))
        .flatten()
}

fn changed() -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "the product changed since it was read (If-Match); read it again",
    )
}

async fn show(
    State(catalogue): State<Catalogue>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = product_id(&id)?;
    let product = catalogue
        .get(id)
        .await
        .map_err(error::database)?
        .ok_or_else(|| ApiError::not_found(format!("no product {id}")))?;
    Ok(versioned(product))
}

async fn create(
    State(catalogue): State<Catalogue>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<impl IntoResponse, ApiError> {
    let fields = input.validate().map_err(ApiError::invalid)?;
    let product = catalogue
        .store
        .create(&fields)
        .await
        .map_err(error::database)?;
    tracing::info!(product_id = %product.id, "Product created.");
    Ok((StatusCode::CREATED, versioned(product)))
}

/// With `If-Match`, only if the product is still at the version read: stock is a whole
/// figure here, and a reservation made since the read would otherwise be written over.
async fn update(
    State(catalogue): State<Catalogue>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<impl IntoResponse, ApiError> {
    let id = product_id(&id)?;
    let expected = expected_versions(&headers)?;
    let fields = input.validate().map_err(ApiError::invalid)?;
    let product = match catalogue
        .store
        .update(id, &fields, expected.as_deref())
        .await
        .map_err(error::database)?
    {
        Updated::Done(product) => product,
        Updated::Missing => return Err(ApiError::not_found(format!("no product {id}"))),
        Updated::Changed => return Err(changed()),
    };
    catalogue.cache.invalidate(id).await;
    Ok(versioned(product))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn product(description: &str) -> Product {
        Product {
            id: Uuid::now_v7(),
            name: "Mug".into(),
            description: description.into(),
            price_cents: 1250,
            stock: 5,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_and_holds_at_least_one_product() {
        let products: Vec<Product> = (0..10).map(|_| product(&"☕".repeat(1000))).collect();
        let one = serde_json::to_vec(&products[0]).expect("json").len();
        let items = within_budget(products.clone(), 3 * one + 3).expect("page");
        assert_eq!(items.len(), 3);
        assert_eq!(
            serde_json::from_str::<Product>(items[0].get()).expect("a product"),
            products[0]
        );
        assert_eq!(within_budget(products.clone(), 1).expect("page").len(), 1);
        assert_eq!(within_budget(products, usize::MAX).expect("page").len(), 10);
    }
}
