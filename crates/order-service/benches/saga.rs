//! The order saga's latency, `POST /orders` → `CONFIRMED`, next to raw Kafka produce→consume
//! latency on the same broker, in the same run.
//!
//! One process runs product-service, order-service and payment-service, started as the
//! order-service tests start them (`tests/common`: `App::build` of each, fresh databases,
//! unique `SERVICE_NAME`s, one fresh `TOPIC_PREFIX`, `ORDER_PAYMENT_TIMEOUT` 60s) against the
//! real Postgres, Redis, NATS and Kafka-API broker. One product with plenty of stock is
//! created, and one bearer token is issued for one user.
//!
//! (a) **Saga**: at a fixed rate (open loop: each order starts on its own schedule, whatever
//! the earlier ones are doing), `POST /orders` for one unit goes to order-service's own port,
//! then `GET /orders/{id}` is polled every 5 ms until it says `CONFIRMED`. Latency is from the
//! POST being sent to `CONFIRMED` being observed, so it includes up to one polling interval.
//! Any other end (`CANCELLED`, an error, 90 s without `CONFIRMED`) panics.
//!
//! (b) **Raw Kafka**: the same count at the same rate through plain rdkafka on the same
//! broker: a `FutureProducer` configured as the saga's producer (idempotent, `acks=all`,
//! `linger.ms=1`) and a `StreamConsumer` (`fetch.wait.max.ms=5`, as the saga's consumers) in a
//! fresh group subscribed to a fresh topic created with `mesh::kafka::ensure_topics` (as many
//! partitions as the saga's topics). Latency is from the produce call to the message being
//! received.
//!
//! Both are warmed up first (consumer groups joined, connections open). No goal is set for
//! this benchmark: it prints the figures, the ratio of the saga's p50 to the raw p50, and the
//! saga's p50 over three raw hops.
//!
//! Run it with `just bench-saga` (starts the infrastructure if needed), or
//! `cargo bench -p order-service --bench saga` with it up. `BENCH_ORDERS` (default 100) and
//! `BENCH_RATE` (orders, and raw records, per second; default 10) override the load.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Services;
use mesh::kafka::{KafkaSettings, ensure_topics};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use testkit::bench::{count_from_env, join, percentile};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

const DEFAULT_ORDERS: usize = 100;
const DEFAULT_RATE: usize = 10;
/// Orders placed one at a time, and raw records sent one at a time, before measuring.
const WARMUP: usize = 10;
/// How often an order's status is read.
const POLL: Duration = Duration::from_millis(5);
/// An order not confirmed by then fails the benchmark.
const CONFIRM_DEADLINE: Duration = Duration::from_secs(90);
/// How long the raw consumer may take to join its group and get its partitions.
const ASSIGN_DEADLINE: Duration = Duration::from_secs(60);
/// How long the producer keeps trying to deliver a raw record.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka hops the brief counts for one saga.
const SAGA_HOPS: f64 = 3.0;
const PRICE_CENTS: i64 = 100;

const RAW: &str = "raw Kafka produce->consume";
const SAGA: &str = "POST /orders -> CONFIRMED";

/// What an order needs: where order-service listens, who orders what.
#[derive(Debug, Clone)]
struct Shop {
    http: reqwest::Client,
    orders: String,
    token: String,
    body: Value,
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: Duration,
    p99: Duration,
}

#[tokio::main]
async fn main() {
    let count = count_from_env("BENCH_ORDERS", DEFAULT_ORDERS);
    let rate = count_from_env("BENCH_RATE", DEFAULT_RATE);
    let period = Duration::from_secs_f64(1.0 / rate as f64);

    let stack = common::start_with("60s", Services::WithPayments).await;
    let stock = i64::try_from(WARMUP + count + 1000).expect("stock fits");
    let product_id = stack.product(PRICE_CENTS, stock).await;
    let shop = Shop {
        http: stack.http.clone(),
        orders: stack.orders.clone(),
        token: common::token_for(Uuid::now_v7()),
        body: common::items(&product_id, 1),
    };

    // (a) The saga, on a runtime worker rather than the `main` thread.
    let saga = join(tokio::spawn(measure_saga(shop, count, period)).await);

    // (b) Raw Kafka on the same broker.
    let raw = join(tokio::spawn(measure_raw(count, period)).await);

    stack.stop().await;
    report(count, rate, raw, saga);
}

