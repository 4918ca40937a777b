//! The REST contract (DESIGN.md, "REST contract") as an OpenAPI document, served by the
//! gateway at `/openapi.json`.
//!
//! The schema types below carry the contract's field names and are public, so clients and
//! tests can deserialize the answers with them. The operations are described on stub
//! functions that are never routed: the gateway forwards these paths, and the upstream
//! services own the handlers, so the one place that knows the whole API is this document.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// The name of the bearer security scheme.
pub const BEARER: &str = "bearer";

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `not_found`, `invalid_fields`, `rate_limited`,
    /// `upstream_unavailable`.
    #[schema(example = "not_found")]
    pub code: String,
    /// For humans; never carries internal details.
    pub message: String,
}

/// `POST /register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Registration {
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// At least 8 characters.
    #[schema(min_length = 8)]
    pub password: String,
    #[schema(example = "Ann")]
    pub name: String,
}

/// `POST /login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(example = "ann@example.com")]
    pub email: String,
    pub password: String,
}

/// A token from `POST /login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until the token expires.
    #[schema(example = 3600)]
    pub expires_in: u64,
}

/// An account, as `POST /register` and `GET /profile` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A product. Money is integer cents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    #[schema(minimum = 0)]
    pub price_cents: i64,
    #[schema(minimum = 0)]
    pub stock: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /products` and `PUT /products/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductInput {
    /// Not empty.
    #[schema(min_length = 1)]
    pub name: String,
    /// Optional; empty when left out.
    #[serde(default)]
    pub description: String,
    #[schema(minimum = 0)]
    pub price_cents: i64,
    #[schema(minimum = 0)]
    pub stock: i64,
}

/// `GET /products`: one page and the total count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub total: i64,
}

/// One line of `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLineInput {
    pub product_id: Uuid,
    #[schema(minimum = 1)]
    pub quantity: i64,
}

/// `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewOrder {
    /// At least one line.
    pub items: Vec<OrderLineInput>,
    /// Defaults to `tok_visa`; a token starting with `tok_decline` is declined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "tok_visa")]
    pub card_token: Option<String>,
}

/// One line of an order, with the unit price it was ordered at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

/// An order. It starts `PENDING` and ends `CONFIRMED` or `CANCELLED` (with a reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub total_cents: i64,
    pub items: Vec<OrderLine>,
    /// Set when the order is `CANCELLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadyReport {
    pub ready: bool,
    pub checks: Vec<ReadyCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadyCheck {
    /// `nats`, or `upstream:<service>`.
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The operations. Stubs only: nothing routes to them (see the module documentation).
#[allow(
    dead_code,
    reason = "documentation only: the gateway forwards these routes and the upstream services own the handlers"
)]
mod contract {
    use super::*;

