//! What the bridge knows about itself, kept in one place so that `bridge.status` (NATS),
//! `$SRV.STATS.bridge`, `/status`, `/ready` and the Prometheus metrics all report the same
//! figures: per topic the records mirrored, the retries and the lag; whether mirroring is
//! blocked and why; per reverse mapping the messages forwarded and failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use serde::{Deserialize, Serialize};

/// The bridge's figures, as JSON on `bridge.status`, in `$SRV.STATS` and on `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeStatus {
    /// Why mirroring is stopped and retrying, if it is.
    pub blocked: Option<String>,
    /// Per mirrored topic.
    pub topics: BTreeMap<String, TopicStatus>,
    /// Per reverse mapping, keyed by its subject filter.
    pub reverse: BTreeMap<String, ReverseStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStatus {
    /// Records stored in the stream by this process (JetStream acknowledged, not duplicates).
    pub mirrored: u64,
    /// Replays JetStream recognised as already stored (after a restart or a retry).
    pub duplicates: u64,
    /// Times mirroring stopped and restarted from the committed offsets.
    pub retries: u64,
    /// Records in the topic not yet mirrored, summed over its partitions.
    pub lag: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseStatus {
    pub topic: String,
    /// NATS messages the broker acknowledged as records.
    pub forwarded: u64,
    /// NATS messages that could not be produced (core NATS is at-most-once: they are lost).
    pub failed: u64,
}

/// The Prometheus side of the same figures.
#[derive(Debug, Clone)]
struct BridgeMetrics {
    mirrored: IntCounterVec,
    retries: IntCounterVec,
    lag: IntGaugeVec,
    blocked: IntGauge,
    forwarded: IntCounterVec,
    failed: IntCounterVec,
}

impl BridgeMetrics {
    /// Registers through kit, which hands back the live collector when the metric exists
    /// already (a process that starts the bridge twice, as tests do, exports one series).
    fn register(metrics: &kit::Metrics) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            Ok(metrics.register(IntCounterVec::new(Opts::new(name, help), &["topic"])?))
        };
        Ok(Self {
            mirrored: counter(
                "bridge_mirrored_total",
                "Kafka records stored in JetStream.",
            )?,
            retries: counter(
                "bridge_retries_total",
                "Times mirroring stopped and resumed from the committed offsets.",
            )?,
            lag: metrics.register(IntGaugeVec::new(
                Opts::new("bridge_lag", "Records in the topic not yet mirrored."),
                &["topic"],
            )?),
            blocked: metrics.register(IntGauge::new(
                "bridge_blocked",
                "1 while mirroring is stopped and retrying.",
            )?),
            forwarded: counter(
                "bridge_reverse_forwarded_total",
                "NATS messages produced to Kafka.",
            )?,
            failed: counter(
                "bridge_reverse_failed_total",
                "NATS messages that could not be produced to Kafka.",
            )?,
        })
    }
}

/// One mirrored topic's counters. The mirror holds an `Arc` per in-flight record, so counting
/// a record costs two atomic increments.
#[derive(Debug)]
pub(crate) struct TopicStats {
    /// Small dense id, for per-partition maps keyed without allocating.
    pub(crate) id: usize,
    pub(crate) name: String,
    mirrored: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    lag: AtomicI64,
    /// Next offset to mirror per partition (acknowledged up to here), as last committed.
    positions: Mutex<HashMap<i32, i64>>,
    mirrored_metric: IntCounter,
    retries_metric: IntCounter,
    lag_metric: IntGauge,
}

impl TopicStats {
    pub(crate) fn acknowledged(&self, duplicate: bool) {
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.mirrored.fetch_add(1, Ordering::Relaxed);
            self.mirrored_metric.inc();
        }
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.retries_metric.inc();
    }

    pub(crate) fn set_position(&self, partition: i32, next_offset: i64) {
        lock(&self.positions).insert(partition, next_offset);
    }

    pub(crate) fn positions(&self) -> HashMap<i32, i64> {
        lock(&self.positions).clone()
    }

    pub(crate) fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
        self.lag_metric.set(lag);
    }

    fn status(&self) -> TopicStatus {
        TopicStatus {
            mirrored: self.mirrored.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
        }
    }
}

/// One reverse mapping's counters.
#[derive(Debug)]
pub(crate) struct ReverseStats {
    pub(crate) subject: String,
    pub(crate) topic: String,
    forwarded: AtomicU64,
    failed: AtomicU64,
    forwarded_metric: IntCounter,
    failed_metric: IntCounter,
}

