//! Readiness: the broker answers a metadata request.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kit::ReadinessCheck;
use rdkafka::producer::{BaseProducer, Producer};

use super::KafkaSettings;

/// Ready when the Kafka API answers a metadata request within the timeout.
#[derive(Clone)]
pub struct KafkaCheck {
    client: Arc<BaseProducer>,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCheck")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KafkaCheck {
    pub fn new(
        settings: &KafkaSettings,
        timeout: Duration,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            client: Arc::new(settings.client_config().create()?),
            timeout,
        })
    }
}

impl ReadinessCheck for KafkaCheck {
    fn name(&self) -> &str {
        "kafka"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            // fetch_metadata blocks its thread until the broker answers or the timeout passes.
            tokio::task::spawn_blocking(move || {
                client
                    .client()
                    .fetch_metadata(None, timeout)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}
