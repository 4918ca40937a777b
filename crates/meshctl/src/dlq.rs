//! `meshctl dlq list|replay`: notification-service's dead letters, reached over the mesh
//! (`GET /notifications?status=DEAD`, `POST /notifications/{event_id}/replay`).

use anyhow::{Context, bail};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use mesh::Channel;
use serde::Deserialize;
use tower::ServiceExt;
use uuid::Uuid;

/// A notification as notification-service shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Notification {
    pub event_id: String,
    pub event_type: String,
    pub key: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub updated_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Page {
    items: Vec<Notification>,
}

pub async fn list(client: async_nats::Client, service: &str) -> anyhow::Result<()> {
    let channel = Channel::nats(client, service);
    let body = call(channel, Method::GET, "/notifications?status=DEAD").await?;
    let page: Page = serde_json::from_slice(&body)
        .with_context(|| format!("{service} answered something other than a notification list"))?;
    for line in render_list(&page.items) {
        println!("{line}");
    }
    Ok(())
}

pub async fn replay(
    client: async_nats::Client,
    service: &str,
    event_id: &str,
) -> anyhow::Result<()> {
    let id = Uuid::parse_str(event_id.trim())
        .with_context(|| format!("{event_id:?} is not an event id (a UUID)"))?;
    let channel = Channel::nats(client, service);
    let path = format!("/notifications/{id}/replay");
    let body = call(channel, Method::POST, &path).await?;
    let revived: Notification = serde_json::from_slice(&body)
        .with_context(|| format!("{service} answered something other than a notification"))?;
    println!("{}", render_replayed(&revived));
    Ok(())
}

/// Sends one request; the body of a 2xx answer, the contract's error message otherwise.
async fn call(channel: Channel, method: Method, path: &str) -> anyhow::Result<Vec<u8>> {
    let service = channel.service().to_owned();
    let request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::ACCEPT, "application/json")
        .body(String::new())
        .with_context(|| format!("building {method} {path}"))?;
    let response = channel
        .oneshot(request)
        .await
        .with_context(|| format!("{method} {path} on {service}"))?;
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(never) => match never {},
    };
    if !status.is_success() {
        bail!(
            "{method} {path} on {service} failed: {}",
            error_message(status, &body)
        );
    }
    Ok(body)
}

/// `404 Not Found: no notification for event ... (not_found)` from the contract's error body
/// `{"error": {"code", "message"}}`, or the status and raw text when the body is not that.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match (field("message"), field("code")) {
        (Some(message), Some(code)) => format!("{status}: {message} ({code})"),
        (Some(message), None) => format!("{status}: {message}"),
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {text}")
            }
        }
    }
}

/// The most `GET /notifications` answers (notification-service's `LIST_LIMIT`): a full page
/// means there may be more.
const SERVICE_LIST_LIMIT: usize = 100;

pub fn render_list(items: &[Notification]) -> Vec<String> {
    if items.is_empty() {
        return vec!["no dead letters".to_owned()];
    }
    let header = if items.len() >= SERVICE_LIST_LIMIT {
        format!(
            "the newest {} dead letters (the service lists no more; older ones may be parked too)",
            items.len()
        )
    } else {
        format!(
            "{} dead letter{}",
            items.len(),
            if items.len() == 1 { "" } else { "s" }
        )
    };
    let mut lines = vec![header];
    lines.extend(items.iter().map(|n| {
        format!(
            "{}  {:<28} key={} attempts={} parked={} last_error={}",
            n.event_id,
            n.event_type,
            n.key,
            n.attempts,
            n.updated_at.as_deref().unwrap_or("-"),
            n.last_error.as_deref().unwrap_or("-")
        )
    }));
    lines
}

pub fn render_replayed(n: &Notification) -> String {
    format!(
        "replayed {} ({}, key {}): now {}, delivered again in the background",
        n.event_id, n.event_type, n.key, n.status
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: &str = r#"{"items":[{"event_id":"0190c3c4-0000-7000-8000-000000000001",
        "event_type":"shopmesh.order.confirmed","key":"order-1","subject":"Order confirmed",
        "body":"...","user_hint":null,"traceparent":null,"status":"DEAD","attempts":5,
        "last_error":"smtp down","created_at":"2025-03-01T10:00:00Z",
        "updated_at":"2025-03-01T10:01:00Z"}]}"#;

    #[test]
    fn dead_letters_read_one_per_line() {
        let page: Page = serde_json::from_str(DEAD).expect("page");
        let lines = render_list(&page.items);
        assert_eq!(lines[0], "1 dead letter");
        assert!(
            lines[1].starts_with("0190c3c4-0000-7000-8000-000000000001  shopmesh.order.confirmed"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with(
                "key=order-1 attempts=5 parked=2025-03-01T10:01:00Z last_error=smtp down"
            ),
            "{}",
            lines[1]
        );
        assert_eq!(render_list(&[]), ["no dead letters"]);
        let full = vec![page.items[0].clone(); SERVICE_LIST_LIMIT];
        assert!(
            render_list(&full)[0].starts_with("the newest 100 dead letters"),
            "a full page does not claim to be all of them"
        );
    }

    #[test]
    fn replay_answers_read_well() {
        let n = Notification {
            event_id: "e1".into(),
            event_type: "shopmesh.order.cancelled".into(),
            key: "o1".into(),
            status: "PENDING".into(),
            ..Default::default()
        };
        assert_eq!(
            render_replayed(&n),
            "replayed e1 (shopmesh.order.cancelled, key o1): now PENDING, delivered again in \
             the background"
        );
    }

    #[test]
    fn errors_carry_the_contract_message() {
        let body = br#"{"error":{"code":"not_dead","message":"only DEAD ones can be replayed"}}"#;
        assert_eq!(
            error_message(StatusCode::CONFLICT, body),
            "409 Conflict: only DEAD ones can be replayed (not_dead)"
        );
        assert_eq!(
            error_message(StatusCode::SERVICE_UNAVAILABLE, b"gone"),
            "503 Service Unavailable: gone"
        );
        assert_eq!(error_message(StatusCode::NOT_FOUND, b""), "404 Not Found");
    }
}
