//! OTLP export against a real OTLP/gRPC receiver (the collector's own services, served by
//! tonic on a free port): log events arrive as log records tied to their span's trace, spans
//! as traces, and the exporter's own stack is never exported as logs.
//!
//! One test per binary: `telemetry::init_with` installs the process-wide subscriber.

use std::net::SocketAddr;
use std::time::Duration;

use kit::config::LogFormat;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the receiver was sent.
struct Received {
    logs: mpsc::UnboundedSender<ExportLogsServiceRequest>,
    traces: mpsc::UnboundedSender<ExportTraceServiceRequest>,
}

#[tonic::async_trait]
impl LogsService for ReceiverHandle {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let _ = self.0.logs.send(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for ReceiverHandle {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.traces.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[derive(Clone)]
struct ReceiverHandle(std::sync::Arc<Received>);

fn text(value: Option<&AnyValue>) -> Option<&str> {
    match value?.value.as_ref()? {
        Value::StringValue(text) => Some(text),
        _ => None,
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_spans_reach_an_otlp_receiver_tied_to_their_trace() {
    let (logs_tx, mut logs_rx) = mpsc::unbounded_channel();
    let (traces_tx, mut traces_rx) = mpsc::unbounded_channel();
    let receiver = ReceiverHandle(std::sync::Arc::new(Received {
        logs: logs_tx,
        traces: traces_tx,
    }));
    let router = tonic::service::Routes::new(LogsServiceServer::new(receiver.clone()))
        .add_service(TraceServiceServer::new(receiver))
        .into_axum_router();
    let server = kit::server::HttpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let endpoint = format!("http://{}", server.local_addr());
    let stop = CancellationToken::new();
    tokio::spawn(server.serve(router, stop.clone()));

    let guard = kit::telemetry::init_with("telemetry-test", LogFormat::Json, Some(&endpoint))
        .expect("telemetry");
    {
        let span = tracing::info_span!("place_order");
        let _entered = span.enter();
        tracing::info!(order_id = "o-1", "Order placed.");
        // The exporter's own stack: stdout only, never exported (it would feed itself).
        tracing::info!(target: "h2", "frame sent");
    }
    // Dropping the guard flushes both exports.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("flushed");

    let mut records: Vec<(LogRecord, Option<String>)> = Vec::new();
    while let Ok(Some(request)) = tokio::time::timeout(Duration::from_secs(5), logs_rx.recv()).await
    {
        for resource_logs in request.resource_logs {
            let service = resource_logs
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"))
                .map(str::to_owned);
            for scope in resource_logs.scope_logs {
                records.extend(scope.log_records.into_iter().map(|r| (r, service.clone())));
            }
        }
        if records
            .iter()
            .any(|(r, _)| text(r.body.as_ref()) == Some("Order placed."))
        {
            break;
        }
    }
    let (placed, service) = records
        .iter()
        .find(|(r, _)| text(r.body.as_ref()) == Some("Order placed."))
        .unwrap_or_else(|| panic!("the log event was not exported: {records:?}"));
    assert_eq!(service.as_deref(), Some("telemetry-test"));
    assert_eq!(placed.severity_text, "INFO");
    assert_eq!(attribute(&placed.attributes, "order_id"), Some("o-1"));
    assert!(
        !records
            .iter()
            .any(|(r, _)| text(r.body.as_ref()) == Some("frame sent")),
        "the exporter's own stack was exported: {records:?}"
    );

    let request = tokio::time::timeout(Duration::from_secs(5), traces_rx.recv())
        .await
        .expect("spans exported")
        .expect("receiver open");
    let span = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .find(|s| s.name == "place_order")
        .expect("the span was exported");
    assert_eq!(
        placed.trace_id, span.trace_id,
        "the log record carries its span's trace"
    );
    assert_eq!(placed.span_id, span.span_id);
    stop.cancel();
}
