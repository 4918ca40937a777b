//! The `notifications` table: one row per event, the record of what was sent.

use chrono::{DateTime, Utc};
use mesh::Event;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres};
use uuid::Uuid;

use crate::render::Rendered;

/// A notification and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Notification {
    /// The `ce_id` of the event it is for.
    pub event_id: Uuid,
    pub event_type: String,
    /// The event's key (the order id).
    pub key: String,
    pub subject: String,
    pub body: String,
    pub user_hint: Option<String>,
    pub traceparent: Option<String>,
    /// `PENDING`, `SENT` or `DEAD`.
    pub status: String,
    /// Delivery attempts so far; while sending, the number of the attempt in progress.
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const PENDING: &str = "PENDING";
pub const SENT: &str = "SENT";
pub const DEAD: &str = "DEAD";
pub const STATUSES: [&str; 3] = [PENDING, SENT, DEAD];

macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT event_id, event_type, key, subject, body, user_hint, traceparent, status,
                    attempts, last_error, created_at, updated_at
             FROM notifications ",
            $rest
        )
    };
}

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: PgPool,
}

impl Store {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the PENDING row for `event` unless it has one; `false` if it had.
    pub(crate) async fn insert_pending(
        &self,
        event: &Event,
        rendered: &Rendered,
    ) -> Result<bool, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO notifications
                (event_id, event_type, key, subject, body, user_hint, traceparent)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.id)
        .bind(&event.kind)
        .bind(&event.key)
        .bind(&rendered.subject)
        .bind(&rendered.body)
        .bind(&rendered.user_hint)
        .bind(&event.traceparent)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    pub(crate) async fn get(&self, event_id: Uuid) -> Result<Option<Notification>, sqlx::Error> {
        get(&self.pool, event_id).await
    }

    /// Newest first, at most `limit`, optionally of one status.
    pub(crate) async fn list(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notification>, sqlx::Error> {
        sqlx::query_as(select!(
            "WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC, event_id DESC LIMIT $2"
        ))
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Ids of the rows left PENDING (a crash or a shutdown mid-delivery), oldest first.
    pub(crate) async fn pending_ids(&self, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT event_id FROM notifications WHERE status = 'PENDING'
             ORDER BY created_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// DEAD → PENDING with the attempts reset; `None` if the row is not DEAD (or absent).
    pub(crate) async fn revive(&self, event_id: Uuid) -> Result<Option<Notification>, sqlx::Error> {
        sqlx::query_as(
            "UPDATE notifications
             SET status = 'PENDING', attempts = 0, last_error = NULL, updated_at = now()
             WHERE event_id = $1 AND status = 'DEAD'
             RETURNING event_id, event_type, key, subject, body, user_hint, traceparent, status,
                       attempts, last_error, created_at, updated_at",
        )
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await
    }
}

pub(crate) async fn get<'e>(
    db: impl PgExecutor<'e>,
    event_id: Uuid,
) -> Result<Option<Notification>, sqlx::Error> {
    sqlx::query_as(select!("WHERE event_id = $1"))
        .bind(event_id)
        .fetch_optional(db)
        .await
}

/// A failed attempt, recorded as it happens so `GET /notifications` shows progress.
pub(crate) async fn record_failure(
    conn: &mut PgConnection,
    event_id: Uuid,
    attempts: i32,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET attempts = $2, last_error = $3, updated_at = now()
         WHERE event_id = $1 AND status = 'PENDING'",
    )
    .bind(event_id)
    .bind(attempts)
    .bind(error)
    .execute(conn)
    .await
    .map(drop)
}

pub(crate) async fn mark_sent(
    conn: &mut PgConnection,
    event_id: Uuid,
    attempts: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = 'SENT', attempts = $2, updated_at = now()
         WHERE event_id = $1 AND status = 'PENDING'",
    )
    .bind(event_id)
    .bind(attempts)
    .execute(conn)
    .await
    .map(drop)
}

/// Parks a notification inside the caller's transaction; `false` if it was no longer
/// PENDING (then nothing changed).
pub(crate) async fn mark_dead(
    conn: &mut PgConnection,
    event_id: Uuid,
    attempts: i32,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE notifications
         SET status = 'DEAD', attempts = $2, last_error = $3, updated_at = now()
         WHERE event_id = $1 AND status = 'PENDING'",
    )
    .bind(event_id)
    .bind(attempts)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// The delivery lock of one notification, so a replay racing a redelivery, or two
