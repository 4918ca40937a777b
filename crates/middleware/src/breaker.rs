//! Circuit breaker per upstream: closed / open / half-open over a sliding window of outcomes.
//!
//! Written here rather than taken from a crate because it must classify HTTP *responses*
//! (the mesh answers 503/504 as responses, not errors), export its state to our Prometheus
//! registry, and stay small enough to test as a pure state machine ([`BreakerMachine`],
//! with property tests) separately from the tower plumbing ([`CircuitBreakerLayer`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use prometheus::IntGaugeVec;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::classify::is_upstream_failure;

/// When the breaker opens and for how long.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Outcomes remembered (a count-based sliding window).
    pub window: usize,
    /// No decision before this many outcomes: one failure out of two is not a trend.
    pub min_calls: usize,
    /// Opens when failures / outcomes reaches this.
    pub failure_rate: f64,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// Calls allowed at once while half-open.
    pub half_open_probes: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            min_calls: 10,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `circuit_breaker_state` gauge.
    pub fn gauge_value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// A call was refused because the circuit is open; retry after the given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Duration,
}

/// A state change: (from, to).
pub type Transition = (BreakerState, BreakerState);

/// Proof that a call was let through, to hand back with its outcome.
///
/// It remembers the state the call was let through in (its generation): a call that
/// finishes after the state changed says nothing about the new state. Without that, a slow
/// call let through while closed and finishing while half-open would count as the probe and
/// close the circuit on the strength of a request sent before it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a ticket must be recorded or abandoned"]
pub struct Ticket {
    generation: u64,
}

/// A call let through: its ticket, and the transition asking caused (open -> half-open).
#[derive(Debug)]
pub struct Admitted {
    pub ticket: Ticket,
    pub transition: Option<Transition>,
}

/// The breaker's decisions, with time passed in so tests control it.
#[derive(Debug)]
pub struct BreakerMachine {
    config: BreakerConfig,
    state: BreakerState,
    /// Incremented on every state change; see [`Ticket`].
    generation: u64,
    /// `true` = failure.
    outcomes: VecDeque<bool>,
    opened_at: Instant,
    probes_in_flight: usize,
}

impl BreakerMachine {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            outcomes: VecDeque::with_capacity(config.window),
            config,
            state: BreakerState::Closed,
            generation: 0,
            opened_at: Instant::now(),
            probes_in_flight: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Asks to make a call. The ticket of an `Ok` must go back through exactly one
    /// [`record`](Self::record) or [`abandon`](Self::abandon).
    pub fn try_acquire(&mut self, now: Instant) -> Result<Admitted, Rejected> {
        let mut transition = None;
        if self.state == BreakerState::Open {
            let reopens_at = self.opened_at + self.config.open_for;
            if now < reopens_at {
                return Err(Rejected {
                    retry_after: reopens_at - now,
                });
            }
            transition = self.move_to(BreakerState::HalfOpen, now);
        }
        if self.state == BreakerState::HalfOpen {
            if self.probes_in_flight >= self.config.half_open_probes.max(1) {
                return Err(Rejected {
                    retry_after: Duration::from_millis(100),
                });
            }
            self.probes_in_flight += 1;
        }
        Ok(Admitted {
            ticket: Ticket {
                generation: self.generation,
            },
            transition,
        })
    }

    /// Records the outcome of an admitted call; returns the transition it caused, if any.
    /// The outcome of a call admitted before the last state change is ignored.
    pub fn record(&mut self, ticket: Ticket, now: Instant, failed: bool) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        match self.state {
            BreakerState::HalfOpen => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                if failed {
                    self.move_to(BreakerState::Open, now)
                } else {
                    self.move_to(BreakerState::Closed, now)
                }
            }
            BreakerState::Closed => {
                if self.outcomes.len() == self.config.window.max(1) {
                    self.outcomes.pop_front();
                }
                self.outcomes.push_back(failed);
                if self.outcomes.len() >= self.config.min_calls.max(1)
                    && self.failure_ratio() >= self.config.failure_rate
                {
                    self.move_to(BreakerState::Open, now)
                } else {
                    None
                }
            }
            // Nothing is admitted while open, so no ticket of this generation exists.
            BreakerState::Open => None,
        }
    }

    /// An admitted call that ended without an outcome (its future was dropped).
    pub fn abandon(&mut self, ticket: Ticket) {
        if ticket.generation == self.generation && self.state == BreakerState::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    fn failure_ratio(&self) -> f64 {
        let failures = self.outcomes.iter().filter(|f| **f).count();
        failures as f64 / self.outcomes.len().max(1) as f64
    }

    fn move_to(&mut self, next: BreakerState, now: Instant) -> Option<Transition> {
        let previous = self.state;
        if previous == next {
            return None;
        }
        self.state = next;
        self.generation += 1;
        self.outcomes.clear();
        self.probes_in_flight = 0;
        if next == BreakerState::Open {
            self.opened_at = now;
        }
        Some((previous, next))
    }
}

