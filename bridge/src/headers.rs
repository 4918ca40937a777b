//! Headers across the hop, in both directions.
//!
//! Kafka → NATS: every Kafka header is carried over (repeated keys appended in order), then
//! the bridge adds what a NATS reader needs to know where the record came from and what
//! JetStream needs to deduplicate replays. A Kafka header is bytes, a NATS header is a line of
//! text, so the few that do not fit are carried in a reversible form rather than dropped:
//! names lose the characters NATS refuses (`:`, controls, non-ASCII → `_`), values that are not
//! one line of UTF-8 are hex-encoded and their names listed in `Kafka-Hex-Headers`. Kafka
//! headers named `Nats-*` would steer JetStream (expected sequence, message id...), so they
//! travel as `Kafka-Nats-*`.
//!
//! NATS → Kafka (the reverse mappings): every NATS header becomes a Kafka header.

use std::str::FromStr;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, Timestamp};

/// JetStream's deduplication id: `<topic>/<partition>/<offset>`.
pub const MSG_ID: &str = mesh::jetstream::MSG_ID;
/// The CloudEvents partitioning extension: the exact Kafka key (see `mesh::Event::from_nats`).
pub const PARTITION_KEY: &str = mesh::event::PARTITION_KEY;
pub const KAFKA_TOPIC: &str = contracts::subjects::KAFKA_TOPIC_HEADER;
pub const KAFKA_PARTITION: &str = "Kafka-Partition";
pub const KAFKA_OFFSET: &str = "Kafka-Offset";
/// The record's timestamp in milliseconds since the epoch, as the origin set it.
pub const KAFKA_TIMESTAMP: &str = "Kafka-Timestamp";
/// `CreateTime` or `LogAppendTime`.
pub const KAFKA_TIMESTAMP_TYPE: &str = "Kafka-Timestamp-Type";
/// The key in hex, when it is not one line of UTF-8 (then `ce_partitionkey` is not set).
pub const KAFKA_KEY_HEX: &str = "Kafka-Key-Hex";
/// Names of the headers whose values were hex-encoded, one value per header.
pub const KAFKA_HEX_HEADERS: &str = "Kafka-Hex-Headers";

/// The deduplication id of a record: unique per record, identical on every replay.
pub fn msg_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

/// The NATS headers for a Kafka record.
pub fn for_nats<M: Message>(record: &M) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut has_partition_key = false;
    if let Some(kafka) = record.headers() {
        for header in kafka.iter() {
            has_partition_key |= header.key == PARTITION_KEY;
            append_kafka_header(&mut headers, header.key, header.value);
        }
    }
    let topic = record.topic();
    let (partition, offset) = (record.partition(), record.offset());
    headers.insert(MSG_ID, msg_id(topic, partition, offset));
    headers.insert(KAFKA_TOPIC, topic);
    headers.insert(KAFKA_PARTITION, partition.to_string());
    headers.insert(KAFKA_OFFSET, offset.to_string());
    if let Some((millis, kind)) = timestamp(record.timestamp()) {
        headers.insert(KAFKA_TIMESTAMP, millis.to_string());
        headers.insert(KAFKA_TIMESTAMP_TYPE, kind);
    }
    if let Some(key) = record.key() {
        match text_value(key) {
            Some(value) if !has_partition_key => headers.insert(PARTITION_KEY, value),
            Some(_) => {}
            None => headers.insert(KAFKA_KEY_HEX, hex(key)),
        }
    }
    headers
}

fn timestamp(timestamp: Timestamp) -> Option<(i64, &'static str)> {
    let kind = match timestamp {
        Timestamp::NotAvailable => return None,
        Timestamp::CreateTime(_) => "CreateTime",
        Timestamp::LogAppendTime(_) => "LogAppendTime",
    };
    timestamp.to_millis().map(|millis| (millis, kind))
}

fn append_kafka_header(headers: &mut HeaderMap, name: &str, value: Option<&[u8]>) {
    let name = nats_header_name(name);
    let Ok(header_name) = HeaderName::from_str(&name) else {
        // Unreachable: `nats_header_name` only yields names NATS accepts.
        tracing::error!(%name, "Header name refused by NATS.");
        return;
    };
    let value = value.unwrap_or_default();
    match text_value(value) {
        Some(text) => headers.append(header_name, text),
        None => {
            headers.append(header_name, HeaderValue::from(hex(value)));
            headers.append(KAFKA_HEX_HEADERS, HeaderValue::from(name));
        }
    }
}

