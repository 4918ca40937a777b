//! Logs and traces: `tracing` everywhere, JSON or pretty on stdout, OTLP when configured.
//!
//! With an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported as traces and
//! every log event as an OTLP log record (the compose stack's collector sends those to Loki),
//! carrying the trace and span ids of the span it happened in, so a log line leads to its
//! trace. stdout keeps every line either way.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, ServiceConfig};

/// Flushes pending spans and log records when dropped; keep it alive for the life of `main`.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops trace and log export"]
pub struct TelemetryGuard {
    providers: Option<(SdkTracerProvider, SdkLoggerProvider)>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some((traces, logs)) = self.providers.take() else {
            return;
        };
        if let Err(error) = traces.shutdown() {
            eprintln!("failed to flush traces: {error}");
        }
        if let Err(error) = logs.shutdown() {
            eprintln!("failed to flush logs: {error}");
        }
    }
}

/// Crates whose events are never exported as OTLP logs: the exporter's own stack (tonic, h2,
/// hyper, tower) and OpenTelemetry itself. Their events about an export would be exported in
/// turn, and an unreachable collector would feed its own error logs back in a loop. They
/// still reach stdout.
const NOT_EXPORTED_AS_LOGS: [&str; 6] =
    ["opentelemetry", "tonic", "h2", "hyper", "tower", "reqwest"];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`).
pub fn init(config: &ServiceConfig) -> Result<TelemetryGuard, TelemetryError> {
    init_with(
        &config.name,
        config.log_format,
        config.otlp_endpoint.as_deref(),
    )
}

pub fn init_with(
    service_name: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<TelemetryGuard, TelemetryError> {
    // W3C trace context is what the mesh and the middleware propagate.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (json, pretty) = match format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            ),
            None,
        ),
        LogFormat::Pretty => (None, Some(tracing_subscriber::fmt::layer().compact())),
    };

    let providers = otlp_endpoint
        .map(|endpoint| {
            Ok((
                tracer_provider(service_name, endpoint)?,
                logger_provider(service_name, endpoint)?,
            ))
        })
        .transpose()?;
    let spans = providers.as_ref().map(|(traces, _)| {
        tracing_opentelemetry::layer().with_tracer(traces.tracer(service_name.to_owned()))
    });
    let logs = providers
        .as_ref()
        .map(|(_, logs)| OpenTelemetryTracingBridge::new(logs).with_filter(exported_logs_filter()));
    if let Some((traces, _)) = &providers {
        opentelemetry::global::set_tracer_provider(traces.clone());
    }

    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(pretty)
        .with(spans)
        .with(logs)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { providers })
}

/// `RUST_LOG` (default `info`), less [`NOT_EXPORTED_AS_LOGS`].
fn exported_logs_filter() -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    NOT_EXPORTED_AS_LOGS.iter().fold(filter, |filter, target| {
        match format!("{target}=off").parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    })
}

fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_owned())
        .build()
}

fn exporter_error(
    endpoint: &str,
) -> impl FnOnce(opentelemetry_otlp::ExporterBuildError) -> TelemetryError {
    move |source| TelemetryError::Exporter {
        endpoint: endpoint.into(),
        source,
    }
}

fn logger_provider(
    service_name: &str,
    endpoint: &str,
) -> Result<SdkLoggerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(exporter_error(endpoint))?;
    Ok(SdkLoggerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service_name))
        .build())
}

fn tracer_provider(
    service_name: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(exporter_error(endpoint))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service_name))
        .build())
}
