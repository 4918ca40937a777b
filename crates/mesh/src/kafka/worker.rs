//! The loop every saga consumer runs: receive, handle, commit; retry what failed.

use std::future::Future;
use std::time::Duration;

use kit::shutdown::pause;
use tokio_util::sync::CancellationToken;

use super::{ConsumeError, EVENT_RETRY, EventConsumer, Received};

/// How a handler's failure is treated.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying (database or broker unavailable, an upstream timed out). The same
    /// event is handled again after a backoff; its offset is not committed meanwhile, so a
    /// crash in between means redelivery, which the handler's inbox absorbs.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (an event this service cannot understand). Logged, then skipped.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Whether a database failure can go away by itself. A lost connection, a full pool, a
/// deadlock or serialization conflict, a server restarting: retried. The event's own data
/// breaking a rule (a data exception, a constraint violation) or a value that cannot be
/// encoded fails the same way every time, so retrying it would only hold up the events
/// behind it: skipped. Anything else (a table missing while a deploy is under way, say) is
/// retried too: holding the partition until someone fixes it loses nothing.
impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> Self {
        if fails_every_time(&error) {
            Self::Permanent(error.to_string())
        } else {
            Self::Transient(error.to_string())
        }
    }
}

fn fails_every_time(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Encode(_))
        || kit::db::value_refused(error)
        || kit::db::constraint_violated(error)
}

/// An event that cannot be read (or built) now never will be.
impl From<crate::event::EventError> for HandleError {
    fn from(error: crate::event::EventError) -> Self {
        Self::Permanent(error.to_string())
    }
}

/// Consumes until `stop` is cancelled. An event in hand is finished before stopping.
pub async fn run_worker<H, F>(
    name: &str,
    consumer: EventConsumer,
    stop: CancellationToken,
    handler: H,
) where
    H: Fn(Received) -> F,
    F: Future<Output = Result<(), HandleError>>,
{
    tracing::info!(worker = %name, "Consumer started.");
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            next = consumer.next() => next,
        };
        let received = match next {
            Ok(received) => received,
            Err(ConsumeError::Malformed {
                topic,
                partition,
                offset,
                source,
            }) => {
                tracing::error!(worker = %name, %topic, partition, offset, %source, "Skipping a record that is not an event.");
                commit_or_warn(
                    name,
                    consumer.commit_position(&topic, partition, offset).await,
                );
                continue;
            }
            Err(error) => {
                tracing::warn!(worker = %name, %error, "Kafka error; retrying.");
                if !pause(&stop, Duration::from_millis(500)).await {
                    return;
                }
                continue;
            }
        };
        let mut backoff = EVENT_RETRY.start();
        loop {
            match handler(received.clone()).await {
                Ok(()) => break,
                Err(HandleError::Permanent(reason)) => {
                    tracing::error!(worker = %name, event_id = %received.event.id, kind = %received.event.kind, %reason, "Event skipped.");
                    break;
                }
                Err(HandleError::Transient(reason)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(worker = %name, event_id = %received.event.id, %reason, ?delay, "Event will be retried.");
                    if !pause(&stop, delay).await {
                        return;
                    }
                }
            }
        }
        commit_or_warn(name, consumer.commit(&received).await);
    }
    tracing::info!(worker = %name, "Consumer stopped.");
}

fn commit_or_warn(name: &str, result: Result<(), rdkafka::error::KafkaError>) {
    if let Err(error) = result {
        // Not fatal: the next commit covers this offset, and a redelivery is absorbed.
        tracing::warn!(worker = %name, %error, "Offset commit failed.");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::postgres::PgPoolOptions;
    use sqlx::{Connection, PgConnection, PgPool};

    use super::*;

    fn is_permanent(error: sqlx::Error) -> bool {
        matches!(HandleError::from(error), HandleError::Permanent(_))
    }

    async fn connect() -> PgConnection {
        PgConnection::connect(&format!("{}/postgres", testkit::postgres_base()))
            .await
            .expect("postgres")
    }

    /// The error the real server answers `sql` with.
    async fn failure_of(conn: &mut PgConnection, sql: &str) -> sqlx::Error {
        sqlx::raw_sql(sql)
            .execute(conn)
            .await
            .expect_err("the statement fails")
    }

    #[tokio::test]
    async fn an_event_whose_data_breaks_a_rule_is_skipped() {
        let mut conn = connect().await;
        assert!(is_permanent(failure_of(&mut conn, "SELECT 1/0").await));
        assert!(is_permanent(
            failure_of(&mut conn, "SELECT 'not a uuid'::uuid").await
        ));
        let duplicate = "CREATE TEMP TABLE seen (id INT PRIMARY KEY);
                         INSERT INTO seen VALUES (1); INSERT INTO seen VALUES (1)";
        assert!(is_permanent(failure_of(&mut conn, duplicate).await));
        let null = "CREATE TEMP TABLE named (name TEXT NOT NULL); INSERT INTO named VALUES (NULL)";
        assert!(is_permanent(failure_of(&mut conn, null).await));
        let unencodable = sqlx::Error::Encode("not UTF-8".into());
        assert!(is_permanent(unencodable));
    }

    #[tokio::test]
    async fn a_database_that_may_recover_is_retried() {
        let mut conn = connect().await;
        let cancelled = "SET statement_timeout = 10; SELECT pg_sleep(1)";
        assert!(!is_permanent(failure_of(&mut conn, cancelled).await));
        // A deploy under way: the table may be there on the next attempt.
        let missing = "SELECT * FROM a_table_no_migration_made";
        assert!(!is_permanent(failure_of(&mut conn, missing).await));

        let refused = PgConnection::connect("postgres://postgres@127.0.0.1:1/postgres").await;
        assert!(!is_permanent(refused.expect_err("nothing listens there")));

        let pool: PgPool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(50))
            .connect(&format!("{}/postgres", testkit::postgres_base()))
            .await
            .expect("pool");
        let _held = pool.acquire().await.expect("the only connection");
        let exhausted = pool.acquire().await.expect_err("the pool is empty");
        assert!(matches!(exhausted, sqlx::Error::PoolTimedOut));
        assert!(!is_permanent(exhausted));
    }
}
