//! The `notifications` table: one row per event, the record of what was sent.

use chrono::{DateTime, Utc};
use mesh::Event;
use sqlx::{PgConnection, PgPool};
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
        sqlx::query_as(select!("WHERE event_id = $1"))
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
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

    /// A failed attempt, recorded as it happens so `GET /notifications` shows progress.
    pub(crate) async fn record_failure(
        &self,
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
        .execute(&self.pool)
        .await
        .map(drop)
    }

    pub(crate) async fn mark_sent(&self, event_id: Uuid, attempts: i32) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE notifications SET status = 'SENT', attempts = $2, updated_at = now()
             WHERE event_id = $1 AND status = 'PENDING'",
        )
        .bind(event_id)
        .bind(attempts)
        .execute(&self.pool)
        .await
        .map(drop)
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

/// Takes the delivery lock of one notification for the life of the caller's transaction;
/// `false` if another delivery (a replay, another instance) holds it.
pub(crate) async fn try_lock(conn: &mut PgConnection, event_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(event_id)
        .fetch_one(conn)
        .await
}
