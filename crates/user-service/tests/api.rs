//! user-service against the real Postgres and NATS: its own port and the mesh.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kit::Env;
use mesh::rpc::Channel;
use middleware::auth::JwtSettings;
use serde_json::{Value, json};
use tower::ServiceExt;
use user_service::{App, Config};

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";

struct Running {
    base: String,
    http: reqwest::Client,
    mesh_name: String,
    database_url: String,
    app_stop: kit::Shutdown,
}

impl Running {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        testkit::http::send_json(self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn profile(&self, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}/profile", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        testkit::http::send_json(request).await
    }

    async fn register(&self, email: &str, password: &str) -> (u16, Value) {
        self.post(
            "/register",
            json!({"email": email, "password": password, "name": "Ann"}),
        )
        .await
    }

    async fn stop(self) {
        self.app_stop.trigger();
        testkit::drop_database(&self.database_url).await;
    }
}

async fn start() -> Running {
    let database_url = testkit::fresh_database_url("users_test");
    let mesh_name = testkit::unique_name("user-service");
    let env = Env::from_pairs(
        testkit::ServiceEnv::new(&mesh_name)
            .database(&database_url)
            .set("JWT_SECRET", SECRET),
    );
    let config = Config::from_env(&env).expect("config");
    let app = App::build(config).await.expect("app starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let app_stop = app.shutdown().clone();
    tokio::spawn(app.run_until_stopped());
    Running {
        base,
        http: reqwest::Client::new(),
        mesh_name,
        database_url,
        app_stop,
    }
}

fn email() -> String {
    format!("{}@example.com", testkit::unique_name("ann"))
}

#[tokio::test]
async fn register_login_profile() {
    let app = start().await;
    let address = email();
    let (status, user) = app
        .register(&format!("  {}  ", address.to_uppercase()), "correct horse")
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["email"], address, "trimmed and lower-cased");
    assert_eq!(user["name"], "Ann");
    assert!(uuid::Uuid::parse_str(user["id"].as_str().expect("id")).is_ok());
    assert!(
        chrono::DateTime::parse_from_rfc3339(user["created_at"].as_str().expect("time")).is_ok()
    );
    assert!(
        user.get("password_hash").is_none(),
        "the hash never leaves the service"
    );

    let (status, body) = app
        .post(
            "/login",
            json!({"email": address, "password": "correct horse"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["token"].as_str().expect("token");

    let (status, profile) = app.profile(Some(token)).await;
    assert_eq!(status, 200);
    assert_eq!(profile["id"], user["id"]);
    assert_eq!(profile["email"], address);
    app.stop().await;
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_401() {
    let app = start().await;
    let address = email();
    app.register(&address, "correct horse").await;
    let wrong = app
        .post(
            "/login",
            json!({"email": address, "password": "wrong horse"}),
        )
        .await;
    let unknown = app
        .post(
            "/login",
            json!({"email": email(), "password": "correct horse"}),
        )
        .await;
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong, unknown, "no way to tell which emails exist");
    assert_eq!(wrong.1["error"]["code"], "unauthorized");
    // Logins no account could match get the same answer, never a 500.
    for body in [
        json!({"email": "a\u{0}nn@example.com", "password": "correct horse"}),
        json!({"email": address, "password": "x".repeat(100_000)}),
    ] {
        assert_eq!(app.post("/login", body).await, wrong);
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_registrations_are_refused_with_the_right_status() {
    let app = start().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "long enough", "name": "A"}),
            422,
        ),
        (
            json!({"email": email(), "password": "short", "name": "A"}),
            422,
        ),
        (
            json!({"email": email(), "password": "long enough", "name": "  "}),
            422,
        ),
        (json!({"email": email(), "password": "long enough"}), 422),
        (
            json!({"email": 42, "password": "long enough", "name": "A"}),
            422,
        ),
        // Characters Postgres refuses, or that print as nothing: refused up front, not a
        // 500 from the database (which the gateway's breaker would count).
        (
            json!({"email": "a\u{0}nn@example.com", "password": "long enough", "name": "A"}),
            422,
        ),
        (
            json!({"email": "ann\u{200b}@example.com", "password": "long enough", "name": "A"}),
            422,
        ),
        (
            json!({"email": email(), "password": "long enough", "name": "A\u{0}nn"}),
            422,
        ),
    ];
    for (body, want) in cases {
        let (status, answer) = app.post("/register", body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let malformed = app
        .http
        .post(format!("{}/register", app.base))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .expect("answer");
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.expect("json");
    assert_eq!(body["error"]["code"], "malformed_json");
    app.stop().await;
}

#[tokio::test]
async fn the_same_email_registers_once_even_concurrently() {
    let app = start().await;
    let address = format!("renée.{}", email());
    let attempts = futures::future::join_all((0..6).map(|i| {
        // Different spellings of one address: case, and é composed or decomposed.
        let spelling = match i % 3 {
            0 => address.clone(),
            1 => address.to_uppercase(),
            _ => address.replacen("renée", "rene\u{301}e", 1),
        };
        let app = &app;
        async move { app.register(&spelling, "correct horse").await.0 }
    }))
    .await;
    assert_eq!(
        attempts.iter().filter(|s| **s == 201).count(),
        1,
        "{attempts:?}"
    );
    assert_eq!(
        attempts.iter().filter(|s| **s == 409).count(),
        5,
        "{attempts:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn profile_needs_a_valid_token() {
    let app = start().await;
    let (status, body) = app.profile(None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "missing_token");

    let (status, _) = app.profile(Some("not.a.token")).await;
    assert_eq!(status, 401);

    // Signed with another secret.
    let other = middleware::auth::JwtKeys::new(&JwtSettings::hs256(
        "another-secret-that-is-also-32-bytes-or-more",
    ))
    .expect("keys");
    let forged = other
        .issue(&uuid::Uuid::now_v7().to_string(), "x@example.com")
        .expect("token");
    let (status, body) = app.profile(Some(&forged.token)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_token");

    // A valid token for an account that does not exist.
    let keys = middleware::auth::JwtKeys::new(&JwtSettings::hs256(SECRET)).expect("keys");
    let ghost = keys
        .issue(&uuid::Uuid::now_v7().to_string(), "ghost@example.com")
        .expect("token");
    let (status, _) = app.profile(Some(&ghost.token)).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn the_same_routes_answer_over_the_mesh() {
    let app = start().await;
    let nats = async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS");
    let channel = Channel::nats(nats, &app.mesh_name);
    let address = email();
    let body = json!({"email": address, "password": "correct horse", "name": "Mesh"}).to_string();
    let request = http::Request::builder()
        .method("POST")
        .uri("/register")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = channel.clone().oneshot(request).await.expect("answer");
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("x-request-id"));
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let user: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(user["email"], address);

    let health = http::Request::builder()
        .uri("/health")
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(channel.oneshot(health).await.expect("answer").status(), 200);
    app.stop().await;
}

/// An account carried over from the Go workshop keeps its bcrypt hash: the right password
/// logs in, and that login replaces the hash with today's argon2id; a wrong one is 401.
#[tokio::test]
async fn an_account_with_a_go_bcrypt_hash_logs_in_and_is_upgraded() {
    let app = start().await;
    let address = email();
    let id = uuid::Uuid::now_v7();
    // As Go's bcrypt.GenerateFromPassword stored it (cost 4 here, for speed).
    let go_hash = bcrypt::hash_with_salt("gopher pass", 4, [9; 16])
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoA);
    let pool = sqlx::PgPool::connect(&app.database_url)
        .await
        .expect("user database");
    sqlx::query("INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, 'Gopher', $3)")
        .bind(id)
        .bind(&address)
        .bind(&go_hash)
        .execute(&pool)
        .await
        .expect("carried-over account");
    let stored = || async {
        sqlx::query_scalar::<_, String>("SELECT password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("hash")
    };

    let (status, body) = app
        .post(
            "/login",
            json!({"email": address, "password": "wrong pass"}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(stored().await, go_hash, "a wrong password changes nothing");

    let (status, body) = app
        .post(
            "/login",
            json!({"email": address, "password": "gopher pass"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let upgraded = stored().await;
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{upgraded}"
    );
    let (status, _) = app
        .post(
            "/login",
            json!({"email": address, "password": "gopher pass"}),
        )
        .await;
    assert_eq!(status, 200, "the upgraded hash verifies");
    assert_eq!(stored().await, upgraded, "upgraded once");
    pool.close().await;
    app.stop().await;
}
