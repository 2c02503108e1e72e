//! The HTTP endpoint (hyper, HTTP/1.1): `GET /healthz` (alias `/health`) for the
//! directors: 200 `ok`, or 503 with one reason per line (see `ops::health`);
//! `GET /metrics` for Prometheus (OpenMetrics when asked for in `Accept`, as
//! Prometheus does, else the classic text format; see `ops::metrics`).
//!
//! Bounded like the SSH port (docs/limits.md): at most `health.max_connections`
//! connections; when they are all open, the oldest *idle* one (no request being
//! answered) is closed to make room, so a flood of idle connections cannot keep
//! a director's probe out: it connects, and is the newest. A connection with no
//! complete request header within `health.idle_timeout` (new or kept alive) is
//! closed; a header larger than `health.max_header_size` gets 431; no
//! connection lives longer than [`MAX_LIFETIME`].

use crate::ops::health::Health;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// No connection lives longer (a client reading a response slowly).
pub const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// The bounds of the endpoint (`[health]`).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_header_size: usize,
}

impl Limits {
    pub fn from_config(h: &crate::config::HealthConfig) -> Limits {
        Limits {
            max_connections: h.max_connections.max(1),
            idle_timeout: h.idle_timeout.0.max(Duration::from_millis(100)),
            max_header_size: usize::try_from(h.max_header_size.0)
                .unwrap_or(usize::MAX)
                .max(1024),
        }
    }
}

/// One open connection: cancelled to make room; `busy` while a request is
/// being answered; `asked` once a request arrived.
struct Open {
    close: CancellationToken,
    busy: Arc<AtomicBool>,
    asked: Arc<AtomicBool>,
}

/// The open connections by age.
#[derive(Default)]
struct Table {
    seq: u64,
    open: BTreeMap<u64, Open>,
    last_full_log: Option<std::time::Instant>,
}

impl Table {
    /// Room for one more under `max`: closes the oldest idle connection if
    /// needed (one that never sent a request first: a director's probe sends
    /// its request at once). `false` if every connection is answering a request.
    fn make_room(&mut self, max: usize) -> bool {
        if self.open.len() < max {
            return true;
        }
        let now = std::time::Instant::now();
        if self
            .last_full_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_full_log = Some(now);
            tracing::warn!(
                limit = max,
                "health.max_connections HTTP connections open: closing the oldest idle one to make room"
            );
        }
        // The oldest that never sent a request, else the oldest not answering one.
        let oldest_idle = self
            .open
            .iter()
            .find(|(_, o)| !o.asked.load(Ordering::SeqCst))
            .or_else(|| {
                self.open
                    .iter()
                    .find(|(_, o)| !o.busy.load(Ordering::SeqCst))
            })
            .map(|(k, _)| *k);
        match oldest_idle {
            Some(k) => {
                if let Some(o) = self.open.remove(&k) {
                    o.close.cancel();
                }
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the table when its task ends.
struct Registered {
    table: Arc<Mutex<Table>>,
    seq: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.table.lock().unwrap().open.remove(&self.seq);
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to one request; `openmetrics`: the client accepts OpenMetrics
/// (Prometheus does), else `/metrics` answers in the classic text format.
pub fn respond(
    health: &Health,
    method: &Method,
    path: &str,
    openmetrics: bool,
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (method, path) {
        (&Method::GET | &Method::HEAD, "/healthz" | "/health") => {
            let r = health.reasons();
            if r.is_empty() {
                (StatusCode::OK, TEXT, "ok\n".to_string())
            } else {
                let mut b = r.join("\n");
                b.push('\n');
                (StatusCode::SERVICE_UNAVAILABLE, TEXT, b)
            }
        }
        (&Method::GET | &Method::HEAD, "/metrics") => {
            // Refresh the health gauges with the scrape.
            let _ = health.reasons();
            if openmetrics {
                (StatusCode::OK, OPENMETRICS, health.metrics().render())
            } else {
                (
                    StatusCode::OK,
                    PROMETHEUS_TEXT,
                    health.metrics().render_text(),
                )
            }
        }
        (_, "/healthz" | "/health" | "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /healthz or /metrics\n".into(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(if method == Method::HEAD {
        String::new()
    } else {
        body
    })));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Serve until the process exits: it keeps answering (503 `stopping`) while the
/// node drains.
pub async fn serve(listener: TcpListener, health: Arc<Health>, limits: Limits) {
    let table: Arc<Mutex<Table>> = Arc::default();
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "health endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let close = CancellationToken::new();
        let (busy, asked) = (Arc::<AtomicBool>::default(), Arc::<AtomicBool>::default());
        let reg = {
            let mut t = table.lock().unwrap();
            if !t.make_room(limits.max_connections) {
                continue; // every connection is answering: this one is dropped
            }
            t.seq += 1;
            let seq = t.seq;
            t.open.insert(
                seq,
                Open {
                    close: close.clone(),
                    busy: busy.clone(),
                    asked: asked.clone(),
                },
            );
            Registered {
                table: table.clone(),
                seq,
            }
        };
        let health = health.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _reg = reg;
            let svc = service_fn(move |req: Request<Incoming>| {
                busy.store(true, Ordering::SeqCst);
                asked.store(true, Ordering::SeqCst);
                let om = req
                    .headers()
                    .get_all(hyper::header::ACCEPT)
                    .iter()
                    .any(|v| {
                        v.to_str()
                            .is_ok_and(|v| v.contains("application/openmetrics-text"))
                    });
                let r = respond(&health, req.method(), req.uri().path(), om);
                busy.store(false, Ordering::SeqCst);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout)
                .max_header_size(limits.max_header_size)
                .max_buf_size(limits.max_header_size.max(8192))
                .max_headers(64)
                .serve_connection(TokioIo::new(sock), svc);
            // A stuck client cannot hold a task for ever.
            tokio::select! {
                _ = tokio::time::timeout(MAX_LIFETIME, conn) => {}
                _ = close.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(flags: &[(bool, bool)]) -> Table {
        let mut t = Table::default();
        for (i, &(asked, busy)) in flags.iter().enumerate() {
            t.open.insert(
                i as u64,
                Open {
                    close: CancellationToken::new(),
                    busy: Arc::new(AtomicBool::new(busy)),
                    asked: Arc::new(AtomicBool::new(asked)),
                },
            );
        }
        t
    }

    fn left(t: &Table) -> Vec<u64> {
        t.open.keys().copied().collect()
    }

    #[test]
    fn room_is_made_by_closing_the_oldest_idle_connection() {
        // (asked, busy) by age, oldest first
        let mut t = table(&[(true, false), (false, false), (true, true)]);
        assert!(t.make_room(4), "below the bound: nothing closed");
        assert_eq!(left(&t), [0, 1, 2]);
        let tok = t.open[&1].close.clone();
        assert!(t.make_room(3));
        assert_eq!(left(&t), [0, 2], "never asked anything: closed first");
        assert!(tok.is_cancelled());
        let mut t = table(&[(true, true), (true, false), (true, false)]);
        assert!(t.make_room(3));
        assert_eq!(left(&t), [0, 2], "else the oldest not answering");
        let mut t = table(&[(true, true), (true, true)]);
        assert!(!t.make_room(2), "all answering: the newcomer is closed");
        assert_eq!(left(&t), [0, 1]);
    }
}
