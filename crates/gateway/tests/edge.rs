//! The gateway against the real NATS, with the real user-service (Postgres) behind it.
//!
//! product-service and order-service do not exist yet: their names point either at nothing
//! (the mesh answers 503) or at a small echo router served on the mesh, which shows what the
//! gateway forwarded (method, path, query, headers, body): the gateway's behaviour is what is
//! under test there.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use kit::Env;
use mesh::{MeshServer, ServeOptions};
use middleware::auth::{JwtKeys, JwtSettings};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";

async fn nats() -> async_nats::Client {
    async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS")
}

/// The mesh names the gateway forwards to.
struct Names {
    user: String,
    product: String,
    order: String,
}

/// Names nothing serves (yet).
fn fresh_names() -> Names {
    Names {
        user: testkit::unique_name("users"),
        product: testkit::unique_name("products"),
        order: testkit::unique_name("orders"),
    }
}

struct Gateway {
    base: String,
    port: u16,
    http: reqwest::Client,
    stop: kit::Shutdown,
}

async fn start_gateway(names: &Names, overrides: &[(&str, &str)]) -> Gateway {
    let vars = testkit::ServiceEnv::new(&testkit::unique_name("gateway"))
        .set("JWT_SECRET", SECRET)
        .set("USER_SERVICE_NAME", &names.user)
        .set("PRODUCT_SERVICE_NAME", &names.product)
        .set("ORDER_SERVICE_NAME", &names.order)
        .set_all(overrides.iter().copied());
    let config = gateway::Config::from_env(&Env::from_pairs(vars)).expect("gateway config");
    let app = gateway::App::build(config).await.expect("gateway starts");
    let port = app.port();
    let stop = app.shutdown().clone();
    tokio::spawn(app.run_until_stopped());
    Gateway {
        base: format!("http://127.0.0.1:{port}"),
        port,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client"),
        stop,
    }
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("answer");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    fn stop(self) {
        self.stop.trigger();
    }
}

/// The real user-service, on its own database and a unique mesh name.
struct Users {
    name: String,
    port: u16,
    database_url: String,
    stop: kit::Shutdown,
}

async fn start_users() -> Users {
    let database_url = testkit::fresh_database_url("gateway_users");
    let name = testkit::unique_name("user-service");
    let env = Env::from_pairs(
        testkit::ServiceEnv::new(&name)
            .database(&database_url)
            .set("JWT_SECRET", SECRET),
    );
    let config = user_service::Config::from_env(&env).expect("config");
    let app = user_service::App::build(config)
        .await
        .expect("user-service starts");
    let port = app.port();
    let stop = app.shutdown().clone();
    tokio::spawn(app.run_until_stopped());
    Users {
        name,
        port,
        database_url,
        stop,
    }
}

impl Users {
    async fn stop(self) {
        self.stop.trigger();
        testkit::drop_database(&self.database_url).await;
    }
}

/// Answers every request with what it received.
async fn echo(request: Request) -> axum::Json<Value> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Value::from(std::str::from_utf8(value.as_bytes()).unwrap_or("<binary>")),
            )
        })
        .collect();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn serve_echo(nats: &async_nats::Client, name: &str) -> MeshServer {
    let server = mesh::serve(
        nats.clone(),
        name,
        Router::new().fallback(echo),
        ServeOptions::default(),
    )
    .await
    .expect("echo upstream");
    // The server has processed the subscriptions once it answers a round trip.
    nats.flush().await.expect("flush");
    server
}

fn token_for_someone() -> String {
    let keys = JwtKeys::new(&JwtSettings::hs256(SECRET)).expect("keys");
    let id = uuid::Uuid::now_v7().to_string();
    keys.issue(&id, &format!("{id}@example.com"))
        .expect("token")
        .token
}