impl ReverseStats {
    pub(crate) fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        self.forwarded_metric.inc();
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.failed_metric.inc();
    }

    fn status(&self) -> ReverseStatus {
        ReverseStatus {
            topic: self.topic.clone(),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Shared by the mirror, the lag probe, the reverse forwarders and every status reader.
#[derive(Debug)]
pub(crate) struct State {
    topics: Mutex<BTreeMap<String, Arc<TopicStats>>>,
    reverse: Vec<Arc<ReverseStats>>,
    blocked: Mutex<Option<String>>,
    metrics: BridgeMetrics,
}

impl State {
    pub(crate) fn new(
        metrics: &kit::Metrics,
        topics: &[String],
        reverse: &[(String, String)],
    ) -> Result<Self, prometheus::Error> {
        let metrics = BridgeMetrics::register(metrics)?;
        let reverse = reverse
            .iter()
            .map(|(subject, topic)| {
                let label = [topic.as_str()];
                Arc::new(ReverseStats {
                    subject: subject.clone(),
                    topic: topic.clone(),
                    forwarded: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    forwarded_metric: metrics.forwarded.with_label_values(&label),
                    failed_metric: metrics.failed.with_label_values(&label),
                })
            })
            .collect();
        metrics.blocked.set(0);
        let state = Self {
            topics: Mutex::new(BTreeMap::new()),
            reverse,
            blocked: Mutex::new(None),
            metrics,
        };
        for topic in topics {
            state.topic(topic);
        }
        Ok(state)
    }

    /// The counters of `name`, created on first use.
    pub(crate) fn topic(&self, name: &str) -> Arc<TopicStats> {
        let mut topics = lock(&self.topics);
        if let Some(stats) = topics.get(name) {
            return stats.clone();
        }
        let label = [name];
        let stats = Arc::new(TopicStats {
            id: topics.len(),
            name: name.to_owned(),
            mirrored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            lag: AtomicI64::new(0),
            positions: Mutex::new(HashMap::new()),
            mirrored_metric: self.metrics.mirrored.with_label_values(&label),
            retries_metric: self.metrics.retries.with_label_values(&label),
            lag_metric: self.metrics.lag.with_label_values(&label),
        });
        // `with_label_values` created the series at zero: dashboards show a configured topic
        // before its first record.
        topics.insert(name.to_owned(), stats.clone());
        stats
    }

    pub(crate) fn topics(&self) -> Vec<Arc<TopicStats>> {
        lock(&self.topics).values().cloned().collect()
    }

    pub(crate) fn reverse(&self) -> &[Arc<ReverseStats>] {
        &self.reverse
    }

    pub(crate) fn block(&self, reason: String) {
        *lock(&self.blocked) = Some(reason);
        self.metrics.blocked.set(1);
    }

    pub(crate) fn unblock(&self) {
        let mut blocked = lock(&self.blocked);
        if blocked.take().is_some() {
            tracing::info!("Mirroring resumed.");
        }
        self.metrics.blocked.set(0);
    }

    pub(crate) fn blocked(&self) -> Option<String> {
        lock(&self.blocked).clone()
    }

    pub(crate) fn status(&self) -> BridgeStatus {
        BridgeStatus {
            blocked: self.blocked(),
            topics: lock(&self.topics)
                .iter()
                .map(|(name, stats)| (name.clone(), stats.status()))
                .collect(),
            reverse: self
                .reverse
                .iter()
                .map(|stats| (stats.subject.clone(), stats.status()))
                .collect(),
        }
    }

    pub(crate) fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(self.status()).unwrap_or_default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A cheap, cloneable view of a running bridge: its status, and a readiness check that fails
/// while mirroring is blocked (so `/ready` answers 503 with the reason).
#[derive(Debug, Clone)]
pub struct StatusProbe {
    state: Arc<State>,
}

impl StatusProbe {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    pub fn status(&self) -> BridgeStatus {
        self.state.status()
    }

    pub fn blocked(&self) -> Option<String> {
        self.state.blocked()
    }
}

impl kit::ReadinessCheck for StatusProbe {
    fn name(&self) -> &str {
        "bridge"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let outcome = match self.state.blocked() {
            Some(reason) => Err(format!("mirroring blocked: {reason}")),
            None => Ok(()),
        };
        Box::pin(async move { outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `name{...topic="<topic>"...}` in the exposition text.
    fn sample(text: &str, name: &str, topic: &str) -> Option<i64> {
        let label = format!("topic=\"{topic}\"");
        text.lines()
            .find(|line| line.starts_with(&format!("{name}{{")) && line.contains(&label))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    fn state(metrics: &kit::Metrics) -> State {
        State::new(
            metrics,
            &["t1".to_owned()],
            &[("in.*".to_owned(), "t2".to_owned())],
        )
        .expect("metrics")
    }

    #[test]
    fn status_and_metrics_tell_the_same_story() {
        let metrics = kit::Metrics::new("bridge");
        let state = state(&metrics);
        let t1 = state.topic("t1");
        t1.acknowledged(false);
        t1.acknowledged(false);
        t1.acknowledged(true);
        t1.retried();
        t1.set_lag(7);
        state.reverse()[0].forwarded();
        state.block("JetStream unreachable".into());

        let status = state.status();
        assert_eq!(status.blocked.as_deref(), Some("JetStream unreachable"));
        assert_eq!(
            status.topics["t1"],
            TopicStatus {
                mirrored: 2,
                duplicates: 1,
                retries: 1,
                lag: 7
            }
        );
        assert_eq!(status.reverse["in.*"].forwarded, 1);
        let text = metrics.render();
        assert_eq!(
            sample(&text, "bridge_mirrored_total", "t1"),
            Some(2),
            "{text}"
        );
        assert_eq!(
            sample(&text, "bridge_retries_total", "t1"),
            Some(1),
            "{text}"
        );
        assert_eq!(sample(&text, "bridge_lag", "t1"), Some(7), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("bridge_blocked{") && l.ends_with(" 1")),
            "{text}"
        );

        state.unblock();
        assert_eq!(state.status().blocked, None);
        let json = state.status_json();
        assert_eq!(json["topics"]["t1"]["mirrored"], 2);
    }

    #[test]
    fn a_second_bridge_in_the_process_shares_the_exported_series() {
        let metrics = kit::Metrics::new("bridge");
        let first = state(&metrics);
        first.topic("t1").acknowledged(false);
        let second = state(&metrics);
        second.topic("t1").acknowledged(false);
        second.topic("t1").acknowledged(false);
        assert_eq!(second.status().topics["t1"].mirrored, 2);
        let text = metrics.render();
        assert_eq!(
            sample(&text, "bridge_mirrored_total", "t1"),
            Some(3),
            "{text}"
        );
    }
}
