//! The outbox: an event is written in the same transaction as the state change it reports,
//! and a relay publishes pending rows to Kafka and marks them sent.
//!
//! Delivery is at least once (a crash between the broker's ack and the commit of `sent_at`
//! republishes the batch); consumers deduplicate with the inbox. Only one relay publishes at
//! a time per database (a transaction-scoped advisory lock), so several instances of a
//! service can run their relays and events still leave in the order they were written: the
//! rows of one topic and key are published one after another, and one that fails holds back
//! the rows after it until it goes through.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use kit::backoff::Exponential;
use sqlx::postgres::PgListener;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::event::Event;
use crate::kafka::{EventProducer, ProduceError};

const NOTIFY_CHANNEL: &str = "mesh_outbox";
/// The pause after a failed relay round.
const RETRY: Exponential = Exponential::new(Duration::from_millis(100), Duration::from_secs(10));
const RELAY_LOCK: i64 = 0x6d65_7368_5245_4c59; // "meshRELY"

/// Adds `event` for `topic` to the outbox inside the caller's transaction.
pub async fn enqueue(
    conn: &mut PgConnection,
    topic: &str,
    event: &Event,
) -> Result<(), sqlx::Error> {
    let data = std::str::from_utf8(&event.data).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO mesh_outbox
            (topic, event_key, event_id, event_type, source, event_time, traceparent, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)",
    )
    .bind(topic)
    .bind(&event.key)
    .bind(event.id)
    .bind(&event.kind)
    .bind(&event.source)
    .bind(event.time)
    .bind(&event.traceparent)
    .bind(data)
    .execute(&mut *conn)
    .await?;
    // Delivered at commit: wakes the relay without polling.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] ProduceError),
}

#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    topic: String,
    event_key: String,
    event_id: Uuid,
    event_type: String,
    source: String,
    event_time: DateTime<Utc>,
    traceparent: Option<String>,
    data: String,
}

impl OutboxRow {
    fn event(&self) -> Event {
        Event {
            id: self.event_id,
            kind: self.event_type.clone(),
            source: self.source.clone(),
            time: self.event_time,
            key: self.event_key.clone(),
            traceparent: self.traceparent.clone(),
            data: self.data.clone().into(),
        }
    }
}

/// Publishes the outbox of one database.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    producer: EventProducer,
    batch_size: i64,
    idle_poll: Duration,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, producer: EventProducer) -> Self {
        Self {
            pool,
            producer,
            batch_size: 100,
            // NOTIFY wakes the relay at once; the poll only covers a lost notification.
            idle_poll: Duration::from_secs(1),
        }
    }

    pub fn with_batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Publishes up to one batch of pending rows; returns how many were sent. Returns 0
    /// without waiting when another relay holds the lock.
    pub async fn publish_pending(&self) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !ours {
            return Ok(0);
        }
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, topic, event_key, event_id, event_type, source, event_time,
                    traceparent, data::text AS data
             FROM mesh_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // The rows of one topic and key (one partition's worth of ordering) go out one after
        // another, and a failure holds back the ones after it: a later event of an order
        // must never reach the partition before an earlier one that failed. Different keys
        // are in flight at once.
        let results = join_all(
            same_topic_and_key(&rows)
                .into_iter()
                .map(|group| async move {
                    let mut sent = Vec::with_capacity(group.len());
                    for row in group {
                        if let Err(error) = self.producer.publish(&row.topic, &row.event()).await {
                            return (sent, Some((row, error)));
                        }
                        sent.push(row.seq);
                    }
                    (sent, None)
                }),
        )
        .await;
        let mut sent = Vec::with_capacity(rows.len());
        let mut first_error = None;
        for (group_sent, failure) in results {
            sent.extend(group_sent);
            if let Some((row, error)) = failure {
                tracing::warn!(event_id = %row.event_id, topic = %row.topic, key = %row.event_key, %error, "Outbox publish failed; it and the key's later rows will be retried.");
                first_error.get_or_insert(error);
            }
        }
        sqlx::query("UPDATE mesh_outbox SET sent_at = now() WHERE seq = ANY($1)")
            .bind(&sent)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        match first_error {
            Some(error) if sent.is_empty() => Err(error.into()),
            _ => Ok(sent.len()),
        }
    }

    /// Publishes until `stop` is cancelled, woken by NOTIFY, backing off on errors.
    pub async fn run(self, stop: CancellationToken) {
        let mut listener = match self.listen().await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "Outbox relay cannot LISTEN; polling instead.");
                None
            }
        };
        let mut backoff = RETRY.start();
        while !stop.is_cancelled() {
            let wait = match self.publish_pending().await {
                Ok(n) if n as i64 >= self.batch_size => continue,
                Ok(_) => {
                    backoff.reset();
                    self.idle_poll
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "Outbox relay failed.");
                    delay
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                woke = wait_for_notification(&mut listener) => {
                    if let Err(error) = woke {
                        tracing::debug!(%error, "Outbox listener lost; it reconnects.");
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(listener)
    }
}

/// `rows` (in `seq` order) grouped by topic and key, each group in `seq` order.
fn same_topic_and_key(rows: &[OutboxRow]) -> Vec<Vec<&OutboxRow>> {
    let mut groups: Vec<Vec<&OutboxRow>> = Vec::new();
    let mut index = HashMap::<(&str, &str), usize>::new();
    for row in rows {
        let slot = *index
            .entry((row.topic.as_str(), row.event_key.as_str()))
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[slot].push(row);
    }
    groups
}

async fn wait_for_notification(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(drop),
        None => futures::future::pending().await,
    }
}
