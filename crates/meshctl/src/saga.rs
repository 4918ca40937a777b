//! `meshctl saga <order-id>`: the events of one order from the JetStream stream, in emission
//! order (`ce_time`), with the time since the first event and since the previous one.
//!
//! An ordered consumer filtered on `<prefix>.*.<order-id>` delivers every stored message of
//! the order; reading stops when the consumer reports nothing pending (caught up).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use chrono::TimeDelta;
use contracts::events::kinds;
use contracts::topics::{ORDER_CANCELLED, ORDER_CONFIRMED};
use futures::StreamExt;

use crate::events::{EventView, format_time};
use crate::services::format_duration;

/// How long to wait for the next stored message before calling the stream stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One stored event of the saga.
#[derive(Debug, Clone)]
pub struct Step {
    pub sequence: u64,
    pub view: EventView,
}

/// Where the order stands after its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    Confirmed,
    /// With the `reason` of the event's data, if any.
    Cancelled(Option<String>),
    Pending,
}

pub async fn run(
    client: async_nats::Client,
    stream_name: &str,
    prefix: &str,
    order_id: &str,
) -> anyhow::Result<()> {
    let filter = format!("{prefix}.*.{}", subject_token(order_id)?);
    let context = jetstream::new(client);
    let stream = context
        .get_stream(stream_name)
        .await
        .with_context(|| format!("opening the JetStream stream {stream_name}"))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating an ordered consumer on {stream_name} for {filter}"))?;
    let stored = consumer.cached_info().num_pending;
    let mut steps = Vec::new();
    if stored > 0 {
        let mut messages = consumer
            .messages()
            .await
            .with_context(|| format!("reading {filter} from {stream_name}"))?;
        loop {
            let next = tokio::time::timeout(READ_TIMEOUT, messages.next())
                .await
                .map_err(|_| {
                    anyhow!(
                        "{stream_name} delivered nothing for {}s while messages of {filter} \
                         were still pending",
                        READ_TIMEOUT.as_secs()
                    )
                })?;
            let Some(message) = next else { break };
            let message =
                message.with_context(|| format!("reading {filter} from {stream_name}"))?;
            let info = message
                .info()
                .map_err(|e| anyhow!("a message of {stream_name} has no stream metadata: {e}"))?;
            let (sequence, remaining) = (info.stream_sequence, info.pending);
            steps.push(Step {
                sequence,
                view: EventView::from_message(prefix, &message.message),
            });
            if remaining == 0 {
                break;
            }
        }
    }
    if steps.is_empty() {
        bail!("no events for order {order_id} in stream {stream_name} (subjects {filter})");
    }
    // Saga order is emission order: the bridge keeps each partition's order, but an order's
    // events live on several topics and may be mirrored in another order than emitted.
    steps.sort_by_key(|step| (step.view.time, step.sequence));
    for line in render(&steps) {
        println!("{line}");
    }
    Ok(())
}

/// A key as the bridge turns it into one subject token (`contracts::subjects::token`).
pub fn subject_token(key: &str) -> anyhow::Result<String> {
    let key = key.trim();
    if key.is_empty() {
        bail!("the order id is empty");
    }
    Ok(contracts::subjects::token(key))
}

/// One line per event, then the terminal state.
pub fn render(steps: &[Step]) -> Vec<String> {
    let first_time = steps.first().and_then(|s| s.view.time);
    let mut previous_time = first_time;
    let mut lines = Vec::with_capacity(steps.len() + 1);
    for step in steps {
        let view = &step.view;
        let since_first = delta(first_time, view.time);
        let since_previous = delta(previous_time, view.time);
        if view.time.is_some() {
            previous_time = view.time;
        }
        let sequence = step.sequence;
        let time = view.time.map_or_else(|| "-".to_owned(), format_time);
        let topic = &view.topic;
        let kind = view.kind.as_deref().unwrap_or("-");
        let id = view.id.as_deref().unwrap_or("-");
        let data = view.data.compact();
        lines.push(format!(
            "#{sequence:<6} {time:<24} {since_first:>9} {since_previous:>9}  {topic:<20} {kind} \
             id={id} {data}"
        ));
    }
    let total = steps
        .iter()
        .rev()
        .find_map(|s| s.view.time)
        .and_then(|last| first_time.map(|first| format_delta(last - first)));
    let after = total.map_or_else(String::new, |t| format!(" ({t} after the first event)"));
    lines.push(match terminal_state(steps) {
        Terminal::Confirmed => format!("terminal state: {ORDER_CONFIRMED}{after}"),
        Terminal::Cancelled(Some(reason)) => {
            format!("terminal state: {ORDER_CANCELLED}: {reason}{after}")
        }
        Terminal::Cancelled(None) => format!("terminal state: {ORDER_CANCELLED}{after}"),
        Terminal::Pending => {
            format!("terminal state: still pending (no {ORDER_CONFIRMED} or {ORDER_CANCELLED} yet)")
        }
    });
    lines
}

