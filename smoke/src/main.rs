//! `smoke`: the end-to-end scenarios against a running stack (`just up && just smoke`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use smoke::scenarios::Config;

#[derive(Debug, Parser)]
#[command(name = "smoke", version, about)]
struct Args {
    /// The gateway every scenario goes through.
    #[arg(long, env = "SMOKE_GATEWAY", default_value = "http://127.0.0.1:8000")]
    gateway: String,
    /// NATS, only to watch the saga's events.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The prefix of the saga topics (the stack's `TOPIC_PREFIX`).
    #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// The first token of the subjects the bridge publishes on.
    #[arg(long, default_value = contracts::subjects::EVENTS_SUBJECT_PREFIX)]
    subject_prefix: String,
    /// How long an order may stay PENDING, in seconds.
    #[arg(long, default_value_t = 30)]
    order_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!("smoke: gateway {}, NATS {}", args.gateway, args.nats_url);
    let report = smoke::run(Config {
        gateway: args.gateway.trim_end_matches('/').to_owned(),
        nats_url: args.nats_url,
        topic_prefix: args.topic_prefix,
        subject_prefix: args.subject_prefix,
        order_timeout: Duration::from_secs(args.order_timeout_secs),
    })
    .await;
    println!("{}", report.summary());
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
