//! Where saga events live in NATS: `<prefix>.<topic>.<key>`, each part one subject token,
//! as the bridge publishes them and notification-service, meshctl and smoke read them.
//!
//! A Kafka key is arbitrary bytes, a subject token is not: `.` would add tokens, `*` and `>`
//! are wildcards, whitespace ends the subject. So the key is sanitised into one token for
//! routing (`nats sub 'events.order_created.*'` keeps working for any key), and the exact key
//! travels in the `ce_partitionkey` header, where nothing is lost.

/// The default first token of every event subject (`events.>`).
pub const EVENTS_SUBJECT_PREFIX: &str = "events";

/// How long the events stream remembers message ids to drop a replayed mirror (JetStream's
/// duplicate window), whoever creates the stream first: the bridge or notification-service.
pub const EVENTS_DUPLICATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

/// The events stream's subjects: everything under `prefix`.
pub fn stream_subjects(prefix: &str) -> Vec<String> {
    vec![format!("{prefix}.>")]
}

/// The header a mirrored record carries its Kafka topic in.
pub const KAFKA_TOPIC_HEADER: &str = "Kafka-Topic";

/// Tokens longer than this are cut: a subject has to fit in the protocol's control line, and a
/// key this long is only useful through its header anyway.
pub const MAX_TOKEN_CHARS: usize = 256;

/// The token for an empty or missing key.
pub const EMPTY_TOKEN: &str = "_";

/// `raw` as one subject token: characters outside `[A-Za-z0-9_-]` become `_`, an empty string
/// becomes `_`.
pub fn token(raw: &str) -> String {
    let token: String = raw
        .chars()
        .take(MAX_TOKEN_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if token.is_empty() {
        EMPTY_TOKEN.to_owned()
    } else {
        token
    }
}

/// The token for a Kafka key (bytes that are not UTF-8 are replaced, then sanitised).
pub fn key_token(key: Option<&[u8]>) -> String {
    match key {
        Some(bytes) => token(&String::from_utf8_lossy(bytes)),
        None => EMPTY_TOKEN.to_owned(),
    }
}

/// `<prefix>.<topic>.<key>`: where the bridge publishes a record of `topic` with `key`.
pub fn event_subject(prefix: &str, topic: &str, key: Option<&[u8]>) -> String {
    format!("{prefix}.{}.{}", token(topic), key_token(key))
}

/// Whether `filter` is a valid subscription subject: non-empty tokens without whitespace,
/// wildcards allowed, `>` only last. nats-server answers anything else with an error the
/// client does not report back: a subscription to it would wait forever, silently.
pub fn is_valid_filter(filter: &str) -> bool {
    let tokens: Vec<&str> = filter.split('.').collect();
    !filter.is_empty()
        && tokens.iter().enumerate().all(|(i, token)| {
            !token.is_empty()
                && !token.contains(|c: char| c.is_whitespace() || c.is_control())
                && (*token != ">" || i + 1 == tokens.len())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_one_token() {
        assert_eq!(token("order-42_x"), "order-42_x");
        assert_eq!(token("a.b c*>"), "a_b_c__");
        assert_eq!(token("clé"), "cl_");
        assert_eq!(token(""), "_");
        assert_eq!(key_token(None), "_");
        assert_eq!(key_token(Some(b"")), "_");
        assert_eq!(key_token(Some(&[0xff, b'k'])), "_k");
        assert_eq!(token(&"x".repeat(1000)).len(), MAX_TOKEN_CHARS);
    }

    #[test]
    fn subjects_follow_the_design() {
        assert_eq!(
            event_subject(
                EVENTS_SUBJECT_PREFIX,
                crate::topics::ORDER_CREATED,
                Some(b"42")
            ),
            "events.order_created.42"
        );
        assert_eq!(
            event_subject("t.events", "my.topic", Some(b"a.b")),
            "t.events.my_topic.a_b"
        );
    }
}
