//! The outbox and inbox tables, installed in the database of each service that needs them.
//!
//! They are created by [`install_schema`] rather than by each service's migrations so that
//! three services share one definition. The DDL is idempotent and serialised by an advisory
//! lock, so concurrent starts are safe.

use sqlx::PgPool;

/// Any constant will do: advisory locks are per database.
const SCHEMA_LOCK: i64 = 0x6d65_7368_5343_484d; // "meshSCHM"

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS mesh_outbox (
    seq         BIGSERIAL PRIMARY KEY,
    topic       TEXT        NOT NULL,
    event_key   TEXT        NOT NULL,
    event_id    UUID        NOT NULL UNIQUE,
    event_type  TEXT        NOT NULL,
    source      TEXT        NOT NULL,
    event_time  TIMESTAMPTZ NOT NULL,
    traceparent TEXT,
    -- json (not jsonb) keeps the payload byte for byte as it was emitted.
    data        JSON        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS mesh_outbox_pending ON mesh_outbox (seq) WHERE sent_at IS NULL;

CREATE TABLE IF NOT EXISTS mesh_inbox (
    consumer   TEXT        NOT NULL,
    event_id   UUID        NOT NULL,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
";

/// Creates `mesh_outbox` and `mesh_inbox` if they do not exist.
pub async fn install_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    tx.commit().await
}
