//! `meshctl`: operate a Shopmesh stack from the command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
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
}

#[derive(Debug, Subcommand)]
enum TopicsAction {
    /// Create every saga topic that does not exist yet (what `just up` runs).
    Ensure {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = contracts::topics::PARTITIONS)]
        partitions: i32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Topics {
            action:
                TopicsAction::Ensure {
                    brokers,
                    partitions,
                },
        } => {
            let settings = KafkaSettings::new(&brokers, "meshctl");
            ensure_topics(&settings, &contracts::topics::ALL, partitions)
                .await
                .with_context(|| format!("creating the saga topics on {brokers}"))?;
            for topic in contracts::topics::ALL {
                println!("topic {topic} ready");
            }
        }
    }
    Ok(())
}