fn email() -> String {
    format!("{}@example.com", testkit::unique_name("ann"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `GET /products/p-1` through the gateway with one header of the test's.
async fn get_product_with(
    gateway: &Gateway,
    name: &str,
    value: reqwest::header::HeaderValue,
) -> reqwest::Response {
    gateway
        .http
        .get(gateway.url("/products/p-1"))
        .header(name, value)
        .send()
        .await
        .expect("answer")
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn register_login_profile_through_the_gateway() {
    let users = start_users().await;
    let names = Names {
        user: users.name.clone(),
        ..fresh_names()
    };
    let gateway = start_gateway(&names, &[]).await;
    let address = email();

    let (status, headers, user) = gateway
        .send(
            Method::POST,
            "/register",
            None,
            Some(json!({"email": address, "password": "correct horse", "name": "Ann"})),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["email"], address);
    assert!(!header(&headers, "x-request-id").is_empty());

    let (status, _, login) = gateway
        .send(
            Method::POST,
            "/login",
            None,
            Some(json!({"email": address, "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["token_type"], "Bearer");
    let token = login["token"].as_str().expect("token").to_owned();

    let (status, _, profile) = gateway
        .send(Method::GET, "/profile", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["id"], user["id"]);
    assert_eq!(profile["email"], address);

    // The service's own refusals come back as they are.
    let (status, _, again) = gateway
        .send(
            Method::POST,
            "/register",
            None,
            Some(json!({"email": address, "password": "correct horse", "name": "Ann"})),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "email_taken");
    let (status, _, wrong) = gateway
        .send(
            Method::POST,
            "/login",
            None,
            Some(json!({"email": address, "password": "wrong horse"})),
        )
        .await;
    assert_eq!(status, 401, "{wrong}");
    assert_eq!(wrong["error"]["code"], "unauthorized");

    gateway.stop();
    users.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_a_json_404() {
    let gateway = start_gateway(&fresh_names(), &[]).await;
    for path in ["/nope", "/admin/users", "/products-old", "/"] {
        let (status, headers, body) = gateway.send(Method::GET, path, None, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&headers, "content-type"), "application/json");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(!header(&headers, "x-request-id").is_empty());
    }
    gateway.stop();
}

#[tokio::test]
async fn protected_routes_need_a_valid_token_at_the_gateway() {
    // Nothing serves the upstreams, so a 401 can only come from the gateway itself.
    let gateway = start_gateway(&fresh_names(), &[]).await;

    let (status, headers, body) = gateway.send(Method::GET, "/profile", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "missing_token");
    assert_eq!(header(&headers, "www-authenticate"), "Bearer");

    let (status, _, body) = gateway
        .send(Method::GET, "/profile", Some("not-a-jwt"), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_token");

    let forged = JwtKeys::new(&JwtSettings::hs256(
        "another-secret-that-is-also-32-bytes-or-more",
    ))
    .expect("keys")
    .issue("someone", "someone@example.com")
    .expect("token")
    .token;
    for (method, path) in [
        (Method::GET, "/orders/abc"),
        (Method::POST, "/orders"),
        (Method::POST, "/products"),
        (Method::PUT, "/products/abc"),
        (Method::DELETE, "/products/abc"),
    ] {
        let (status, _, body) = gateway.send(method.clone(), path, None, None).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        let (status, _, body) = gateway
            .send(method.clone(), path, Some(&forged), None)
            .await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_token");
    }

    // A public route ignores a bad token and forwards: the (absent) upstream answers.
    let (status, _, body) = gateway
        .send(Method::GET, "/products", Some("not-a-jwt"), None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    gateway.stop();
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let gateway = start_gateway(&fresh_names(), &[("MAX_BODY_BYTES", "1024")]).await;

    let big = json!({"email": email(), "password": "x".repeat(4096), "name": "Ann"});
    let (status, _, body) = gateway
        .send(Method::POST, "/register", None, Some(big))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    // Under the limit it is forwarded (to nothing here: 503).
    let small = json!({"email": email(), "password": "correct horse", "name": "Ann"});
    let (status, _, _) = gateway
        .send(Method::POST, "/register", None, Some(small))
        .await;
    assert_eq!(status, 503);

    // A chunked body declares no length: it is counted as it is read.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .expect("connect");
    let chunk = "y".repeat(2048);
    let request = format!(
        "POST /register HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    // The gateway may close the connection without reading the rest; what it sent counts.
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    gateway.stop();
}

#[tokio::test]
async fn requests_with_a_bad_token_count_against_the_rate_limit() {
    let names = fresh_names();
    let gateway = start_gateway(
        &names,
        &[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")],
    )
    .await;
    // Guessing tokens on a protected route: refused, and counted per address.
    for _ in 0..2 {
        let (status, _, body) = gateway
            .send(Method::GET, "/profile", Some("not-a-token"), None)
            .await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, headers, body) = gateway
        .send(Method::GET, "/profile", Some("not-a-token"), None)
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    gateway.stop();
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_per_client() {
    let nats = nats().await;
    let names = fresh_names();
    let products = serve_echo(&nats, &names.product).await;
    let gateway = start_gateway(
        &names,
        &[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")],
    )
    .await;

    // Anonymous clients are keyed by IP.
    for _ in 0..2 {
        let (status, _, body) = gateway.send(Method::GET, "/products", None, None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, body) = gateway.send(Method::GET, "/products", None, None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry_after: u64 = header(&headers, "retry-after")
        .parse()
        .expect("Retry-After");
    assert!(retry_after >= 1);

    // A signed-in user draws from a bucket of their own, even from the same address.
    let ann = token_for_someone();
    let bob = token_for_someone();
    for _ in 0..2 {
        let (status, _, body) = gateway
            .send(Method::GET, "/products", Some(&ann), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, _) = gateway
        .send(Method::GET, "/products", Some(&ann), None)
        .await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
    let (status, _, body) = gateway
        .send(Method::GET, "/products", Some(&bob), None)
        .await;
    assert_eq!(status, 200, "{body}");

    gateway.stop();
    products.shutdown().await;
}

#[tokio::test]
async fn an_absent_upstream_is_a_503_in_the_contract_shape() {
    let names = fresh_names();
    let gateway = start_gateway(&names, &[]).await;
    let token = token_for_someone();
    for (method, path, body, upstream) in [
        (Method::GET, "/products", None, &names.product),
        (Method::GET, "/orders/abc", None, &names.order),
        (
            Method::POST,
            "/orders",
            Some(json!({"items": [{"product_id": uuid::Uuid::now_v7(), "quantity": 1}]})),
            &names.order,
        ),
        (Method::GET, "/profile", None, &names.user),
    ] {
        let started = Instant::now();
        let (status, headers, answer) =
            gateway.send(method.clone(), path, Some(&token), body).await;
        assert_eq!(status, 503, "{method} {path}: {answer}");
        assert_eq!(header(&headers, "content-type"), "application/json");
        assert_eq!(header(&headers, "mesh-error"), "upstream_unavailable");
        assert_eq!(answer["error"]["code"], "upstream_unavailable");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(upstream.as_str()), "{message}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no responder is immediate"
        );
    }
    gateway.stop();
}

#[tokio::test]
async fn cors_preflights_are_answered_and_answers_carry_the_headers() {
    let gateway = start_gateway(&fresh_names(), &[]).await;
    let preflight = |gateway: &Gateway, origin: &str| {
        gateway
            .http
            .request(Method::OPTIONS, gateway.url("/products"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key,traceparent,if-match",
            )
            .send()
    };

    let response = preflight(&gateway, "https://shop.example")
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);
    let headers = response.headers();
    assert_eq!(header(headers, "access-control-allow-origin"), "*");
    let methods = header(headers, "access-control-allow-methods");
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = header(headers, "access-control-allow-headers").to_ascii_lowercase();
    for name in [
        "authorization",
        "content-type",
        "x-request-id",
        "idempotency-key",
        "traceparent",
        "if-match",
    ] {
        assert!(allowed.contains(name), "{allowed}");
    }

    // An ordinary answer (a 404 here) lets the page read the request id.
    let response = gateway
        .http
        .get(gateway.url("/nope"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        "*"
    );
    let exposed = header(response.headers(), "access-control-expose-headers").to_ascii_lowercase();
    for name in ["x-request-id", "etag"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    gateway.stop();

    // With a list, only the listed origins are allowed.
    let strict = start_gateway(
        &fresh_names(),
        &[(
            "CORS_ALLOW_ORIGINS",
            "https://shop.example,https://admin.example",
        )],
    )
    .await;
    let response = preflight(&strict, "https://shop.example")
        .await
        .expect("answer");
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        "https://shop.example"
    );
    let response = preflight(&strict, "https://evil.example")
        .await
        .expect("answer");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    strict.stop();
}

#[tokio::test]
async fn request_ids_headers_queries_and_bodies_are_forwarded() {
    let nats = nats().await;
    let names = fresh_names();
    let products = serve_echo(&nats, &names.product).await;
    let gateway = start_gateway(&names, &[]).await;

    let response = gateway
        .http
        .get(gateway.url("/products/abc-1?limit=5&offset=10"))
        .header("x-request-id", "edge-test-42")
        .header("x-custom", "yes")
        .header("authorization", "Bearer not-checked-on-public-reads")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(response.headers(), "x-request-id"), "edge-test-42");
    let seen: Value = response.json().await.expect("echo");
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/products/abc-1");
    assert_eq!(seen["query"], "limit=5&offset=10");
    assert_eq!(seen["headers"]["x-request-id"], "edge-test-42");
    assert_eq!(seen["headers"]["x-custom"], "yes");
    assert_eq!(
        seen["headers"]["authorization"],
        "Bearer not-checked-on-public-reads"
    );
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");

    // Without an id the gateway makes one, and the upstream sees the same one.
    let (status, headers, seen) = gateway.send(Method::GET, "/products", None, None).await;
    assert_eq!(status, 200);
    let id = header(&headers, "x-request-id");
    assert!(!id.is_empty());
    assert_eq!(seen["headers"]["x-request-id"], id);

    // Methods and bodies travel as they are, and so does the Authorization header.
    let token = token_for_someone();
    let input = json!({"name": "Lamp", "description": "Warm", "price_cents": 1999, "stock": 3});
    let (status, _, seen) = gateway
        .send(Method::POST, "/products", Some(&token), Some(input.clone()))
        .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/products");
    let forwarded: Value =
        serde_json::from_str(seen["body"].as_str().expect("body")).expect("json body");
    assert_eq!(forwarded, input);
    assert_eq!(seen["headers"]["authorization"], format!("Bearer {token}"));
    assert_eq!(seen["headers"]["content-type"], "application/json");

    // Metrics are labelled by route template, not by raw path.
    let metrics = gateway
        .http
        .get(gateway.url("/metrics"))
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"route="/products/{*rest}""#),
        "{metrics}"
    );
    assert!(!metrics.contains("abc-1"), "{metrics}");

    gateway.stop();
    products.shutdown().await;
}

/// Header values in UTF-8 (an `Idempotency-Key` in a user's language) cross the mesh as
/// they are; opaque bytes, which NATS headers cannot carry, are refused with a 400 rather
/// than dropped on the way (a dropped key would place an order twice).
#[tokio::test]
async fn utf8_header_values_cross_the_mesh_and_opaque_bytes_are_refused() {
    let nats = nats().await;
    let names = fresh_names();
    let products = serve_echo(&nats, &names.product).await;
    let gateway = start_gateway(&names, &[]).await;

    let utf8 = reqwest::header::HeaderValue::from_bytes("clé-1 ☕".as_bytes()).expect("value");
    let response = get_product_with(&gateway, "idempotency-key", utf8).await;
    assert_eq!(response.status().as_u16(), 200);
    let seen: Value = response.json().await.expect("echo");
    assert_eq!(seen["headers"]["idempotency-key"], "clé-1 ☕");

    let latin1 = reqwest::header::HeaderValue::from_bytes(b"cl\xe9-1").expect("value");
    let response = get_product_with(&gateway, "idempotency-key", latin1).await;
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(header(response.headers(), "mesh-error"), "bad_request");
    let body: Value = response.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("idempotency-key")),
        "{body}"
    );
    gateway.stop();
    products.shutdown().await;
}

#[tokio::test]
async fn a_client_cannot_shorten_the_budget_and_open_an_upstreams_circuit() {
    let nats = nats().await;
    let names = fresh_names();
    let products = serve_echo(&nats, &names.product).await;
    let gateway = start_gateway(&names, &[]).await;
    // More than enough to open the breaker, were each a 504 counted against product-service.
    for _ in 0..30 {
        let zero = reqwest::header::HeaderValue::from_static("0");
        let response = get_product_with(&gateway, "mesh-timeout-ms", zero).await;
        assert_eq!(
            response.status().as_u16(),
            200,
            "the gateway sets the budget"
        );
    }
    gateway.stop();
    products.shutdown().await;
}

/// Requests the mesh refuses before sending (a header value it cannot carry, a body over
/// NATS's limit) are the client's doing: however many, they do not open the upstream's
/// circuit for everyone else.
#[tokio::test]
async fn requests_the_mesh_refuses_do_not_open_an_upstreams_circuit() {
    let nats = nats().await;
    let names = fresh_names();
    let products = serve_echo(&nats, &names.product).await;
    let gateway = start_gateway(&names, &[]).await;
    let latin1 = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").expect("value");
    // More than enough to open the breaker (10 calls, half failing), were each counted.
    for _ in 0..30 {
        let response = get_product_with(&gateway, "x-anything", latin1.clone()).await;
        assert_eq!(response.status().as_u16(), 400);
    }
    let response = gateway
        .http
        .get(gateway.url("/products/p-1"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        response.status().as_u16(),
        200,
        "everyone else still reaches product-service"
    );
    gateway.stop();
    products.shutdown().await;
}

#[tokio::test]
async fn openapi_json_describes_the_contract() {
    let gateway = start_gateway(&fresh_names(), &[]).await;
    let (status, headers, doc) = gateway.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/register",
        "/login",
        "/profile",
        "/products",
        "/products/{id}",
        "/orders",
        "/orders/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["paths"]["/profile"]["get"]["security"].is_array());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    gateway.stop();
}

#[tokio::test]
async fn ready_only_when_every_upstream_has_an_instance() {
    let nats = nats().await;
    let names = fresh_names();
    let gateway = start_gateway(&names, &[]).await;

    let (status, _, report) = gateway.send(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(check(&report, "nats")["ok"], true, "{report}");
    for name in [&names.user, &names.product, &names.order] {
        let upstream = check(&report, &format!("upstream:{name}"));
        assert_eq!(upstream["ok"], false, "{report}");
        assert_eq!(
            upstream["error"],
            format!("no instance of {name}"),
            "{report}"
        );
    }

    let mut servers = Vec::new();
    for name in [&names.user, &names.product, &names.order] {
        servers.push(serve_echo(&nats, name).await);
    }
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, report) = gateway.send(Method::GET, "/ready", None, None).await;
        if status == 200 {
            assert_eq!(report["ready"], true);
            break;
        }
        assert!(Instant::now() < give_up, "still not ready: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    gateway.stop();
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn the_http_transport_reaches_the_services_own_port() {
    let users = start_users().await;
    // A name nothing serves on NATS: only the HTTP/2 path can reach user-service.
    let names = fresh_names();
    let user_url = format!("http://127.0.0.1:{}", users.port);
    let gateway = start_gateway(
        &names,
        &[
            ("MESH_TRANSPORT", "http"),
            ("USER_SERVICE_URL", user_url.as_str()),
            // Nothing listens on port 1.
            ("PRODUCT_SERVICE_URL", "http://127.0.0.1:1"),
            ("ORDER_SERVICE_URL", "http://127.0.0.1:1"),
        ],
    )
    .await;

    let address = email();
    let (status, _, user) = gateway
        .send(
            Method::POST,
            "/register",
            None,
            Some(json!({"email": address, "password": "correct horse", "name": "Ann"})),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let (status, _, login) = gateway
        .send(
            Method::POST,
            "/login",
            None,
            Some(json!({"email": address, "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().expect("token").to_owned();
    let (status, _, profile) = gateway
        .send(Method::GET, "/profile", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["id"], user["id"]);

    // Nothing listens for products: the channel answers 503 itself.
    let (status, _, body) = gateway.send(Method::GET, "/products", None, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unavailable");

    // Readiness probes each service's own /health.
    let (status, _, report) = gateway.send(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(
        check(&report, &format!("upstream:{}", names.user))["ok"],
        true,
        "{report}"
    );
    let products = check(&report, &format!("upstream:{}", names.product));
    assert_eq!(products["ok"], false, "{report}");
    assert!(
        products["error"]
            .as_str()
            .is_some_and(|e| e.contains("upstream_unavailable")),
        "{report}"
    );

    gateway.stop();
    users.stop().await;
}
