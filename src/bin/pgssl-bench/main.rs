//! `pgssl-bench`: a load generator for any Postgres-wire endpoint (pgssl, PostgreSQL, PgBouncer).
//!
//! Modes (each bounded by `--duration`, with a progress line per second on stderr, then a table on
//! stdout and optionally JSON):
//! - `connect`: a new connection per transaction: SSLRequest, TLS handshake, start-up, authentication
//!   (SCRAM passes through), `SELECT 1`, Terminate, close;
//! - `handshake`: SSLRequest, TLS handshake and a start-up without a user name, which the proxy itself
//!   refuses (FATAL 28000): pgssl's own cost, without PostgreSQL's backend start;
//! - `steady`: `SELECT 1` (or `--sql`) over persistent connections;
//! - `reconnect`: like `steady`, but a client whose connection fails opens another (after
//!   `--retry-pause-ms`) instead of ending: for failovers. The summary separates failed transactions
//!   (on an established session) from failed logins, counts each SQLSTATE, and lists every spell of
//!   more than `--gap-ms` without a single successful transaction (wall clock, Unix ms), which a
//!   benchmark lines up with the moment it killed or promoted a server;
//! - `idle`: opens `--clients` authenticated connections and holds them, reporting the server's resident
//!   memory per connection (with `--server-pid`).
//!
//! `bare-server` runs the comparison baseline: a plain rustls accept loop that answers SSLRequest,
//! completes the handshake, reads the start-up and refuses it — the least any TLS front end must do.
//!
//! TLS clients accept any certificate (libpq's `sslmode=require`): this is a load tool, not a verifier.

/// `println!` that ignores a closed pipe (`pgssl-bench … | head` must not panic).
macro_rules! outln {
    ($($arg:tt)*) => { pgssl::control::operations::print_line(&mut std::io::stdout(), &format!($($arg)*)) };
}

/// `eprintln!` likewise.
macro_rules! errln {
    ($($arg:tt)*) => { pgssl::control::operations::print_line(&mut std::io::stderr(), &format!($($arg)*)) };
}

mod baseline;
mod clients;
mod frontend;
mod process;

use baseline::bare_server;
use clients::{connect_once, handshake_once, run_idle, steady_client};
use frontend::Session;
use process::{process_cpu_seconds, process_rss_kib};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{BufMut, BytesMut};
use clap::{Parser, Subcommand, ValueEnum};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(
    name = "pgssl-bench",
    version,
    about = "Load generator for Postgres-wire TLS endpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure an endpoint.
    Run(RunArgs),
    /// Run the bare rustls baseline server.
    BareServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6545")]
        listen: SocketAddr,
        /// Certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Private key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Connect,
    Handshake,
    Steady,
    Reconnect,
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Tls {
    /// SSLRequest, then TLS (any certificate accepted).
    Require,
    /// Plaintext.
    Disable,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Connect)]
    mode: Mode,
    /// Endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:8060")]
    target: String,
    /// User name.
    #[arg(long, default_value = "tableau")]
    user: String,
    /// Password (or the PGPASSWORD environment variable).
    #[arg(long, env = "PGPASSWORD", hide_env_values = true, default_value = "")]
    password: String,
    /// Database.
    #[arg(long, default_value = "postgres")]
    database: String,
    /// TLS or not.
    #[arg(long, value_enum, default_value_t = Tls::Require)]
    tls: Tls,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds to measure (after warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Server process to sample CPU and memory from (/proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The statement each transaction runs in `steady` and `reconnect` modes (simple protocol).
    #[arg(long, default_value = "SELECT 1")]
    sql: String,
    /// `reconnect`: pause after a failed connection or login before the next attempt, as an
    /// application's retry would.
    #[arg(long, default_value_t = 100)]
    retry_pause_ms: u64,
    /// `reconnect`: the shortest spell without a successful transaction that is reported.
    #[arg(long, default_value_t = 250)]
    gap_ms: u64,
    /// Write the result as JSON to this file ('-' for stdout).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::BareServer { listen, cert, key } => bare_server(listen, &cert, &key).await,
    }
}

