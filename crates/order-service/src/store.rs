//! Orders in Postgres, and the state transitions of the saga.
//!
//! Every transition runs under `SELECT ... FOR UPDATE` and only from `PENDING`, so whatever
//! the order or repetition of events (payment result, timeout), an order reaches exactly one
//! terminal state, once, and emits exactly one terminal event.

use chrono::{DateTime, Utc};
use contracts::events::{OrderCancelled, OrderConfirmed, OrderCreated, OrderLine, kinds, sources};
use contracts::topics::Topics;
use mesh::{Event, outbox};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::placements;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Confirmed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
        }
    }

    fn parse(raw: &str) -> Self {
        match raw {
            "CONFIRMED" => Self::Confirmed,
            "CANCELLED" => Self::Cancelled,
            _ => Self::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// An order as the REST contract shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: Status,
    pub total_cents: i64,
    pub items: Vec<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    total_cents: i64,
    cancel_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    topics: Topics,
}

impl Store {
    pub fn new(pool: PgPool, topics: Topics) -> Self {
        Self { pool, topics }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes a `PENDING` order and its `order_created` event in one transaction, and ends
    /// its placement. An order id that already exists (a client retry with the same
    /// idempotency key) returns the stored order unchanged; `None` if the placement was
    /// given up meanwhile (its stock is being released: the order must not be written).
    pub async fn insert_pending(
        &self,
        order_id: Uuid,
        user_id: Uuid,
        items: &[Item],
        total_cents: i64,
        card_token: &str,
        traceparent: Option<String>,
    ) -> Result<Option<Order>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        placements::lock(&mut tx, order_id).await?;
        if placements::is_abandoned(&mut tx, order_id).await? {
            return Ok(None);
        }
        placements::finish(&mut tx, order_id).await?;
        let inserted = sqlx::query(
            "INSERT INTO orders (id, user_id, status, total_cents) VALUES ($1, $2, 'PENDING', $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(order_id)
        .bind(user_id)
        .bind(total_cents)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            for item in items {
                sqlx::query(
                    "INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(order_id)
                .bind(item.product_id)
                .bind(item.quantity)
                .bind(item.unit_price_cents)
                .execute(&mut *tx)
                .await?;
            }
            let created = OrderCreated {
                order_id,
                user_id,
                total_cents,
                items: items
                    .iter()
                    .map(|i| OrderLine {
                        product_id: i.product_id,
                        quantity: i.quantity,
                        unit_price_cents: i.unit_price_cents,
                    })
                    .collect(),
                card_token: card_token.to_owned(),
                created_at: Utc::now(),
            };
            let event =
                event(kinds::ORDER_CREATED, order_id, &created)?.with_traceparent(traceparent);
            outbox::enqueue(&mut tx, &self.topics.order_created, &event).await?;
        }
        let order = load(&mut tx, order_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(Some(order))
    }

    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, order_id).await
    }

    /// Locks a `PENDING` order for a transition; `None` if it is final or unknown.
    pub async fn lock_pending(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        order_id: Uuid,
    ) -> Result<Result<(Uuid, i64), Option<Status>>, sqlx::Error> {
        let row: Option<(Uuid, String, i64)> = sqlx::query_as(
            "SELECT user_id, status, total_cents FROM orders WHERE id = $1 FOR UPDATE",
        )
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(match row {
            None => Err(None),
            Some((user_id, status, total)) if status == "PENDING" => Ok((user_id, total)),
            Some((_, status, _)) => Err(Some(Status::parse(&status))),
        })
    }

    /// `PENDING` → `CONFIRMED` and `order_confirmed`, inside the caller's transaction.
    pub async fn confirm(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        order_id: Uuid,
        user_id: Uuid,
        total_cents: i64,
        traceparent: Option<String>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE orders SET status = 'CONFIRMED', updated_at = now() WHERE id = $1")
            .bind(order_id)
            .execute(&mut **tx)
            .await?;
        let confirmed = OrderConfirmed {
            order_id,
            user_id,
            total_cents,
        };
        let event =
            event(kinds::ORDER_CONFIRMED, order_id, &confirmed)?.with_traceparent(traceparent);
        outbox::enqueue(tx, &self.topics.order_confirmed, &event).await
    }

    /// `PENDING` → `CANCELLED` and `order_cancelled`, inside the caller's transaction. The
    /// caller has released the stock first.
    pub async fn cancel(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        order_id: Uuid,
        user_id: Uuid,
        reason: &str,
        traceparent: Option<String>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE orders SET status = 'CANCELLED', cancel_reason = $2, updated_at = now() WHERE id = $1",
        )
        .bind(order_id)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
        let cancelled = OrderCancelled {
            order_id,
            user_id,
            reason: reason.to_owned(),
        };
        let event =
            event(kinds::ORDER_CANCELLED, order_id, &cancelled)?.with_traceparent(traceparent);
        outbox::enqueue(tx, &self.topics.order_cancelled, &event).await
    }

    /// Records that product-service confirmed the release of a cancelled order's stock.
    pub async fn mark_stock_released(&self, order_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE orders SET stock_released_at = now()
             WHERE id = $1 AND stock_released_at IS NULL",
        )
        .bind(order_id)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Ids of cancelled orders whose stock release is not confirmed yet, longest waiting
    /// first.
    pub async fn stock_to_release(&self, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT id FROM orders
             WHERE status = 'CANCELLED' AND stock_released_at IS NULL
             ORDER BY updated_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Ids of `PENDING` orders created before `older_than` ago, oldest first, but for
    /// `passed_over` (not locked: each is locked and checked again when it is cancelled).
    pub async fn expired(
        &self,
        older_than: std::time::Duration,
        limit: i64,
        passed_over: &[Uuid],
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        let seconds = older_than.as_secs_f64();
        sqlx::query_scalar(
            "SELECT id FROM orders
             WHERE status = 'PENDING' AND created_at < now() - make_interval(secs => $1)
               AND NOT (id = ANY($3))
             ORDER BY created_at LIMIT $2",
        )
        .bind(seconds)
        .bind(limit)
        .bind(passed_over)
        .fetch_all(&self.pool)
        .await
    }
}

fn event<T: Serialize>(kind: &str, order_id: Uuid, data: &T) -> Result<Event, sqlx::Error> {
    Event::new(kind, sources::ORDER_SERVICE, order_id.to_string(), data)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

async fn load(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    let Some(row) = sqlx::query_as::<_, OrderRow>(
        "SELECT id, user_id, status, total_cents, cancel_reason, created_at, updated_at
         FROM orders WHERE id = $1",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let items: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT product_id, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(Order {
        id: row.id,
        user_id: row.user_id,
        status: Status::parse(&row.status),
        total_cents: row.total_cents,
        items: items
            .into_iter()
            .map(|(product_id, quantity, unit_price_cents)| Item {
                product_id,
                quantity,
                unit_price_cents,
            })
            .collect(),
        cancel_reason: row.cancel_reason,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }))
}
