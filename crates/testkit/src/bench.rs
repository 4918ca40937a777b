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

/// A task's result, its panic carried on to the caller.
pub fn join<T>(outcome: Result<T, tokio::task::JoinError>) -> T {
    match outcome {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("benchmark task failed: {error}"),
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
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
