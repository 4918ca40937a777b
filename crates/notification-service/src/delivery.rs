//! Delivery: one notification per event, sent with retries and exponential backoff, parked
//! as a dead letter (`notification_failed`) when every attempt failed.
//!
//! Independent of where events come from: [`Notifier::handle`] takes a [`mesh::Event`], so
//! the JetStream consumer and the Kafka worker call the same code.

use std::sync::Arc;

use contracts::events::{NotificationFailed, kinds, sources};
use contracts::topics::Topics;
use mesh::event::EventError;
use mesh::kafka::HandleError;
use mesh::{Event, outbox};
use prometheus::{IntCounterVec, Opts};
use sqlx::{Acquire, PgConnection};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::DeliverySettings;
use crate::render::render;
use crate::sender::Sender;
use crate::store::{self, DeliveryLock, Notification, PENDING, Store};

/// How many PENDING rows one sweep resumes at most (the rest wait for the next sweep or
/// their event's redelivery).
const SWEEP_LIMIT: i64 = 1_000;

/// Background deliveries under way at once, for a pool of `pool_size` connections. A
/// delivery holds one pooled connection (its [`DeliveryLock`]'s) for as long as it runs,
/// backoff included. Unbounded, a thousand replays would take the whole pool and leave the
/// API, the outbox relay and the live consumer waiting; so connections stay for the API
/// (one), the outbox relay (two: its LISTEN connection, held for good, and one to publish)
/// and the live consumer's delivery (one).
fn background_deliveries(pool_size: u32) -> usize {
    usize::try_from(pool_size.saturating_sub(4).max(1)).unwrap_or(1)
}

/// Where a delivery comes from. The consumer, which handles one event at a time (so is
/// its own bound), never queues behind a start-up sweep of a thousand pending
/// notifications or a burst of replays; those share the background slots.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lane {
    /// The event consumer (JetStream or Kafka).
    Live,
    /// Replays and the start-up sweep.
    Background,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    Dead,
    /// SENT or DEAD already: a redelivery changes nothing.
    AlreadyDone,
    /// Another delivery of the same notification is under way.
    Busy,
    /// No such notification.
    Missing,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    #[error("notification database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot build the dead letter: {0}")]
    Event(#[from] EventError),
    #[error("shutting down mid-delivery; the notification stays pending")]
    Interrupted,
}

