//! The inbox: a consumer records each event id in the same transaction as the event's
//! effect, so a redelivered event (Kafka rebalance, crash before the offset commit,
//! JetStream redelivery) changes nothing the second time.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Opens the transaction that applies an event's effect, with the event already recorded
/// for `consumer`; `None` when the event was handled before (a redelivery), in which case
/// there is nothing to do. Commit the transaction once the effect is written.
pub async fn begin_once(
    pool: &PgPool,
    consumer: &str,
    event_id: Uuid,
) -> Result<Option<Transaction<'static, Postgres>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if record_once(&mut tx, consumer, event_id).await? {
        Ok(Some(tx))
    } else {
        tracing::debug!(consumer, %event_id, "Event already handled.");
        Ok(None)
    }
}

/// Records that `consumer` handles `event_id`; `false` means it already did and the effect
/// must be skipped. Call it first inside the transaction that applies the effect: a
/// concurrent duplicate waits on the row lock and then sees `false`.
pub async fn record_once(
    conn: &mut PgConnection,
    consumer: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO mesh_inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
