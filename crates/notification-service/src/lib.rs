//! notification-service: the saga's last step (DESIGN.md, step 5).
//!
//! Every saga event but the dead letters becomes one notification (at most one per event
//! id), rendered by [`render`], recorded in Postgres and delivered through a [`Sender`]
//! with retries and exponential backoff. What keeps failing is parked `DEAD` and announced
//! on `notification_failed` (through the outbox); `POST /notifications/{event_id}/replay`
//! sends it again. Events come from the bridge's JetStream stream (`NOTIFY_SOURCE=jetstream`,
//! the default) or straight from Kafka (`kafka`); the delivery logic takes a plain
//! [`mesh::Event`] either way.
//! Served on its own port (8084) and over the mesh as `notification-service`.

mod delivery;
mod render;
mod routes;
mod sender;
mod store;

use std::sync::Arc;
use std::time::Duration;

use kit::{ConfigError, Env, ServiceConfig, ServiceDefaults};
use mesh::jetstream::EventStream;
use mesh::kafka::{EventConsumer, Received, SagaSettings, run_worker};
use middleware::host::{Host, Hosted};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use render::{Rendered, money, render};
pub use routes::LIST_LIMIT;
pub use sender::{LogSender, Sender, WebhookSender};
pub use store::{DEAD, Notification, PENDING, SENT, STATUSES};

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "notification-service",
    http_port: 8084,
    database: Some("shop_notifications"),
};

/// The consumer group's name (under the topic prefix).
pub const CONSUMER: &str = "notification-service";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How hard a notification is tried before it becomes a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// `NOTIFY_MAX_ATTEMPTS`: attempts in all, the first included.
    pub max_attempts: u32,
    /// `NOTIFY_RETRY_BASE`: the wait after the first failure; it doubles after each.
    pub retry_base: Duration,
    /// `NOTIFY_PENDING_SWEEP`: how often notifications left PENDING are looked for and
    /// delivered (after a crash, or a background delivery that met a database failure).
    pub pending_sweep: Duration,
}

impl DeliverySettings {
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(200);
    /// No wait between two attempts is longer.
    pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
    pub const DEFAULT_PENDING_SWEEP: Duration = Duration::from_secs(60);
    const MAX_ATTEMPTS_CEILING: u32 = 1_000;

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_attempts = env.parse_or("NOTIFY_MAX_ATTEMPTS", Self::DEFAULT_MAX_ATTEMPTS)?;
        if !(1..=Self::MAX_ATTEMPTS_CEILING).contains(&max_attempts) {
            return Err(ConfigError::invalid(
                "NOTIFY_MAX_ATTEMPTS",
                &max_attempts.to_string(),
                format!("expected 1 to {}", Self::MAX_ATTEMPTS_CEILING),
            ));
        }
        let retry_base = env.positive_duration_or("NOTIFY_RETRY_BASE", Self::DEFAULT_RETRY_BASE)?;
        if retry_base > Self::MAX_RETRY_DELAY {
            // Every wait is capped there: a larger base would be accepted and not honoured.
            return Err(ConfigError::invalid(
                "NOTIFY_RETRY_BASE",
                &format!("{retry_base:?}"),
                format!(
                    "at most {:?}, the longest wait between attempts",
                    Self::MAX_RETRY_DELAY
                ),
            ));
        }
        Ok(Self {
            max_attempts,
            retry_base,
            pending_sweep: env
                .positive_duration_or("NOTIFY_PENDING_SWEEP", Self::DEFAULT_PENDING_SWEEP)?,
        })
    }

    /// The wait before the next attempt after `failures` failed ones in a row (1, 2, ...):
    /// base, 2×base, 4×base, ..., never more than [`Self::MAX_RETRY_DELAY`].
    pub fn backoff(&self, failures: u32) -> Duration {
        kit::backoff::Exponential::new(self.retry_base, Self::MAX_RETRY_DELAY).after(failures)
    }

    pub(crate) fn max_attempts_i32(&self) -> i32 {
        i32::try_from(self.max_attempts).unwrap_or(i32::MAX)
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            retry_base: Self::DEFAULT_RETRY_BASE,
            pending_sweep: Self::DEFAULT_PENDING_SWEEP,
        }
    }
}

/// Where events come from (`NOTIFY_SOURCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The JetStream stream the bridge fills (`EVENTS_STREAM`, subjects
    /// `<EVENTS_SUBJECT_PREFIX>.<topic>.<key>`): the low-latency fan-out, and the default.
    JetStream {
        stream: String,
        subject_prefix: String,
    },
    /// The Kafka topics directly (what it did before the bridge existed).
    Kafka,
}

