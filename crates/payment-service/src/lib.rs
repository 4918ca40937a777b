//! payment-service: the saga's charge step (DESIGN.md, "Topics, subjects, the saga", step 2).
//!
//! Consumes `order_created` once per order (inbox), simulates the charge with deterministic
//! rules ([`decide`]), stores the payment and emits `payment_success` or `payment_failed`
//! through the outbox, all in one transaction. Consumes `order_cancelled` too: an order
//! cancelled after its charge is refunded, one cancelled before it is never charged.
//! `GET /payments/{order_id}` shows the result.
//! Served on its own port (8083) and over the mesh as `payment-service`.

mod charge;
mod consumer;
mod routes;
mod store;

use std::sync::Arc;

use kit::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use mesh::kafka::{EventConsumer, Received, SagaSettings, run_worker};
use middleware::host::{Host, Hosted};
use tracing::Instrument;

pub use charge::{DECLINE_PREFIX, DEFAULT_CARD_TOKEN, decide};
pub use consumer::CONSUMER;
pub use routes::router;
pub use store::{Payment, PaymentStatus, Store};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "payment-service",
    http_port: 8083,
    database: Some("shop_payments"),
};

/// DESIGN.md: a total above this fails.
pub const DEFAULT_PAYMENT_LIMIT_CENTS: i64 = 1_000_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `KAFKA_BROKERS`, `KAFKA_FETCH_WAIT_MAX`, `TOPIC_PREFIX`.
    pub saga: SagaSettings,
    /// `PAYMENT_LIMIT_CENTS`: orders above it are declined.
    pub payment_limit_cents: i64,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let payment_limit_cents =
            env.parse_or("PAYMENT_LIMIT_CENTS", DEFAULT_PAYMENT_LIMIT_CENTS)?;
        if payment_limit_cents < 0 {
            return Err(ConfigError::invalid(
                "PAYMENT_LIMIT_CENTS",
                &payment_limit_cents.to_string(),
                "must not be negative",
            ));
        }
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            saga: SagaSettings::from_env(env, DEFAULTS.name)?,
            payment_limit_cents,
        })
    }
}

/// The running service.
#[derive(Debug)]
pub struct App {
    hosted: Hosted,
}

// `port()`, `shutdown()`, `nats()`: what `Hosted` offers, on the app.
middleware::app_derefs_to_hosted!(App);

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (host, pool, relay) = Host::with_saga(&config.service, &MIGRATOR, &config.saga).await?;
        let payments = Arc::new(consumer::Payments::new(
            pool.clone(),
            config.saga.topics.clone(),
            config.payment_limit_cents,
            &host.metrics,
        )?);

        let hosted = host
            .serve(router(Store::new(pool.clone())), config.service.http_addr)
            .await?;
        hosted.relay_outbox(relay);
        let token = hosted.shutdown().token();

        let topics = &config.saga.topics;
        let events = EventConsumer::new(
            &config.saga.kafka,
            &topics.group(CONSUMER),
            &[
                topics.order_created.as_str(),
                topics.order_cancelled.as_str(),
            ],
        )?;
        hosted.shutdown().spawn(run_worker(
            CONSUMER,
            events,
            token,
            move |received: Received| {
                let payments = payments.clone();
                let span = middleware::trace::consumer_span(&received.event);
                async move { payments.handle(&received.event).await }.instrument(span)
            },
        ));
        tracing::info!(
            limit_cents = config.payment_limit_cents,
            created = %topics.order_created,
            cancelled = %topics.order_cancelled,
            "Charging orders."
        );
        Ok(Self { hosted })
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.hosted.run_until_stopped().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_defaults_to_the_design_value() {
        let config = Config::from_env(&Env::default()).expect("defaults are valid");
        assert_eq!(config.payment_limit_cents, 1_000_000);
        assert_eq!(config.service.http_addr.port(), 8083);
        assert_eq!(
            config.service.database_url.as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/shop_payments")
        );
        assert_eq!(config.saga.topics.order_created, "order_created");
    }

    #[test]
    fn a_bad_limit_names_its_variable() {
        for value in ["lots", "-1", "1.5"] {
            let env = Env::from_pairs([("PAYMENT_LIMIT_CENTS", value)]);
            let error = Config::from_env(&env).expect_err(value);
            assert_eq!(error.variable(), "PAYMENT_LIMIT_CENTS");
        }
        let env = Env::from_pairs([("PAYMENT_LIMIT_CENTS", "5000")]);
        assert_eq!(
            Config::from_env(&env).expect("valid").payment_limit_cents,
            5000
        );
    }
}
