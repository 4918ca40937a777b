//! JWT issue and verification, and the [`RequireAuthLayer`] that guards routes with it.
//!
//! The accepted algorithm is pinned by configuration: a verifier accepts exactly one algorithm
//! (`HS256`, `EdDSA` or `RS256`), so `alg: none`, an HS384 token made with the same secret, or
//! an HS256 token "signed" with an RSA public key (algorithm confusion) are all rejected before
//! any signature is checked. Every token must carry `exp`, `nbf`, `iss`, `aud` and `sub`.
//!
//! Rejections answer 401 with the contract body (DESIGN.md, "REST contract")
//! `{"error": {"code": "...", "message": "..."}}` and a `WWW-Authenticate: Bearer` challenge;
//! a key problem on our side is a 500 whose body never carries the details.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kit::ConfigError;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

/// Default `iss` and `aud`.
pub const DEFAULT_ISSUER: &str = "shopmesh";
pub const DEFAULT_AUDIENCE: &str = "shopmesh";
/// Default token lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The shortest HS256 secret accepted (the length of the HMAC-SHA256 output).
pub const MIN_SECRET_LEN: usize = 32;
/// Longer "tokens" are rejected before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What a Shopmesh token asserts. `sub` is the user id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

impl Claims {
    /// The user the token was issued to. Tokens are issued with a user id as `sub`; one that
    /// is not answers 401, as an unusable token does.
    pub fn user_id(&self) -> Result<uuid::Uuid, kit::api::ApiError> {
        uuid::Uuid::parse_str(&self.sub)
            .map_err(|_| kit::api::ApiError::unauthorized("token subject is not a user id"))
    }
}

/// The one signing algorithm a deployment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (every verifier can also issue).
    #[default]
    Hs256,
    /// Ed25519: the user service holds the private key, verifiers only the public one.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl JwtAlgorithm {
    /// The name used in JWT headers (and accepted, case-insensitively, in `JWT_ALGORITHM`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::EdDsa => Algorithm::EdDSA,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::Hs256),
            "EDDSA" => Ok(Self::EdDsa),
            "RS256" => Ok(Self::Rs256),
            _ => Err(format!("expected HS256, EdDSA or RS256, got {s:?}")),
        }
    }
}

/// How tokens are signed and checked.
#[derive(Clone)]
pub struct JwtSettings {
    pub algorithm: JwtAlgorithm,
    /// The HS256 shared secret.
    pub secret: Option<String>,
    /// PEM private key (EdDSA/RS256); only the issuing service needs it.
    pub private_key_pem: Option<Vec<u8>>,
    /// PEM public key (EdDSA/RS256).
    pub public_key_pem: Option<Vec<u8>>,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_seconds: u64,
}

impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field(
                "private_key_pem",
                &self.private_key_pem.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "public_key_pem",
                &self
                    .public_key_pem
                    .as_ref()
                    .map(|pem| format!("{} bytes", pem.len())),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

impl JwtSettings {
    /// HS256 with `secret`, issuer and audience `shopmesh`, one-hour tokens, no leeway.
    pub fn hs256(secret: impl Into<String>) -> Self {
        Self {
            algorithm: JwtAlgorithm::Hs256,
            secret: Some(secret.into()),
            private_key_pem: None,
            public_key_pem: None,
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            ttl: DEFAULT_TTL,
            leeway_seconds: 0,
        }
    }

    /// Reads `JWT_ALGORITHM` (default HS256), `JWT_SECRET` (HS256, at least 32 bytes),
    /// `JWT_PUBLIC_KEY_FILE` (EdDSA/RS256, required) and `JWT_PRIVATE_KEY_FILE` (EdDSA/RS256,
    /// only where tokens are issued), `JWT_ISSUER`, `JWT_AUDIENCE` (default `shopmesh`) and
    /// `JWT_TTL` (default 1h). Errors name the variable and never echo the secret.
    pub fn from_env(env: &kit::Env) -> Result<Self, ConfigError> {
        let algorithm = env.parse_or("JWT_ALGORITHM", JwtAlgorithm::Hs256)?;
        let ttl = env.duration_or("JWT_TTL", DEFAULT_TTL)?;
        if ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "JWT_TTL",
                &env.string_or("JWT_TTL", ""),
                "tokens must live at least 1s",
            ));
        }
        let mut settings = Self {
            algorithm,
            secret: None,
            private_key_pem: None,
            public_key_pem: None,
            issuer: env.string_or("JWT_ISSUER", DEFAULT_ISSUER),
            audience: env.string_or("JWT_AUDIENCE", DEFAULT_AUDIENCE),
            ttl,
            leeway_seconds: 0,
        };
        match algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = env.required("JWT_SECRET")?;
                if secret.len() < MIN_SECRET_LEN {
                    return Err(ConfigError::invalid(
                        "JWT_SECRET",
                        &format!("<redacted, {} bytes>", secret.len()),
                        format!("an HS256 secret must be at least {MIN_SECRET_LEN} bytes"),
                    ));
                }
                settings.secret = Some(secret);
            }
            JwtAlgorithm::EdDsa | JwtAlgorithm::Rs256 => {
                let name = "JWT_PUBLIC_KEY_FILE";
                let path = env.required(name)?;
                let pem = read_pem(name, &path)?;
                decoding_key_from_pem(algorithm, &pem)
                    .map_err(|reason| ConfigError::invalid(name, &path, reason))?;
                settings.public_key_pem = Some(pem);

                let name = "JWT_PRIVATE_KEY_FILE";
                if let Some(path) = env.get(name) {
                    let pem = read_pem(name, path)?;
                    encoding_key_from_pem(algorithm, &pem)
                        .map_err(|reason| ConfigError::invalid(name, path, reason))?;
                    settings.private_key_pem = Some(pem);
                }
            }
        }
        Ok(settings)
    }
}

