//! What the bench binaries share: request loops, percentiles, formatting.

use std::future::Future;
use std::time::{Duration, Instant};

/// A positive count from the environment, or `default`.
pub fn count_from_env(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(raw) => match raw.trim().parse::<usize>() {
            Ok(count) if count > 0 => count,
            _ => panic!("{name} must be a positive integer, not {raw:?}"),
        },
        Err(_) => default,
    }
}

/// Whether `BENCH_PATHS` (comma-separated parts of row labels, any case; unset means all)
/// selects the row `label`: to profile or time one path at a time. [`measure_paths`] applies
/// it, so every bench built on it understands `BENCH_PATHS`.
fn path_selected(label: &str) -> bool {
    std::env::var("BENCH_PATHS").map_or(true, |wanted| label_matches(&wanted, label))
}

fn label_matches(wanted: &str, label: &str) -> bool {
    let label = label.to_lowercase();
    wanted
        .split(',')
        .map(|part| part.trim().to_lowercase())
        .any(|part| !part.is_empty() && label.contains(&part))
}

/// One call at a time; the latency of each.
pub async fn sequential<F, Fut>(call: F, count: usize) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        call().await;
        samples.push(started.elapsed());
    }
    samples
}

/// One call at a time, taking the paths in turn (`calls[0]`, `calls[1]`, ..., `calls[0]`, ...)
/// until each has made `count`; the latencies of each path, in `calls` order.
///
/// Paths measured back to back see the same machine: on a small shared VM the latency of a
/// loopback round trip shifts by whole multiples for seconds at a time (CPU idle states,
/// another process waking up), and measuring path after path in blocks lets such a shift land
/// on one path and not another. Taking turns request by request shares it fairly.
pub async fn interleaved<F, Fut>(calls: &[F], count: usize) -> Vec<Vec<Duration>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut samples: Vec<Vec<Duration>> = calls.iter().map(|_| Vec::with_capacity(count)).collect();
    for _ in 0..count {
        for (call, samples) in calls.iter().zip(&mut samples) {
            let started = Instant::now();
            call().await;
            samples.push(started.elapsed());
        }
    }
    samples
}

/// `requests` calls shared by `in_flight` tasks; the time until the last one answered.
pub async fn concurrent<F, Fut>(call: F, requests: usize, in_flight: usize) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|i| {
            let share = requests / in_flight + usize::from(i < requests % in_flight);
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..share {
                    call().await;
                }
            })
        })
        .collect();
    for task in tasks {
        join(task.await);
    }
    started.elapsed()
}

/// How [`measure_paths`] spends its requests on each path.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Sequential and concurrent requests of each path before anything is measured.
    pub warmup: usize,
    /// Measured one-at-a-time requests per path (latency).
    pub sequential: usize,
    /// Measured requests per path at `in_flight` (throughput).
    pub requests: usize,
    pub in_flight: usize,
    /// The measured requests are split over this many rounds.
    pub rounds: usize,
}

impl Plan {
    /// This plan with the measured counts taken from `BENCH_SEQUENTIAL` and `BENCH_REQUESTS`
    /// where they are set.
    pub fn with_env_counts(self) -> Self {
        Self {
            sequential: count_from_env("BENCH_SEQUENTIAL", self.sequential),
            requests: count_from_env("BENCH_REQUESTS", self.requests),
            ..self
        }
    }

    /// Round `round`'s part of `count`.
    fn share(&self, count: usize, round: usize) -> usize {
        count / self.rounds + usize::from(round < count % self.rounds)
    }
}

/// One path's figures.
#[derive(Debug, Clone, Copy)]
pub struct PathStats {
    pub p50: Duration,
    pub p99: Duration,
    pub per_second: f64,
}

