//! SIGTERM drains in-flight work: a real process, a real signal.
//!
//! The test re-executes its own binary as the service (`KIT_DRAIN_CHILD=1`), sends it a slow
//! request and a background task, then SIGTERM, and checks both finished before it exited.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use kit::{Metrics, Readiness, Service};

const CHILD_ENV: &str = "KIT_DRAIN_CHILD";

/// The child: a service with a slow route and a consumer-like task.
async fn run_child() {
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "slow done"
        }),
    );
    let service = Service::bind("drain-child", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind")
        .with_router(router)
        .with_ops(Metrics::new("drain-child"), Readiness::new())
        .with_grace(Duration::from_secs(10));
    let token = service.shutdown().token();
    service.shutdown().spawn(async move {
        token.cancelled().await;
        // A consumer finishing the message it holds.
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("consumer drained");
    });
    println!("port {}", service.port());
    service.run_until_stopped().await.expect("served");
    println!("exited cleanly");
}

#[test]
fn sigterm_drains_in_flight_requests_and_tasks() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(run_child());
        return;
    }

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "sigterm_drains_in_flight_requests_and_tasks",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port: u16 = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("port ").map(|p| p.parse().expect("port")))
        .expect("child printed its port");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let slow = tokio::spawn(reqwest::get(format!("http://127.0.0.1:{port}/slow")));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());

        let response = slow
            .await
            .expect("joined")
            .expect("in-flight request answered");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "slow done");

        // New connections are refused once draining started.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let late = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        assert!(late.is_err(), "accepted a connection while draining");
    });

    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("child exits");
    assert!(exit.success(), "child exit: {exit:?}");
    assert!(rest.iter().any(|l| l == "consumer drained"), "{rest:?}");
    assert!(rest.iter().any(|l| l == "exited cleanly"), "{rest:?}");
}