fn read_pem(name: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|error| {
        ConfigError::invalid(name, path, format!("cannot read the PEM file: {error}"))
    })
}

fn decoding_key_from_pem(algorithm: JwtAlgorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    // A private key where the public one belongs would parse (RSA) yet reject every token,
    // and would put the signing key on every verifier: refuse it outright.
    if String::from_utf8_lossy(pem).contains("PRIVATE KEY") {
        return Err("expected a public key, but the PEM holds a private key".to_owned());
    }
    let key = match algorithm {
        JwtAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem),
        JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
        JwtAlgorithm::Hs256 => return Err("HS256 uses a shared secret, not a PEM key".to_owned()),
    }
    .map_err(|error| format!("not a valid {algorithm} public key PEM: {error}"))?;
    if algorithm == JwtAlgorithm::EdDsa
        && !matches!(key.try_get_as_bytes(), Ok(bytes) if bytes.len() == 32)
    {
        return Err("not a valid Ed25519 public key (expected 32 bytes)".to_owned());
    }
    Ok(key)
}

fn encoding_key_from_pem(algorithm: JwtAlgorithm, pem: &[u8]) -> Result<EncodingKey, String> {
    match algorithm {
        JwtAlgorithm::EdDsa => EncodingKey::from_ed_pem(pem),
        JwtAlgorithm::Rs256 => EncodingKey::from_rsa_pem(pem),
        JwtAlgorithm::Hs256 => return Err("HS256 uses a shared secret, not a PEM key".to_owned()),
    }
    .map_err(|error| format!("not a valid {algorithm} private key PEM: {error}"))
}

/// A freshly issued token, as `POST /login` answers it.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    /// Seconds until `exp`.
    pub expires_in: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a request is not authenticated (or, for [`AuthError::Keys`], why we cannot tell).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("malformed token")]
    Malformed,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is signed with an algorithm this service does not accept")]
    WrongAlgorithm,
    #[error("token was issued by an issuer this service does not accept")]
    WrongIssuer,
    #[error("token is meant for another audience")]
    WrongAudience,
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Our keys are unusable: a configuration problem, answered as a 500.
    #[error("JWT keys are unusable: {0}")]
    Keys(String),
}

