//! product-service against the real Postgres, Redis and NATS.

use std::net::SocketAddr;
use std::time::Duration;

use contracts::product::product_service_client::ProductServiceClient;
use contracts::product::{
    CheckAvailabilityRequest, GetProductRequest, Item, ReleaseStockRequest, ReserveStockRequest,
};
use kit::Env;
use mesh::rpc::Channel;
use middleware::auth::{JwtKeys, JwtSettings};
use product_service::{App, Config};
use serde_json::{Value, json};
use testkit::TcpProxy;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";

struct Running {
    base: String,
    http: reqwest::Client,
    token: String,
    mesh_name: String,
    grpc_port: u16,
    database_url: String,
    stop: kit::Shutdown,
}

async fn start_with_redis(redis_url: String) -> Running {
    let database_url = testkit::fresh_database_url("products_test");
    let mesh_name = testkit::unique_name("product-service");
    let env = Env::from_pairs(
        testkit::ServiceEnv::new(&mesh_name)
            .database(&database_url)
            .set("JWT_SECRET", SECRET)
            .set("REDIS_URL", redis_url)
            .set("GRPC_ADDR", "127.0.0.1:0"),
    );
    let config = Config::from_env(&env).expect("config");
    let app = App::build(config).await.expect("app starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let grpc_port = app.grpc_port();
    let stop = app.shutdown().clone();
    tokio::spawn(app.run_until_stopped());
    let token = JwtKeys::new(&JwtSettings::hs256(SECRET))
        .expect("keys")
        .issue(&uuid::Uuid::now_v7().to_string(), "admin@example.com")
        .expect("token")
        .token;
    Running {
        base,
        http: reqwest::Client::new(),
        token,
        mesh_name,
        grpc_port,
        database_url,
        stop,
    }
}

async fn start() -> Running {
    start_with_redis(testkit::redis_url()).await
}

impl Running {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if auth {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        testkit::http::send_json(request).await
    }

    async fn create(&self, name: &str, price_cents: i64, stock: i64) -> Value {
        let (status, product) = self
            .send(
                reqwest::Method::POST,
                "/products",
                Some(json!({"name": name, "description": "d", "price_cents": price_cents, "stock": stock})),
                true,
            )
            .await;
        assert_eq!(status, 201, "{product}");
        product
    }

    async fn get(&self, id: &str) -> (u16, Value) {
        self.send(
            reqwest::Method::GET,
            &format!("/products/{id}"),
            None,
            false,
        )
        .await
    }

    async fn cache_count(&self, result: &str) -> u64 {
        let label = format!("result=\"{result}\"");
        let sample = testkit::http::metric_sample(
            &self.http,
            &self.base,
            "product_cache_lookups_total",
            &label,
        )
        .await;
        sample.map_or(0, |count| count as u64)
    }

    async fn grpc_over_mesh(&self) -> ProductServiceClient<Channel> {
        let nats = async_nats::connect(testkit::nats_url())
            .await
            .expect("NATS");
        ProductServiceClient::new(Channel::nats(nats, &self.mesh_name))
    }

    async fn stop(self) {
        self.stop.trigger();
        testkit::drop_database(&self.database_url).await;
    }
}

#[tokio::test]
async fn crud_with_validation_and_auth() {
    let app = start().await;
    let mug = app.create("Mug", 1250, 10).await;
    let id = mug["id"].as_str().expect("id").to_owned();
    assert_eq!(mug["price_cents"], 1250);
    assert_eq!(mug["stock"], 10);
    for field in ["created_at", "updated_at"] {
        assert!(chrono::DateTime::parse_from_rfc3339(mug[field].as_str().expect("time")).is_ok());
    }

    let (status, fetched) = app.get(&id).await;
    assert_eq!((status, &fetched), (200, &mug));

    let (status, updated) = app
        .send(
            reqwest::Method::PUT,
            &format!("/products/{id}"),
            Some(json!({"name": "Big mug", "price_cents": 1500, "stock": 8})),
            true,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated["name"], "Big mug");

    let (status, _) = app
        .send(
            reqwest::Method::DELETE,
            &format!("/products/{id}"),
            None,
            true,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.get(&id).await.0, 404);
    let (status, _) = app
        .send(
            reqwest::Method::DELETE,
            &format!("/products/{id}"),
            None,
            true,
        )
        .await;
    assert_eq!(status, 404);

    // Writes need a token; reads do not.
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/products",
            Some(json!({"name": "x", "price_cents": 1, "stock": 1})),
            false,
        )
        .await;
    assert_eq!(status, 401, "{body}");

    for bad in [
        json!({"name": "", "price_cents": 1, "stock": 1}),
        json!({"name": "x", "price_cents": -1, "stock": 1}),
        json!({"name": "x", "price_cents": 1, "stock": -5}),
        json!({"name": "x", "price_cents": i64::MAX, "stock": 1}),
        // Postgres refuses NUL in text: the input's fault, 422, not a 500.
        json!({"name": "x\u{0}y", "price_cents": 1, "stock": 1}),
        json!({"name": "x", "description": "\u{0}", "price_cents": 1, "stock": 1}),
        json!({"name": "x", "price_cents": 1, "stock": i64::MAX}),
        json!({"name": "x", "price_cents": 1.5, "stock": 1}),
        json!({"name": "x"}),
    ] {
        let (status, body) = app
            .send(reqwest::Method::POST, "/products", Some(bad.clone()), true)
            .await;
        assert_eq!(status, 422, "{bad} -> {body}");
    }
    assert_eq!(app.get("not-a-uuid").await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn listing_pages_through_the_catalogue() {
    let app = start().await;
    for n in 0..5 {
        app.create(&format!("P{n}"), 100 + n, 1).await;
    }
    let (status, page) = app
        .send(
            reqwest::Method::GET,
            "/products?limit=2&offset=1",
            None,
            false,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 5);
    let names: Vec<_> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["P1", "P2"]);
    for bad in ["limit=0", "limit=1000", "offset=-1", "limit=abc"] {
        let (status, _) = app
            .send(
                reqwest::Method::GET,
                &format!("/products?{bad}"),
                None,
                false,
            )
            .await;
        assert_eq!(status, 422, "{bad}");
    }
    app.stop().await;
}

/// Products as large as the rules allow (5000 four-byte characters each): a full page of
/// them would not fit in one NATS message. The page stops at its byte budget instead, and
/// paging over the mesh by what came back reaches every product once.
#[tokio::test]
async fn a_page_of_large_products_is_cut_to_fit_the_mesh() {
    use tower::ServiceExt;
    let app = start().await;
    let description = "\u{1fad6}".repeat(5000);
    for n in 0..40 {
        let (status, product) = app
            .send(
                reqwest::Method::POST,
                "/products",
                Some(json!({"name": format!("Teapot {n}"), "description": description, "price_cents": 100, "stock": 1})),
                true,
            )
            .await;
        assert_eq!(status, 201, "{product}");
    }
    let nats = async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS");
    let channel = Channel::nats(nats, &app.mesh_name);
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    while seen.len() < 40 {
        let request = http::Request::get(format!("/products?limit=100&offset={}", seen.len()))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let response = channel.clone().oneshot(request).await.expect("answer");
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        let page: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(page["total"], 40);
        let items = page["items"].as_array().expect("items");
        assert!(!items.is_empty(), "a page holds at least one product");
        for item in items {
            assert_eq!(item["description"], description.as_str());
            assert!(
                seen.insert(item["id"].as_str().expect("id").to_owned()),
                "{} twice",
                item["id"]
            );
        }
        pages += 1;
    }
    assert!(pages > 1, "40 products of 20 KB do not fit in one page");
    app.stop().await;
}

/// Paths next to the routes (a trailing slash, one segment too many), methods a route does
/// not have, and ids that are not UTF-8 answer in the contract's shape, not with tonic's
/// empty 200 (the gRPC routes share this router) or axum's empty or plain-text answers.
#[tokio::test]
async fn near_misses_answer_in_the_contract_shape() {
    let app = start().await;
    let product = app.create("Mug", 100, 1).await;
    let id = product["id"].as_str().expect("id");
    for path in [format!("/products/{id}/"), format!("/products/{id}/x")] {
        let (status, body) = app.send(reqwest::Method::GET, &path, None, false).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    let response = app
        .http
        .patch(format!("{}/products/{id}", app.base))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 405);
    assert!(response.headers().contains_key("allow"));
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (status, body) = app
        .send(reqwest::Method::GET, "/products/%FF", None, false)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    app.stop().await;
}

#[tokio::test]
async fn reads_are_cached_and_writes_invalidate() {
    let app = start().await;
    let id = app.create("Cached", 500, 3).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let hits = app.cache_count("hit").await;
    app.get(&id).await;
    let (_, second) = app.get(&id).await;
    assert_eq!(second["name"], "Cached");
    assert_eq!(
        app.cache_count("hit").await,
        hits + 1,
        "second read is a hit"
    );

    let (status, _) = app
        .send(
            reqwest::Method::PUT,
            &format!("/products/{id}"),
            Some(json!({"name": "Renamed", "price_cents": 600, "stock": 3})),
            true,
        )
        .await;
    assert_eq!(status, 200);
    let (_, after) = app.get(&id).await;
    assert_eq!(after["name"], "Renamed", "the update is visible at once");
    assert_eq!(after["price_cents"], 600);
    app.stop().await;
}

#[tokio::test]
async fn reads_survive_redis_going_away_and_the_cache_returns_with_it() {
    let redis: SocketAddr = "127.0.0.1:6379".parse().expect("addr");
    let proxy = TcpProxy::start(redis).await.expect("proxy");
    let app = start_with_redis(format!("redis://127.0.0.1:{}", proxy.port())).await;
    let id = app.create("Resilient", 700, 2).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.get(&id).await;
    assert_eq!(app.get(&id).await.0, 200);

    proxy.cut();
    for _ in 0..10 {
        let (status, product) = app.get(&id).await;
        assert_eq!(status, 200);
        assert_eq!(product["name"], "Resilient");
    }
    // An update during the outage must not be hidden by the old entry later.
    let (status, _) = app
        .send(
            reqwest::Method::PUT,
            &format!("/products/{id}"),
            Some(json!({"name": "Changed while Redis was away", "price_cents": 700, "stock": 2})),
            true,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        app.cache_count("bypass").await > 0,
        "the breaker skipped Redis"
    );

    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let hits = app.cache_count("hit").await;
        let (_, product) = app.get(&id).await;
        assert_eq!(product["name"], "Changed while Redis was away");
        if app.cache_count("hit").await > hits {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

fn reserve(id: &str, product: &str, quantity: i64) -> ReserveStockRequest {
    ReserveStockRequest {
        reservation_id: id.into(),
        items: vec![Item {
            product_id: product.into(),
            quantity,
        }],
    }
}

#[tokio::test]
async fn two_reservations_for_the_last_unit_one_wins() {
    let app = start().await;
    let id = app.create("Last one", 999, 1).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let client = app.grpc_over_mesh().await;
    let (mut first, mut second) = (client.clone(), client.clone());
    let (a, b) = tokio::join!(
        first.reserve_stock(reserve("order-a", &id, 1)),
        second.reserve_stock(reserve("order-b", &id, 1)),
    );
    let outcomes = [a.is_ok(), b.is_ok()];
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert_eq!(
        loser.expect_err("lost").code(),
        tonic::Code::FailedPrecondition
    );
    let (_, product) = app.get(&id).await;
    assert_eq!(product["stock"], 0);
    app.stop().await;
}

#[tokio::test]
async fn reserve_and_release_are_idempotent_by_reservation_id() {
    let app = start().await;
    let id = app.create("Widget", 250, 10).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut client = app.grpc_over_mesh().await;

    let first = client
        .reserve_stock(reserve("order-1", &id, 3))
        .await
        .expect("reserved")
        .into_inner();
    assert_eq!(first.total_cents, 750);
    // A retry (the caller did not see the answer) changes nothing.
    let again = client
        .reserve_stock(reserve("order-1", &id, 3))
        .await
        .expect("same reservation")
        .into_inner();
    assert_eq!(again, first);
    let stock = |product: Value| product["stock"].as_i64().expect("stock");
    assert_eq!(stock(app.get(&id).await.1), 7);

    let released = client
        .release_stock(ReleaseStockRequest {
            reservation_id: "order-1".into(),
        })
        .await
        .expect("released")
        .into_inner();
    assert!(released.released);
    let twice = client
        .release_stock(ReleaseStockRequest {
            reservation_id: "order-1".into(),
        })
        .await
        .expect("no-op")
        .into_inner();
    assert!(!twice.released);
    assert_eq!(stock(app.get(&id).await.1), 10);

    // Released ids stay released: a late duplicate cannot take stock again.
    let late = client
        .reserve_stock(reserve("order-1", &id, 3))
        .await
        .expect_err("released");
    assert_eq!(late.code(), tonic::Code::Aborted);

    // A release that overtakes its reservation leaves a tombstone.
    client
        .release_stock(ReleaseStockRequest {
            reservation_id: "order-2".into(),
        })
        .await
        .expect("tombstone");
    let overtaken = client
        .reserve_stock(reserve("order-2", &id, 1))
        .await
        .expect_err("tombstoned");
    assert_eq!(overtaken.code(), tonic::Code::Aborted);
    assert_eq!(stock(app.get(&id).await.1), 10);
    app.stop().await;
}

#[tokio::test]
async fn a_partial_reservation_takes_nothing() {
    let app = start().await;
    let plenty = app.create("Plenty", 100, 100).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let scarce = app.create("Scarce", 100, 1).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut client = app.grpc_over_mesh().await;
    let request = ReserveStockRequest {
        reservation_id: "order-x".into(),
        items: vec![
            Item {
                product_id: plenty.clone(),
                quantity: 5,
            },
            Item {
                product_id: scarce.clone(),
                quantity: 2,
            },
        ],
    };
    let status = client
        .reserve_stock(request)
        .await
        .expect_err("insufficient");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains(&scarce), "{}", status.message());
    assert_eq!(app.get(&plenty).await.1["stock"], 100, "rolled back");

    let unknown = client
        .reserve_stock(reserve("order-y", &uuid::Uuid::now_v7().to_string(), 1))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let invalid = client
        .reserve_stock(reserve("order-z", &plenty, 0))
        .await
        .expect_err("zero quantity");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn grpc_answers_on_its_own_http2_port_with_health() {
    let app = start().await;
    let id = app.create("Port", 100, 4).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let endpoint = format!("http://127.0.0.1:{}", app.grpc_port);
    let mut client = ProductServiceClient::connect(endpoint.clone())
        .await
        .expect("connects");
    let product = client
        .get_product(GetProductRequest { id: id.clone() })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(product.name, "Port");
    let availability = client
        .check_availability(CheckAvailabilityRequest {
            items: vec![Item {
                product_id: id,
                quantity: 5,
            }],
        })
        .await
        .expect("checked")
        .into_inner();
    assert!(!availability.available);
    assert_eq!(availability.items[0].in_stock, 4);

    let channel = tonic::transport::Channel::from_shared(endpoint)
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "shopmesh.product.v1.ProductService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    app.stop().await;
}

impl Running {
    /// `PUT /products/{id}` with `If-Match` when given; the status, body and `ETag`.
    async fn put_if_match(
        &self,
        id: &str,
        if_match: Option<&str>,
        body: Value,
    ) -> (u16, Value, Option<String>) {
        let mut request = self
            .http
            .put(format!("{}/products/{id}", self.base))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        let response = request.send().await.expect("answer");
        let status = response.status().as_u16();
        let etag = etag_of(&response);
        let body = response.json().await.expect("json");
        (status, body, etag)
    }

    async fn etag(&self, id: &str) -> String {
        let response = self
            .http
            .get(format!("{}/products/{id}", self.base))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200);
        etag_of(&response).expect("an ETag")
    }
}

fn etag_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("etag")
        .map(|v| v.to_str().expect("text").to_owned())
}

#[tokio::test]
async fn an_update_with_if_match_never_writes_over_a_change_it_did_not_see() {
    let app = start().await;
    let id = app.create("Mug", 500, 10).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let read = app.etag(&id).await;
    assert_eq!(
        app.etag(&id).await,
        read,
        "served from the cache, same version"
    );
    let edit = |stock: i64| json!({"name": "Mug", "price_cents": 500, "stock": stock});

    // An order reserves 3 after the admin read the product.
    let mut client = app.grpc_over_mesh().await;
    client
        .reserve_stock(reserve(&uuid::Uuid::now_v7().to_string(), &id, 3))
        .await
        .expect("reserved");
    let (status, body, _) = app.put_if_match(&id, Some(&read), edit(10)).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["code"], "precondition_failed");
    assert_eq!(app.get(&id).await.1["stock"], 7, "the reservation survives");

    // Read again, then write: accepted, and the answer carries the new version.
    let fresh = app.etag(&id).await;
    assert_ne!(fresh, read);
    let (status, body, etag) = app.put_if_match(&id, Some(&fresh), edit(20)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stock"], 20);
    let etag = etag.expect("an ETag");
    assert_ne!(etag, fresh);
    assert_eq!(app.etag(&id).await, etag);

    // A tag this service never gave out matches nothing; `*` and no If-Match match any.
    for foreign in [
        "\"not-a-version\"",
        "W/\"1\"",
        "1234",
        "\"-200000000000000000\"",
        "\"999999999999999999\"",
    ] {
        let (status, _, _) = app.put_if_match(&id, Some(foreign), edit(1)).await;
        assert_eq!(status, 412, "{foreign}");
    }
    // A list matches if any of its tags does.
    let list = format!("\"1\", {etag}");
    let (status, _, etag) = app.put_if_match(&id, Some(&list), edit(23)).await;
    assert_eq!(status, 200);
    let etag = etag.expect("an ETag");
    assert_eq!(app.put_if_match(&id, Some("*"), edit(21)).await.0, 200);
    assert_eq!(app.put_if_match(&id, None, edit(22)).await.0, 200);
    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        app.put_if_match(&missing, Some(&etag), edit(1)).await.0,
        404
    );
    app.stop().await;
}
