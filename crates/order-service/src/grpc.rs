//! `proto/order.proto`: orders for internal callers (the user id is given, not a token).

use contracts::order::order_service_server::OrderService;
use contracts::order::{CreateOrderRequest, GetOrderRequest, Order as OrderMessage, OrderItem};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::orders::Orders;
use crate::store::Order;

#[derive(Debug, Clone)]
pub struct OrderGrpc {
    pub orders: Orders,
}

fn to_message(order: Order) -> OrderMessage {
    OrderMessage {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        status: order.status.as_str().to_owned(),
        total_cents: order.total_cents,
        items: order
            .items
            .into_iter()
            .map(|i| OrderItem {
                product_id: i.product_id.to_string(),
                quantity: i.quantity,
                unit_price_cents: i.unit_price_cents,
            })
            .collect(),
        cancel_reason: order.cancel_reason.unwrap_or_default(),
        created_at: order.created_at.to_rfc3339(),
        updated_at: order.updated_at.to_rfc3339(),
    }
}

fn uuid(field: &str, raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw)
        .map_err(|_| Status::invalid_argument(format!("{field} {raw:?} is not a UUID")))
}

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<OrderMessage>, Status> {
        let request = request.into_inner();
        let user_id = uuid("user_id", &request.user_id)?;
        let lines = request
            .items
            .iter()
            .map(|i| Ok((uuid("product_id", &i.product_id)?, i.quantity)))
            .collect::<Result<Vec<_>, Status>>()?;
        let token = Some(request.card_token).filter(|t| !t.is_empty());
        let order = self
            .orders
            .place(user_id, &lines, token, None, None)
            .await?;
        Ok(Response::new(to_message(order)))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<OrderMessage>, Status> {
        let request = request.into_inner();
        let order_id = uuid("id", &request.id)?;
        let user_id = uuid("user_id", &request.user_id)?;
        let order = self
            .orders
            .get_for(order_id, user_id)
            .await
            .map_err(crate::error::database_status)?
            .ok_or_else(|| Status::not_found(format!("no order {order_id}")))?;
        Ok(Response::new(to_message(order)))
    }
}
