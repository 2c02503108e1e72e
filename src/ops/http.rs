//! The HTTP endpoint (hyper, HTTP/1.1): `GET /healthz` (alias `/health`) for the
//! directors: 200 `ok`, or 503 with one reason per line (see `ops::health`);
//! `GET /metrics` for Prometheus (OpenMetrics when asked for in `Accept`, as
//! Prometheus does, else the classic text format; see `ops::metrics`).

use crate::ops::health::Health;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

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
pub async fn serve(listener: TcpListener, health: Arc<Health>) {
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "health endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let om = req
                    .headers()
                    .get_all(hyper::header::ACCEPT)
                    .iter()
                    .any(|v| {
                        v.to_str()
                            .is_ok_and(|v| v.contains("application/openmetrics-text"))
                    });
                let r = respond(&health, req.method(), req.uri().path(), om);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(sock), svc);
            // A stuck client cannot hold a task for ever.
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}