/// A Kafka header name as NATS accepts it.
fn nats_header_name(name: &str) -> String {
    let mut cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        cleaned.push('_');
    }
    if cleaned
        .get(..5)
        .is_some_and(|start| start.eq_ignore_ascii_case("nats-"))
    {
        cleaned.insert_str(0, "Kafka-");
    }
    cleaned
}

/// `bytes` as a NATS header value, if they are one line of UTF-8.
fn text_value(bytes: &[u8]) -> Option<HeaderValue> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| HeaderValue::from_str(text).ok())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The Kafka headers for a NATS message: every value of every header.
pub fn for_kafka(nats: Option<&HeaderMap>) -> OwnedHeaders {
    let mut kafka = OwnedHeaders::new();
    if let Some(nats) = nats {
        for (name, values) in nats.iter() {
            let name: &str = name.as_ref();
            for value in values {
                kafka = kafka.insert(Header {
                    key: name,
                    value: Some(value.as_str()),
                });
            }
        }
    }
    kafka
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedMessage;

    fn record(key: Option<&[u8]>, headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            key.map(<[u8]>::to_vec),
            "order_created".into(),
            Timestamp::CreateTime(1_700_000_000_123),
            2,
            41,
            Some(headers),
        )
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .map(|v| v.as_str().to_owned())
            .collect()
    }

    #[test]
    fn every_header_and_the_origin_cross() {
        let kafka = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("abc"),
            })
            .insert(Header {
                key: "h",
                value: Some("1"),
            })
            .insert(Header {
                key: "h",
                value: Some("2"),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            });
        let headers = for_nats(&record(Some(b"order-42"), kafka));
        assert_eq!(values(&headers, "ce_id"), ["abc"]);
        assert_eq!(values(&headers, "h"), ["1", "2"]);
        assert_eq!(values(&headers, "empty"), [""]);
        assert_eq!(values(&headers, MSG_ID), ["order_created/2/41"]);
        assert_eq!(values(&headers, KAFKA_TOPIC), ["order_created"]);
        assert_eq!(values(&headers, KAFKA_PARTITION), ["2"]);
        assert_eq!(values(&headers, KAFKA_OFFSET), ["41"]);
        assert_eq!(values(&headers, KAFKA_TIMESTAMP), ["1700000000123"]);
        assert_eq!(values(&headers, KAFKA_TIMESTAMP_TYPE), ["CreateTime"]);
        assert_eq!(values(&headers, PARTITION_KEY), ["order-42"]);
    }

    #[test]
    fn an_existing_partition_key_is_kept() {
        let kafka = OwnedHeaders::new().insert(Header {
            key: PARTITION_KEY,
            value: Some("from-header"),
        });
        let headers = for_nats(&record(Some(b"from-key"), kafka));
        assert_eq!(values(&headers, PARTITION_KEY), ["from-header"]);
    }

    #[test]
    fn what_nats_cannot_carry_verbatim_is_encoded_not_dropped() {
        let kafka = OwnedHeaders::new()
            .insert(Header {
                key: "bin",
                value: Some(&[0u8, 0xff][..]),
            })
            .insert(Header {
                key: "two\nlines",
                value: Some("a\r\nb"),
            })
            .insert(Header {
                key: "Nats-Msg-Id",
                value: Some("spoofed"),
            });
        let headers = for_nats(&record(Some(&[0xff, 0xfe]), kafka));
        assert_eq!(values(&headers, "bin"), ["00ff"]);
        assert_eq!(values(&headers, "two_lines"), ["610d0a62"]);
        assert_eq!(values(&headers, KAFKA_HEX_HEADERS), ["bin", "two_lines"]);
        assert_eq!(values(&headers, "Kafka-Nats-Msg-Id"), ["spoofed"]);
        assert_eq!(values(&headers, MSG_ID), ["order_created/2/41"]);
        assert_eq!(values(&headers, KAFKA_KEY_HEX), ["fffe"]);
        assert!(headers.get(PARTITION_KEY).is_none());
    }

    #[test]
    fn nats_headers_become_kafka_headers() {
        let mut nats = HeaderMap::new();
        nats.append("h", "1");
        nats.append("h", "2");
        nats.insert("ce_type", "t");
        let kafka = for_kafka(Some(&nats));
        let mut pairs: Vec<(String, String)> = kafka
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("ce_type".to_owned(), "t".to_owned()),
                ("h".to_owned(), "1".to_owned()),
                ("h".to_owned(), "2".to_owned()),
            ]
        );
        assert_eq!(for_kafka(None).count(), 0);
    }
}