/// Shared by every clone of the service for one upstream.
#[derive(Debug)]
struct Shared {
    upstream: String,
    machine: Mutex<BreakerMachine>,
    gauge: Option<IntGaugeVec>,
}

impl Shared {
    fn with_machine<T>(&self, f: impl FnOnce(&mut BreakerMachine) -> T) -> T {
        f(&mut self.machine.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn report(&self, transition: Option<Transition>) {
        let Some((from, to)) = transition else { return };
        match to {
            BreakerState::Open => {
                tracing::warn!(upstream = %self.upstream, ?from, "Circuit opened.");
            }
            _ => tracing::info!(upstream = %self.upstream, ?from, ?to, "Circuit changed."),
        }
        if let Some(gauge) = &self.gauge {
            gauge
                .with_label_values(&[self.upstream.as_str()])
                .set(to.gauge_value());
        }
    }
}

/// Wraps a client (a mesh `Channel`) with a breaker for one upstream.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    pub fn new(upstream: &str, config: BreakerConfig, metrics: Option<&kit::Metrics>) -> Self {
        let gauge = metrics.map(|m| {
            let gauge = IntGaugeVec::new(
                prometheus::Opts::new(
                    "circuit_breaker_state",
                    "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
                ),
                &["upstream"],
            )
            .expect("static metric definition is valid");
            let gauge = m.register(gauge);
            gauge.with_label_values(&[upstream]).set(0);
            gauge
        });
        Self {
            shared: Arc::new(Shared {
                upstream: upstream.to_owned(),
                machine: Mutex::new(BreakerMachine::new(config)),
                gauge,
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.shared.with_machine(|m| m.state())
    }

    /// Runs `work` under the breaker, for dependencies that are not tower services (a Redis
    /// client): `Err(Rejected)` without running it while the circuit is open, otherwise its
    /// result, counted as a failure when it is `Err`.
    pub async fn guard<T, E, F>(&self, work: F) -> Result<Result<T, E>, Rejected>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = Permit::acquire(&self.shared)?;
        let result = work.await;
        permit.settle(result.is_err());
        Ok(result)
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// An admitted call's ticket; abandons it if the call's future is dropped before it
/// finishes, which frees a half-open probe slot.
struct Permit {
    shared: Arc<Shared>,
    ticket: Option<Ticket>,
}

impl Permit {
    fn acquire(shared: &Arc<Shared>) -> Result<Self, Rejected> {
        let admitted = shared.with_machine(|m| m.try_acquire(Instant::now()))?;
        shared.report(admitted.transition);
        Ok(Self {
            shared: shared.clone(),
            ticket: Some(admitted.ticket),
        })
    }

    fn settle(mut self, failed: bool) {
        if let Some(ticket) = self.ticket.take() {
            let transition = self
                .shared
                .with_machine(|m| m.record(ticket, Instant::now(), failed));
            self.shared.report(transition);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.with_machine(|m| m.abandon(ticket));
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for CircuitBreaker<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match Permit::acquire(&self.shared) {
            Err(rejected) => {
                let grpc = mesh::rpc::is_grpc(request.headers());
                let response = open_response(&self.shared.upstream, rejected, grpc);
                Box::pin(async move { Ok(response) })
            }
            Ok(permit) => {
                let mut inner = crate::take_ready(&mut self.inner);
                Box::pin(async move {
                    let result = inner.call(request).await;
                    let failed = match &result {
                        Ok(response) => is_upstream_failure(response),
                        Err(_) => true,
                    };
                    permit.settle(failed);
                    result
                })
            }
        }
    }
}

/// The code a breaker rejection carries (and its `mesh-error` header); retry policies do not
/// retry it.
pub const CIRCUIT_OPEN: &str = "circuit_open";

/// A 503 in the contract's error shape, or for a gRPC call UNAVAILABLE; either way marked
/// `mesh-error: circuit_open`, so a caller's retry policy can tell it from an outage worth
/// another attempt.
fn open_response<B: From<Bytes>>(upstream: &str, rejected: Rejected, grpc: bool) -> Response<B> {
    let seconds = rejected.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let message = format!("{upstream} is failing; not calling it for {seconds} s");
    let mut response = if grpc {
        mesh::rpc::grpc_error_response(mesh::rpc::grpc_status::UNAVAILABLE, &message, CIRCUIT_OPEN)
            .map(B::from)
    } else {
        let mut response =
            kit::error::error_response(StatusCode::SERVICE_UNAVAILABLE, CIRCUIT_OPEN, &message);
        response.headers_mut().insert(
            mesh::rpc::MESH_ERROR_HEADER,
            HeaderValue::from_static(CIRCUIT_OPEN),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        headers.insert(http::header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: 10,
            min_calls: 4,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }

    fn call(machine: &mut BreakerMachine, now: Instant, failed: bool) -> bool {
        match machine.try_acquire(now) {
            Ok(admitted) => {
                let _ = machine.record(admitted.ticket, now, failed);
                true
            }
            Err(_) => false,
        }
    }

    /// A machine opened by four failures at `start`.
    fn opened(start: Instant) -> BreakerMachine {
        let mut machine = BreakerMachine::new(config());
        for _ in 0..4 {
            call(&mut machine, start, true);
        }
        assert_eq!(machine.state(), BreakerState::Open);
        machine
    }

    #[test]
    fn opens_on_the_failure_rate_then_half_opens_then_closes() {
        let start = Instant::now();
        let mut machine = BreakerMachine::new(config());
        for failed in [false, true, true] {
            assert!(call(&mut machine, start, failed));
        }
        assert_eq!(machine.state(), BreakerState::Closed, "below min_calls");
        assert!(call(&mut machine, start, true));
        assert_eq!(machine.state(), BreakerState::Open, "3 of 4 failed");

        let rejected = machine
            .try_acquire(start + Duration::from_secs(1))
            .expect_err("open");
        assert_eq!(rejected.retry_after, Duration::from_secs(4));

        let later = start + Duration::from_secs(5);
        let probe = machine.try_acquire(later).expect("one probe");
        assert_eq!(
            probe.transition,
            Some((BreakerState::Open, BreakerState::HalfOpen))
        );
        assert!(
            machine.try_acquire(later).is_err(),
            "only one probe at a time"
        );
        let closed = machine.record(probe.ticket, later, false);
        assert_eq!(closed, Some((BreakerState::HalfOpen, BreakerState::Closed)));
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_period() {
        let start = Instant::now();
        let mut machine = opened(start);
        let probe_at = start + Duration::from_secs(5);
        assert!(call(&mut machine, probe_at, true));
        assert_eq!(machine.state(), BreakerState::Open);
        let err = machine
            .try_acquire(probe_at + Duration::from_secs(1))
            .expect_err("reopened");
        assert_eq!(err.retry_after, Duration::from_secs(4));
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot() {
        let start = Instant::now();
        let mut machine = opened(start);
        let later = start + Duration::from_secs(6);
        let probe = machine.try_acquire(later).expect("probe");
        machine.abandon(probe.ticket);
        assert!(machine.try_acquire(later).is_ok(), "slot freed");
    }

    /// A call let through while closed and still out when the circuit, opened by four
    /// failures, lets its probe through 5 s later: (machine, slow call, probe, then).
    fn slow_call_outlives_the_opening() -> (BreakerMachine, Ticket, Ticket, Instant) {
        let start = Instant::now();
        let mut machine = BreakerMachine::new(config());
        let slow = machine.try_acquire(start).expect("closed").ticket;
        for _ in 0..4 {
            call(&mut machine, start, true);
        }
        let later = start + Duration::from_secs(5);
        let probe = machine.try_acquire(later).expect("probe").ticket;
        (machine, slow, probe, later)
    }

    #[test]
    fn a_call_let_through_before_the_circuit_opened_is_not_the_probe() {
        let (mut machine, slow, probe, later) = slow_call_outlives_the_opening();

        // The slow call succeeds now: it proves nothing about the upstream since it opened.
        assert_eq!(machine.record(slow, later, false), None);
        assert_eq!(machine.state(), BreakerState::HalfOpen);
        assert!(
            machine.try_acquire(later).is_err(),
            "the probe is still out"
        );
        assert_eq!(
            machine.record(probe, later, true),
            Some((BreakerState::HalfOpen, BreakerState::Open))
        );
    }

    #[test]
    fn a_stale_abandon_does_not_free_the_probe_slot() {
        let (mut machine, slow, _probe, later) = slow_call_outlives_the_opening();
        machine.abandon(slow);
        assert!(machine.try_acquire(later).is_err(), "still one probe out");
    }

    proptest! {
        /// Whatever the sequence, the breaker only opens when the window it judged had
        /// enough calls and enough failures, and it never lets a call through while open.
        #[test]
        fn opens_only_on_evidence_and_never_leaks_while_open(
            outcomes in proptest::collection::vec((any::<bool>(), 0u64..3000), 1..200)
        ) {
            let config = config();
            let start = Instant::now();
            let mut now = start;
            let mut machine = BreakerMachine::new(config.clone());
            let mut window: VecDeque<bool> = VecDeque::new();
            for (failed, advance_ms) in outcomes {
                now += Duration::from_millis(advance_ms);
                let before = machine.state();
                match machine.try_acquire(now) {
                    Err(rejected) => {
                        prop_assert_ne!(before, BreakerState::Closed, "closed never rejects");
                        prop_assert!(rejected.retry_after <= config.open_for);
                    }
                    Ok(admitted) => {
                        let state = machine.state();
                        if state == BreakerState::Closed {
                            if window.len() == config.window { window.pop_front(); }
                            window.push_back(failed);
                        }
                        let transition = machine.record(admitted.ticket, now, failed);
                        if let Some((BreakerState::Closed, BreakerState::Open)) = transition {
                            let failures = window.iter().filter(|f| **f).count();
                            prop_assert!(window.len() >= config.min_calls);
                            prop_assert!(failures as f64 / window.len() as f64 >= config.failure_rate);
                        }
                        if transition.is_some() { window.clear(); }
                    }
                }
            }
        }

        /// With calls overlapping in any order (each step admits a call, or ends one of the
        /// calls still out with a success, a failure or by dropping it), only a call admitted
        /// while half-open can end the half-open state, and never more than the allowed
        /// probes are out at once.
        #[test]
        fn only_probes_decide_the_half_open_state(
            steps in proptest::collection::vec((0u8..4, any::<prop::sample::Index>(), 0u64..3000), 1..300)
        ) {
            let config = config();
            let mut now = Instant::now();
            let mut machine = BreakerMachine::new(config.clone());
            // (ticket, state it was admitted in)
            let mut out: Vec<(Ticket, BreakerState)> = Vec::new();
            for (action, pick, advance_ms) in steps {
                now += Duration::from_millis(advance_ms);
                if action == 0 || out.is_empty() {
                    if let Ok(admitted) = machine.try_acquire(now) {
                        out.push((admitted.ticket, machine.state()));
                    }
                } else {
                    let (ticket, admitted_in) = out.swap_remove(pick.index(out.len()));
                    let before = machine.state();
                    let generation_before = machine.generation;
                    let transition = if action == 3 {
                        machine.abandon(ticket);
                        None
                    } else {
                        machine.record(ticket, now, action == 2)
                    };
                    if before == BreakerState::HalfOpen && transition.is_some() {
                        prop_assert_eq!(admitted_in, BreakerState::HalfOpen, "a stale call decided the probe");
                        prop_assert_eq!(ticket.generation, generation_before, "a probe of an earlier half-open period decided this one");
                    }
                }
                if machine.state() == BreakerState::HalfOpen {
                    let current = Ticket { generation: machine.generation };
                    let probes = out.iter().filter(|(t, _)| *t == current).count();
                    prop_assert!(probes <= config.half_open_probes);
                    prop_assert_eq!(probes, machine.probes_in_flight, "probe slots leaked or lost");
                }
            }
        }

        /// With only successes the breaker stays closed and lets everything through.
        #[test]
        fn successes_never_open(n in 1usize..500) {
            let mut machine = BreakerMachine::new(config());
            let now = Instant::now();
            for _ in 0..n {
                prop_assert!(call(&mut machine, now, false));
            }
            prop_assert_eq!(machine.state(), BreakerState::Closed);
        }
    }
}