impl Source {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.string_or("NOTIFY_SOURCE", "jetstream").as_str() {
            "jetstream" => Ok(Self::JetStream {
                stream: env.string_or("EVENTS_STREAM", contracts::topics::EVENTS_STREAM),
                subject_prefix: env.string_or(
                    "EVENTS_SUBJECT_PREFIX",
                    contracts::subjects::EVENTS_SUBJECT_PREFIX,
                ),
            }),
            "kafka" => Ok(Self::Kafka),
            other => Err(ConfigError::invalid(
                "NOTIFY_SOURCE",
                other,
                "expected jetstream or kafka",
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// `KAFKA_BROKERS`, `KAFKA_FETCH_WAIT_MAX`, `TOPIC_PREFIX`.
    pub saga: SagaSettings,
    pub delivery: DeliverySettings,
    /// `NOTIFY_WEBHOOK_URL`: where [`WebhookSender`] POSTs; unset means [`LogSender`].
    pub webhook_url: Option<String>,
    /// `NOTIFY_SOURCE`: `jetstream` (default) or `kafka`.
    pub source: Source,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let webhook_url = env.get("NOTIFY_WEBHOOK_URL").map(str::to_owned);
        if let Some(url) = &webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "NOTIFY_WEBHOOK_URL",
                url,
                "expected an http:// or https:// URL",
            ));
        }
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULTS)?,
            saga: SagaSettings::from_env(env, DEFAULTS.name)?,
            delivery: DeliverySettings::from_env(env)?,
            webhook_url,
            source: Source::from_env(env)?,
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
    /// With [`WebhookSender`] when `NOTIFY_WEBHOOK_URL` is set, else [`LogSender`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let sender: Arc<dyn Sender> = match &config.webhook_url {
            Some(url) => {
                tracing::info!(%url, "Notifications go to the webhook.");
                Arc::new(WebhookSender::new(url.clone())?)
            }
            None => Arc::new(LogSender),
        };
        Self::build_with_sender(config, sender).await
    }

    /// With any sender (tests inject theirs).
    pub async fn build_with_sender(
        config: Config,
        sender: Arc<dyn Sender>,
    ) -> anyhow::Result<Self> {
        let (host, pool, relay) = Host::with_saga(&config.service, &MIGRATOR, &config.saga).await?;
        let store = store::Store::new(pool.clone());
        let notifier = Arc::new(delivery::Notifier::new(
            store.clone(),
            sender,
            config.delivery.clone(),
            config.saga.topics.clone(),
            &host.metrics,
        )?);

        let (replays, queue) = mpsc::unbounded_channel();
        let hosted = host
            .serve(routes::router(store, replays), config.service.http_addr)
            .await?;
        hosted.relay_outbox(relay);
        let token = hosted.shutdown().token();
        hosted
            .shutdown()
            .spawn(notifier.clone().run_queue(queue, token.clone()));

        // Every saga topic but the dead letters (a notification about a failed notification
        // would only fail the same way).
        let topics = &config.saga.topics;
        let consumed = [
            topics.order_created.as_str(),
            topics.payment_success.as_str(),
            topics.payment_failed.as_str(),
            topics.order_confirmed.as_str(),
            topics.order_cancelled.as_str(),
        ];
        let stop = token.clone();
        let handle = move |event: mesh::Event| {
            let notifier = notifier.clone();
            let stop = stop.clone();
            let span = middleware::trace::consumer_span(&event);
            async move { notifier.handle(&event, &stop).await.map(drop) }.instrument(span)
        };
        match &config.source {
            Source::Kafka => {
                let events =
                    EventConsumer::new(&config.saga.kafka, &topics.group(CONSUMER), &consumed)?;
                hosted.shutdown().spawn(run_worker(
                    CONSUMER,
                    events,
                    token,
                    move |received: Received| handle(received.event),
                ));
            }
            Source::JetStream {
                stream,
                subject_prefix,
            } => {
                let events = EventStream::new(hosted.nats().clone());
                // The bridge creates the stream too; whoever starts first does.
                events
                    .ensure_stream(
                        stream,
                        contracts::subjects::stream_subjects(subject_prefix),
                        contracts::subjects::EVENTS_DUPLICATE_WINDOW,
                    )
                    .await?;
                // Topics as the bridge names them in subjects (one token each), and a
                // durable name without dots: a TOPIC_PREFIX such as `t1.` stays usable.
                let filters: Vec<String> = consumed
                    .iter()
                    .map(|topic| {
                        format!("{subject_prefix}.{}.>", contracts::subjects::token(topic))
                    })
                    .collect();
                let consumer = events
                    .durable_consumer(
                        stream,
                        &contracts::subjects::token(&topics.group(CONSUMER)),
                        &filters,
                        Duration::from_secs(30),
                    )
                    .await?;
                hosted.shutdown().spawn(mesh::jetstream::run_worker(
                    CONSUMER, consumer, token, handle,
                ));
            }
        }
        tracing::info!(
            max_attempts = config.delivery.max_attempts,
            retry_base = ?config.delivery.retry_base,
            webhook = config.webhook_url.is_some(),
            "Sending notifications."
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
    fn defaults_follow_the_design() {
        let config = Config::from_env(&Env::default()).expect("defaults are valid");
        assert_eq!(config.service.http_addr.port(), 8084);
        assert_eq!(
            config.service.database_url.as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/shop_notifications")
        );
        assert_eq!(config.delivery, DeliverySettings::default());
        assert_eq!(config.delivery.max_attempts, 5);
        assert_eq!(config.delivery.retry_base, Duration::from_millis(200));
        assert_eq!(config.webhook_url, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("NOTIFY_MAX_ATTEMPTS", "many"),
            ("NOTIFY_MAX_ATTEMPTS", "0"),
            ("NOTIFY_RETRY_BASE", "soon"),
            ("NOTIFY_RETRY_BASE", "11s"),
            ("NOTIFY_WEBHOOK_URL", "ftp://example.com/hook"),
        ] {
            let error = Config::from_env(&Env::from_pairs([(name, value)])).expect_err(value);
            assert_eq!(error.variable(), name);
        }
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let settings = DeliverySettings::default();
        let waits: Vec<_> = (1..=8).map(|n| settings.backoff(n)).collect();
        assert_eq!(
            waits,
            [200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000].map(Duration::from_millis)
        );
        assert_eq!(
            settings.backoff(u32::MAX),
            DeliverySettings::MAX_RETRY_DELAY
        );
        let fast = DeliverySettings {
            max_attempts: 3,
            retry_base: Duration::from_millis(10),
            ..DeliverySettings::default()
        };
        assert_eq!(fast.backoff(1), Duration::from_millis(10));
        assert_eq!(fast.backoff(2), Duration::from_millis(20));
    }
}
