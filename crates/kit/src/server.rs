//! The HTTP listener every service and the gateway use.

use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A bound listener. Binding happens before serving so tests can bind port 0 and read the
/// port back before any request is sent.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and waits for the requests
    /// in flight to complete.
    pub async fn serve(self, router: Router, shutdown: CancellationToken) -> io::Result<()> {
        // TCP_NODELAY: without it, Nagle plus delayed ACK adds ~40 ms to small HTTP/2
        // responses (measured, DESIGN.md).
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "Cannot set TCP_NODELAY.");
            }
        });
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    }
}
