//! One event envelope for Kafka and NATS: CloudEvents 1.0 in binary mode.
//!
//! The attributes travel as headers (`ce_specversion`, `ce_id`, `ce_type`, `ce_source`,
//! `ce_time`, `content-type`, and `traceparent` when the event was emitted inside a trace);
//! the payload is the JSON data itself, so `kcat` and `nats sub` show readable events. The
//! aggregate id is the Kafka key, and on NATS the `ce_partitionkey` header (the CloudEvents
//! partitioning extension), so the same event reads the same from either side.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub const SPECVERSION: &str = "ce_specversion";
pub const ID: &str = "ce_id";
pub const TYPE: &str = "ce_type";
pub const SOURCE: &str = "ce_source";
pub const TIME: &str = "ce_time";
pub const PARTITION_KEY: &str = "ce_partitionkey";
pub const CONTENT_TYPE: &str = "content-type";
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event has no {0} header")]
    Missing(&'static str),
    #[error("event header {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("event data is not the expected JSON: {0}")]
    Data(#[from] serde_json::Error),
}

/// An event as the saga emits and consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `ce_id`: unique per event; the inbox deduplicates on it.
    pub id: Uuid,
    /// `ce_type`, e.g. `shopmesh.order.created`.
    pub kind: String,
    /// `ce_source`, e.g. `/order-service`.
    pub source: String,
    /// `ce_time`.
    pub time: DateTime<Utc>,
    /// The aggregate id: Kafka key, NATS `ce_partitionkey`.
    pub key: String,
    /// W3C trace context of the emitter, if any.
    pub traceparent: Option<String>,
    /// JSON.
    pub data: Bytes,
}

impl Event {
    pub fn new<T: Serialize>(
        kind: impl Into<String>,
        source: impl Into<String>,
        key: impl Into<String>,
        data: &T,
    ) -> Result<Self, EventError> {
        Ok(Self {
            id: Uuid::now_v7(),
            kind: kind.into(),
            source: source.into(),
            // Microseconds: what Postgres stores, so an event read back from the outbox is equal.
            time: truncate_to_micros(Utc::now()),
            key: key.into(),
            traceparent: None,
            data: Bytes::from(serde_json::to_vec(data)?),
        })
    }

    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, EventError> {
        Ok(serde_json::from_slice(&self.data)?)
    }

    /// The headers that carry the attributes (the key is not among them).
    pub fn attribute_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (SPECVERSION, "1.0".to_owned()),
            (ID, self.id.to_string()),
            (TYPE, self.kind.clone()),
            (SOURCE, self.source.clone()),
            (TIME, self.time.to_rfc3339_opts(SecondsFormat::Micros, true)),
            (CONTENT_TYPE, "application/json".to_owned()),
        ];
        if let Some(traceparent) = &self.traceparent {
            headers.push((TRACEPARENT, traceparent.clone()));
        }
        headers
    }

    /// Rebuilds an event from its headers (looked up by name), key and payload.
    pub fn from_parts(
        header: impl Fn(&str) -> Option<String>,
        key: String,
        data: Bytes,
    ) -> Result<Self, EventError> {
        let required = |name: &'static str| header(name).ok_or(EventError::Missing(name));
        let id = required(ID)?;
        let id = Uuid::parse_str(&id).map_err(|e| EventError::Invalid {
            name: ID,
            reason: e.to_string(),
        })?;
        let time = required(TIME)?;
        let time = DateTime::parse_from_rfc3339(&time)
            .map_err(|e| EventError::Invalid {
                name: TIME,
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        Ok(Self {
            id,
            kind: required(TYPE)?,
            source: required(SOURCE)?,
            time,
            key,
            traceparent: header(TRACEPARENT),
            data,
        })
    }

    /// As NATS headers, with the key in `ce_partitionkey`.
    pub fn nats_headers(&self) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in self.attribute_headers() {
            headers.insert(name, value.as_str());
        }
        headers.insert(PARTITION_KEY, self.key.as_str());
        headers
    }

    /// Reads an event from a NATS message (core or JetStream).
    pub fn from_nats(message: &async_nats::Message) -> Result<Self, EventError> {
        let headers = message.headers.as_ref().ok_or(EventError::Missing(ID))?;
        let lookup = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        let key = lookup(PARTITION_KEY).ok_or(EventError::Missing(PARTITION_KEY))?;
        Self::from_parts(lookup, key, message.payload.clone())
    }
}

fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    struct OrderCreated {
        order_id: String,
        total_cents: i64,
    }

    fn sample() -> Event {
        Event::new(
            "shopmesh.order.created",
            "/order-service",
            "order-1",
            &OrderCreated {
                order_id: "order-1".into(),
                total_cents: 1250,
            },
        )
        .expect("serialises")
        .with_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ))
    }

    #[test]
    fn headers_round_trip() {
        let event = sample();
        let headers: HashMap<_, _> = event.attribute_headers().into_iter().collect();
        assert_eq!(headers[SPECVERSION], "1.0");
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        let back = Event::from_parts(
            |name| headers.get(name).cloned(),
            event.key.clone(),
            event.data.clone(),
        )
        .expect("parses");
        assert_eq!(back, event);
        let data: OrderCreated = back.data_as().expect("data");
        assert_eq!(data.total_cents, 1250);
    }

    #[test]
    fn the_payload_is_plain_json() {
        let event = sample();
        let text = std::str::from_utf8(&event.data).expect("utf-8");
        assert_eq!(text, r#"{"order_id":"order-1","total_cents":1250}"#);
    }

    #[test]
    fn missing_or_bad_attributes_are_named() {
        let err = Event::from_parts(|_| None, "k".into(), Bytes::new()).expect_err("empty");
        assert!(matches!(err, EventError::Missing(ID)));
        let err = Event::from_parts(
            |name| match name {
                ID => Some("not-a-uuid".into()),
                _ => Some("x".into()),
            },
            "k".into(),
            Bytes::new(),
        )
        .expect_err("bad id");
        assert!(matches!(err, EventError::Invalid { name: ID, .. }));
    }
}
