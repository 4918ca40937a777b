//! `meshctl services`: every instance that answers the NATS service API.
//!
//! `$SRV.INFO` and `$SRV.STATS` without a service name reach every registered service; each
//! instance answers once on the reply inbox, so the answers are collected for a short while
//! and merged by instance id.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::Deserialize;

/// `$SRV.INFO` answer (the service API's `io.nats.micro.v1.info_response`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct InfoReply {
    pub name: String,
    pub id: String,
    pub version: String,
    pub endpoints: Vec<EndpointInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EndpointInfo {
    pub subject: String,
    pub queue_group: String,
}

/// `$SRV.STATS` answer (`io.nats.micro.v1.stats_response`); times are in nanoseconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StatsReply {
    pub name: String,
    pub id: String,
    pub version: String,
    pub endpoints: Vec<EndpointStats>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EndpointStats {
    pub subject: String,
    pub queue_group: String,
    pub num_requests: u64,
    pub num_errors: u64,
    pub processing_time: u64,
    pub average_processing_time: u64,
}

/// One service instance, from its INFO and STATS answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub id: String,
    pub version: String,
    /// `(subject, queue group)` of each endpoint.
    pub endpoints: Vec<(String, String)>,
    /// `None` when the instance did not answer `$SRV.STATS` in time.
    pub stats: Option<Totals>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub average: Duration,
}

pub async fn run(client: &async_nats::Client, wait: Duration) -> anyhow::Result<()> {
    let (infos, stats) = tokio::try_join!(
        collect(client, "$SRV.INFO", wait),
        collect(client, "$SRV.STATS", wait)
    )?;
    let infos: Vec<InfoReply> = infos
        .iter()
        .filter_map(|payload| serde_json::from_slice(payload).ok())
        .collect();
    let stats: Vec<StatsReply> = stats
        .iter()
        .filter_map(|payload| serde_json::from_slice(payload).ok())
        .collect();
    let instances = merge(infos, stats);
    if instances.is_empty() {
        println!(
            "no service answered $SRV.INFO within {} ms",
            wait.as_millis()
        );
        return Ok(());
    }
    for instance in &instances {
        println!("{}", render(instance));
    }
    Ok(())
}

/// Sends one request on `subject` and collects every answer until `wait` has passed.
async fn collect(
    client: &async_nats::Client,
    subject: &'static str,
    wait: Duration,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .with_context(|| format!("subscribing to the reply inbox for {subject}"))?;
    client
        .publish_with_reply(subject, inbox, Default::default())
        .await
        .with_context(|| format!("sending {subject}"))?;
    client
        .flush()
        .await
        .with_context(|| format!("sending {subject}"))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut payloads = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await {
        payloads.push(message.payload.to_vec());
    }
    // Best effort: the subscription ends with the process anyway.
    let _ = answers.unsubscribe().await;
    Ok(payloads)
}

/// Merges INFO and STATS answers by instance id, sorted by name, then id.
pub fn merge(infos: Vec<InfoReply>, stats: Vec<StatsReply>) -> Vec<Instance> {
    let mut instances: BTreeMap<String, Instance> = BTreeMap::new();
    for info in infos {
        let instance = instances.entry(info.id.clone()).or_default();
        instance.name = info.name;
        instance.id = info.id;
        instance.version = info.version;
        instance.endpoints = info
            .endpoints
            .into_iter()
            .map(|e| (e.subject, e.queue_group))
            .collect();
    }
    for reply in stats {
        let instance = instances.entry(reply.id.clone()).or_default();
        if instance.id.is_empty() {
            // Answered STATS only: take what STATS says about it.
            instance.name = reply.name.clone();
            instance.id = reply.id.clone();
            instance.version = reply.version.clone();
            instance.endpoints = reply
                .endpoints
                .iter()
                .map(|e| (e.subject.clone(), e.queue_group.clone()))
                .collect();
        }
        instance.stats = Some(totals(&reply.endpoints));
    }
    let mut list: Vec<Instance> = instances.into_values().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    list
}

