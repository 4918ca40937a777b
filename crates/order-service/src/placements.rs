//! The `placements` table (see its migration): what makes placing an order safe whatever
//! happens between the stock reservation and the order row.
//!
//! The order row and the decision to give a placement up race each other (a slow request
//! still inserting while its compensation, or the sweep, abandons it). Both decide under the
//! same per-order advisory lock, and both look at what the other wrote: an order written
//! first means "keep the stock", an abandonment written first means "refuse the order".

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Serialises the two decisions about one order id (inside the caller's transaction).
pub(crate) async fn lock(conn: &mut PgConnection, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 1))")
        .bind(order_id)
        .execute(conn)
        .await
        .map(drop)
}

/// Records that `order_id` is being placed; `false` if it was given up before (its key is
/// spent).
pub(crate) async fn begin(pool: &PgPool, order_id: Uuid) -> Result<bool, sqlx::Error> {
    let abandoned: Option<bool> = sqlx::query_scalar(
        "INSERT INTO placements (id) VALUES ($1)
         ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id
         RETURNING abandoned_at IS NOT NULL",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    Ok(abandoned != Some(true))
}

/// Whether the placement was given up; call under [`lock`]. Once it is not, the order is
/// written in the same transaction, and the placement goes with [`finish`].
pub(crate) async fn is_abandoned(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let abandoned: Option<bool> =
        sqlx::query_scalar("SELECT abandoned_at IS NOT NULL FROM placements WHERE id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    Ok(abandoned == Some(true))
}

/// The order is written (in the caller's transaction): nothing is left to clean up.
pub(crate) async fn finish(conn: &mut PgConnection, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM placements WHERE id = $1")
        .bind(order_id)
        .execute(conn)
        .await
        .map(drop)
}

/// Nothing was reserved (product-service refused): the placement leaves no trace, and the
/// same key may try again.
pub(crate) async fn forget(pool: &PgPool, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM placements WHERE id = $1 AND abandoned_at IS NULL")
        .bind(order_id)
        .execute(pool)
        .await
        .map(drop)
}

/// Gives the placement up unless its order was written; `true` if its stock must be
/// released.
pub(crate) async fn abandon(pool: &PgPool, order_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, order_id).await?;
    let placed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1)")
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
    if placed {
        // Cannot happen while `finish` runs with the order's insert; cleaned up regardless.
        finish(&mut tx, order_id).await?;
    } else {
        sqlx::query(
            "INSERT INTO placements (id, abandoned_at) VALUES ($1, now())
             ON CONFLICT (id) DO UPDATE
             SET abandoned_at = COALESCE(placements.abandoned_at, now())",
        )
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(!placed)
}

pub(crate) async fn mark_released(pool: &PgPool, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE placements SET released_at = now() WHERE id = $1")
        .bind(order_id)
        .execute(pool)
        .await
        .map(drop)
}

/// Placements whose stock may still be held by no order: abandoned ones not yet released,
/// and ones older than `grace` (their process died between the reservation and the row),
/// oldest first.
pub(crate) async fn left_behind(
    pool: &PgPool,
    grace: Duration,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM placements
         WHERE released_at IS NULL
           AND (abandoned_at IS NOT NULL OR created_at < now() - make_interval(secs => $1))
         ORDER BY created_at LIMIT $2",
    )
    .bind(grace.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}
