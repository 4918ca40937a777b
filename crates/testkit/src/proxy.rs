//! A TCP proxy a test can cut and restore, to take a real server "down" for one client
//! without stopping the server the other tests share.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct TcpProxy {
    local_addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct ProxyState {
    up: bool,
    /// Cancelled to sever every connection opened while the proxy was up.
    connections: CancellationToken,
}

impl TcpProxy {
    /// Listens on an ephemeral loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local_addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ProxyState {
            up: true,
            connections: CancellationToken::new(),
        }));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, target, state.clone(), stop.clone()));
        Ok(Self {
            local_addr,
            state,
            stop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Severs every open connection and refuses new ones (they are accepted then closed).
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.up = false;
        state.connections.cancel();
        state.connections = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).up = true;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut inbound, _)) = accepted else {
            continue;
        };
        let severed = {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            if !state.up {
                drop(inbound);
                continue;
            }
            state.connections.clone()
        };
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                () = severed.cancelled() => {}
                _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}