/// The last terminal event decides; none means the order is still pending.
pub fn terminal_state(steps: &[Step]) -> Terminal {
    for step in steps.iter().rev() {
        let view = &step.view;
        let kind = view.kind.as_deref().unwrap_or("");
        if view.topic.ends_with(ORDER_CONFIRMED) || kind == kinds::ORDER_CONFIRMED {
            return Terminal::Confirmed;
        }
        if view.topic.ends_with(ORDER_CANCELLED) || kind == kinds::ORDER_CANCELLED {
            let reason = match &view.data {
                crate::events::Payload::Json(data) => data
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .map(str::to_owned),
                crate::events::Payload::Text(_) => None,
            };
            return Terminal::Cancelled(reason);
        }
    }
    Terminal::Pending
}

fn delta(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    match (from, to) {
        (Some(from), Some(to)) => format_delta(to - from),
        _ => "?".to_owned(),
    }
}

/// `+12.50ms`, `-3µs` (clocks of two services can disagree a little).
pub fn format_delta(delta: TimeDelta) -> String {
    let sign = if delta < TimeDelta::zero() { "-" } else { "+" };
    let magnitude = delta.abs().to_std().unwrap_or(Duration::ZERO);
    format!("{sign}{}", format_duration(magnitude))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn step(sequence: u64, topic: &str, time: &str, data: &str) -> Step {
        let headers = HashMap::from([
            ("ce_time", time.to_owned()),
            ("ce_id", format!("id-{sequence}")),
            ("Kafka-Topic", topic.to_owned()),
        ]);
        Step {
            sequence,
            view: EventView::from_parts(
                "events",
                &format!("events.{topic}.order-1"),
                |name| headers.get(name).cloned(),
                data.as_bytes(),
            ),
        }
    }

    #[test]
    fn order_ids_become_one_token() {
        assert_eq!(
            subject_token("0190c3c4-0000-7000-8000-000000000001").expect("token"),
            "0190c3c4-0000-7000-8000-000000000001"
        );
        assert_eq!(subject_token("a.b*>").expect("token"), "a_b__");
        assert!(subject_token("  ").is_err());
    }

    #[test]
    fn a_confirmed_saga_shows_its_timings() {
        let steps = [
            step(3, "order_created", "2025-03-01T10:00:00.000Z", "{}"),
            step(7, "payment_success", "2025-03-01T10:00:00.040Z", "{}"),
            step(9, "order_confirmed", "2025-03-01T10:00:00.050Z", "{}"),
        ];
        let lines = render(&steps);
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("#3 "), "{}", lines[0]);
        assert!(lines[1].contains("+40.00ms  +40.00ms"), "{}", lines[1]);
        assert!(lines[2].contains("+50.00ms  +10.00ms"), "{}", lines[2]);
        assert!(lines[2].contains("order_confirmed"), "{}", lines[2]);
        assert_eq!(
            lines[3],
            "terminal state: order_confirmed (+50.00ms after the first event)"
        );
    }

    #[test]
    fn terminal_states() {
        let created = step(1, "order_created", "2025-03-01T10:00:00Z", "{}");
        let cancelled = step(
            2,
            "t1_order_cancelled",
            "2025-03-01T10:00:01Z",
            r#"{"reason":"card declined"}"#,
        );
        assert_eq!(
            terminal_state(std::slice::from_ref(&created)),
            Terminal::Pending
        );
        assert_eq!(
            terminal_state(&[created.clone(), cancelled.clone()]),
            Terminal::Cancelled(Some("card declined".into()))
        );
        let lines = render(&[created.clone(), cancelled]);
        assert_eq!(
            lines[2],
            "terminal state: order_cancelled: card declined (+1.00s after the first event)"
        );
        let lines = render(&[created]);
        assert_eq!(
            lines[1],
            "terminal state: still pending (no order_confirmed or order_cancelled yet)"
        );
    }

    #[test]
    fn deltas_have_a_sign() {
        assert_eq!(format_delta(TimeDelta::milliseconds(1500)), "+1.50s");
        assert_eq!(format_delta(TimeDelta::microseconds(-3)), "-3µs");
        assert_eq!(format_delta(TimeDelta::zero()), "+0ns");
    }
}
