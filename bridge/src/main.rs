use bridge::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env(&kit::Env::from_process())?;
    let _telemetry = kit::telemetry::init(&config.service)?;
    App::build(config).await?.run_until_stopped().await?;
    Ok(())
}