/// Shared counters and latency samples.
struct Stats {
    measuring: AtomicBool,
    stop: AtomicBool,
    ok: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    last_error: Mutex<Option<String>>,
    /// Of `errors`, those before a session was established (connect, TLS, start-up, login).
    failed_logins: AtomicU64,
    /// Errors by SQLSTATE, or `io` for a lost or refused connection, `other` for the rest.
    codes: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Unix ms of the latest successful transaction of any client (0: none yet).
    last_ok_unix_ms: AtomicU64,
    /// Spells longer than `--gap-ms` without a successful transaction: (last before, first after).
    gaps: Mutex<Vec<(u64, u64)>>,
    gap_ms: u64,
}

impl Stats {
    async fn record(&self, started: Instant, result: anyhow::Result<()>) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let now = unix_ms();
                let before = self.last_ok_unix_ms.swap(now, Ordering::Relaxed);
                if before != 0 && now.saturating_sub(before) > self.gap_ms {
                    self.gaps.lock().await.push((before, now));
                }
                let us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                let mut l = self.latencies_us.lock().await;
                // Bounded memory: keep at most 2 million samples.
                if l.len() < 2_000_000 {
                    l.push(us);
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let code = match e.downcast_ref::<frontend::ClientError>() {
                    Some(frontend::ClientError::Server(s)) => s.code.clone(),
                    Some(frontend::ClientError::Io(_)) => "io".to_string(),
                    _ if e.downcast_ref::<std::io::Error>().is_some() => "io".to_string(),
                    _ => "other".to_string(),
                };
                *self.codes.lock().await.entry(code).or_default() += 1;
                *self.last_error.lock().await = Some(format!("{e:#}"));
            }
        }
    }

    /// Like [`Stats::record`] for a failure before the session was established.
    async fn record_login_failure(&self, error: anyhow::Error) {
        if self.measuring.load(Ordering::Relaxed) {
            self.failed_logins.fetch_add(1, Ordering::Relaxed);
        }
        self.record(Instant::now(), Err(error)).await;
    }
}

/// Milliseconds since the Unix epoch, to line up with a benchmark script's clock.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.duration == 0 {
        bail!("--clients and --duration must be at least 1");
    }
    let target: SocketAddr = tokio::net::lookup_host(&args.target)
        .await
        .with_context(|| format!("cannot resolve {}", args.target))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.target))?;
    let args = Arc::new(args);
    let stats = Arc::new(Stats {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
        last_error: Mutex::new(None),
        failed_logins: AtomicU64::new(0),
        codes: Mutex::new(Default::default()),
        last_ok_unix_ms: AtomicU64::new(0),
        gaps: Mutex::new(Vec::new()),
        gap_ms: args.gap_ms,
    });
    let connector = tls_connector();

    if args.mode == Mode::Idle {
        return run_idle(&args, target, &connector).await;
    }

    let tasks = spawn_clients(&args, target, &connector, &stats);
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let (elapsed, cpu_seconds) = measure(&args, &stats).await;
    stats.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let result = summarize(&args, &stats, elapsed, cpu_seconds).await;
    write_json(args.json.as_ref(), &result)
}

/// One task per client, each looping over its mode's unit of work until `stats.stop`.
fn spawn_clients(
    args: &Arc<RunArgs>,
    target: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    stats: &Arc<Stats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..args.clients)
        .map(|_| {
            let (args, stats, connector) = (args.clone(), stats.clone(), connector.clone());
            tokio::spawn(async move {
                match args.mode {
                    Mode::Steady => steady_client(&args, target, &connector, &stats).await,
                    Mode::Reconnect => {
                        while !stats.stop.load(Ordering::Relaxed) {
                            steady_client(&args, target, &connector, &stats).await;
                        }
                    }
                    _ => loop {
                        if stats.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let started = Instant::now();
                        let result = match args.mode {
                            Mode::Handshake => handshake_once(&args, target, &connector).await,
                            _ => connect_once(&args, target, &connector).await,
                        };
                        stats.record(started, result).await;
                    },
                }
            })
        })
        .collect()
}

