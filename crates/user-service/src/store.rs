//! The `users` table.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn create(
        &self,
        email: &str,
        name: &str,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let inserted = sqlx::query_as::<_, User>(
            "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)
             RETURNING id, email, name, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(email)
        .bind(name)
        .bind(password_hash)
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(user) => Ok(user),
            // The unique constraint decides, so concurrent registrations cannot both win.
            Err(error)
                if error
                    .as_database_error()
                    .is_some_and(|e| e.is_unique_violation()) =>
            {
                Err(StoreError::EmailTaken)
            }
            Err(error) => Err(error.into()),
        }
    }

    pub async fn credentials(&self, email: &str) -> Result<Option<Credentials>, sqlx::Error> {
        sqlx::query_as("SELECT id, email, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await
    }

    /// Replaces a password hash with a stronger one, unless it changed meanwhile; `false`
    /// when it did (or the account is gone).
    pub async fn upgrade_password_hash(
        &self,
        id: Uuid,
        old: &str,
        new: &str,
    ) -> Result<bool, sqlx::Error> {
        let updated =
            sqlx::query("UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2")
                .bind(id)
                .bind(old)
                .bind(new)
                .execute(&self.pool)
                .await?;
        Ok(updated.rows_affected() == 1)
    }

    pub async fn by_id(&self, id: Uuid) -> Result<Option<User>, sqlx::Error> {
        sqlx::query_as("SELECT id, email, name, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }
}