    #[utoipa::path(
        post,
        path = "/register",
        tag = "users",
        request_body = Registration,
        responses(
            (status = 201, description = "Registered", body = User),
            (status = 400, description = "Malformed JSON", body = ErrorBody),
            (status = 409, description = "Email already registered", body = ErrorBody),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 422, description = "Bad email, or password under 8 characters", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "user-service is down", body = ErrorBody),
            (status = 504, description = "user-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn register() {}

    #[utoipa::path(
        post,
        path = "/login",
        tag = "users",
        request_body = Credentials,
        responses(
            (status = 200, description = "A bearer token", body = Token),
            (status = 400, description = "Malformed JSON", body = ErrorBody),
            (status = 401, description = "Unknown email or wrong password (the same answer for both)", body = ErrorBody),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 422, description = "Missing or mistyped fields", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "user-service is down", body = ErrorBody),
            (status = 504, description = "user-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn login() {}

    #[utoipa::path(
        get,
        path = "/profile",
        tag = "users",
        security(("bearer" = [])),
        responses(
            (status = 200, description = "The caller's account", body = User),
            (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
            (status = 404, description = "The account no longer exists", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "user-service is down", body = ErrorBody),
            (status = 504, description = "user-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn profile() {}

    #[utoipa::path(
        get,
        path = "/products",
        tag = "products",
        params(
            ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (default 20). A page stops early (never empty) once its products take 512 KiB of JSON: page on from offset plus the items returned"),
            ("offset" = Option<i64>, Query, minimum = 0, description = "Products to skip (default 0)")
        ),
        responses(
            (status = 200, description = "One page of products", body = ProductPage),
            (status = 400, description = "Malformed query", body = ErrorBody),
            (status = 422, description = "Invalid limit or offset", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "product-service is down", body = ErrorBody),
            (status = 504, description = "product-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn list_products() {}

    #[utoipa::path(
        get,
        path = "/products/{id}",
        tag = "products",
        params(("id" = Uuid, Path, description = "Product id")),
        responses(
            (status = 200, description = "The product (from the cache when warm)", body = Product,
                headers(("ETag" = String, description = "The product's version, for If-Match on PUT"))),
            (status = 404, description = "No such product", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "product-service is down", body = ErrorBody),
            (status = 504, description = "product-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn get_product() {}

    #[utoipa::path(
        post,
        path = "/products",
        tag = "products",
        security(("bearer" = [])),
        request_body = ProductInput,
        responses(
            (status = 201, description = "Created", body = Product,
                headers(("ETag" = String, description = "The product's version, for If-Match on PUT"))),
            (status = 400, description = "Malformed JSON", body = ErrorBody),
            (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 422, description = "Price or stock negative or over 10^12, empty name", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "product-service is down", body = ErrorBody),
            (status = 504, description = "product-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn create_product() {}

    #[utoipa::path(
        put,
        path = "/products/{id}",
        tag = "products",
        security(("bearer" = [])),
        params(
            ("id" = Uuid, Path, description = "Product id"),
            ("If-Match" = Option<String>, Header,
                description = "The ETag read with the product: the update is refused (412) if the product changed since, a reservation included. `*` or none: unconditional")
        ),
        request_body = ProductInput,
        responses(
            (status = 200, description = "Updated (the cached copy is invalidated)", body = Product,
                headers(("ETag" = String, description = "The new version"))),
            (status = 400, description = "Malformed JSON", body = ErrorBody),
            (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
            (status = 404, description = "No such product", body = ErrorBody),
            (status = 412, description = "The product changed since the If-Match version was read", body = ErrorBody),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 422, description = "Price or stock negative or over 10^12, empty name", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "product-service is down", body = ErrorBody),
            (status = 504, description = "product-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn update_product() {}

    #[utoipa::path(
        delete,
        path = "/products/{id}",
        tag = "products",
        security(("bearer" = [])),
        params(("id" = Uuid, Path, description = "Product id")),
        responses(
            (status = 204, description = "Deleted"),
            (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
            (status = 404, description = "No such product", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "product-service is down", body = ErrorBody),
            (status = 504, description = "product-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn delete_product() {}

    #[utoipa::path(
        post,
        path = "/orders",
        tag = "orders",
        security(("bearer" = [])),
        request_body = NewOrder,
        params(
            ("Idempotency-Key" = Option<String>, Header,
                description = "Retrying with the same key returns the same order instead of placing another (at most 200 characters). A key whose request failed and was undone answers 409 idempotency_key_spent: send the order again with a new key")
        ),
        responses(
            (status = 201, description = "Placed; the saga confirms or cancels it", body = Order),
            (status = 400, description = "Malformed JSON", body = ErrorBody),
            (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
            (status = 409, description = "Insufficient stock, or an Idempotency-Key already spent on a failed request", body = ErrorBody),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 422, description = "Empty items, bad quantity (1 to 1000 per product) or unknown product", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "order-service is down", body = ErrorBody),
            (status = 504, description = "order-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn create_order() {}

    #[utoipa::path(
        get,
        path = "/orders/{id}",
        tag = "orders",
        security(("bearer" = [])),
        params(("id" = Uuid, Path, description = "Order id")),
        responses(
            (status = 200, description = "The order: PENDING, CONFIRMED or CANCELLED (with cancel_reason)", body = Order),
            (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
            (status = 404, description = "No such order, or another user's", body = ErrorBody),
            (status = 429, description = "Rate limited", body = ErrorBody,
                headers(("Retry-After" = u64, description = "Seconds to wait"))),
            (status = 503, description = "order-service is down", body = ErrorBody),
            (status = 504, description = "order-service is too slow", body = ErrorBody)
        )
    )]
    pub(super) fn get_order() {}

    #[utoipa::path(
        get,
        path = "/health",
        tag = "operations",
        responses((status = 200, description = "The process serves HTTP", body = Health))
    )]
    pub(super) fn health() {}

    #[utoipa::path(
        get,
        path = "/ready",
        tag = "operations",
        responses(
            (status = 200, description = "NATS and every upstream are reachable", body = ReadyReport),
            (status = 503, description = "Something is down; the report names it", body = ReadyReport)
        )
    )]
    pub(super) fn ready() {}

    #[utoipa::path(
        get,
        path = "/metrics",
        tag = "operations",
        responses(
            (status = 200, description = "Prometheus text exposition", body = String,
                content_type = "text/plain; version=0.0.4")
        )
    )]
    pub(super) fn metrics() {}
}

/// Declares the bearer scheme the protected operations refer to.
#[derive(Debug)]
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The token from POST /login"))
                    .build(),
            ),
        );
    }
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Shopmesh",
        version = "1.0.0",
        description = "The Shopmesh REST API, served by the gateway on port 8000. Ids are UUIDs, money is integer cents, times are RFC 3339. Errors are {\"error\": {\"code\", \"message\"}}."
    ),
    paths(
        contract::register,
        contract::login,
        contract::profile,
        contract::list_products,
        contract::get_product,
        contract::create_product,
        contract::update_product,
        contract::delete_product,
        contract::create_order,
        contract::get_order,
        contract::health,
        contract::ready,
        contract::metrics
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        Registration,
        Credentials,
        Token,
        User,
        Product,
        ProductInput,
        ProductPage,
        OrderLineInput,
        NewOrder,
        OrderLine,
        OrderStatus,
        Order,
        Health,
        ReadyReport,
        ReadyCheck
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "users", description = "Accounts and tokens (user-service)"),
        (name = "products", description = "The catalogue (product-service)"),
        (name = "orders", description = "Orders and their saga (order-service)"),
        (name = "operations", description = "The gateway's own health, readiness and metrics")
    )
)]
pub struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON, rendered once at startup.
pub fn json() -> Result<bytes::Bytes, serde_json::Error> {
    document().to_json().map(bytes::Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::to_value(document()).expect("serializable")
    }

    #[test]
    fn every_contract_route_is_described() {
        let doc = doc();
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "{}",
            doc["openapi"]
        );
        for (path, method, statuses) in [
            (
                "/register",
                "post",
                &["201", "400", "409", "422", "429"][..],
            ),
            ("/login", "post", &["200", "401"][..]),
            ("/profile", "get", &["200", "401"][..]),
            ("/products", "get", &["200"][..]),
            ("/products", "post", &["201", "401", "422"][..]),
            ("/products/{id}", "get", &["200", "404"][..]),
            ("/products/{id}", "put", &["200", "401", "404", "422"][..]),
            ("/products/{id}", "delete", &["204", "401", "404"][..]),
            ("/orders", "post", &["201", "401", "409", "422"][..]),
            ("/orders/{id}", "get", &["200", "401", "404"][..]),
            ("/health", "get", &["200"][..]),
            ("/metrics", "get", &["200"][..]),
        ] {
            let operation = &doc["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} missing");
            for status in statuses {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }

    #[test]
    fn protected_operations_require_the_bearer_scheme() {
        let doc = doc();
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
        for (path, method) in [
            ("/profile", "get"),
            ("/products", "post"),
            ("/products/{id}", "put"),
            ("/products/{id}", "delete"),
            ("/orders", "post"),
            ("/orders/{id}", "get"),
        ] {
            let security = &doc["paths"][path][method]["security"];
            assert!(
                security
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.get(BEARER).is_some())),
                "{method} {path}: {security}"
            );
        }
        for (path, method) in [
            ("/register", "post"),
            ("/login", "post"),
            ("/products", "get"),
        ] {
            assert!(
                doc["paths"][path][method].get("security").is_none(),
                "{method} {path} is public"
            );
        }
    }

    #[test]
    fn schemas_use_the_contract_field_names() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let fields = |name: &str| -> Vec<String> {
            schemas[name]["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut error = fields("ErrorDetail");
        error.sort();
        assert_eq!(error, ["code", "message"]);
        for (schema, expected) in [
            ("User", &["id", "email", "name", "created_at"][..]),
            ("Token", &["token", "token_type", "expires_in"][..]),
            (
                "Product",
                &[
                    "id",
                    "name",
                    "description",
                    "price_cents",
                    "stock",
                    "created_at",
                    "updated_at",
                ][..],
            ),
            ("ProductPage", &["items", "total"][..]),
            ("NewOrder", &["items", "card_token"][..]),
            (
                "Order",
                &[
                    "id",
                    "user_id",
                    "status",
                    "total_cents",
                    "items",
                    "cancel_reason",
                    "created_at",
                    "updated_at",
                ][..],
            ),
        ] {
            let present = fields(schema);
            for field in expected {
                assert!(
                    present.iter().any(|f| f == field),
                    "{schema}.{field}: {present:?}"
                );
            }
        }
        assert!(json().expect("renders").len() > 1000);
    }
}
