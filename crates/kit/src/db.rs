//! Postgres: each service owns a database, created if missing and migrated at startup.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("DATABASE_URL names no database")]
    NoDatabase,
    #[error("database name {0:?} must be letters, digits and underscores")]
    BadName(String),
    #[error("cannot create database {name}: {source}")]
    Create { name: String, source: sqlx::Error },
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Pool settings; the defaults suit a small service.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request may wait for a connection before failing (and `/ready` turning red).
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// Creates the database named in `url` if it does not exist.
///
/// Safe when several instances start together: losing the race to `CREATE DATABASE` is
/// success, since the database then exists.
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let options = PgConnectOptions::from_str(url).map_err(DbError::Url)?;
    let name = options
        .get_database()
        .ok_or(DbError::NoDatabase)?
        .to_owned();
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(DbError::BadName(name));
    }
    let mut admin: PgConnection = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(DbError::Connect)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .map_err(DbError::Connect)?;
    if !exists {
        // The name was checked above: identifiers cannot be bound as parameters.
        let created = sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await;
        if let Err(error) = created
            && !is_lost_creation_race(&error)
        {
            return Err(DbError::Create {
                name,
                source: error,
            });
        }
        tracing::info!(database = %name, "Database created.");
    }
    admin.close().await.ok();
    Ok(())
}

/// `duplicate_database`, or the unique index on `pg_database` when two creations race.
fn is_lost_creation_race(error: &sqlx::Error) -> bool {
    matches!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42P04") | Some("23505")
    )
}

/// Connects without creating or migrating anything.
pub async fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url).map_err(DbError::Url)?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// Creates the database if missing, connects, and applies `migrator`.
///
/// sqlx takes a Postgres advisory lock around the migrations, so two instances starting at
/// once apply each migration exactly once.
pub async fn connect_and_migrate(
    url: &str,
    migrator: &Migrator,
    settings: &PoolSettings,
) -> Result<PgPool, DbError> {
    ensure_database(url).await?;
    let pool = connect(url, settings).await?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// The SQLSTATE class (its first two characters) of a failure Postgres answered.
fn sqlstate_class(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(error) => error.code().map(|code| code.chars().take(2).collect()),
        _ => None,
    }
}

/// Postgres is down, shutting down or saturated, as opposed to a query that is wrong: what
/// callers map to "unavailable" (HTTP 503, gRPC UNAVAILABLE). SQLSTATE classes 08
/// (connection), 53 (insufficient resources: too many connections) and 57 (operator
/// intervention: an admin shutdown, a crash recovery), but for 57014: a statement timeout
/// is a query too slow, which trying again would only repeat.
pub fn unreachable(error: &sqlx::Error) -> bool {
    let statement_timeout =
        matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("57014"));
    matches!(
        error,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    ) || (!statement_timeout
        && sqlstate_class(error).is_some_and(|class| ["08", "53", "57"].contains(&class.as_str())))
}

/// Postgres refused a value the statement carried (SQLSTATE class 22, data exception):
/// almost always the input's fault.
pub fn value_refused(error: &sqlx::Error) -> bool {
    sqlstate_class(error).as_deref() == Some("22")
}

/// The statement broke a rule of the schema (SQLSTATE class 23: a unique, check, foreign
/// key or not-null constraint): the same statement breaks it again.
pub fn constraint_violated(error: &sqlx::Error) -> bool {
    sqlstate_class(error).as_deref() == Some("23")
}
