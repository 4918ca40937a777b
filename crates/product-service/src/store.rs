//! Products and stock reservations in Postgres.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How an update ended.
#[derive(Debug)]
pub enum Updated {
    Done(Product),
    /// No such product.
    Missing,
    /// The product is no longer at the version the caller read.
    Changed,
}

/// Validated fields of a create or update.
#[derive(Debug, Clone)]
pub struct ProductFields {
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedItem {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("no product {0}")]
    UnknownProduct(Uuid),
    #[error(
        "insufficient stock for product {product_id}: requested {requested}, available {available}"
    )]
    Insufficient {
        product_id: Uuid,
        requested: i64,
        available: i64,
    },
    #[error("reservation {0} was released and cannot be reserved again")]
    Released(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

const COLUMNS: &str = "id, name, description, price_cents, stock, created_at, updated_at";

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn list(&self, limit: i64, offset: i64) -> Result<(Vec<Product>, i64), sqlx::Error> {
        let items = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM products ORDER BY created_at, id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total = sqlx::query_scalar("SELECT count(*) FROM products")
            .fetch_one(&self.pool)
            .await?;
        Ok((items, total))
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn create(&self, fields: &ProductFields) -> Result<Product, sqlx::Error> {
        sqlx::query_as(&format!(
            "INSERT INTO products (id, name, description, price_cents, stock)
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.price_cents)
        .bind(fields.stock)
        .fetch_one(&self.pool)
        .await
    }

    /// Replaces the fields of a product; with `expected`, only if it is still at one of
    /// those versions (its `updated_at`: a reservation or another update moves it on).
    pub async fn update(
        &self,
        id: Uuid,
        fields: &ProductFields,
        expected: Option<&[DateTime<Utc>]>,
    ) -> Result<Updated, sqlx::Error> {
        let updated: Option<Product> = sqlx::query_as(&format!(
            "UPDATE products SET name = $2, description = $3, price_cents = $4, stock = $5,
                    updated_at = now()
             WHERE id = $1 AND ($6::timestamptz[] IS NULL OR updated_at = ANY($6))
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.price_cents)
        .bind(fields.stock)
        .bind(expected)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(product) = updated {
            return Ok(Updated::Done(product));
        }
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok(if exists {
            Updated::Changed
        } else {
            Updated::Missing
        })
    }

    pub async fn delete(&self, id: Uuid) -> Result<bool, sqlx::Error> {
        let deleted = sqlx::query("DELETE FROM products WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Current stock and price of each product; `None` for unknown ones.
    pub async fn stock_of(&self, ids: &[Uuid]) -> Result<BTreeMap<Uuid, (i64, i64)>, sqlx::Error> {
        let rows: Vec<(Uuid, i64, i64)> =
            sqlx::query_as("SELECT id, stock, price_cents FROM products WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, stock, price)| (id, (stock, price)))
            .collect())
    }

    /// Takes stock for every item or for none.
    ///
    /// Idempotent by `reservation_id`: the first call inserts the reservation row, which
    /// a concurrent call with the same id waits on; a repeated call returns what the first
    /// reserved without touching stock again.
    pub async fn reserve(
        &self,
        reservation_id: &str,
        items: &[(Uuid, i64)],
    ) -> Result<Vec<ReservedItem>, ReserveError> {
        let mut tx = self.pool.begin().await?;
        let claimed =
            sqlx::query("INSERT INTO reservations (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
                .bind(reservation_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if !claimed {
            let released: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT released_at FROM reservations WHERE id = $1")
                    .bind(reservation_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if released.is_some() {
                return Err(ReserveError::Released(reservation_id.to_owned()));
            }
            return Ok(reserved_items(&mut tx, reservation_id).await?);
        }

        // One row per product, locked in id order so concurrent reservations cannot deadlock.
        let mut merged = BTreeMap::<Uuid, i64>::new();
        for (product_id, quantity) in items {
            *merged.entry(*product_id).or_default() += quantity;
        }
        let mut reserved = Vec::with_capacity(merged.len());
        for (product_id, quantity) in merged {
            let taken: Option<i64> = sqlx::query_scalar(
                "UPDATE products SET stock = stock - $2, updated_at = now()
                 WHERE id = $1 AND stock >= $2 RETURNING price_cents",
            )
            .bind(product_id)
            .bind(quantity)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(unit_price_cents) = taken else {
                // Dropping `tx` rolls back what this call took so far.
                let available: Option<i64> =
                    sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
                        .bind(product_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(match available {
                    None => ReserveError::UnknownProduct(product_id),
                    Some(available) => ReserveError::Insufficient {
                        product_id,
                        requested: quantity,
                        available,
                    },
                });
            };
            sqlx::query(
                "INSERT INTO reservation_items (reservation_id, product_id, quantity, unit_price_cents)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(reservation_id)
            .bind(product_id)
            .bind(quantity)
            .bind(unit_price_cents)
            .execute(&mut *tx)
            .await?;
            reserved.push(ReservedItem {
                product_id,
                quantity,
                unit_price_cents,
            });
        }
        tx.commit().await?;
        Ok(reserved)
    }

    /// Returns a reservation's stock. Idempotent; returns the products whose stock changed
    /// (empty when there was nothing to release).
    ///
    /// Releasing an id never reserved leaves a released tombstone, so a reservation that
    /// arrives late (its caller timed out and compensated) cannot take stock afterwards.
    pub async fn release(&self, reservation_id: &str) -> Result<Vec<Uuid>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let tombstone = sqlx::query(
            "INSERT INTO reservations (id, released_at) VALUES ($1, now()) ON CONFLICT (id) DO NOTHING",
        )
        .bind(reservation_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if tombstone {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let releasing = sqlx::query(
            "UPDATE reservations SET released_at = now() WHERE id = $1 AND released_at IS NULL",
        )
        .bind(reservation_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !releasing {
            return Ok(Vec::new());
        }
        let items = reserved_items(&mut tx, reservation_id).await?;
        for item in &items {
            sqlx::query("UPDATE products SET stock = stock + $2, updated_at = now() WHERE id = $1")
                .bind(item.product_id)
                .bind(item.quantity)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(items.into_iter().map(|i| i.product_id).collect())
    }
}

async fn reserved_items(
    conn: &mut PgConnection,
    reservation_id: &str,
) -> Result<Vec<ReservedItem>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT product_id, quantity, unit_price_cents FROM reservation_items
         WHERE reservation_id = $1 ORDER BY product_id",
    )
    .bind(reservation_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(product_id, quantity, unit_price_cents)| ReservedItem {
            product_id,
            quantity,
            unit_price_cents,
        })
        .collect())
}