/// Counts for `--duration` seconds, printing each second's progress; the elapsed time and the
/// server's CPU seconds over it (with `--server-pid`).
async fn measure(args: &RunArgs, stats: &Stats) -> (f64, Option<f64>) {
    let cpu_before = args.server_pid.and_then(process_cpu_seconds);
    stats.measuring.store(true, Ordering::Relaxed);
    let measure_start = Instant::now();
    let mut last = 0;
    for second in 1..=args.duration {
        tokio::time::sleep_until((measure_start + Duration::from_secs(second)).into()).await;
        let ok = stats.ok.load(Ordering::Relaxed);
        errln!(
            "[{second:>3}s] {ok} ok, {} errors, {}/s",
            stats.errors.load(Ordering::Relaxed),
            ok - last
        );
        last = ok;
    }
    stats.measuring.store(false, Ordering::Relaxed);
    let elapsed = measure_start.elapsed().as_secs_f64();
    let cpu_after = args.server_pid.and_then(process_cpu_seconds);
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    (elapsed, cpu)
}

/// Prints the table row and returns the JSON result.
async fn summarize(
    args: &RunArgs,
    stats: &Stats,
    elapsed: f64,
    cpu_seconds: Option<f64>,
) -> serde_json::Value {
    let mut latencies = std::mem::take(&mut *stats.latencies_us.lock().await);
    latencies.sort_unstable();
    let ok = stats.ok.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed;
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(latencies[i]) / 1000.0
    };
    let cpu_per_op_us = cpu_seconds.filter(|_| ok > 0).map(|c| c / ok as f64 * 1e6);
    let mut result = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "target": args.target,
        "tls": args.tls == Tls::Require,
        "clients": args.clients,
        "duration_s": elapsed,
        "ok": ok,
        "errors": errors,
        "rate_per_s": rate,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
        "server_cpu_us_per_op": cpu_per_op_us,
        "last_error": stats.last_error.lock().await.clone(),
    });
    if args.mode == Mode::Reconnect {
        let failed_logins = stats.failed_logins.load(Ordering::Relaxed);
        result["failed_logins"] = failed_logins.into();
        result["failed_transactions"] = errors.saturating_sub(failed_logins).into();
        result["errors_by_code"] = serde_json::json!(*stats.codes.lock().await);
        let gaps = stats.gaps.lock().await;
        result["gaps_unix_ms"] = serde_json::json!(*gaps);
        for (before, after) in gaps.iter() {
            errln!(
                "no successful transaction for {} ms (Unix ms {before} to {after})",
                after - before
            );
        }
    }
    outln!(
        "{:<10} {:>7} {:>9} {:>8} {:>11} {:>9} {:>9} {:>14}",
        "mode",
        "clients",
        "ok",
        "errors",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "cpu µs/op"
    );
    outln!(
        "{:<10} {:>7} {:>9} {:>8} {:>11.1} {:>9.2} {:>9.2} {:>14}",
        result["mode"].as_str().unwrap_or_default(),
        args.clients,
        ok,
        errors,
        rate,
        pct(0.50),
        pct(0.99),
        cpu_per_op_us.map_or("-".into(), |c| format!("{c:.1}"))
    );
    if let Some(e) = stats.last_error.lock().await.as_ref() {
        errln!("last error: {e}");
    }
    result
}

fn write_json(dest: Option<&PathBuf>, value: &serde_json::Value) -> anyhow::Result<()> {
    match dest {
        None => Ok(()),
        Some(p) if p.as_os_str() == "-" => {
            outln!("{value}");
            Ok(())
        }
        Some(p) => std::fs::write(p, format!("{value}\n"))
            .with_context(|| format!("cannot write {}", p.display())),
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    match pgssl::tls::client::require_mode_connector() {
        Ok(connector) => connector,
        Err(e) => {
            errln!("error: cannot build a TLS client configuration: {e}");
            std::process::exit(1);
        }
    }
}
