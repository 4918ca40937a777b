//! `POST /register`, `POST /login`, `GET /profile`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use kit::api::{ApiError, ApiJson};
use middleware::auth::{Claims, JwtKeys, RequireAuthLayer};
use middleware::password;
use serde::{Deserialize, Serialize};

use crate::error;
use crate::store::{Store, User};
use crate::validate;

#[derive(Clone)]
struct AppState {
    store: Store,
    keys: JwtKeys,
}

pub fn router(store: Store, keys: JwtKeys) -> Router {
    let protected = Router::new()
        .route("/profile", get(profile))
        .route_layer(RequireAuthLayer::new(keys.clone()));
    Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .merge(protected)
        .with_state(AppState { store, keys })
}

#[derive(Debug, Deserialize)]
struct Registration {
    email: String,
    password: String,
    name: String,
}

async fn register(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<Registration>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let email = validate::normalise_email(&input.email);
    validate::check_email(&email).map_err(ApiError::invalid)?;
    validate::check_password(&input.password).map_err(ApiError::invalid)?;
    let name = validate::check_name(&input.name).map_err(ApiError::invalid)?;
    let hash = password::hash_password(input.password)
        .await
        .map_err(error::password)?;
    let user = state.store.create(&email, &name, &hash).await?;
    tracing::info!(user_id = %user.id, "User registered.");
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Deserialize)]
struct Login {
    email: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct TokenResponse {
    token: String,
    token_type: &'static str,
    expires_in: u64,
}

const BAD_CREDENTIALS: &str = "email or password is wrong";

async fn login(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<Login>,
) -> Result<Json<TokenResponse>, ApiError> {
    if input.password.len() > validate::MAX_PASSWORD {
        // No account has such a password (registration refuses them), and hashing it would
        // cost as much as its length: refused without looking.
        return Err(ApiError::unauthorized(BAD_CREDENTIALS));
    }
    let email = validate::normalise_email(&input.email);
    if email.contains('\0') {
        // Postgres cannot even look it up, and no account can have it.
        return Err(ApiError::unauthorized(BAD_CREDENTIALS));
    }
    let Some(credentials) = state
        .store
        .credentials(&email)
        .await
        .map_err(error::database)?
    else {
        // An unknown email costs a hash verification too: the answer and its timing are
        // the same as for a wrong password (no user enumeration).
        password::verify_against_dummy(input.password).await;
        return Err(ApiError::unauthorized(BAD_CREDENTIALS));
    };
    let stored = credentials.password_hash;
    let matches = password::verify_password(input.password.clone(), stored.clone())
        .await
        .map_err(error::password)?;
    if !matches {
        return Err(ApiError::unauthorized(BAD_CREDENTIALS));
    }
    if password::needs_rehash(&stored) {
        upgrade_hash(&state.store, credentials.id, &stored, input.password).await;
    }
    let issued = state
        .keys
        .issue(&credentials.id.to_string(), &credentials.email)
        .map_err(ApiError::internal)?;
    Ok(Json(TokenResponse {
        token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
    }))
}

/// Replaces a hash made elsewhere (the Go workshop's bcrypt) or with older parameters by
/// today's argon2id, now that the password is known. Best effort: the login succeeds
/// either way, and the next one tries again.
async fn upgrade_hash(store: &Store, id: uuid::Uuid, stored: &str, password: String) {
    let upgraded = match password::hash_password(password).await {
        Ok(fresh) => store.upgrade_password_hash(id, stored, &fresh).await,
        Err(error) => {
            tracing::warn!(%id, %error, "Password hash not upgraded.");
            return;
        }
    };
    match upgraded {
        Ok(true) => tracing::info!(%id, "Password hash upgraded to argon2id."),
        Ok(false) => tracing::info!(%id, "Password changed meanwhile; hash left as it is."),
        Err(error) => tracing::warn!(%id, %error, "Password hash not upgraded."),
    }
}

async fn profile(State(state): State<AppState>, claims: Claims) -> Result<Json<User>, ApiError> {
    let id = claims.user_id()?;
    let user = state
        .store
        .by_id(id)
        .await
        .map_err(error::database)?
        .ok_or_else(|| ApiError::not_found("the account no longer exists"))?;
    Ok(Json(user))
}