/// Measures several ways of doing the same request side by side, on a runtime worker (where
/// services run their requests) rather than the caller's thread: each path is warmed up,
/// then in every round the paths take turns request by request for latency ([`interleaved`])
/// and, path after path in an order that rotates each round, run their share at
/// `in_flight` for throughput ([`concurrent`]). A disturbance of the machine then falls on
/// all paths alike. The figures come back labelled, in `paths` order, for the paths
/// `BENCH_PATHS` selects (all when it is unset).
pub async fn measure_paths<F, Fut>(
    paths: Vec<(&'static str, F)>,
    plan: Plan,
) -> Vec<(&'static str, PathStats)>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    eprintln!(
        "warming up, then {} sequential and {} at {} in flight per path, in {} rounds",
        plan.sequential, plan.requests, plan.in_flight, plan.rounds
    );
    let (labels, calls): (Vec<&'static str>, Vec<F>) = paths
        .into_iter()
        .filter(|(label, _)| path_selected(label))
        .unzip();
    assert!(!labels.is_empty(), "BENCH_PATHS names no path");
    let task = tokio::spawn(async move {
        for call in &calls {
            sequential(call, plan.warmup).await;
            concurrent(call.clone(), plan.warmup, plan.in_flight).await;
        }
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); calls.len()];
        let mut elapsed = vec![Duration::ZERO; calls.len()];
        for round in 0..plan.rounds {
            let round_samples = interleaved(&calls, plan.share(plan.sequential, round)).await;
            for (samples, round_samples) in samples.iter_mut().zip(round_samples) {
                samples.extend(round_samples);
            }
            for turn in 0..calls.len() {
                let index = (turn + round) % calls.len();
                let count = plan.share(plan.requests, round);
                elapsed[index] += concurrent(calls[index].clone(), count, plan.in_flight).await;
            }
        }
        samples
            .into_iter()
            .zip(elapsed)
            .map(|(mut samples, elapsed)| {
                samples.sort_unstable();
                PathStats {
                    p50: percentile(&samples, 0.50),
                    p99: percentile(&samples, 0.99),
                    per_second: plan.requests as f64 / elapsed.as_secs_f64(),
                }
            })
            .collect::<Vec<_>>()
    });
    labels.into_iter().zip(join(task.await)).collect()
}

/// A call for [`measure_paths`] made from a value it needs to own (a client, a target): each
/// call gets its own clone, so the futures are `'static`.
pub fn owning_call<T, F, Fut>(value: T, call: F) -> impl Fn() -> Fut + Clone + Send + Sync
where
    T: Clone + Send + Sync,
    F: Fn(T) -> Fut + Clone + Send + Sync,
{
    move || call(value.clone())
}

/// [`measure_paths`]' input for a list of targets: each one's label, and a call that owns a
/// clone of it.
pub fn labelled_calls<T, L, F, Fut>(
    targets: &[T],
    label: L,
    call: F,
) -> Vec<(
    &'static str,
    impl Fn() -> Fut + Clone + Send + Sync + use<T, L, F, Fut>,
)>
where
    T: Clone + Send + Sync,
    L: Fn(&T) -> &'static str,
    F: Fn(T) -> Fut + Clone + Send + Sync,
{
    targets
        .iter()
        .map(|target| (label(target), owning_call(target.clone(), call.clone())))
        .collect()
}

/// A task's result, its panic carried on to the caller.
pub fn join<T>(outcome: Result<T, tokio::task::JoinError>) -> T {
    match outcome {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("benchmark task failed: {error}"),
    }
}

/// Nearest-rank percentile of sorted samples (durations, or signed milliseconds).
pub fn percentile<T: Copy>(sorted: &[T], quantile: f64) -> T {
    assert!(!sorted.is_empty(), "no samples");
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

pub fn verdict(met: bool) -> &'static str {
    if met { "PASS" } else { "MISS" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 0.0), Duration::from_millis(1));
    }

    #[test]
    fn bench_paths_match_parts_of_labels() {
        assert!(label_matches("nats", "Channel over NATS"));
        assert!(label_matches("direct, HTTP/2", "gateway + HTTP/2"));
        assert!(!label_matches("direct", "gateway + NATS"));
        assert!(!label_matches(",", "anything"));
    }

    #[tokio::test]
    async fn interleaved_takes_turns() {
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls: Vec<_> = (0..3)
            .map(|path| {
                let order = order.clone();
                move || {
                    order.lock().expect("order").push(path);
                    async {}
                }
            })
            .collect();
        let samples = interleaved(&calls, 2).await;
        assert_eq!(samples.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
        assert_eq!(*order.lock().expect("order"), [0, 1, 2, 0, 1, 2]);
    }

    #[tokio::test]
    async fn measure_paths_runs_the_plan_on_every_path() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let counters: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
        let calls: Vec<_> = ["a", "b"]
            .into_iter()
            .zip(&counters)
            .map(|(label, counter)| {
                let call = owning_call(counter.clone(), |counter| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {}
                });
                (label, call)
            })
            .collect();
        let plan = Plan {
            warmup: 3,
            sequential: 10,
            requests: 21,
            in_flight: 4,
            rounds: 4,
        };
        let stats = measure_paths(calls, plan).await;
        assert_eq!(
            stats.iter().map(|(label, _)| *label).collect::<Vec<_>>(),
            ["a", "b"]
        );
        for counter in counters {
            assert_eq!(counter.load(Ordering::SeqCst), 3 + 3 + 10 + 21);
        }
        assert!(
            stats
                .iter()
                .all(|(_, s)| s.per_second > 0.0 && s.p50 <= s.p99)
        );
    }

    #[tokio::test]
    async fn concurrent_runs_every_request() {
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = counter.clone();
        concurrent(
            move || {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            },
            103,
            8,
        )
        .await;
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 103);
    }
}
