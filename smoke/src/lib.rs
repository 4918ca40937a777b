//! The smoke test runner (`just smoke`): end-to-end scenarios against a running stack,
//! through the gateway only (NATS is only watched, for the saga's events).
//!
//! Each scenario prints one line, `PASS|FAIL <name> (<ms> ms)[: reason]`, as it finishes;
//! the run ends with `N passed, M failed` (what CI reads) and a non-zero exit on any failure.

pub mod scenarios;

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs every scenario in order and reports each as it finishes.
pub async fn run(config: scenarios::Config) -> Report {
    let mut report = Report::default();
    scenarios::run_all(config, &mut report).await;
    report
}

/// How one scenario went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    pub elapsed: Duration,
    /// `None` when it passed.
    pub failure: Option<String>,
}

impl Outcome {
    /// `PASS name (12 ms)` or `FAIL name (12 ms): reason`.
    pub fn line(&self) -> String {
        let ms = self.elapsed.as_millis();
        match &self.failure {
            None => format!("PASS {} ({ms} ms)", self.name),
            Some(reason) => format!("FAIL {} ({ms} ms): {reason}", self.name),
        }
    }
}

/// Every outcome so far.
#[derive(Debug, Default)]
pub struct Report {
    outcomes: Vec<Outcome>,
}

impl Report {
    /// Runs one scenario, times it, prints its line and records it.
    pub async fn run<F>(&mut self, name: &str, scenario: F)
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        let started = Instant::now();
        let result = scenario.await;
        let outcome = Outcome {
            name: name.to_owned(),
            elapsed: started.elapsed(),
            failure: result.err().map(|error| one_line(&format!("{error:#}"))),
        };
        println!("{}", outcome.line());
        self.outcomes.push(outcome);
    }

    pub fn record(&mut self, outcome: Outcome) {
        self.outcomes.push(outcome);
    }

    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.failure.is_none()).count()
    }

    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }

    /// `N passed, M failed`: the exact text CI reads.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// True when something ran and nothing failed.
    pub fn success(&self) -> bool {
        !self.outcomes.is_empty() && self.failed() == 0
    }
}

/// A reason on one line: newlines and runs of whitespace become single spaces.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, ms: u64, failure: Option<&str>) -> Outcome {
        Outcome {
            name: name.into(),
            elapsed: Duration::from_millis(ms),
            failure: failure.map(str::to_owned),
        }
    }

    #[test]
    fn lines_follow_the_format() {
        assert_eq!(
            outcome("register", 12, None).line(),
            "PASS register (12 ms)"
        );
        assert_eq!(
            outcome("login", 7, Some("expected 200, got 401")).line(),
            "FAIL login (7 ms): expected 200, got 401"
        );
    }

    #[test]
    fn the_summary_counts_both_ways() {
        let mut report = Report::default();
        assert!(!report.success(), "an empty run is not a success");
        report.record(outcome("a", 1, None));
        report.record(outcome("b", 1, None));
        assert_eq!(report.summary(), "2 passed, 0 failed");
        assert!(report.success());
        report.record(outcome("c", 1, Some("boom")));
        assert_eq!(report.summary(), "2 passed, 1 failed");
        assert!(!report.success());
        assert_eq!(report.outcomes().len(), 3);
    }

    #[tokio::test]
    async fn run_times_and_records() {
        let mut report = Report::default();
        report.run("ok", async { Ok(()) }).await;
        report
            .run("bad", async { Err(anyhow::anyhow!("first\nsecond")) })
            .await;
        assert_eq!(report.outcomes()[0].failure, None);
        assert_eq!(
            report.outcomes()[1].failure.as_deref(),
            Some("first second")
        );
    }

    #[test]
    fn reasons_fit_on_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
