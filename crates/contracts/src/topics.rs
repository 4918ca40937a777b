//! Kafka topics of the order saga (the workshop's names, plus the saga's ends and dead letters).

pub const ORDER_CREATED: &str = "order_created";
pub const PAYMENT_SUCCESS: &str = "payment_success";
pub const PAYMENT_FAILED: &str = "payment_failed";
pub const ORDER_CONFIRMED: &str = "order_confirmed";
pub const ORDER_CANCELLED: &str = "order_cancelled";
pub const NOTIFICATION_FAILED: &str = "notification_failed";

/// Every saga topic, created at startup (the Kafka-API broker used natively does not
/// auto-create topics).
pub const ALL: [&str; 6] = [
    ORDER_CREATED,
    PAYMENT_SUCCESS,
    PAYMENT_FAILED,
    ORDER_CONFIRMED,
    ORDER_CANCELLED,
    NOTIFICATION_FAILED,
];

/// Partitions per saga topic: enough to show per-key ordering across consumers.
pub const PARTITIONS: i32 = 3;

/// The JetStream stream the bridge mirrors every topic into.
pub const EVENTS_STREAM: &str = "EVENTS";

/// `events.<topic>.<key>`: the subject the bridge publishes a Kafka record on.
pub fn event_subject(topic: &str, key: &str) -> String {
    format!("events.{topic}.{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_design() {
        assert_eq!(
            event_subject(ORDER_CREATED, "42"),
            "events.order_created.42"
        );
        assert_eq!(ALL.len(), 6);
    }
}
