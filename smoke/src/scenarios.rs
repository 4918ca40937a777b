//! The scenarios, run in order against the gateway. Later ones build on earlier ones (a user,
//! a token, an order); when what a scenario needs is missing it fails saying so.

use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use contracts::topics::Topics;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Report;

/// Polling interval of an order's status and a product's stock.
const POLL: Duration = Duration::from_millis(200);
/// How long a cancelled order may take to give its stock back.
const STOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the saga's events may take to show up on NATS, once their check starts.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(15);
/// After the last expected event, nothing else of the order may arrive within this.
const QUIET: Duration = Duration::from_secs(2);
/// Per HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the stack is.
#[derive(Debug, Clone)]
pub struct Config {
    /// Scheme and authority of the gateway, without a trailing slash.
    pub gateway: String,
    pub nats_url: String,
    /// The stack's `TOPIC_PREFIX` (empty normally).
    pub topic_prefix: String,
    /// The first token of the bridge's subjects (`events`).
    pub subject_prefix: String,
    /// How long an order may stay PENDING.
    pub order_timeout: Duration,
}

/// Runs every scenario, in order, into `report`.
pub async fn run_all(config: Config, report: &mut Report) {
    let mut smoke = Smoke::new(config).await;
    report.run("register", smoke.register()).await;
    report.run("login", smoke.login()).await;
    report.run("profile", smoke.profile()).await;
    report.run("product-crud", smoke.product_crud()).await;
    report.run("no-token", smoke.no_token()).await;
    report.run("confirmed-order", smoke.confirmed_order()).await;
    report
        .run("confirmed-order-events", smoke.confirmed_order_events())
        .await;
    report.run("declined-order", smoke.declined_order()).await;
    report
        .run("declined-order-events", smoke.declined_order_events())
        .await;
    report
        .run("over-limit-order", smoke.over_limit_order())
        .await;
    report
        .run("other-users-order", smoke.other_users_order())
        .await;
}

#[derive(Debug, Clone)]
struct User {
    id: String,
    email: String,
    password: String,
}

/// An order placed by a scenario, with the NATS watch started before it was placed.
#[derive(Debug)]
struct PlacedOrder {
    id: String,
    watch: Result<EventWatch, String>,
}

/// The state the scenarios share.
#[derive(Debug)]
struct Smoke {
    config: Config,
    topics: Topics,
    http: reqwest::Client,
    nats: Result<async_nats::Client, String>,
    run_id: String,
    user: Option<User>,
    token: Option<String>,
    confirmed: Option<PlacedOrder>,
    declined: Option<PlacedOrder>,
    /// The first user's orders, for the "another user's order" check.
    orders: Vec<String>,
}

/// An HTTP answer: status, body as JSON (`Null` when it is not JSON) and as text.
#[derive(Debug)]
struct Answer {
    what: String,
    status: StatusCode,
    body: Value,
    text: String,
}

impl Answer {
    /// The body, if the status is `want`.
    fn expect(&self, want: StatusCode) -> anyhow::Result<&Value> {
        if self.status != want {
            bail!(
                "{}: expected {}, got {}: {}",
                self.what,
                want.as_u16(),
                self.status.as_u16(),
                snippet(&self.text)
            );
        }
        Ok(&self.body)
    }

