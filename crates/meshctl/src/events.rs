//! `meshctl events tail`: live events from NATS, one readable line each.
//!
//! The bridge publishes every Kafka record on `<prefix>.<topic>.<key>` with the CloudEvents
//! attributes as headers (`ce_id`, `ce_type`, `ce_time`, `traceparent`, `ce_partitionkey`)
//! and its origin (`Kafka-Topic`, ...). Reading is lenient: an event without some header is
//! still shown, with `-` in its place.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use mesh::event;
use serde_json::{Value, json};

/// The first token of the subjects the bridge publishes on.
pub const DEFAULT_PREFIX: &str = contracts::subjects::EVENTS_SUBJECT_PREFIX;
/// The bridge's header naming the Kafka topic a record came from.
pub const KAFKA_TOPIC: &str = contracts::subjects::KAFKA_TOPIC_HEADER;

#[derive(Debug, Clone)]
pub struct TailOptions {
    pub prefix: String,
    pub filter: Option<String>,
    pub limit: Option<usize>,
    pub json: bool,
}

pub async fn tail(client: &async_nats::Client, options: &TailOptions) -> anyhow::Result<()> {
    if options.limit == Some(0) {
        return Ok(());
    }
    let subject = tail_subject(&options.prefix, options.filter.as_deref());
    if !contracts::subjects::is_valid_filter(&subject) {
        anyhow::bail!(
            "{subject:?} is not a subject to listen on: tokens separated by single dots, \
             no spaces, `*` for one token, `>` only last"
        );
    }
    let mut messages = client
        .subscribe(subject.clone())
        .await
        .with_context(|| format!("subscribing to {subject}"))?;
    eprintln!("listening on {subject} (Ctrl-C to stop)");
    let mut seen = 0usize;
    while let Some(message) = messages.next().await {
        let view = EventView::from_message(&options.prefix, &message);
        if options.json {
            println!("{}", view.to_json());
        } else {
            println!("{}", view.render_line());
        }
        seen += 1;
        if options.limit.is_some_and(|limit| seen >= limit) {
            break;
        }
    }
    Ok(())
}

/// The subject to subscribe to: `<prefix>.>` without a filter, `<prefix>.<filter>` with one;
/// a filter of one plain token (a topic name) means every key of that topic.
pub fn tail_subject(prefix: &str, filter: Option<&str>) -> String {
    let filter = filter.map(|f| f.trim().trim_matches('.')).unwrap_or("");
    if filter.is_empty() {
        return format!("{prefix}.>");
    }
    if !filter.contains('.') && filter != ">" {
        return format!("{prefix}.{filter}.>");
    }
    format!("{prefix}.{filter}")
}

/// The payload of an event: JSON when it parses, text otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Value),
    Text(String),
}

impl Payload {
    pub fn parse(bytes: &[u8]) -> Self {
        match serde_json::from_slice(bytes) {
            Ok(value) => Self::Json(value),
            Err(_) => Self::Text(String::from_utf8_lossy(bytes).into_owned()),
        }
    }

    /// Compact JSON, or the text as it came.
    pub fn compact(&self) -> String {
        match self {
            Self::Json(value) => value.to_string(),
            Self::Text(text) => text.clone(),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Self::Json(value) => value.clone(),
            Self::Text(text) => Value::String(text.clone()),
        }
    }
}

/// What one NATS event message says, every attribute optional.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub subject: String,
    /// `Kafka-Topic`, or the subject's token after the prefix.
    pub topic: String,
    /// `ce_type`.
    pub kind: Option<String>,
    /// `ce_partitionkey`, or the subject's last token.
    pub key: String,
    /// `ce_id`.
    pub id: Option<String>,
    /// `ce_source`.
    pub source: Option<String>,
    /// `ce_time`, when present and RFC 3339.
    pub time: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
    pub data: Payload,
}