/// Places one order and polls it until `CONFIRMED`; the time from the POST being sent to
/// `CONFIRMED` being read.
async fn one_order(shop: Shop) -> Duration {
    let started = Instant::now();
    let (status, order) = testkit::http::send_json(
        shop.http
            .post(format!("{}/orders", shop.orders))
            .bearer_auth(&shop.token)
            .json(&shop.body),
    )
    .await;
    assert_eq!(
        status,
        reqwest::StatusCode::CREATED.as_u16(),
        "POST /orders answered {status}: {order}"
    );
    let id = order["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an order without an id: {order}"))
        .to_owned();
    let url = format!("{}/orders/{id}", shop.orders);
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (status, order) =
            testkit::http::send_json(shop.http.get(&url).bearer_auth(&shop.token)).await;
        assert_eq!(
            status,
            reqwest::StatusCode::OK.as_u16(),
            "GET /orders/{id} answered {status}: {order}"
        );
        match order["status"].as_str() {
            Some("CONFIRMED") => return started.elapsed(),
            Some("PENDING") => {}
            _ => panic!("order {id} did not stay on its way to CONFIRMED: {order}"),
        }
        assert!(
            started.elapsed() < CONFIRM_DEADLINE,
            "order {id} not confirmed after {CONFIRM_DEADLINE:?}: {order}"
        );
    }
}

async fn measure_saga(shop: Shop, count: usize, period: Duration) -> Stats {
    eprintln!("saga: warming up with {WARMUP} orders, one at a time");
    for _ in 0..WARMUP {
        one_order(shop.clone()).await;
    }
    eprintln!("saga: {count} orders at one every {period:?}");
    let samples = at_fixed_rate(count, period, |_| tokio::spawn(one_order(shop.clone()))).await;
    stats(samples)
}

/// Starts `count` tasks, the i-th at `i × period` from now, and gathers their results.
async fn at_fixed_rate<F>(count: usize, period: Duration, mut start: F) -> Vec<Duration>
where
    F: FnMut(usize) -> JoinHandle<Duration>,
{
    let first = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for index in 0..count {
        tokio::time::sleep_until(first + period.mul_f64(index as f64)).await;
        tasks.push(start(index));
    }
    let mut samples = Vec::with_capacity(count);
    for task in tasks {
        samples.push(join(task.await));
    }
    samples
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    Stats {
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
    }
}

/// Sends one record and waits for the broker's ack.
async fn produce(producer: FutureProducer, topic: Arc<str>, payload: String) {
    let key = Uuid::new_v4().to_string();
    let record = FutureRecord::to(&topic)
        .key(key.as_str())
        .payload(payload.as_bytes());
    if let Err((error, _)) = producer.send(record, DELIVERY_TIMEOUT).await {
        panic!("producing to {topic} failed: {error}");
    }
}

/// What the raw consumer saw: a payload, and when it arrived.
type Receipt = (String, Instant);

/// The next receipt, or a panic after `deadline`.
async fn next_receipt(
    receipts: &mut mpsc::UnboundedReceiver<Receipt>,
    deadline: Instant,
) -> Receipt {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, receipts.recv()).await {
        Ok(Some(receipt)) => receipt,
        Ok(None) => panic!("the raw consumer stopped"),
        Err(_) => panic!("the raw consumer received nothing in time"),
    }
}

