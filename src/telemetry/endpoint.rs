//! The metrics endpoint (`serve --metrics ADDR`): `GET /metrics` through axum on hyper, one request
//! per connection, a bounded request head, a timeout, and a cap on connections served at once.

use std::time::Duration;

use axum::http::header::{self, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::prometheus;

/// Metrics requests answered at once.
pub const MAX_METRICS_CONNECTIONS: usize = 16;

/// The time a metrics connection has for its request and the answer.
const METRICS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read (hyper's smallest buffer); a longer one is answered 431.
const METRICS_MAX_HEAD: usize = 8192;

/// The media type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `stop` is cancelled.
///
/// At most [`MAX_METRICS_CONNECTIONS`] requests are answered at once, each within 5 s; a connection
/// beyond that is closed at accept, so a scraper storm cannot pile up tasks.
pub async fn serve_metrics(listener: TcpListener, stop: CancellationToken) {
    let handle = prometheus();
    let app = metrics_router(handle);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            _ = upkeep.tick() => {
                handle.run_upkeep();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // One request per connection, its head bounded and due in time, the whole exchange too.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(METRICS_REQUEST_TIMEOUT)
                .max_buf_size(METRICS_MAX_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            let _ = tokio::time::timeout(METRICS_REQUEST_TIMEOUT, conn).await;
        });
    }
}

/// `GET /metrics` (and `HEAD`, which axum's `get` serves too): the Prometheus text of `handle`; any
/// other path is 404 and any other method 405.
fn metrics_router(handle: &'static PrometheusHandle) -> axum::Router {
    let render =
        move || async move { ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], handle.render()) };
    axum::Router::new()
        .route("/metrics", get(render))
        .method_not_allowed_fallback(|| async { only_get() })
        .fallback(|method: Method| async move {
            if method == Method::GET || method == Method::HEAD {
                plain(StatusCode::NOT_FOUND, "not found; try /metrics\n")
            } else {
                only_get()
            }
        })
}

/// The answer to any method but `GET` and `HEAD`.
fn only_get() -> Response {
    let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET or HEAD\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::names;

    /// `method path` through the metrics router: status, content type, body, `Allow` header.
    async fn ask(method: &str, path: &str) -> (StatusCode, String, String, Option<String>) {
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = metrics_router(prometheus()).oneshot(request).await.unwrap();
        let status = resp.status();
        let content_type = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let allow = resp
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
            allow,
        )
    }

    #[tokio::test]
    async fn answers_metrics_404_and_405() {
        metrics::counter!(names::RELOADS, "outcome" => "ok").increment(1);
        let (status, content_type, body, _) = ask("GET", "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            body.contains("pgssl_reloads_total{outcome=\"ok\"}"),
            "{body}"
        );
        assert_eq!(ask("GET", "/metrics?x=1").await.0, StatusCode::OK);
        // axum's `get` answers HEAD too, so the 405's Allow names both.
        assert_eq!(ask("HEAD", "/metrics").await.0, StatusCode::OK);
        assert_eq!(ask("HEAD", "/").await.0, StatusCode::NOT_FOUND);
        assert_eq!(ask("GET", "/").await.0, StatusCode::NOT_FOUND);
        assert_eq!(ask("GET", "/admin").await.0, StatusCode::NOT_FOUND);
        for (method, path) in [("POST", "/metrics"), ("DELETE", "/metrics"), ("POST", "/")] {
            let (status, _, _, allow) = ask(method, path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(allow.as_deref(), Some("GET, HEAD"), "{method} {path}");
        }
    }

    /// A metrics server on a free loopback port, serving until the token is cancelled.
    async fn server() -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve_metrics(listener, stop.clone()));
        (addr, stop)
    }

    /// Sends `request` on a new connection; what came back before the server closed it.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn one_request_per_connection_then_the_server_closes_it() {
        let (addr, stop) = server().await;
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{answer}"
        );
        // Without a Host header too.
        let answer = exchange(addr, b"GET /admin HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = exchange(addr, b"POST /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_huge_request_head_is_refused_unread() {
        let (addr, stop) = server().await;
        let mut request = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        request.resize(METRICS_MAX_HEAD * 4, b'a');
        let answer = exchange(addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_timeout() {
        let (addr, stop) = server().await;
        let started = tokio::time::Instant::now();
        let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n").await;
        assert_eq!(answer, "");
        assert!(
            started.elapsed() >= METRICS_REQUEST_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        stop.cancel();
    }
}
