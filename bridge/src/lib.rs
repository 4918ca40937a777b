//! The Kafka → NATS JetStream bridge (DESIGN.md, "Topics, subjects, the saga", step 4).
//!
//! Kafka stays the saga's system of record; the bridge mirrors its topics into one JetStream
//! stream (`EVENTS`, subjects `events.<topic>.<key>`) so NATS consumers get the events with
//! low latency. Every record, valid event or not, is mirrored once (`Nats-Msg-Id =
//! <topic>/<partition>/<offset>` makes replays harmless), in partition order, with its
//! headers, key and timestamp; offsets are committed only behind JetStream's acknowledgements.
//! Optionally, configured NATS subjects are forwarded into Kafka topics.
//!
//! - [`Bridge::start`] runs it inside any process (the tests do); [`BridgeHandle`] stops it
//!   gracefully, aborts it like a crash, and reports its [`BridgeStatus`].
//! - [`App`] is the `bridge` binary: the bridge next to `/health`, `/ready`, `/metrics` and
//!   `/status` on port 8085.
//!
//! Modules: [`config`] (environment), [`subject`] and [`headers`] (the mapping), `mirror`
//! (the exactly-once pipeline), `lag`, `reverse`, `service` (NATS service API), [`status`].

mod app;
pub mod config;
pub mod headers;
mod lag;
mod mirror;
mod reverse;
mod service;
pub mod status;
pub mod subject;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::ContextBuilder;
use kit::backoff::Exponential;
use mesh::kafka::{TopicError, ensure_topics};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use app::{App, Config, DEFAULTS};
pub use config::{BridgeConfig, ReverseMapping};
pub use service::SERVICE_NAME;
pub use status::{BridgeStatus, ReverseStatus, StatusProbe, TopicStatus};

use crate::lag::LagProbe;
use crate::mirror::{Mirror, StreamSpec};
use crate::status::State;

