//! Subject names: `<prefix>.<topic>.<key>`, each part one NATS subject token.
//!
//! A Kafka key is arbitrary bytes, a subject token is not: `.` would add tokens, `*` and `>`
//! are wildcards, whitespace ends the subject. So the key is sanitised into one token for
//! routing (`nats sub 'events.order_created.*'` keeps working for any key), and the exact key
//! travels in the `ce_partitionkey` header, where nothing is lost.

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

/// The last token of a subject: the key of a record forwarded from NATS to Kafka.
pub fn last_token(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

/// Whether `subject` is a literal subject (no wildcards) made of non-empty tokens, as a
/// subject prefix must be.
pub fn is_literal_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.contains(|c: char| c.is_whitespace() || c.is_control())
        })
}

/// Whether `filter` is a valid subscription subject (wildcards allowed, `>` only last).
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
            event_subject("events", "order_created", Some(b"42")),
            contracts::topics::event_subject("order_created", "42")
        );
        assert_eq!(
            event_subject("t.events", "my.topic", Some(b"a.b")),
            "t.events.my_topic.a_b"
        );
        assert_eq!(last_token("in.orders.k1"), "k1");
        assert_eq!(last_token("k"), "k");
    }

    #[test]
    fn prefixes_and_filters_are_checked() {
        assert!(is_literal_subject("events"));
        assert!(is_literal_subject("t1.events"));
        assert!(!is_literal_subject("events.*"));
        assert!(!is_literal_subject("events..x"));
        assert!(!is_literal_subject("ev ents"));
        assert!(!is_literal_subject(""));
        assert!(is_valid_filter("in.orders.*"));
        assert!(is_valid_filter("in.>"));
        assert!(!is_valid_filter("in.>.x"));
        assert!(!is_valid_filter("in..x"));
    }
}
