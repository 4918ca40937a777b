//! The inbox: a consumer records each event id in the same transaction as the event's
//! effect, so a redelivered event (Kafka rebalance, crash before the offset commit,
//! JetStream redelivery) changes nothing the second time.

use sqlx::PgConnection;
use uuid::Uuid;

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
