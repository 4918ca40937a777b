//! The Redis read-through cache for `GET /products/{id}`, behind a circuit breaker.
//!
//! Redis is an optimisation, never a dependency: when it is down or slow, every call fails
//! fast (a 250 ms command timeout, then the open breaker skips Redis entirely) and the
//! service answers from Postgres. Invalidations that could not reach Redis are remembered
//! and replayed once it answers again, so an update made during an outage is not hidden by
//! a stale entry afterwards.
//!
//! An invalidation leaves a short-lived tombstone rather than deleting the entry, and reads
//! fill the cache only where there is no entry (`SET NX`). Otherwise a read that fetched the
//! row just before a write committed could put the old product back just after the write's
//! invalidation, to be served for a whole TTL.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use fred::prelude::{
    Builder, Client, ClientLike, Config, Expiration, KeysInterface, ReconnectPolicy, SetOptions,
};
use middleware::breaker::{BreakerConfig, CircuitBreakerLayer};
use prometheus::IntCounterVec;
use uuid::Uuid;

use crate::store::Product;

#[derive(Debug)]
pub struct ProductCache {
    client: Client,
    ttl: Duration,
    breaker: CircuitBreakerLayer,
    pending_invalidations: Mutex<HashSet<Uuid>>,
    replaying: tokio::sync::Mutex<()>,
    lookups: IntCounterVec,
}

fn key(id: Uuid) -> String {
    format!("product:{id}")
}

/// What an invalidated entry holds for a while: no JSON object reads as this.
const TOMBSTONE: &str = "-";
/// How long a tombstone refuses fills: far longer than a read takes from its row to its
/// fill, and short, since reads of the product go to Postgres meanwhile.
const TOMBSTONE_TTL: Expiration = Expiration::PX(1_000);

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Hit,
    Miss,
    Error,
    Bypass,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Error => "error",
            Self::Bypass => "bypass",
        }
    }
}

impl ProductCache {
    /// Connects in the background: a Redis that is down at startup is not an error.
    pub fn connect(
        url: &str,
        ttl: Duration,
        metrics: &kit::Metrics,
    ) -> Result<Self, fred::error::Error> {
        let client = Builder::from_config(Config::from_url(url)?)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_millis(500);
                c.internal_command_timeout = Duration::from_millis(500);
                c.max_command_attempts = 1;
            })
            .with_performance_config(|c| {
                c.default_command_timeout = Duration::from_millis(250);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()?;
        // The connection task retries forever; commands fail by timeout meanwhile.
        let _connection = client.connect();
        let lookups = IntCounterVec::new(
            prometheus::Opts::new(
                "product_cache_lookups_total",
                "Product cache lookups by result: hit, miss, error, bypass (breaker open).",
            ),
            &["result"],
        )
        .expect("static metric definition is valid");
        Ok(Self {
            client,
            ttl,
            breaker: CircuitBreakerLayer::new(
                "redis",
                BreakerConfig {
                    window: 10,
                    min_calls: 3,
                    failure_rate: 0.5,
                    open_for: Duration::from_secs(2),
                    half_open_probes: 1,
                },
                Some(metrics),
            ),
            pending_invalidations: Mutex::new(HashSet::new()),
            replaying: tokio::sync::Mutex::new(()),
            lookups: metrics.register(lookups),
        })
    }

    pub async fn get(&self, id: Uuid) -> Option<Product> {
        let outcome = match self
            .guarded(async { self.client.get::<Option<String>, _>(key(id)).await })
            .await
        {
            None => (Outcome::Bypass, None),
            Some(Err(error)) => {
                tracing::debug!(%error, "Cache read failed; using Postgres.");
                (Outcome::Error, None)
            }
            Some(Ok(None)) => (Outcome::Miss, None),
            Some(Ok(Some(tombstone))) if tombstone == TOMBSTONE => (Outcome::Miss, None),
            Some(Ok(Some(json))) => match serde_json::from_str::<Product>(&json) {
                Ok(product) => (Outcome::Hit, Some(product)),
                Err(_) => (Outcome::Miss, None),
            },
        };
        self.lookups.with_label_values(&[outcome.0.label()]).inc();
        outcome.1
    }

    /// Fills the entry of a product read from Postgres, unless one is there (a fresher
    /// fill, or a tombstone: the row changed since it may have been read).
    pub async fn put(&self, product: &Product) {
        let Ok(json) = serde_json::to_string(product) else {
            return;
        };
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(60).max(1);
        let _ = self
            .guarded(async {
                self.client
                    .set::<Option<String>, _, _>(
                        key(product.id),
                        json,
                        Some(Expiration::EX(ttl)),
                        Some(SetOptions::NX),
                        false,
                    )
                    .await
            })
            .await;
    }

    /// Replaces a product's entry with a tombstone; if Redis cannot be told now, it is told
    /// later.
    pub async fn invalidate(&self, id: Uuid) {
        let done = self.guarded(self.bury(id)).await;
        if !matches!(done, Some(Ok(()))) {
            self.pending().insert(id);
        }
    }

    async fn bury(&self, id: Uuid) -> Result<(), fred::error::Error> {
        self.client
            .set::<(), _, _>(key(id), TOMBSTONE, Some(TOMBSTONE_TTL), None, false)
            .await
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.pending_invalidations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `command` if the breaker allows it and records its outcome; `None` when skipped.
    async fn guarded<T>(
        &self,
        command: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Option<Result<T, fred::error::Error>> {
        // Boxed: fred's command futures are large, and this one holds two of them.
        let work = Box::pin(async {
            // Invalidations missed during an outage go first: the command must not read an
            // entry that should have been deleted.
            self.replay_invalidations().await?;
            command.await
        });
        self.breaker.guard(work).await.ok()
    }

    /// An id leaves the pending set only once its tombstone is in Redis: a read running
    /// alongside must not find the set empty while the old entry is still there. One replay
    /// at a time: the commands arriving meanwhile wait for it rather than repeat it.
    async fn replay_invalidations(&self) -> Result<(), fred::error::Error> {
        if self.pending().is_empty() {
            return Ok(());
        }
        let _replaying = self.replaying.lock().await;
        let pending: Vec<Uuid> = self.pending().iter().copied().collect();
        for id in pending {
            self.bury(id).await?;
            self.pending().remove(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn product(id: Uuid, name: &str) -> Product {
        Product {
            id,
            name: name.into(),
            description: String::new(),
            price_cents: 100,
            stock: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    async fn cache() -> ProductCache {
        let cache = ProductCache::connect(
            &testkit::redis_url(),
            Duration::from_secs(60),
            &kit::Metrics::new("cache_test"),
        )
        .expect("cache");
        cache.client.wait_for_connect().await.expect("redis");
        cache
    }

    #[tokio::test]
    async fn a_read_from_before_a_write_cannot_refill_the_cache_after_it() {
        let cache = cache().await;
        let id = Uuid::now_v7();
        cache.put(&product(id, "old")).await;
        assert_eq!(cache.get(id).await.map(|p| p.name).as_deref(), Some("old"));

        // A read fetched the old row; the write commits and invalidates; the read's fill
        // comes last.
        cache.invalidate(id).await;
        cache.put(&product(id, "old")).await;
        assert_eq!(cache.get(id).await, None, "the stale fill was refused");

        // Once the tombstone is gone, reads fill the cache again.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        cache.put(&product(id, "new")).await;
        assert_eq!(cache.get(id).await.map(|p| p.name).as_deref(), Some("new"));
        let _: i64 = cache.client.del(key(id)).await.expect("cleanup");
    }
}
