//! The HTTP health endpoint keepalived polls (`GET /health`: 200 while the node
//! accepts uploads, 503 while it is stopping) and Prometheus metrics
//! (`GET /metrics`). Deliberately tiny: one request per connection, no keep-alive.

use crate::ops::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serve until the process exits: it keeps answering (503) while the node drains.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    connections: Arc<AtomicUsize>,
    stopping: Shutdown,
) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, connections, stopping) =
            (metrics.clone(), connections.clone(), stopping.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (code, body) = match path {
                "/health" if stopping.is_stopping() => {
                    ("503 Service Unavailable", "stopping\n".to_string())
                }
                "/health" => ("200 OK", "ok\n".to_string()),
                "/metrics" => ("200 OK", render(&metrics, &connections)),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

fn render(m: &Metrics, connections: &AtomicUsize) -> String {
    format!(
        "# TYPE ingestd_ssh_connections gauge\ningestd_ssh_connections {}\n\
         # TYPE ingestd_landed_files_total counter\ningestd_landed_files_total {}\n\
         # TYPE ingestd_landed_bytes_total counter\ningestd_landed_bytes_total {}\n",
        connections.load(Ordering::Relaxed),
        m.landed_files.load(Ordering::Relaxed),
        m.landed_bytes.load(Ordering::Relaxed),
    )
}