/// Renders, records and delivers notifications.
pub(crate) struct Notifier {
    store: Store,
    sender: Arc<dyn Sender>,
    settings: DeliverySettings,
    topics: Topics,
    outcomes: IntCounterVec,
    /// See [`background_deliveries`] and [`Lane`].
    background_slots: Semaphore,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("settings", &self.settings)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub(crate) fn new(
        store: Store,
        sender: Arc<dyn Sender>,
        settings: DeliverySettings,
        topics: Topics,
        metrics: &kit::Metrics,
    ) -> Result<Self, prometheus::Error> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "notifications_total",
                "Notifications finished, by status: sent, dead.",
            ),
            &["status"],
        )?;
        let background_slots = Semaphore::new(background_deliveries(
            store.pool().options().get_max_connections(),
        ));
        Ok(Self {
            store,
            sender,
            settings,
            topics,
            outcomes: metrics.register(outcomes),
            background_slots,
        })
    }

    /// Handles one event from any source: at most one notification per event id.
    pub(crate) async fn handle(
        &self,
        event: &Event,
        stop: &CancellationToken,
    ) -> Result<Outcome, HandleError> {
        let Some(rendered) = render(event) else {
            return Err(HandleError::Permanent(format!(
                "no notification for event type {:?}",
                event.kind
            )));
        };
        let created = self.store.insert_pending(event, &rendered).await?;
        if !created {
            // SENT or DEAD: nothing to do. PENDING: a delivery was interrupted; resume it.
            tracing::debug!(event_id = %event.id, "Notification exists; checking its status.");
        }
        let outcome =
            self.deliver(event.id, Lane::Live, stop)
                .await
                .map_err(|error| match error {
                    DeliverError::Event(error) => error.into(),
                    DeliverError::Database(error) => error.into(),
                    DeliverError::Interrupted => {
                        HandleError::Transient(DeliverError::Interrupted.to_string())
                    }
                })?;
        if outcome == Outcome::Busy {
            // Another delivery (a replay, another instance handed the same event) holds the
            // lock. This event is not done until that one is: were it acknowledged now and
            // that one died half-way, nothing would bring the notification back. Retried,
            // it finds the notification sent, or takes the delivery over.
            return Err(HandleError::Transient(
                "the notification is being delivered elsewhere".into(),
            ));
        }
        Ok(outcome)
    }

    /// Delivers a PENDING notification, continuing from the attempts it already had.
    pub(crate) async fn deliver(
        &self,
        event_id: Uuid,
        lane: Lane,
        stop: &CancellationToken,
    ) -> Result<Outcome, DeliverError> {
        let _slot = match lane {
            Lane::Live => None,
            Lane::Background => Some(tokio::select! {
                () = stop.cancelled() => return Err(DeliverError::Interrupted),
                slot = self.background_slots.acquire() => {
                    slot.expect("the semaphore is never closed")
                }
            }),
        };
        let Some(mut lock) = DeliveryLock::try_acquire(self.store.pool(), event_id).await? else {
            tracing::debug!(%event_id, "Notification is being delivered elsewhere.");
            return Ok(Outcome::Busy);
        };
        let outcome = self.deliver_locked(&mut lock, event_id, stop).await;
        lock.release().await;
        outcome
    }

    async fn deliver_locked(
        &self,
        lock: &mut DeliveryLock,
        event_id: Uuid,
        stop: &CancellationToken,
    ) -> Result<Outcome, DeliverError> {
        let Some(mut n) = store::get(lock.conn(), event_id).await? else {
            return Ok(Outcome::Missing);
        };
        if n.status != PENDING {
            return Ok(Outcome::AlreadyDone);
        }
        let max_attempts = self.settings.max_attempts_i32();
        let mut failures = 0;
        loop {
            if n.attempts >= max_attempts {
                return self.park(lock.conn(), &n).await;
            }
            if failures > 0 {
                let wait = self.settings.backoff(failures);
                if !kit::shutdown::pause(stop, wait).await {
                    return Err(DeliverError::Interrupted);
                }
            }
            n.attempts += 1;
            match self.sender.send(&n).await {
                Ok(()) => {
                    store::mark_sent(lock.conn(), event_id, n.attempts).await?;
                    self.outcomes.with_label_values(&["sent"]).inc();
                    tracing::info!(%event_id, event_type = %n.event_type, key = %n.key, attempts = n.attempts, "Notification delivered.");
                    return Ok(Outcome::Sent);
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%event_id, attempt = n.attempts, max_attempts, %error, "Notification attempt failed.");
                    store::record_failure(lock.conn(), event_id, n.attempts, &error).await?;
                    n.last_error = Some(error);
                }
            }
        }
    }

    /// DEAD, and the `notification_failed` dead letter, in one transaction.
    async fn park(
        &self,
        conn: &mut PgConnection,
        n: &Notification,
    ) -> Result<Outcome, DeliverError> {
        let last_error = n
            .last_error
            .clone()
            .unwrap_or_else(|| "no attempt succeeded".to_owned());
        let dead_letter = Event::new(
            kinds::NOTIFICATION_FAILED,
            sources::NOTIFICATION_SERVICE,
            n.key.clone(),
            &NotificationFailed {
                event_id: n.event_id,
                event_type: n.event_type.clone(),
                key: n.key.clone(),
                attempts: n.attempts,
                last_error: last_error.clone(),
            },
        )?
        .with_traceparent(n.traceparent.clone());
        let mut tx = conn.begin().await?;
        let parked = store::mark_dead(&mut tx, n.event_id, n.attempts, &last_error).await?;
        if parked {
            outbox::enqueue(&mut tx, &self.topics.notification_failed, &dead_letter).await?;
        }
        tx.commit().await?;
        if !parked {
            return Ok(Outcome::AlreadyDone);
        }
        self.outcomes.with_label_values(&["dead"]).inc();
        tracing::error!(
            event_id = %n.event_id,
            event_type = %n.event_type,
            key = %n.key,
            attempts = n.attempts,
            %last_error,
            "Notification parked as a dead letter."
        );
        Ok(Outcome::Dead)
    }

    /// Delivers each replayed notification (sent by `POST /notifications/{event_id}/replay`)
    /// and, at start and then every `pending_sweep`, whatever is left PENDING: by a previous
    /// run, or by a background delivery that met a database failure and gave up. A row
    /// whose delivery is under way elsewhere is skipped (its lock is held), so the sweep
    /// never sends twice.
    pub(crate) async fn run_queue(
        self: Arc<Self>,
        mut replays: mpsc::UnboundedReceiver<Uuid>,
        stop: CancellationToken,
    ) {
        let mut deliveries = JoinSet::new();
        // The first tick is immediate: the start's sweep.
        let mut sweep = tokio::time::interval(self.settings.pending_sweep);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = sweep.tick() => self.resume_pending(&mut deliveries, &stop).await,
                next = replays.recv() => match next {
                    Some(event_id) => spawn_delivery(&self, &mut deliveries, event_id, &stop),
                    None => break,
                },
                Some(joined) = deliveries.join_next(), if !deliveries.is_empty() => log_join(joined),
            }
        }
        while let Some(joined) = deliveries.join_next().await {
            log_join(joined);
        }
    }

    async fn resume_pending(
        self: &Arc<Self>,
        deliveries: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) {
        match self.store.pending_ids(SWEEP_LIMIT).await {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(count = ids.len(), "Resuming notifications left pending.");
                }
                for event_id in ids {
                    spawn_delivery(self, deliveries, event_id, stop);
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot look for pending notifications."),
        }
    }
}

fn spawn_delivery(
    notifier: &Arc<Notifier>,
    deliveries: &mut JoinSet<()>,
    event_id: Uuid,
    stop: &CancellationToken,
) {
    let notifier = Arc::clone(notifier);
    let stop = stop.clone();
    deliveries.spawn(async move {
        match notifier.deliver(event_id, Lane::Background, &stop).await {
            Ok(outcome) => tracing::debug!(%event_id, ?outcome, "Delivery finished."),
            Err(error) => tracing::warn!(%event_id, %error, "Delivery stopped."),
        }
    });
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        tracing::error!(%error, "A delivery task failed.");
    }
}