impl AuthError {
    /// The `error.code` of the response body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Expired => "token_expired",
            Self::Keys(_) => "internal",
            Self::Malformed
            | Self::NotYetValid
            | Self::BadSignature
            | Self::WrongAlgorithm
            | Self::WrongIssuer
            | Self::WrongAudience
            | Self::Invalid(_) => "invalid_token",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Keys(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The complete answer, for any body type buildable from bytes.
    pub fn to_response<B: From<Bytes>>(&self) -> http::Response<B> {
        let message = match self {
            Self::Keys(detail) => {
                tracing::error!(%detail, "JWT keys are unusable");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let status = self.status();
        let mut response = kit::error::error_response::<B>(status, self.code(), &message);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: no error attribute when no credentials were sent.
            let challenge = match self {
                Self::MissingToken => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.to_response::<axum::body::Body>()
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthError::MissingToken)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let Some((scheme, token)) = value.split_at_checked(7) else {
        return Err(AuthError::MissingToken);
    };
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return Err(AuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

/// Signing and verification keys plus the pinned validation rules; cheap to clone.
#[derive(Clone)]
pub struct JwtKeys {
    inner: Arc<KeysInner>,
}

struct KeysInner {
    algorithm: JwtAlgorithm,
    header: Header,
    /// `None` on services that only verify.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
    verified: VerifiedTokens,
}

/// Tokens this process already verified, so a client sending the same token on every
/// request pays for the signature check once, not per request. Only the exact token
/// string hits; the time claims are checked again on every hit, so expiry still applies.
struct VerifiedTokens {
    tokens: std::sync::RwLock<std::collections::HashMap<String, Claims>>,
    leeway: i64,
}

impl VerifiedTokens {
    /// Bounded: when full it starts over, which costs one verification per live token.
    const CAPACITY: usize = 10_000;

    fn get(&self, token: &str) -> Option<Claims> {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let claims = tokens.get(token)?;
        let now = chrono::Utc::now().timestamp();
        (claims.nbf - self.leeway <= now && now < claims.exp + self.leeway).then(|| claims.clone())
    }

    fn remember(&self, token: &str, claims: &Claims) {
        let mut tokens = self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() >= Self::CAPACITY {
            tokens.clear();
        }
        tokens.insert(token.to_owned(), claims.clone());
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.inner.algorithm)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("ttl_seconds", &self.inner.ttl_seconds)
            .field("can_issue", &self.inner.encoding.is_some())
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Loads the keys. With a private key, a probe token is issued and verified so that a
    /// mismatched key pair fails at startup rather than on every login.
    pub fn new(settings: &JwtSettings) -> Result<Self, AuthError> {
        let ttl_seconds = i64::try_from(settings.ttl.as_secs())
            .map_err(|_| AuthError::Keys("the token lifetime is too long".to_owned()))?;
        if ttl_seconds < 1 {
            return Err(AuthError::Keys(
                "the token lifetime must be at least one second".to_owned(),
            ));
        }
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(AuthError::Keys(
                "the issuer and audience must not be empty".to_owned(),
            ));
        }
        let algorithm = settings.algorithm;
        let (encoding, decoding) = match algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = settings.secret.as_deref().ok_or_else(|| {
                    AuthError::Keys("HS256 needs a shared secret (JWT_SECRET)".to_owned())
                })?;
                if secret.len() < MIN_SECRET_LEN {
                    return Err(AuthError::Keys(format!(
                        "the HS256 secret must be at least {MIN_SECRET_LEN} bytes"
                    )));
                }
                (
                    Some(EncodingKey::from_secret(secret.as_bytes())),
                    DecodingKey::from_secret(secret.as_bytes()),
                )
            }
            JwtAlgorithm::EdDsa | JwtAlgorithm::Rs256 => {
                let public = settings.public_key_pem.as_deref().ok_or_else(|| {
                    AuthError::Keys(format!(
                        "{algorithm} needs a public key (JWT_PUBLIC_KEY_FILE)"
                    ))
                })?;
                let decoding = decoding_key_from_pem(algorithm, public).map_err(AuthError::Keys)?;
                let encoding = settings
                    .private_key_pem
                    .as_deref()
                    .map(|pem| encoding_key_from_pem(algorithm, pem))
                    .transpose()
                    .map_err(AuthError::Keys)?;
                (encoding, decoding)
            }
        };

        let mut validation = Validation::new(algorithm.jwt());
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = settings.leeway_seconds;
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);

        let keys = Self {
            inner: Arc::new(KeysInner {
                algorithm,
                header: Header::new(algorithm.jwt()),
                encoding,
                decoding,
                validation,
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                ttl_seconds,
                verified: VerifiedTokens {
                    tokens: std::sync::RwLock::default(),
                    leeway: i64::try_from(settings.leeway_seconds).unwrap_or(0),
                },
            }),
        };
        if keys.can_issue() {
            let probe = keys.issue("key-check", "key-check@shopmesh.invalid")?;
            keys.verify(&probe.token).map_err(|error| {
                AuthError::Keys(format!(
                    "the private key does not match the public key ({error})"
                ))
            })?;
        }
        Ok(keys)
    }

    /// Whether a private key (or HS256 secret) is loaded.
    pub fn can_issue(&self) -> bool {
        self.inner.encoding.is_some()
    }

    /// A token for `user_id`, valid from now for the configured lifetime.
    pub fn issue(&self, user_id: &str, email: &str) -> Result<IssuedToken, AuthError> {
        let encoding = self.inner.encoding.as_ref().ok_or_else(|| {
            AuthError::Keys("no private key is loaded: this service can only verify".to_owned())
        })?;
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            email: email.to_owned(),
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(self.inner.ttl_seconds),
        };
        let token = jsonwebtoken::encode(&self.inner.header, &claims, encoding)
            .map_err(|error| AuthError::Keys(error.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_in: self.inner.ttl_seconds.unsigned_abs(),
        })
    }

    /// The claims of a valid token signed with the configured algorithm and key.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        if let Some(claims) = self.inner.verified.get(token) {
            return Ok(claims);
        }
        let expected = self.inner.algorithm;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| classify_unparsable_header(token, expected))?;
        if header.alg != expected.jwt() {
            return Err(AuthError::WrongAlgorithm);
        }
        if header.crit.is_some() {
            return Err(AuthError::Invalid(
                "critical header parameters are not supported".to_owned(),
            ));
        }
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)
                .map(|data| data.claims)
                .map_err(map_jwt_error)?;
        self.inner.verified.remember(token, &claims);
        Ok(claims)
    }
}