/// instances, never send it twice. It is a session advisory lock on one pooled connection,
/// and the delivery's statements run on that connection too: a delivery holds one
/// connection from start to end (backoff included), never waits for a second one, and each
/// statement commits at once, so `GET /notifications` shows the attempts as they happen.
/// If the lock dies with its connection (a crash, a broken socket), so does the lock.
pub(crate) struct DeliveryLock {
    /// `Some` until released.
    conn: Option<PoolConnection<Postgres>>,
    key: Uuid,
}

impl DeliveryLock {
    /// `None` if another delivery (a replay, another instance) holds it.
    pub(crate) async fn try_acquire(
        pool: &PgPool,
        event_id: Uuid,
    ) -> Result<Option<Self>, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1::text, 0))")
                .bind(event_id)
                .fetch_one(&mut *conn)
                .await?;
        Ok(locked.then_some(Self {
            conn: Some(conn),
            key: event_id,
        }))
    }

    /// The connection that holds the lock.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("held until released")
    }

    /// Unlocks and returns the connection to the pool. The connection is let go only once
    /// the unlock went through: cut short half-way, this leaves it to `drop`, which closes it.
    pub(crate) async fn release(mut self) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1::text, 0))")
            .bind(self.key)
            .execute(self.conn())
            .await;
        match unlocked {
            Ok(_) => drop(self.conn.take()),
            Err(error) => {
                tracing::debug!(event_id = %self.key, %error, "Unlocking failed; the connection is closed.");
            }
        }
    }
}

impl Drop for DeliveryLock {
    /// Not released (the delivery's future was dropped mid-way): the connection must not go
    /// back to the pool still holding the lock, so it is closed, which ends the lock.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::postgres::PgPoolOptions;

    use super::*;

    /// Advisory locks need no table: the server's `postgres` database will do, and each test
    /// locks its own fresh id.
    async fn pool(max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&format!("{}/postgres", testkit::postgres_base()))
            .await
            .expect("postgres")
    }

    /// Polls `try_acquire` on `pool` for a few seconds: a dropped lock's connection closes
    /// in the background.
    async fn acquired_soon(pool: &PgPool, id: Uuid) -> Option<DeliveryLock> {
        for _ in 0..100 {
            if let Some(lock) = DeliveryLock::try_acquire(pool, id).await.expect("lock") {
                return Some(lock);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    #[tokio::test]
    async fn a_held_lock_keeps_other_deliveries_out_until_released() {
        let (ours, theirs) = (pool(1).await, pool(1).await);
        let id = Uuid::now_v7();
        let lock = DeliveryLock::try_acquire(&ours, id).await.expect("lock");
        let lock = lock.expect("free at first");
        assert!(
            DeliveryLock::try_acquire(&theirs, id)
                .await
                .expect("lock")
                .is_none(),
            "another instance is kept out"
        );
        let other = DeliveryLock::try_acquire(&theirs, Uuid::now_v7()).await;
        let other = other.expect("lock").expect("another notification is free");
        other.release().await;

        lock.release().await;
        assert_eq!(
            ours.size(),
            1,
            "a released lock's connection goes back to the pool"
        );
        let again = DeliveryLock::try_acquire(&theirs, id).await.expect("lock");
        again.expect("free once released").release().await;
    }

    #[tokio::test]
    async fn a_lock_dropped_mid_delivery_is_not_returned_to_the_pool_held() {
        let (ours, theirs) = (pool(1).await, pool(1).await);
        let id = Uuid::now_v7();
        let lock = DeliveryLock::try_acquire(&ours, id).await.expect("lock");
        drop(lock.expect("free at first"));

        // Had the connection gone back to the pool still locked, this pool's only
        // connection would hold the lock for good.
        let again = acquired_soon(&theirs, id).await;
        again
            .expect("the lock ended with its connection")
            .release()
            .await;
        let mine = acquired_soon(&ours, id).await;
        mine.expect("the pool reconnects").release().await;
    }
}