/// Reconnecting to NATS: 200 ms after the first failed attempt, doubling to every 2 s.
const RECONNECT: Exponential = Exponential::new(Duration::from_millis(200), Duration::from_secs(2));

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot register the bridge's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("cannot create a Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot connect to NATS at {url}: {source}")]
    Nats {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
    #[error("cannot register the NATS service \"bridge\": {0}")]
    Service(#[source] async_nats::Error),
}

/// Starts bridges; see [`Bridge::start`].
#[derive(Debug, Clone, Copy)]
pub struct Bridge;

impl Bridge {
    /// Creates the topics and the stream if missing, registers the NATS service, subscribes
    /// the reverse mappings, then mirrors in the background until the handle is stopped.
    ///
    /// NATS may be down at start: the connection is retried in the background and the mirror
    /// reports itself blocked until JetStream answers. Kafka must answer (topics are created
    /// here, as every Shopmesh process does at startup).
    pub async fn start(
        config: BridgeConfig,
        metrics: &kit::Metrics,
    ) -> Result<BridgeHandle, BridgeError> {
        let reverse: Vec<(String, String)> = config
            .reverse
            .iter()
            .map(|m| (m.subject.clone(), m.topic.clone()))
            .collect();
        let state = Arc::new(State::new(metrics, &config.topics, &reverse)?);

        let mut needed: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        needed.extend(config.reverse.iter().map(|m| m.topic.as_str()));
        // The sub-futures of this start-up sequence are boxed: together they would make the
        // future of `start` large, and it is awaited by every caller.
        Box::pin(ensure_topics(
            &config.kafka,
            &needed,
            contracts::topics::PARTITIONS,
        ))
        .await?;

        let nats = Box::pin(connect(&config.nats_url)).await?;
        let jetstream = ContextBuilder::new()
            // Bounds API requests and the wait for each publish's acknowledgement.
            .timeout(config.ack_timeout)
            // Publishes abandoned after a failure release their slot after this.
            .ack_timeout(config.ack_timeout)
            // Room for a full pipeline plus the abandoned publishes of a failed attempt.
            .max_ack_inflight(config.max_in_flight.saturating_mul(4).max(5_000))
            .build(nats.clone());
        let stream = StreamSpec {
            name: config.stream.clone(),
            subjects: config.stream_subjects(),
            duplicate_window: config.duplicate_window,
        };
        // The mirror ensures it on every attempt; doing it here as well means that when
        // `start` returns with NATS up, the stream exists.
        if let Err(reason) = Box::pin(mirror::ensure_stream(&jetstream, &stream)).await {
            tracing::warn!(%reason, "Stream not ready yet; the mirror keeps trying.");
        }

        let lag = LagProbe::new(
            &config.kafka,
            &config.group,
            config.topics.clone(),
            config.lag_interval,
            state.clone(),
        )?;
        let mut forwarders = Vec::with_capacity(config.reverse.len());
        // One Kafka client for every reverse mapping: a producer keeps its own threads and
        // broker connections, and orders each partition's records whoever hands them over.
        if !config.reverse.is_empty() {
            let producer = reverse::producer(&config.kafka)?;
            for (mapping, stats) in config.reverse.iter().zip(state.reverse()) {
                let subscriber =
                    nats.subscribe(mapping.subject.clone())
                        .await
                        .map_err(|source| BridgeError::Subscribe {
                            subject: mapping.subject.clone(),
                            source,
                        })?;
                forwarders.push((subscriber, producer.clone(), stats.clone()));
            }
        }
        let (service, endpoint) = Box::pin(service::register(
            &nats,
            state.clone(),
            &config.status_subject,
        ))
        .await
        .map_err(BridgeError::Service)?;
        // With NATS up, the subscriptions are in place before `start` returns. The client
        // connects in the background (`retry_on_initial_connect`): a flush before it is
        // connected fails at once and proves nothing, so wait for the connection first.
        let subscribed = tokio::time::timeout(config.ack_timeout, async {
            while nats.connection_state() != async_nats::connection::State::Connected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            nats.flush().await
        })
        .await;
        if !matches!(subscribed, Ok(Ok(()))) {
            tracing::warn!(url = %config.nats_url, "NATS not reachable yet; the bridge waits for it.");
        }

        let stop = CancellationToken::new();
        let mirror = Mirror {
            kafka: config.kafka.clone(),
            group: config.group.clone(),
            topics: config.topics.clone(),
            stream,
            subject_prefix: config.subject_prefix.clone(),
            max_in_flight: config.max_in_flight,
            commit_interval: config.commit_interval,
            commit_batch: config.commit_batch,
            jetstream,
            state: state.clone(),
        };
        let mut tasks = vec![
            tokio::spawn(mirror::run(mirror, stop.clone())),
            tokio::spawn(lag.run(stop.clone())),
            tokio::spawn(service::answer(endpoint, state.clone(), stop.clone())),
        ];
        for (subscriber, producer, stats) in forwarders {
            tasks.push(tokio::spawn(reverse::run(
                subscriber,
                producer,
                stats,
                stop.clone(),
            )));
        }
        tracing::info!(
            topics = ?config.topics,
            stream = %config.stream,
            subjects = %format!("{}.<topic>.<key>", config.subject_prefix),
            group = %config.group,
            "Bridge started."
        );
        Ok(BridgeHandle {
            state,
            nats,
            stop,
            tasks,
            service,
        })
    }
}

/// The bridge's own NATS connection: retried in the background from the start (so the
/// process starts while NATS is down), and reconnected quickly after an outage.
async fn connect(url: &str) -> Result<async_nats::Client, BridgeError> {
    async_nats::ConnectOptions::new()
        .name(SERVICE_NAME)
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| {
            RECONNECT.after(u32::try_from(attempts).unwrap_or(u32::MAX))
        })
        .connect(url)
        .await
        .map_err(|source| BridgeError::Nats {
            url: url.to_owned(),
            source,
        })
}

/// A running bridge.
#[derive(Debug)]
pub struct BridgeHandle {
    state: Arc<State>,
    nats: async_nats::Client,
    stop: CancellationToken,
    /// The mirror first, then the lag probe, the status endpoint and the forwarders.
    tasks: Vec<JoinHandle<()>>,
    service: async_nats::service::Service,
}

impl BridgeHandle {
    pub fn status(&self) -> BridgeStatus {
        self.state.status()
    }

    /// A cloneable view of the status, also a readiness check (503 while blocked).
    pub fn probe(&self) -> StatusProbe {
        StatusProbe::new(self.state.clone())
    }

    /// The bridge's NATS connection (for a readiness check).
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Stops gracefully: no new records are read, the publishes in flight are awaited (each
    /// at most the ack timeout), the acknowledged offsets committed, the forwarders drained.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "A bridge task ended badly.");
            }
        }
        if let Err(error) = self.service.stop().await {
            tracing::debug!(%error, "Service stop.");
        }
        tracing::info!("Bridge stopped.");
    }

    /// Stops like a crash: the tasks are aborted where they stand, nothing more is committed.
    pub fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
        // A crashed process also vanishes from the service API.
        let service = self.service;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = service.stop().await;
            });
        }
    }
}
