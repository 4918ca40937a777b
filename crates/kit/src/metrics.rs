//! The Prometheus registry each process exposes on `/metrics`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{Encoder, Registry, TextEncoder};

/// A cheaply cloneable handle on the process's registry.
///
/// Crates register their collectors here (the middleware's request metrics, the bridge's lag,
/// the cache's hit ratio) so that one scrape shows everything the process knows.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Every collector registered through [`Metrics::register`], by metric name, so that a
    /// second registration of the same metric gets the live collector back.
    collectors: Arc<Mutex<HashMap<String, Box<dyn Any + Send>>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry whose metrics all carry `service="<name>"`.
    pub fn new(service: &str) -> Self {
        let labels = std::iter::once(("service".to_owned(), service.to_owned())).collect();
        let registry = Registry::new_custom(None, Some(labels)).unwrap_or_else(|_| Registry::new());
        Self {
            registry,
            collectors: Arc::default(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a collector. Registering the same metric again (several breakers, a layer
    /// built twice) returns the collector registered first, so every user updates the one
    /// series that is exported.
    pub fn register<C>(&self, collector: C) -> C
    where
        C: prometheus::core::Collector + Clone + Send + 'static,
    {
        let Some(name) = collector.desc().first().map(|d| d.fq_name.clone()) else {
            return collector;
        };
        let mut collectors = self
            .collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = collectors.get(&name).and_then(|c| c.downcast_ref::<C>()) {
            return existing.clone();
        }
        if let Err(error) = self.registry.register(Box::new(collector.clone())) {
            tracing::warn!(%error, metric = %name, "Metric not registered.");
            return collector;
        }
        collectors.insert(name, Box::new(collector.clone()));
        collector
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
    fn registering_twice_shares_the_live_collector() {
        let metrics = Metrics::new("demo");
        metrics
            .register(IntCounter::new("twice_total", "Twice.").expect("valid metric"))
            .inc();
        let second =
            metrics.register(IntCounter::new("twice_total", "Twice.").expect("valid metric"));
        second.inc();
        let text = metrics.render();
        assert_eq!(text.matches("twice_total{").count(), 1);
        assert!(text.contains("twice_total{service=\"demo\"} 2"), "{text}");
    }
}