impl EventView {
    pub fn from_message(prefix: &str, message: &async_nats::Message) -> Self {
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(name))
                .map(|value| value.as_str().to_owned())
        };
        Self::from_parts(prefix, message.subject.as_str(), header, &message.payload)
    }

    pub fn from_parts(
        prefix: &str,
        subject: &str,
        header: impl Fn(&str) -> Option<String>,
        payload: &[u8],
    ) -> Self {
        let below_prefix = subject
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or_else(|| subject.split_once('.').map_or(subject, |(_, rest)| rest));
        let topic = header(KAFKA_TOPIC)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| below_prefix.split('.').next().unwrap_or("").to_owned());
        let key = header(event::PARTITION_KEY)
            .unwrap_or_else(|| subject.rsplit('.').next().unwrap_or("").to_owned());
        let time = header(event::TIME)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        Self {
            subject: subject.to_owned(),
            topic,
            kind: header(event::TYPE),
            key,
            id: header(event::ID),
            source: header(event::SOURCE),
            time,
            traceparent: header(event::TRACEPARENT),
            data: Payload::parse(payload),
        }
    }

    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(trace_id)
    }

    /// `<time> <type> key=<key> id=<ce_id> trace=<trace id> <data>`.
    pub fn render_line(&self) -> String {
        let time = self.time.map_or_else(|| "-".to_owned(), format_time);
        let kind = self.kind.as_deref().unwrap_or(self.topic.as_str());
        format!(
            "{time} {kind} key={} id={} trace={} {}",
            self.key,
            self.id.as_deref().unwrap_or("-"),
            self.trace_id().unwrap_or("-"),
            self.data.compact()
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject,
            "topic": self.topic,
            "time": self.time.map(format_time),
            "type": self.kind,
            "source": self.source,
            "id": self.id,
            "key": self.key,
            "trace_id": self.trace_id(),
            "traceparent": self.traceparent,
            "data": self.data.to_value(),
        })
    }
}

/// RFC 3339 in UTC with milliseconds.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<flags>`).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let id = traceparent.trim().split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("ce_id", "0190c3c4-0000-7000-8000-000000000001"),
            ("ce_type", "shopmesh.order.created"),
            ("ce_source", "/order-service"),
            ("ce_time", "2025-03-01T10:00:00.123456Z"),
            ("ce_partitionkey", "order-1"),
            ("traceparent", TRACEPARENT),
            ("Kafka-Topic", "order_created"),
        ])
    }

    #[test]
    fn subjects_for_filters() {
        assert_eq!(tail_subject("events", None), "events.>");
        assert_eq!(tail_subject("events", Some("")), "events.>");
        assert_eq!(
            tail_subject("events", Some("order_created.>")),
            "events.order_created.>"
        );
        assert_eq!(
            tail_subject("events", Some("order_created")),
            "events.order_created.>"
        );
        assert_eq!(tail_subject("events", Some("*.abc")), "events.*.abc");
        assert_eq!(tail_subject("events", Some(">")), "events.>");
    }

    #[test]
    fn a_full_event_reads_on_one_line() {
        let h = headers();
        let view = EventView::from_parts(
            "events",
            "events.order_created.order-1",
            |name| h.get(name).map(|v| (*v).to_owned()),
            br#"{ "order_id": "order-1", "total_cents": 1250 }"#,
        );
        assert_eq!(view.topic, "order_created");
        assert_eq!(view.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            view.render_line(),
            "2025-03-01T10:00:00.123Z shopmesh.order.created key=order-1 \
             id=0190c3c4-0000-7000-8000-000000000001 trace=4bf92f3577b34da6a3ce929d0e0e4736 \
             {\"order_id\":\"order-1\",\"total_cents\":1250}"
        );
        let json = view.to_json();
        assert_eq!(json["type"], "shopmesh.order.created");
        assert_eq!(json["data"]["total_cents"], 1250);
        assert_eq!(json["time"], "2025-03-01T10:00:00.123Z");
    }

    #[test]
    fn missing_headers_fall_back_to_the_subject() {
        let view = EventView::from_parts("events", "events.payment_failed.k9", |_| None, b"oops");
        assert_eq!(view.topic, "payment_failed");
        assert_eq!(view.key, "k9");
        assert_eq!(view.data, Payload::Text("oops".into()));
        assert_eq!(
            view.render_line(),
            "- payment_failed key=k9 id=- trace=- oops"
        );
    }

    #[test]
    fn trace_ids_are_validated() {
        assert_eq!(
            trace_id(TRACEPARENT),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id(""), None);
    }
}