    /// The status is `want` and the body is the contract's error shape.
    fn expect_error(&self, want: StatusCode) -> anyhow::Result<()> {
        let body = self.expect(want)?;
        ensure!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{}: the {} body is not {{\"error\": {{\"code\", \"message\"}}}}: {}",
            self.what,
            want.as_u16(),
            snippet(&self.text)
        );
        Ok(())
    }
}

impl Smoke {
    async fn new(config: Config) -> Self {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap_or_default();
        let nats = async_nats::connect(config.nats_url.as_str())
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", config.nats_url));
        Self {
            topics: Topics::new(&config.topic_prefix),
            config,
            http,
            nats,
            run_id: uuid::Uuid::new_v4().simple().to_string(),
            user: None,
            token: None,
            confirmed: None,
            declined: None,
            orders: Vec::new(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let what = format!("{method} {path}");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.config.gateway));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: no answer from {}", self.config.gateway))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{what}: reading the body"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            what,
            status,
            body,
            text,
        })
    }

    fn token(&self) -> anyhow::Result<String> {
        self.token
            .clone()
            .context("needs a token, and login did not pass")
    }

    // ---- users ----

    async fn register_user(&self, label: &str) -> anyhow::Result<User> {
        let email = format!("smoke-{label}-{}@example.com", self.run_id);
        let password = format!("smoke-{}", self.run_id);
        let answer = self
            .send(
                Method::POST,
                "/register",
                None,
                Some(&json!({"email": email, "password": password, "name": "Smoke Tester"})),
            )
            .await?;
        let body = answer.expect(StatusCode::CREATED)?;
        ensure!(
            body["email"] == email.as_str(),
            "POST /register answered email {} for {email}",
            body["email"]
        );
        let id = text_field(body, "id", "POST /register")?;
        Ok(User {
            id,
            email,
            password,
        })
    }

    async fn login_as(&self, user: &User) -> anyhow::Result<String> {
        let answer = self
            .send(
                Method::POST,
                "/login",
                None,
                Some(&json!({"email": user.email, "password": user.password})),
            )
            .await?;
        let body = answer.expect(StatusCode::OK)?;
        ensure!(
            body["token_type"] == "Bearer",
            "POST /login: token_type is {}, expected \"Bearer\"",
            body["token_type"]
        );
        text_field(body, "token", "POST /login")
    }

    async fn register(&mut self) -> anyhow::Result<()> {
        self.user = Some(self.register_user("a").await?);
        Ok(())
    }

    async fn login(&mut self) -> anyhow::Result<()> {
        let user = self
            .user
            .clone()
            .context("needs a registered user, and register did not pass")?;
        self.token = Some(self.login_as(&user).await?);
        Ok(())
    }

    async fn profile(&mut self) -> anyhow::Result<()> {
        let token = self.token()?;
        let user = self.user.clone().context("needs a registered user")?;
        let answer = self
            .send(Method::GET, "/profile", Some(token.as_str()), None)
            .await?;
        let body = answer.expect(StatusCode::OK)?;
        ensure!(
            body["id"] == user.id.as_str() && body["email"] == user.email.as_str(),
            "GET /profile shows {} <{}>, expected {} <{}>",
            body["id"],
            body["email"],
            user.id,
            user.email
        );
        Ok(())
    }

    // ---- products ----

    async fn create_product(
        &self,
        token: &str,
        name: &str,
        price_cents: i64,
        stock: i64,
    ) -> anyhow::Result<String> {
        let answer = self
            .send(
                Method::POST,
                "/products",
                Some(token),
                Some(&json!({
                    "name": format!("{name} {}", self.run_id),
                    "description": "made by the smoke test",
                    "price_cents": price_cents,
                    "stock": stock,
                })),
            )
            .await?;
        let body = answer.expect(StatusCode::CREATED)?;
        ensure!(
            body["price_cents"] == price_cents && body["stock"] == stock,
            "POST /products answered price {} stock {}, expected {price_cents} and {stock}",
            body["price_cents"],
            body["stock"]
        );
        text_field(body, "id", "POST /products")
    }

    async fn get_product(&self, id: &str) -> anyhow::Result<Value> {
        let answer = self
            .send(Method::GET, &format!("/products/{id}"), None, None)
            .await?;
        answer.expect(StatusCode::OK).cloned()
    }

    async fn stock_of(&self, id: &str) -> anyhow::Result<i64> {
        let product = self.get_product(id).await?;
        product["stock"]
            .as_i64()
            .with_context(|| format!("GET /products/{id}: no integer stock in {product}"))
    }

    /// Polls the product until its stock is `want`.
    async fn wait_for_stock(&self, id: &str, want: i64) -> anyhow::Result<()> {
        let deadline = Instant::now() + STOCK_TIMEOUT;
        loop {
            let stock = self.stock_of(id).await?;
            if stock == want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "product {id} has stock {stock} after {} s, expected {want}",
                    STOCK_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn product_crud(&mut self) -> anyhow::Result<()> {
        let token = self.token()?;
        let id = self.create_product(&token, "smoke crud", 1999, 7).await?;
        let path = format!("/products/{id}");

        let first = self.get_product(&id).await?;
        let second = self.get_product(&id).await?;
        ensure!(
            first == second,
            "GET {path} twice gave different products: {first} then {second}"
        );
        ensure!(
            first["price_cents"] == 1999_i64 && first["stock"] == 7_i64,
            "GET {path} shows {first}, expected price 1999 and stock 7"
        );

        let name = format!("smoke crud renamed {}", self.run_id);
        let update = json!({
            "name": name,
            "description": "updated by the smoke test",
            "price_cents": 2499,
            "stock": 9,
        });
        let answer = self
            .send(Method::PUT, &path, Some(token.as_str()), Some(&update))
            .await?;
        let updated = answer.expect(StatusCode::OK)?;
        ensure!(
            updated["price_cents"] == 2499_i64 && updated["name"] == name.as_str(),
            "PUT {path} answered {updated}, expected the new name and price"
        );
        let after = self.get_product(&id).await?;
        ensure!(
            after["price_cents"] == 2499_i64
                && after["stock"] == 9_i64
                && after["name"] == name.as_str(),
            "GET {path} after the update shows {after} (a stale cache?)"
        );

        self.send(Method::DELETE, &path, Some(token.as_str()), None)
            .await?
            .expect(StatusCode::NO_CONTENT)?;
        self.send(Method::GET, &path, None, None)
            .await?
            .expect_error(StatusCode::NOT_FOUND)?;
        Ok(())
    }

    // ---- orders ----

    /// Places an order and checks the 201 answer; the order's id.
    async fn place_order(
        &self,
        token: &str,
        product_id: &str,
        quantity: i64,
        card_token: Option<&str>,
        total_cents: i64,
    ) -> anyhow::Result<String> {
        let mut body = json!({"items": [{"product_id": product_id, "quantity": quantity}]});
        if let Some(card) = card_token {
            body["card_token"] = json!(card);
        }
        let answer = self
            .send(Method::POST, "/orders", Some(token), Some(&body))
            .await?;
        let order = answer.expect(StatusCode::CREATED)?;
        ensure!(
            order["status"] == "PENDING" && order["total_cents"] == total_cents,
            "POST /orders answered status {} total {}, expected PENDING and {total_cents}",
            order["status"],
            order["total_cents"]
        );
        text_field(order, "id", "POST /orders")
    }

    /// Polls the order until it leaves PENDING; fails unless it reached `want`.
    async fn wait_for_status(&self, token: &str, id: &str, want: &str) -> anyhow::Result<Value> {
        let path = format!("/orders/{id}");
        let deadline = Instant::now() + self.config.order_timeout;
        loop {
            let answer = self.send(Method::GET, &path, Some(token), None).await?;
            let order = answer.expect(StatusCode::OK)?;
            match order["status"].as_str() {
                Some("PENDING") => {}
                Some(status) if status == want => return Ok(order.clone()),
                _ => bail!(
                    "order {id} ended {}, expected {want}: {order}",
                    order["status"]
                ),
            }
            if Instant::now() >= deadline {
                bail!(
                    "order {id} still PENDING after {} s, expected {want}",
                    self.config.order_timeout.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Watches the order events on NATS; started before an order is placed.
    async fn watch(&self) -> Result<EventWatch, String> {
        match &self.nats {
            Ok(client) => EventWatch::start(client, &self.config.subject_prefix)
                .await
                .map_err(|e| format!("{e:#}")),
            Err(error) => Err(error.clone()),
        }
    }

    async fn confirmed_order(&mut self) -> anyhow::Result<()> {
        let token = self.token()?;
        let product = self
            .create_product(&token, "smoke confirmed", 1250, 5)
            .await?;
        let watch = self.watch().await;
        let id = self
            .place_order(&token, &product, 2, Some("tok_visa"), 2500)
            .await?;
        self.orders.push(id.clone());
        self.confirmed = Some(PlacedOrder {
            id: id.clone(),
            watch,
        });
        let stock = self.stock_of(&product).await?;
        ensure!(
            stock == 3,
            "stock is {stock} after ordering 2 of 5, expected 3"
        );
        self.wait_for_status(&token, &id, "CONFIRMED").await?;
        let stock = self.stock_of(&product).await?;
        ensure!(
            stock == 3,
            "stock is {stock} once the order is CONFIRMED, expected it to stay 3"
        );
        Ok(())
    }

    async fn declined_order(&mut self) -> anyhow::Result<()> {
        let token = self.token()?;
        let product = self
            .create_product(&token, "smoke declined", 1250, 5)
            .await?;
        let watch = self.watch().await;
        let id = self
            .place_order(&token, &product, 2, Some("tok_decline_smoke"), 2500)
            .await?;
        self.orders.push(id.clone());
        self.declined = Some(PlacedOrder {
            id: id.clone(),
            watch,
        });
        let order = self.wait_for_status(&token, &id, "CANCELLED").await?;
        ensure!(
            order["cancel_reason"]
                .as_str()
                .is_some_and(|r| !r.trim().is_empty()),
            "the CANCELLED order has no cancel_reason: {order}"
        );
        self.wait_for_stock(&product, 5).await
    }

    async fn over_limit_order(&mut self) -> anyhow::Result<()> {
        let token = self.token()?;
        let product = self
            .create_product(&token, "smoke over limit", 600_000, 5)
            .await?;
        let id = self
            .place_order(&token, &product, 2, None, 1_200_000)
            .await?;
        self.orders.push(id.clone());
        let order = self.wait_for_status(&token, &id, "CANCELLED").await?;
        ensure!(
            order["cancel_reason"].is_string(),
            "the CANCELLED order has no cancel_reason: {order}"
        );
        Ok(())
    }

    async fn other_users_order(&mut self) -> anyhow::Result<()> {
        let order = self
            .orders
            .first()
            .cloned()
            .context("needs an order of the first user, and none was placed")?;
        let other = self.register_user("b").await?;
        let token = self.login_as(&other).await?;
        self.send(
            Method::GET,
            &format!("/orders/{order}"),
            Some(token.as_str()),
            None,
        )
        .await?
        .expect_error(StatusCode::NOT_FOUND)
    }

    async fn no_token(&mut self) -> anyhow::Result<()> {
        self.send(Method::GET, "/profile", None, None)
            .await?
            .expect_error(StatusCode::UNAUTHORIZED)?;
        let body = json!({"items": [{"product_id": uuid::Uuid::nil(), "quantity": 1}]});
        self.send(Method::POST, "/orders", None, Some(&body))
            .await?
            .expect_error(StatusCode::UNAUTHORIZED)?;
        self.send(
            Method::GET,
            "/orders/00000000-0000-0000-0000-000000000000",
            None,
            None,
        )
        .await?
        .expect_error(StatusCode::UNAUTHORIZED)
    }

    // ---- events ----

    async fn confirmed_order_events(&mut self) -> anyhow::Result<()> {
        let expected = [
            self.topics.order_created.clone(),
            self.topics.payment_success.clone(),
            self.topics.order_confirmed.clone(),
        ];
        saga_events(self.confirmed.take(), &expected).await
    }

    async fn declined_order_events(&mut self) -> anyhow::Result<()> {
        let expected = [
            self.topics.order_created.clone(),
            self.topics.payment_failed.clone(),
            self.topics.order_cancelled.clone(),
        ];
        saga_events(self.declined.take(), &expected).await
    }
}

/// The order's events arrived in `expected` order, each once, and nothing else followed.
async fn saga_events(placed: Option<PlacedOrder>, expected: &[String]) -> anyhow::Result<()> {
    let placed = placed.context("needs the order, and it was not placed")?;
    let mut watch = placed
        .watch
        .map_err(|e| anyhow!("could not watch NATS: {e}"))?;
    let seen = watch
        .collect(&placed.id, expected.len(), EVENTS_TIMEOUT, QUIET)
        .await;
    check_saga(&seen, expected).map_err(|e| anyhow!("order {}: {e}", placed.id))
}

fn text_field(body: &Value, field: &str, what: &str) -> anyhow::Result<String> {
    body[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{what}: no {field} in {body}"))
}

/// At most 200 characters of a body, for a failure reason.
fn snippet(text: &str) -> String {
    let mut cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    if cut.is_empty() {
        "(empty body)".to_owned()
    } else {
        cut
    }
}

/// An event seen on NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `Kafka-Topic`, or the subject's token after the prefix.
    pub topic: String,
    /// The subject's last token (the order id).
    pub key: String,
    /// `ce_id`.
    pub id: Option<String>,
    /// `ce_time`: when the service emitted it (RFC 3339, so it sorts as text).
    pub time: Option<String>,
    /// When it arrived here.
    pub at: Instant,
}

impl Seen {
    pub fn from_parts(
        prefix: &str,
        subject: &str,
        header: impl Fn(&str) -> Option<String>,
        at: Instant,
    ) -> Self {
        let below_prefix = subject
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(subject);
        let topic = header(contracts::subjects::KAFKA_TOPIC_HEADER)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| below_prefix.split('.').next().unwrap_or("").to_owned());
        Self {
            topic,
            key: subject.rsplit('.').next().unwrap_or("").to_owned(),
            id: header("ce_id"),
            time: header("ce_time"),
            at,
        }
    }
}

/// A core NATS subscription to `<prefix>.*.*`, read in the background from the moment it is
/// started (so it sees an order's events even when it is read later).
#[derive(Debug)]
pub struct EventWatch {
    events: mpsc::UnboundedReceiver<Seen>,
    reader: tokio::task::JoinHandle<()>,
}

impl EventWatch {
    pub async fn start(client: &async_nats::Client, prefix: &str) -> anyhow::Result<Self> {
        let subject = format!("{prefix}.*.*");
        let mut subscription = client
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("subscribing to {subject}"))?;
        // The server has the subscription once the flush round trip is done: nothing
        // published after this returns can be missed.
        client
            .flush()
            .await
            .with_context(|| format!("subscribing to {subject}"))?;
        let (sender, events) = mpsc::unbounded_channel();
        let prefix = prefix.to_owned();
        let reader = tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let header = |name: &str| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_owned())
                };
                let seen =
                    Seen::from_parts(&prefix, message.subject.as_str(), header, Instant::now());
                if sender.send(seen).is_err() {
                    break;
                }
            }
        });
        Ok(Self { events, reader })
    }

    /// The events keyed `key`, until `expected` of them arrived (or `timeout` passed), plus
    /// any that arrive within `quiet` after the `expected`-th.
    pub async fn collect(
        &mut self,
        key: &str,
        expected: usize,
        timeout: Duration,
        quiet: Duration,
    ) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<Seen> = Vec::new();
        loop {
            let quiet_until = expected
                .checked_sub(1)
                .and_then(|last| seen.get(last))
                .map(|last| last.at + quiet);
            let until = quiet_until.unwrap_or(deadline);
            match tokio::time::timeout_at(until, self.events.recv()).await {
                Ok(Some(event)) if event.key == key => {
                    // Buffered events that arrived after the quiet window do not count.
                    if quiet_until.is_some_and(|end| event.at > end) {
                        break;
                    }
                    seen.push(event);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        seen
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Exactly the `expected` topics, each `ce_id` once, in saga order by `ce_time`.
///
/// The order is read from the events' own times, not from their arrival: the bridge keeps
/// each partition's order (what Kafka guarantees), but events of one order live on different
/// topics, and the bridge may mirror a later topic's record before an earlier one's.
pub fn check_saga(seen: &[Seen], expected: &[String]) -> Result<(), String> {
    if let Some(event) = seen.iter().find(|e| e.time.is_none()) {
        return Err(format!("an event on {} has no ce_time", event.topic));
    }
    let mut by_time: Vec<&Seen> = seen.iter().collect();
    // RFC 3339 in UTC with a fixed precision: text order is time order.
    by_time.sort_by(|a, b| a.time.cmp(&b.time));
    let seen: Vec<Seen> = by_time.into_iter().cloned().collect();
    let seen = seen.as_slice();
    let mut ids: Vec<&str> = Vec::with_capacity(seen.len());
    for event in seen {
        let Some(id) = event.id.as_deref() else {
            return Err(format!("an event on {} has no ce_id", event.topic));
        };
        if ids.contains(&id) {
            return Err(format!(
                "ce_id {id} ({}) was delivered more than once",
                event.topic
            ));
        }
        ids.push(id);
    }
    let topics: Vec<&str> = seen.iter().map(|e| e.topic.as_str()).collect();
    if topics.len() > expected.len() && topics[..expected.len()] == expected[..] {
        return Err(format!(
            "unexpected {} within {} s after {}: saw [{}]",
            topics[expected.len()],
            QUIET.as_secs(),
            expected.last().map_or("", String::as_str),
            topics.join(", ")
        ));
    }
    if topics != expected {
        return Err(format!(
            "saw [{}], expected [{}]",
            topics.join(", "),
            expected.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(topic: &str, id: &str) -> Seen {
        Seen {
            topic: topic.into(),
            key: "o1".into(),
            id: Some(id.into()),
            // Ids double as the emission order in these tests.
            time: Some(format!("2026-11-25T10:00:0{id}.000000Z")),
            at: Instant::now(),
        }
    }

    fn expected() -> Vec<String> {
        ["order_created", "payment_success", "order_confirmed"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn the_saga_in_order_passes() {
        let events = [
            seen("order_created", "1"),
            seen("payment_success", "2"),
            seen("order_confirmed", "3"),
        ];
        assert_eq!(check_saga(&events, &expected()), Ok(()));
    }

    #[test]
    fn missing_reordered_duplicated_or_extra_events_fail() {
        let missing = [seen("order_created", "1"), seen("payment_success", "2")];
        assert_eq!(
            check_saga(&missing, &expected()),
            Err(
                "saw [order_created, payment_success], expected [order_created, \
                 payment_success, order_confirmed]"
                    .into()
            )
        );
        // Emitted out of saga order: a payment before its order existed.
        let out_of_order = [
            seen("payment_success", "1"),
            seen("order_created", "2"),
            seen("order_confirmed", "3"),
        ];
        assert!(check_saga(&out_of_order, &expected()).is_err());
        // Emitted in order but mirrored from different topics in another order: fine.
        let arrived_late = [
            seen("payment_success", "2"),
            seen("order_created", "1"),
            seen("order_confirmed", "3"),
        ];
        assert_eq!(check_saga(&arrived_late, &expected()), Ok(()));
        let duplicated = [
            seen("order_created", "1"),
            seen("order_created", "1"),
            seen("payment_success", "2"),
            seen("order_confirmed", "3"),
        ];
        assert_eq!(
            check_saga(&duplicated, &expected()),
            Err("ce_id 1 (order_created) was delivered more than once".into())
        );
        let extra = [
            seen("order_created", "1"),
            seen("payment_success", "2"),
            seen("order_confirmed", "3"),
            seen("order_cancelled", "4"),
        ];
        assert!(
            check_saga(&extra, &expected())
                .expect_err("extra")
                .starts_with("unexpected order_cancelled within 2 s after order_confirmed")
        );
        let no_id = [Seen {
            id: None,
            ..seen("order_created", "1")
        }];
        assert!(check_saga(&no_id, &expected()).is_err());
    }

    #[test]
    fn events_read_from_headers_or_subject() {
        let at = Instant::now();
        let from_headers = Seen::from_parts(
            "events",
            "events.t1_order_created.o1",
            |name| match name {
                "Kafka-Topic" => Some("t1_order_created".into()),
                "ce_id" => Some("e1".into()),
                _ => None,
            },
            at,
        );
        assert_eq!(from_headers.topic, "t1_order_created");
        assert_eq!(from_headers.key, "o1");
        assert_eq!(from_headers.id.as_deref(), Some("e1"));
        let from_subject = Seen::from_parts("events", "events.payment_failed.o2", |_| None, at);
        assert_eq!(from_subject.topic, "payment_failed");
        assert_eq!(from_subject.key, "o2");
        assert_eq!(from_subject.id, None);
    }

    #[test]
    fn snippets_are_short() {
        assert_eq!(snippet(""), "(empty body)");
        assert_eq!(snippet("abc"), "abc");
        assert_eq!(snippet(&"x".repeat(300)).chars().count(), 201);
    }

    #[tokio::test]
    async fn collect_stops_after_the_quiet_window() {
        let (sender, events) = mpsc::unbounded_channel();
        let mut watch = EventWatch {
            events,
            reader: tokio::spawn(async {}),
        };
        let now = Instant::now();
        let event = |topic: &str, key: &str, id: &str, at: Instant| Seen {
            topic: topic.into(),
            key: key.into(),
            id: Some(id.into()),
            time: Some(format!("2026-11-25T10:00:0{id}.000000Z")),
            at,
        };
        for e in [
            event("order_created", "o1", "1", now),
            event("order_created", "other", "9", now),
            event("payment_success", "o1", "2", now),
            event("order_confirmed", "o1", "3", now),
            // Arrived long after the quiet window: not counted.
            event("order_confirmed", "o1", "4", now + Duration::from_secs(60)),
        ] {
            sender.send(e).expect("send");
        }
        let seen = watch
            .collect("o1", 3, Duration::from_secs(5), Duration::from_millis(50))
            .await;
        let ids: Vec<_> = seen.iter().filter_map(|s| s.id.as_deref()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
    }
}
