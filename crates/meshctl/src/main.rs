//! `meshctl`: operate a Shopmesh stack from the command line.

mod dlq;
mod events;
mod saga;
mod services;

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mesh::kafka::{KafkaSettings, ensure_topics};

#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Kafka topics of the saga.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Every service instance on the mesh ($SRV.INFO and $SRV.STATS): endpoints, request counts.
    Services {
        #[command(flatten)]
        nats: NatsArgs,
        /// How long to collect answers, in milliseconds.
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
    },
    /// Saga events as the bridge mirrors them into NATS.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// The events of one order, in emission order (`ce_time`), with the time between steps.
    Saga {
        /// The order id (the key of every saga event).
        order_id: String,
        #[command(flatten)]
        nats: NatsArgs,
        /// The JetStream stream the bridge mirrors into.
        #[arg(long, default_value = contracts::topics::EVENTS_STREAM)]
        stream: String,
        /// The first token of the event subjects (`<prefix>.<topic>.<key>`).
        #[arg(long, default_value = events::DEFAULT_PREFIX)]
        subject_prefix: String,
    },
    /// Notifications parked as dead letters by notification-service.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsAction {
    /// Create every saga topic that does not exist yet (what `just up` runs).
    Ensure {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = contracts::topics::PARTITIONS)]
        partitions: i32,
        /// Put in front of every topic name, as the services do with the same variable.
        #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
        topic_prefix: String,
    },
}

#[derive(Debug, Subcommand)]
enum EventsAction {
    /// Print live events from `events.>` (or `events.<FILTER>`), one line each.
    Tail {
        /// Subject filter below the prefix, e.g. `order_created.>` or `*.<order-id>`; a single
        /// topic name means every key of it.
        filter: Option<String>,
        #[command(flatten)]
        nats: NatsArgs,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per event instead of text.
        #[arg(long)]
        json: bool,
        /// The first token of the event subjects.
        #[arg(long, default_value = events::DEFAULT_PREFIX)]
        subject_prefix: String,
    },
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// The dead letters (`GET /notifications?status=DEAD`).
    List {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        service: ServiceArg,
    },
    /// Deliver a dead letter again (`POST /notifications/{event_id}/replay`).
    Replay {
        /// The `ce_id` of the event the notification is for.
        event_id: String,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        service: ServiceArg,
    },
}

#[derive(Debug, Args)]
struct NatsArgs {
    /// The NATS server.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

impl NatsArgs {
    async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(&self.nats_url)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.nats_url))
    }
}

#[derive(Debug, Args)]
struct ServiceArg {
    /// The mesh name of notification-service.
    #[arg(long, default_value = "notification-service")]
    service: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Topics {
            action:
                TopicsAction::Ensure {
                    brokers,
                    partitions,
                    topic_prefix,
                },
        } => {
            let settings = KafkaSettings::new(&brokers, "meshctl");
            let names = contracts::topics::Topics::new(&topic_prefix);
            let topics = names.all();
            ensure_topics(&settings, &topics, partitions)
                .await
                .with_context(|| format!("creating the saga topics on {brokers}"))?;
            for topic in topics {
                println!("topic {topic} ready");
            }
        }
        Command::Services { nats, wait_ms } => {
            let client = nats.connect().await?;
            services::run(&client, Duration::from_millis(wait_ms)).await?;
        }
        Command::Events {
            action:
                EventsAction::Tail {
                    filter,
                    nats,
                    limit,
                    json,
                    subject_prefix,
                },
        } => {
            let client = nats.connect().await?;
            let options = events::TailOptions {
                prefix: subject_prefix,
                filter,
                limit,
                json,
            };
            events::tail(&client, &options).await?;
        }
        Command::Saga {
            order_id,
            nats,
            stream,
            subject_prefix,
        } => {
            let client = nats.connect().await?;
            saga::run(client, &stream, &subject_prefix, &order_id).await?;
        }
        Command::Dlq { action } => match action {
            DlqAction::List { nats, service } => {
                let client = nats.connect().await?;
                dlq::list(client, &service.service).await?;
            }
            DlqAction::Replay {
                event_id,
                nats,
                service,
            } => {
                let client = nats.connect().await?;
                dlq::replay(client, &service.service, &event_id).await?;
            }
        },
    }
    Ok(())
}
