//! The `payments` table.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A payment as `GET /payments/{order_id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount_cents: i64,
    /// `SUCCEEDED` or `FAILED`.
    pub status: String,
    /// Why it failed; `null` when it succeeded.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The outcome of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Succeeded,
    Failed,
}

impl PaymentStatus {
    /// As stored in `payments.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    /// As the `status` label of `payments_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// Inserts the payment of an order inside the caller's transaction; `false` when the order
/// already has one (which is then left as it was).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    order_id: Uuid,
    amount_cents: i64,
    status: PaymentStatus,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO payments (id, order_id, amount_cents, status, reason)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(id)
    .bind(order_id)
    .bind(amount_cents)
    .bind(status.as_str())
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Reads payments for the REST routes.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn by_order(&self, order_id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, order_id, amount_cents, status, reason, created_at
             FROM payments WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await
    }
}
