//! The Prometheus registry each process exposes on `/metrics`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, Registry, TextEncoder};

/// A cheaply cloneable handle on the process's registry.
///
/// Crates register their collectors here (the middleware's request metrics, the bridge's lag,
/// the cache's hit ratio) so that one scrape shows everything the process knows.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry whose metrics all carry `service="<name>"`.
    pub fn new(service: &str) -> Self {
        let labels = std::iter::once(("service".to_owned(), service.to_owned())).collect();
        let registry = Registry::new_custom(None, Some(labels)).unwrap_or_else(|_| Registry::new());
        Self { registry }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a collector; registering the same metric twice is not an error, so
    /// layers built more than once in a process (tests do that) share the first one.
    pub fn register<C>(&self, collector: C) -> C
    where
        C: prometheus::core::Collector + Clone + 'static,
    {
        match self.registry.register(Box::new(collector.clone())) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => collector,
            Err(error) => {
                tracing::warn!(%error, "Metric not registered.");
                collector
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::warn!(%error, "Metrics encoding failed.");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    pub fn response(&self) -> Response {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            self.render(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    #[test]
    fn renders_registered_metrics_with_the_service_label() {
        let metrics = Metrics::new("demo");
        let counter = metrics
            .register(IntCounter::new("demo_things_total", "Things done.").expect("valid metric"));
        counter.inc_by(3);
        let text = metrics.render();
        assert!(
            text.contains("demo_things_total{service=\"demo\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn registering_twice_keeps_one_series() {
        let metrics = Metrics::new("demo");
        let first = IntCounter::new("twice_total", "Twice.").expect("valid metric");
        metrics.register(first.clone()).inc();
        metrics.register(IntCounter::new("twice_total", "Twice.").expect("valid metric"));
        assert_eq!(metrics.render().matches("twice_total{").count(), 1);
    }
}
