//! The Prometheus endpoint of `serve --metrics`: a real scrape after real connections.

use std::time::Duration;

use pgssl::proxy::policy::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{CliEnv, ServeProcess};
use crate::client::{connect_plain, connect_tls, read_error, sqlstate};
use crate::harness::{INTERNAL_USER, Postgres, prepare_data_dir, wait_for};

pub async fn scrape(addr: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}

/// The value of the sample named `name` whose labels include every one of `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_real_connections_shows_the_counters_moved() {
    let pg = Postgres::start();
    let env = CliEnv::new(&pg.repository_text());
    prepare_data_dir(&env.data_dir(), Mode::Required);
    let serve = ServeProcess::start(
        &env,
        &[
            "--repository",
            &pg.repository_text(),
            "--metrics",
            "127.0.0.1:0",
        ],
    )
    .await;
    let log = serve.log_text();
    let metrics_addr = log
        .split("metrics=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the metrics address is logged")
        .to_string();

    let cert = env.data_dir().join("config/pgsql15/security/server.crt");
    let mut session = connect_tls(serve.addr, "tableau", &cert).await.unwrap();
    session
        .simple_query("SELECT repeat('x', 1000)")
        .await
        .unwrap();
    session.terminate().await.unwrap();
    assert_eq!(
        sqlstate(connect_plain(serve.addr, INTERNAL_USER).await),
        "28000"
    );
    let mut garbage = TcpStream::connect(serve.addr).await.unwrap();
    garbage.write_all(&[0, 0, 0, 4]).await.unwrap();
    assert_eq!(read_error(&mut garbage).await.code, "08P01");
    drop(garbage);

    // Session and negotiation counters are recorded after the client got its answer (every label is
    // registered up front, at 0): wait until the proxy has seen the closes.
    let text = wait_for(
        "the closes to be counted",
        Duration::from_secs(30),
        || async {
            let text = scrape(&metrics_addr).await;
            let counted = sample(
                &text,
                "pgssl_bytes_relayed_total",
                &["direction=\"to_client\""],
            )
            .unwrap_or(0.0)
                > 1000.0
                && sample(
                    &text,
                    "pgssl_negotiation_failures_total",
                    &["reason=\"bad_packet\""],
                )
                .is_some_and(|v| v >= 1.0)
                && sample(
                    &text,
                    "pgssl_bytes_relayed_total",
                    &["direction=\"to_upstream\""],
                )
                .is_some_and(|v| v > 0.0);
            if counted {
                Ok(text)
            } else {
                Err(format!("{text}\n{}", serve.log_text()))
            }
        },
    )
    .await;
    assert!(
        sample(&text, "pgssl_connections_accepted_total", &[]).unwrap() >= 3.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pgssl_tls_handshakes_total",
            &["version=\"TLSv1_3\"", "outcome=\"ok\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "pgssl_tls_handshake_duration_seconds_count", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pgssl_policy_rejections_total",
            &["mode=\"required\"", "class=\"internal\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "pgssl_negotiation_failures_total",
            &["reason=\"bad_packet\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "pgssl_upstream_connect_duration_seconds_count", &[]).unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "pgssl_bytes_relayed_total",
            &["direction=\"to_upstream\""]
        )
        .unwrap()
            > 0.0,
        "{text}\n{}",
        serve.log_text()
    );
    assert!(text.contains("# HELP pgssl_connections_active"), "{text}");
    // The one login the repository authenticated, relayed (passthrough: an external repository).
    assert_eq!(
        sample(
            &text,
            "pgssl_auth_attempts_total",
            &["mechanism=\"passthrough\"", "outcome=\"ok\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "pgssl_auth_duration_seconds_count", &[]).unwrap() >= 1.0,
        "{text}"
    );

    // Anything but GET /metrics is refused.
    let mut tcp = TcpStream::connect(&metrics_addr).await.unwrap();
    tcp.write_all(b"GET /admin HTTP/1.1\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");

    // Silent connections hold at most MAX_METRICS_CONNECTIONS slots; one more is closed unanswered,
    // and a scrape works again once they are gone.
    let mut silent = Vec::new();
    for _ in 0..pgssl::telemetry::MAX_METRICS_CONNECTIONS {
        silent.push(TcpStream::connect(&metrics_addr).await.unwrap());
    }
    // Not a wait for a condition: it lets the metrics server accept the silent connections before
    // the extra one, which nothing outside it can see.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&metrics_addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), extra.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(silent);
    wait_for(
        "a scrape after the slots freed",
        Duration::from_secs(30),
        || async {
            let mut tcp = TcpStream::connect(&metrics_addr).await.unwrap();
            tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            let _ = tcp.read_to_string(&mut response).await;
            if response.starts_with("HTTP/1.1 200 OK") {
                Ok(())
            } else {
                Err(response)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_without_secrets() {
    let pg = Postgres::start();
    let env = CliEnv::new(&pg.repository_text());
    let mut cmd = tokio::process::Command::from(crate::cli::pgssl_command(
        &env.data_dir(),
        &env.config(),
        &[
            "--log-format",
            "json",
            "serve",
            "--no-admin",
            "--listen",
            "127.0.0.1:0",
            "--repository",
            &pg.repository_text(),
        ],
    ));
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncBufReadExt::read_line(&mut stderr, &mut line),
    )
    .await
    .unwrap()
    .unwrap();
    let event: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["message"], "pgssl is serving");
    assert!(
        event["fields"]["listen"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(!line.contains(crate::harness::PASSWORD));
    // SAFETY: stopping our own child.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_measures_every_mode_and_writes_json() {
    let pg = Postgres::start();
    let proxy = crate::harness::Proxy::start(&pg, Mode::Required).await;
    let dir = tempfile::tempdir().unwrap();
    for mode in ["connect", "handshake", "steady", "idle"] {
        let json = dir.path().join(format!("{mode}.json"));
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgssl-bench"))
            .args([
                "run",
                "--mode",
                mode,
                "--clients",
                "2",
                "--duration",
                "1",
                "--warmup",
                "0",
            ])
            .args(["--target", &proxy.addr.to_string(), "--user", "tableau"])
            .arg("--json")
            .arg(&json)
            .env("PGPASSWORD", crate::harness::PASSWORD)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(result["mode"], mode);
        if mode != "idle" {
            assert!(result["ok"].as_u64().unwrap() > 0, "{mode}: {result}");
            assert_eq!(result["errors"], 0, "{mode}: {result}");
            assert!(result["p99_ms"].as_f64().unwrap() >= result["p50_ms"].as_f64().unwrap());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("[  1s]"),
                "a progress line"
            );
        }
    }
    proxy.stop().await;
}
