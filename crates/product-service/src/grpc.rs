//! `proto/product.proto`: what order-service uses to price and reserve stock.

use contracts::product::product_service_server::ProductService;
use contracts::product::{
    CheckAvailabilityRequest, CheckAvailabilityResponse, GetProductRequest, Item, ItemAvailability,
    Product as ProductMessage, ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest,
    ReserveStockResponse, ReservedItem as ReservedMessage,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::database_status;
use crate::routes::Catalogue;
use crate::store::Product;

#[derive(Debug, Clone)]
pub struct ProductGrpc {
    pub catalogue: Catalogue,
}

fn to_message(product: Product) -> ProductMessage {
    ProductMessage {
        id: product.id.to_string(),
        name: product.name,
        description: product.description,
        price_cents: product.price_cents,
        stock: product.stock,
        created_at: product.created_at.to_rfc3339(),
        updated_at: product.updated_at.to_rfc3339(),
    }
}

fn parse_id(raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw)
        .map_err(|_| Status::invalid_argument(format!("product id {raw:?} is not a UUID")))
}

/// Items with valid ids and positive quantities, at least one.
fn parse_items(items: &[Item]) -> Result<Vec<(Uuid, i64)>, Status> {
    if items.is_empty() {
        return Err(Status::invalid_argument("at least one item is required"));
    }
    items
        .iter()
        .map(|item| {
            if item.quantity <= 0 {
                return Err(Status::invalid_argument(format!(
                    "quantity for {} must be positive",
                    item.product_id
                )));
            }
            Ok((parse_id(&item.product_id)?, item.quantity))
        })
        .collect()
}

fn parse_reservation_id(raw: &str) -> Result<&str, Status> {
    if raw.is_empty() || raw.len() > 200 {
        return Err(Status::invalid_argument(
            "reservation_id must be 1 to 200 characters",
        ));
    }
    Ok(raw)
}

#[tonic::async_trait]
impl ProductService for ProductGrpc {
    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<ProductMessage>, Status> {
        let id = parse_id(&request.into_inner().id)?;
        let product = self
            .catalogue
            .get(id)
            .await
            .map_err(database_status)?
            .ok_or_else(|| Status::not_found(format!("no product {id}")))?;
        Ok(Response::new(to_message(product)))
    }

    async fn check_availability(
        &self,
        request: Request<CheckAvailabilityRequest>,
    ) -> Result<Response<CheckAvailabilityResponse>, Status> {
        let items = parse_items(&request.into_inner().items)?;
        let ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
        let stock = self
            .catalogue
            .store
            .stock_of(&ids)
            .await
            .map_err(database_status)?;
        let mut available = true;
        let items = items
            .into_iter()
            .map(|(id, requested)| {
                let (in_stock, price_cents) = stock.get(&id).copied().unwrap_or((0, 0));
                let enough = stock.contains_key(&id) && in_stock >= requested;
                available &= enough;
                ItemAvailability {
                    product_id: id.to_string(),
                    requested,
                    in_stock,
                    available: enough,
                    price_cents,
                }
            })
            .collect();
        Ok(Response::new(CheckAvailabilityResponse {
            available,
            items,
        }))
    }

    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<ReserveStockResponse>, Status> {
        let request = request.into_inner();
        let reservation_id = parse_reservation_id(&request.reservation_id)?;
        let items = parse_items(&request.items)?;
        let reserved = self.catalogue.store.reserve(reservation_id, &items).await?;
        for item in &reserved {
            // The cached stock figure is stale now.
            self.catalogue.cache.invalidate(item.product_id).await;
        }
        // Saturating: prices are capped so it never has to, and the reservation is
        // committed already, so this must not panic or fail.
        let total_cents = reserved.iter().fold(0_i64, |total, i| {
            total.saturating_add(i.quantity.saturating_mul(i.unit_price_cents))
        });
        tracing::info!(%reservation_id, items = reserved.len(), "Stock reserved.");
        Ok(Response::new(ReserveStockResponse {
            reservation_id: reservation_id.to_owned(),
            items: reserved
                .into_iter()
                .map(|i| ReservedMessage {
                    product_id: i.product_id.to_string(),
                    quantity: i.quantity,
                    unit_price_cents: i.unit_price_cents,
                })
                .collect(),
            total_cents,
        }))
    }

    async fn release_stock(
        &self,
        request: Request<ReleaseStockRequest>,
    ) -> Result<Response<ReleaseStockResponse>, Status> {
        let request = request.into_inner();
        let reservation_id = parse_reservation_id(&request.reservation_id)?;
        let changed = self
            .catalogue
            .store
            .release(reservation_id)
            .await
            .map_err(database_status)?;
        for product_id in &changed {
            self.catalogue.cache.invalidate(*product_id).await;
        }
        if !changed.is_empty() {
            tracing::info!(%reservation_id, "Stock released.");
        }
        Ok(Response::new(ReleaseStockResponse {
            released: !changed.is_empty(),
        }))
    }
}
