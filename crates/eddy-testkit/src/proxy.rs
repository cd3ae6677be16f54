//! A TCP proxy on 127.0.0.1 in front of another server: it delays every byte by a fixed time in
//! each direction (a database on another machine) and can hold all traffic (a database that
//! stopped answering) until released.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A running proxy, on a thread and runtime of its own (so that it forwards even while the
/// runtime of the code under test is stuck); stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    held: watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TcpProxy {
    /// Listens on a free port and forwards each connection to `target`, `delay` late each way.
    pub fn start(target: SocketAddr, delay: Duration) -> TcpProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let (held, watching) = watch::channel(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    while let Ok((client, _)) = listener.accept().await {
                        let Ok(server) = TcpStream::connect(target).await else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        pipe(client_read, server_write, delay, watching.clone());
                        pipe(server_read, client_write, delay, watching.clone());
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        TcpProxy {
            addr,
            held,
            stop: Some(stop),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding in both directions (connections stay open, bytes wait).
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Forwards again, the waiting bytes first.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Copies one direction: what is read is due `delay` later, and written then (unless held), so
/// the delay adds latency without limiting throughput.
fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    mut held: watch::Receiver<bool>,
) {
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if due_tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some((due, bytes)) = due_rx.recv().await {
            if held.wait_for(|held| !*held).await.is_err() {
                return;
            }
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
}