async fn measure_raw(count: usize, period: Duration) -> Stats {
    let mut settings = KafkaSettings::new(testkit::kafka_brokers(), "bench-raw");
    settings.delivery_timeout = DELIVERY_TIMEOUT;
    let topic: Arc<str> = Arc::from(testkit::unique_name("bench_raw"));
    let topics: [&str; 1] = [&topic];
    ensure_topics(&settings, &topics, contracts::topics::PARTITIONS)
        .await
        .unwrap_or_else(|error| panic!("cannot create {topic} (try `just infra`): {error}"));

    // The saga's own client settings, so the baseline differs from the saga only in what
    // the saga does on top of Kafka.
    let producer: FutureProducer = settings.producer_config().create().expect("raw producer");
    let consumer: StreamConsumer = settings
        .group_consumer_config(&testkit::unique_name("bench_raw"))
        .create()
        .expect("raw consumer");
    consumer.subscribe(&topics).expect("subscribe");

    let (sender, mut receipts) = mpsc::unbounded_channel::<Receipt>();
    let consumer_task = tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(message) => {
                    let received = Instant::now();
                    let payload =
                        String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                    if sender.send((payload, received)).is_err() {
                        return;
                    }
                }
                Err(error) => eprintln!("raw consumer: {error}"),
            }
        }
    });

    // Warm up: the first record arrives once the group has its partitions; then a few round
    // trips one at a time.
    eprintln!("raw Kafka: waiting for the consumer's partitions, then {WARMUP} round trips");
    let deadline = Instant::now() + ASSIGN_DEADLINE;
    for index in 0..=WARMUP {
        let marker = format!("warm-{index}");
        produce(producer.clone(), topic.clone(), marker.clone()).await;
        loop {
            let (payload, _) = next_receipt(&mut receipts, deadline).await;
            if payload == marker {
                break;
            }
        }
    }

    eprintln!("raw Kafka: {count} records at one every {period:?}");
    let first = tokio::time::Instant::now();
    let mut sent: Vec<Instant> = Vec::with_capacity(count);
    let mut sends = Vec::with_capacity(count);
    for index in 0..count {
        tokio::time::sleep_until(first + period.mul_f64(index as f64)).await;
        sent.push(Instant::now());
        sends.push(tokio::spawn(produce(
            producer.clone(),
            topic.clone(),
            index.to_string(),
        )));
    }
    let mut latencies: Vec<Option<Duration>> = vec![None; count];
    let mut missing = count;
    let deadline = Instant::now() + DELIVERY_TIMEOUT * 2;
    while missing > 0 {
        let (payload, received) = next_receipt(&mut receipts, deadline).await;
        let Ok(index) = payload.parse::<usize>() else {
            continue;
        };
        let slot = latencies
            .get_mut(index)
            .unwrap_or_else(|| panic!("an unexpected record: {payload:?}"));
        if slot.is_none() {
            *slot = Some(received.saturating_duration_since(sent[index]));
            missing -= 1;
        }
    }
    for send in sends {
        join(send.await);
    }
    consumer_task.abort();
    stats(latencies.into_iter().flatten().collect())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn report(count: usize, rate: usize, raw: Stats, saga: Stats) {
    println!();
    println!(
        "saga benchmark ({count} orders and {count} raw records, each at {rate}/s, same broker; \
         orders polled every {} ms)",
        POLL.as_millis()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>11}",
        "path", "p50 ms", "p99 ms", "ratio p50"
    );
    for (label, stats) in [(RAW, raw), (SAGA, saga)] {
        let ratio = stats.p50.as_secs_f64() / raw.p50.as_secs_f64();
        println!(
            "{label:<28} {:>10.2} {:>10.2} {ratio:>11.2}",
            millis(stats.p50),
            millis(stats.p99)
        );
    }
    let per_hop = saga.p50.as_secs_f64() / (SAGA_HOPS * raw.p50.as_secs_f64());
    println!(
        "saga p50 / raw p50: {:.2}; saga p50 / ({SAGA_HOPS:.0} x raw p50): {per_hop:.2} \
         (no goal set: figures only)",
        saga.p50.as_secs_f64() / raw.p50.as_secs_f64()
    );
}
