//! Subject names: `<prefix>.<topic>.<key>` (built by `contracts::subjects`, shared with the
//! services and tools that read the events), and the checks on configured prefixes and
//! filters.

pub use contracts::subjects::{event_subject, is_valid_filter};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_tokens_are_keys() {
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
