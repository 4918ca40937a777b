//! HTTP as the tests and benches speak it to the services.

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Sends `request` (which must get an answer) and returns its status and JSON body; a body
/// that is not JSON reads as `Null`, so a test asserts on the status first.
pub async fn send_json(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A keep-alive HTTP/1.1 client as a service's caller would hold one: TCP_NODELAY on (without
/// it Nagle and delayed ACK add ~40 ms to small exchanges), up to `idle_per_host` pooled
/// connections.
pub fn keep_alive_client<B>(idle_per_host: usize) -> Client<HttpConnector, B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle_per_host)
        .build(connector)
}

/// The value of the sample `name{...}` whose labels include `label` (as written in the
/// exposition, e.g. `status="refunded"`) on `base`'s `/metrics`; `None` while the series
/// does not exist.
pub async fn metric_sample(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    label: &str,
) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let series = format!("{name}{{");
    text.lines()
        .find(|line| line.starts_with(&series) && line.contains(label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}
