//! The environment a service under test starts from, so every test and bench starts its
//! services the same way: any free port, the local NATS, its own mesh name, a short drain.

/// Variables for `kit::Env::from_pairs`; a later [`set`](Self::set) of the same name wins.
#[derive(Debug, Clone)]
pub struct ServiceEnv {
    vars: Vec<(String, String)>,
}

impl ServiceEnv {
    /// `HTTP_ADDR` on any free port, `NATS_URL`, `SERVICE_NAME` = `service_name` (the mesh
    /// name, so give each test its own: [`crate::unique_name`]) and a one-second
    /// `SHUTDOWN_GRACE`.
    pub fn new(service_name: &str) -> Self {
        Self { vars: Vec::new() }
            .set("HTTP_ADDR", "127.0.0.1:0")
            .set("NATS_URL", crate::nats_url())
            .set("SERVICE_NAME", service_name)
            .set("SHUTDOWN_GRACE", "1s")
    }

    /// `DATABASE_URL`.
    pub fn database(self, url: &str) -> Self {
        self.set("DATABASE_URL", url)
    }

    /// `KAFKA_BROKERS` and the test's own `TOPIC_PREFIX`.
    pub fn kafka(self, topic_prefix: &str) -> Self {
        self.set("KAFKA_BROKERS", crate::kafka_brokers())
            .set("TOPIC_PREFIX", topic_prefix)
    }

    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.push((name.to_owned(), value.into()));
        self
    }

    /// Each pair of `overrides`, after what is already set.
    pub fn set_all<'a>(self, overrides: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        overrides
            .into_iter()
            .fold(self, |env, (name, value)| env.set(name, value))
    }
}

/// So `kit::Env::from_pairs(service_env)` reads it directly (testkit cannot name kit's
/// `Env`: kit's own tests use testkit).
impl IntoIterator for ServiceEnv {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.vars.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_values_follow_earlier_ones() {
        let pairs = ServiceEnv::new("svc_1")
            .database("postgres://db")
            .kafka("t_1_")
            .set_all([("SHUTDOWN_GRACE", "5s")])
            .into_iter()
            .collect::<Vec<_>>();
        let last = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(last("HTTP_ADDR"), Some("127.0.0.1:0"));
        assert_eq!(last("SERVICE_NAME"), Some("svc_1"));
        assert_eq!(last("DATABASE_URL"), Some("postgres://db"));
        assert_eq!(last("TOPIC_PREFIX"), Some("t_1_"));
        assert_eq!(last("SHUTDOWN_GRACE"), Some("5s"));
    }
}