/// Requests and errors summed over the endpoints; the average weighs each endpoint by its
/// requests.
pub fn totals(endpoints: &[EndpointStats]) -> Totals {
    let requests: u64 = endpoints.iter().map(|e| e.num_requests).sum();
    let errors: u64 = endpoints.iter().map(|e| e.num_errors).sum();
    let total_nanos: u128 = endpoints
        .iter()
        .map(|e| {
            if e.processing_time > 0 {
                u128::from(e.processing_time)
            } else {
                u128::from(e.average_processing_time) * u128::from(e.num_requests)
            }
        })
        .sum();
    let average = if requests == 0 {
        Duration::ZERO
    } else {
        let nanos = total_nanos / u128::from(requests);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    };
    Totals {
        requests,
        errors,
        average,
    }
}

/// One line per instance.
pub fn render(instance: &Instance) -> String {
    let endpoints = if instance.endpoints.is_empty() {
        "-".to_owned()
    } else {
        instance
            .endpoints
            .iter()
            .map(|(subject, queue)| {
                if queue.is_empty() {
                    subject.clone()
                } else {
                    format!("{subject} (queue {queue})")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let stats = match instance.stats {
        Some(t) => format!(
            "requests={} errors={} avg={}",
            t.requests,
            t.errors,
            format_duration(t.average)
        ),
        None => "requests=? errors=? avg=? (no stats answer)".to_owned(),
    };
    format!(
        "{:<22} {:<24} v{:<8} {stats}  endpoints: {endpoints}",
        instance.name, instance.id, instance.version
    )
}

/// `850ns`, `412µs`, `3.25ms`, `1.50s`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        format!("{}µs", nanos / 1_000)
    } else if nanos < 1_000_000_000 {
        format!("{:.2}ms", duration.as_secs_f64() * 1_000.0)
    } else {
        format!("{:.2}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = r#"{"type":"io.nats.micro.v1.info_response","name":"order-service",
        "id":"ABC","description":"orders","version":"0.1.0","metadata":null,
        "endpoints":[{"name":"http","subject":"mesh.order-service.http",
        "queue_group":"order-service","metadata":null}]}"#;

    const STATS: &str = r#"{"type":"io.nats.micro.v1.stats_response","name":"order-service",
        "id":"ABC","version":"0.1.0","started":"2025-01-01T00:00:00Z",
        "endpoints":[{"name":"http","subject":"mesh.order-service.http","num_requests":4,
        "num_errors":1,"processing_time":8000000,"average_processing_time":2000000,
        "last_error":"","queue_group":"order-service"}]}"#;

    #[test]
    fn info_and_stats_merge_by_id() {
        let info: InfoReply = serde_json::from_str(INFO).expect("info");
        let stats: StatsReply = serde_json::from_str(STATS).expect("stats");
        let other = InfoReply {
            name: "gateway".into(),
            id: "ZZZ".into(),
            version: "0.1.0".into(),
            endpoints: vec![],
        };
        let list = merge(vec![info, other], vec![stats]);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "gateway");
        assert_eq!(list[0].stats, None);
        let orders = &list[1];
        assert_eq!(
            orders.endpoints,
            [(
                "mesh.order-service.http".to_owned(),
                "order-service".to_owned()
            )]
        );
        assert_eq!(
            orders.stats,
            Some(Totals {
                requests: 4,
                errors: 1,
                average: Duration::from_millis(2),
            })
        );
        let line = render(orders);
        assert!(line.starts_with("order-service "), "{line}");
        assert!(line.contains("requests=4 errors=1 avg=2.00ms"), "{line}");
        assert!(
            line.contains("mesh.order-service.http (queue order-service)"),
            "{line}"
        );
        assert!(render(&list[0]).contains("no stats answer"));
    }

    #[test]
    fn averages_weigh_endpoints_by_requests() {
        let endpoint = |requests, average_ms: u64| EndpointStats {
            num_requests: requests,
            average_processing_time: average_ms * 1_000_000,
            ..Default::default()
        };
        let sum = totals(&[endpoint(1, 10), endpoint(3, 2)]);
        assert_eq!(sum.requests, 4);
        assert_eq!(sum.average, Duration::from_millis(4));
        assert_eq!(totals(&[]).average, Duration::ZERO);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_nanos(850)), "850ns");
        assert_eq!(format_duration(Duration::from_micros(412)), "412µs");
        assert_eq!(format_duration(Duration::from_micros(3250)), "3.25ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.50s");
    }
}