/// The header did not parse as a JWT header jsonwebtoken knows: `alg: none` (or any unknown
/// algorithm) is a wrong algorithm, anything else is malformed.
fn classify_unparsable_header(token: &str, expected: JwtAlgorithm) -> AuthError {
    let header_part = token.split_once('.').map_or(token, |(header, _)| header);
    let Some(header) = base64url_decode(header_part)
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
    else {
        return AuthError::Malformed;
    };
    match header.get("alg").and_then(serde_json::Value::as_str) {
        Some(alg) if alg != expected.as_str() => AuthError::WrongAlgorithm,
        _ => AuthError::Malformed,
    }
}

/// Lenient base64url (no padding) decoding, only used to classify rejected headers.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for byte in input.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn map_jwt_error(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => AuthError::WrongAlgorithm,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::Invalid(format!("missing required claim {claim}"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Invalid(format!("claim {claim} has an invalid format"))
        }
        ErrorKind::InvalidSubject => AuthError::Invalid("unexpected subject".to_owned()),
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::MissingAlgorithm
        | ErrorKind::RsaFailedSigning
        | ErrorKind::Signing(_)
        | ErrorKind::Provider(_) => AuthError::Keys(error.to_string()),
        _ => AuthError::Invalid(error.to_string()),
    }
}

/// Handlers behind [`RequireAuthLayer`] take `claims: Claims`; without the layer the
/// extractor rejects with 401 `missing_token`.
impl<S: Send + Sync> FromRequestParts<S> for Claims {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Claims>()
            .cloned()
            .ok_or(AuthError::MissingToken)
    }
}

/// Requires a valid bearer token; puts its [`Claims`] in the request extensions.
#[derive(Clone, Debug)]
pub struct RequireAuthLayer {
    keys: JwtKeys,
}

impl RequireAuthLayer {
    pub fn new(keys: JwtKeys) -> Self {
        Self { keys }
    }
}

impl<S> Layer<S> for RequireAuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// The service of [`RequireAuthLayer`].
#[derive(Clone, Debug)]
pub struct RequireAuth<S> {
    inner: S,
    keys: JwtKeys,
}

impl<S, B, ResBody> Service<Request<B>> for RequireAuth<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let verified = bearer_token(request.headers()).and_then(|token| self.keys.verify(token));
        match verified {
            Ok(claims) => {
                request.extensions_mut().insert(claims);
                let mut inner = crate::take_ready(&mut self.inner);
                Box::pin(async move { inner.call(request).await })
            }
            Err(error) => {
                let response = error.to_response::<ResBody>();
                Box::pin(async move { Ok::<http::Response<ResBody>, S::Error>(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests;
