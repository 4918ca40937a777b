//! Where notifications go: a [`Sender`]. The service ships two, [`LogSender`] (the default)
//! and [`WebhookSender`] (`NOTIFY_WEBHOOK_URL`); tests inject their own.

use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::store::Notification;

/// Delivers one notification. `Err` carries a short reason, stored as `last_error`; the
/// caller retries with backoff and finally parks the notification as a dead letter.
pub trait Sender: Send + Sync + 'static {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), String>>;
}

/// Writes each notification to the log with structured fields and always succeeds; the
/// row in Postgres is the record of what was sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSender;

impl Sender for LogSender {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        tracing::info!(
            event_id = %n.event_id,
            event_type = %n.event_type,
            key = %n.key,
            user = n.user_hint.as_deref().unwrap_or("-"),
            attempt = n.attempts,
            subject = %n.subject,
            body = %n.body,
            "Notification sent."
        );
        Box::pin(std::future::ready(Ok::<(), String>(())))
    }
}

/// POSTs each notification as JSON to a URL; any answer but 2xx is a failure.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
}

/// The JSON a webhook receives.
#[derive(Debug, serde::Serialize)]
struct WebhookBody<'a> {
    event_id: Uuid,
    event_type: &'a str,
    key: &'a str,
    user_hint: Option<&'a str>,
    subject: &'a str,
    body: &'a str,
    attempt: i32,
}

impl WebhookSender {
    /// How long one POST may take, connection included.
    pub const TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(url: impl Into<String>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(Self::TIMEOUT).build()?,
            url: url.into(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Sender for WebhookSender {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let body = WebhookBody {
                event_id: n.event_id,
                event_type: &n.event_type,
                key: &n.key,
                user_hint: n.user_hint.as_deref(),
                subject: &n.subject,
                body: &n.body,
                attempt: n.attempts,
            };
            let sent = self.client.post(&self.url).json(&body).send().await;
            match sent {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("webhook answered {}", response.status())),
                Err(error) => Err(format!("webhook request failed: {error}")),
            }
        })
    }
}
