//! Operations on notifications, for `meshctl dlq` over the mesh. No authentication, so the
//! port (8084) must stay private to the deployment:
//! `GET /notifications?status=DEAD` and `POST /notifications/{event_id}/replay`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use kit::api::ApiError;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::store::{DEAD, Notification, STATUSES, Store};

/// `GET /notifications` answers at most this many, newest first.
pub const LIST_LIMIT: i64 = 100;

#[derive(Clone)]
struct AppState {
    store: Store,
    /// Replayed notifications go to the delivery queue.
    replays: mpsc::UnboundedSender<Uuid>,
}

pub(crate) fn router(store: Store, replays: mpsc::UnboundedSender<Uuid>) -> Router {
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/{event_id}/replay", post(replay))
        .with_state(AppState { store, replays })
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Notification>,
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page>, ApiError> {
    let status = match query.get("status").map(|s| s.trim().to_ascii_uppercase()) {
        Some(status) if status.is_empty() => None,
        Some(status) if !STATUSES.contains(&status.as_str()) => {
            return Err(ApiError::invalid(format!(
                "status must be one of PENDING, SENT, DEAD, got {status:?}"
            )));
        }
        other => other,
    };
    let items = state
        .store
        .list(status.as_deref(), LIST_LIMIT)
        .await
        .map_err(database)?;
    Ok(Json(Page { items }))
}

/// DEAD → PENDING with the attempts reset, delivered again in the background: 202.
async fn replay(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
) -> Result<(StatusCode, Json<Notification>), ApiError> {
    let not_found = || ApiError::not_found(format!("no notification for event {event_id}"));
    let id = Uuid::parse_str(&event_id).map_err(|_| not_found())?;
    let Some(revived) = state.store.revive(id).await.map_err(database)? else {
        return match state.store.get(id).await.map_err(database)? {
            None => Err(not_found()),
            Some(current) => Err(ApiError::conflict(
                "not_dead",
                format!(
                    "the notification for event {id} is {}; only {DEAD} ones can be replayed",
                    current.status
                ),
            )),
        };
    };
    tracing::info!(event_id = %id, "Dead letter replayed.");
    if state.replays.send(id).is_err() {
        // Shutting down: the row is PENDING, and the next start resumes it.
        tracing::warn!(event_id = %id, "Delivery queue closed; the replay runs at the next start.");
    }
    Ok((StatusCode::ACCEPTED, Json(revived)))
}

fn database(error: sqlx::Error) -> ApiError {
    ApiError::database(error, "notification")
}
