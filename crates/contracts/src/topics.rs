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

/// The saga's topic names, with an optional prefix so that tests (and several stacks on one
/// broker) each get their own topics: `Topics::new("t1_").order_created == "t1_order_created"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub prefix: String,
    pub order_created: String,
    pub payment_success: String,
    pub payment_failed: String,
    pub order_confirmed: String,
    pub order_cancelled: String,
    pub notification_failed: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        let name = |topic: &str| format!("{prefix}{topic}");
        Self {
            prefix: prefix.to_owned(),
            order_created: name(ORDER_CREATED),
            payment_success: name(PAYMENT_SUCCESS),
            payment_failed: name(PAYMENT_FAILED),
            order_confirmed: name(ORDER_CONFIRMED),
            order_cancelled: name(ORDER_CANCELLED),
            notification_failed: name(NOTIFICATION_FAILED),
        }
    }

    pub fn all(&self) -> [&str; 6] {
        [
            &self.order_created,
            &self.payment_success,
            &self.payment_failed,
            &self.order_confirmed,
            &self.order_cancelled,
            &self.notification_failed,
        ]
    }

    /// A consumer group name in the same namespace as the topics.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::new("")
    }
}

/// The JetStream stream the bridge mirrors every topic into.
pub const EVENTS_STREAM: &str = "EVENTS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_saga_topic_is_listed() {
        assert_eq!(ALL.len(), 6);
    }

    #[test]
    fn prefixed_topics_and_groups() {
        let topics = Topics::new("t1_");
        assert_eq!(topics.order_created, "t1_order_created");
        assert_eq!(topics.all().len(), 6);
        assert_eq!(topics.group("payment-service"), "t1_payment-service");
        assert_eq!(Topics::default().all(), ALL);
    }
}
