//! Reload signalling between the CLI and a running server: a Unix socket in the data directory.
//!
//! `pending-changes apply` promotes the staged state on disk, then connects to
//! `<data-dir>/run/control.sock` and sends `reload`. The server re-reads the applied state, swaps in the
//! new settings (keeping the old ones if that fails) and answers one line: `ok <mode> <fingerprint>` or
//! `error <message>`. `status` is answered `ok <json>` with what the server runs with
//! ([`ServeStatus`]), so that commands describe the running server rather than the config file. The
//! socket's folder is 0700, so only the data directory's owner can reload. SIGHUP triggers the same
//! reload.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::atomic;
use crate::control::settings::LoadError;
use crate::control::state::StateStore;
use crate::proxy::policy::Mode;
use crate::proxy::settings::{LiveSettings, SettingsCell};
use crate::proxy::upstream::tls::UpstreamTlsMode;

/// The running server's pool, as the `pool` request reports it.
pub type PoolProbe = std::sync::Arc<crate::proxy::backend::Pool>;

/// Re-reads the applied state and swaps it in.
#[derive(Debug, Clone)]
pub struct Reloader {
    store: StateStore,
    cell: SettingsCell,
    upstream_tls: UpstreamTlsMode,
    lookups: Option<crate::control::settings::LookupBuilder>,
}

impl Reloader {
    /// A reloader that loads from `store` into `cell`, with `upstream_tls` from the configuration and
    /// `lookups` making a lookup user's verifier source.
    pub fn new(
        store: StateStore,
        cell: SettingsCell,
        upstream_tls: UpstreamTlsMode,
        lookups: Option<crate::control::settings::LookupBuilder>,
    ) -> Reloader {
        Reloader {
            store,
            cell,
            upstream_tls,
            lookups,
        }
    }

    /// Loads the applied state; on success new connections use it, on failure nothing changes.
    pub fn reload(&self) -> Result<std::sync::Arc<LiveSettings>, LoadError> {
        let next = match crate::control::settings::load(
            &self.store,
            self.upstream_tls,
            self.lookups.as_ref(),
        ) {
            Ok(next) => next,
            Err(e) => {
                metrics::counter!(crate::telemetry::names::RELOADS, "outcome" => "refused")
                    .increment(1);
                return Err(e);
            }
        };
        self.cell.replace(next);
        metrics::counter!(crate::telemetry::names::RELOADS, "outcome" => "ok").increment(1);
        let current = self.cell.current();
        info!(mode = %current.mode, certificate = current.cert_fingerprint.as_deref().unwrap_or("none"),
              "applied settings reloaded; new connections use them, open sessions are kept");
        Ok(current)
    }
}

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No server listens on this data directory.
    #[error("no pgssl server is running on this data directory")]
    NotRunning,
    /// Another server already owns the socket.
    #[error(
        "another pgssl server is already running on data directory {0} (stop it first, or use another --data-dir)"
    )]
    AlreadyRunning(PathBuf),
    /// The server answered with an error.
    #[error("the running server refused the change: {0}")]
    Refused(String),
    /// Socket trouble.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// What a running server reported after a reload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// The mode it now serves.
    pub mode: Mode,
    /// The fingerprint of the certificate it now serves, if any.
    pub cert_fingerprint: Option<String>,
}

impl ReloadReport {
    /// `mode M with certificate SHA256 F`: what new connections get.
    pub fn describe(&self) -> String {
        match &self.cert_fingerprint {
            Some(f) => format!("mode {} with certificate SHA256 {f}", self.mode),
            None => format!("mode {}", self.mode),
        }
    }
}

/// What a running `serve` runs with, as its `status` answer reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServeStatus {
    /// The address the proxy listens on (the bound one, so port 0 is resolved).
    pub listen: std::net::SocketAddr,
    /// The repository it relays to.
    pub upstream: String,
    /// Whether that repository is the managed one `serve` runs itself.
    pub managed: bool,
}

/// A request on the control socket: one word on one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// Reload the applied state.
    Reload,
    /// What the server runs with.
    Status,
    /// What the pool holds.
    Pool,
}

impl ControlRequest {
    /// The request on `line` (surrounding white space ignored), or `None` for anything else.
    pub fn parse(line: &str) -> Option<ControlRequest> {
        match line.trim() {
            "reload" => Some(ControlRequest::Reload),
            "status" => Some(ControlRequest::Status),
            "pool" => Some(ControlRequest::Pool),
            _ => None,
        }
    }
}

/// Binds the control socket, replacing a stale one left by a crashed server.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        atomic::create_private_dir(dir).map_err(io_err)?;
    }
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning(
                path.parent()
                    .and_then(Path::parent)
                    .unwrap_or(path)
                    .to_path_buf(),
            ));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    UnixListener::bind(path).map_err(io_err)
}

/// Answers control requests until `stop` is cancelled, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    reloader: Reloader,
    status: ServeStatus,
    pool: PoolProbe,
    stop: CancellationToken,
) {
    let status = serde_json::to_string(&status).unwrap_or_default();
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let reloader = reloader.clone();
        let status = status.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            // A request is one short word: never buffer more than a little from a local peer.
            let mut reader = tokio::io::BufReader::new(read.take(256));
            let request =
                tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            let Ok(Ok(_)) = request else { return };
            let reply = match ControlRequest::parse(&line) {
                Some(ControlRequest::Reload) => match reloader.reload() {
                    Ok(s) => format!(
                        "ok {} {}\n",
                        s.mode,
                        s.cert_fingerprint.as_deref().unwrap_or("-")
                    ),
                    Err(e) => {
                        warn!(error = %e, "reload refused; keeping the previous settings");
                        format!("error {}\n", one_line(&e.to_string()))
                    }
                },
                Some(ControlRequest::Status) => format!("ok {status}\n"),
                Some(ControlRequest::Pool) => {
                    let report = PoolAnswer {
                        enabled: pool.options().enabled,
                        keys: pool.stats(),
                    };
                    format!(
                        "ok {}\n",
                        serde_json::to_string(&report).unwrap_or_default()
                    )
                }
                None => {
                    "error unknown request (expected 'reload', 'status' or 'pool')\n".to_string()
                }
            };
            let _ = write.write_all(reply.as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Asks the server on this data directory what it runs with. Blocking: used by the CLI.
pub fn request_status(path: &Path, timeout: Duration) -> Result<ServeStatus, ControlError> {
    parse_status_reply(&request(path, "status", timeout)?)
}

/// The answer line of a `status` request.
pub fn parse_status_reply(line: &str) -> Result<ServeStatus, ControlError> {
    let json = line.strip_prefix("ok ").unwrap_or_default();
    serde_json::from_str(json).map_err(|_| unexpected(line))
}

fn unexpected(line: &str) -> ControlError {
    ControlError::Refused(format!("unexpected reply '{line}'"))
}

/// The `pool` answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct PoolAnswer {
    enabled: bool,
    keys: Vec<crate::proxy::backend::pool::KeyStats>,
}

/// Asks the server on this data directory what its pool holds: whether it is on, and per (role,
/// database). Blocking: used by the CLI.
pub fn request_pool(
    path: &Path,
    timeout: Duration,
) -> Result<(bool, Vec<crate::proxy::backend::pool::KeyStats>), ControlError> {
    parse_pool_reply(&request(path, "pool", timeout)?)
}

/// The answer line of a `pool` request: whether the pool is on, and per (role, database).
pub fn parse_pool_reply(
    line: &str,
) -> Result<(bool, Vec<crate::proxy::backend::pool::KeyStats>), ControlError> {
    let json = line.strip_prefix("ok ").unwrap_or_default();
    let answer: PoolAnswer = serde_json::from_str(json).map_err(|_| unexpected(line))?;
    Ok((answer.enabled, answer.keys))
}

/// Sends one request line and returns the answer line, or the server's `error` as an error.
fn request(path: &Path, what: &str, timeout: Duration) -> Result<String, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = match StdUnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning);
        }
        Err(e) => return Err(io_err(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    stream
        .write_all(format!("{what}\n").as_bytes())
        .map_err(io_err)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(io_err)?;
    let line = line.trim_end();
    if let Some(msg) = line.strip_prefix("error ") {
        return Err(ControlError::Refused(msg.to_string()));
    }
    Ok(line.to_string())
}

/// Asks the server on this data directory to reload. Blocking: used by the CLI.
pub fn request_reload(path: &Path, timeout: Duration) -> Result<ReloadReport, ControlError> {
    parse_reload_reply(&request(path, "reload", timeout)?)
}

/// The answer line of a `reload` request: the mode now served and the certificate's fingerprint.
pub fn parse_reload_reply(line: &str) -> Result<ReloadReport, ControlError> {
    let mut words = line.strip_prefix("ok ").unwrap_or_default().split(' ');
    let mode = words
        .next()
        .and_then(|m| m.parse::<Mode>().ok())
        .ok_or_else(|| unexpected(line))?;
    let cert_fingerprint = words.next().filter(|f| *f != "-").map(str::to_string);
    Ok(ReloadReport {
        mode,
        cert_fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_known_word_and_a_reply_parses_or_is_refused() {
        assert_eq!(
            ControlRequest::parse("reload\n"),
            Some(ControlRequest::Reload)
        );
        assert_eq!(
            ControlRequest::parse("  status \r\n"),
            Some(ControlRequest::Status)
        );
        assert_eq!(ControlRequest::parse("pool"), Some(ControlRequest::Pool));
        for other in [
            "",
            "\n",
            "reload now",
            "RELOAD",
            "re\0load",
            "status\nreload",
        ] {
            assert_eq!(ControlRequest::parse(other), None, "{other:?}");
        }

        let report = parse_reload_reply(&format!("ok {} AB:CD", Mode::Required)).unwrap();
        assert_eq!(report.mode, Mode::Required);
        assert_eq!(report.cert_fingerprint.as_deref(), Some("AB:CD"));
        let report = parse_reload_reply(&format!("ok {} -", Mode::Off)).unwrap();
        assert_eq!(report.cert_fingerprint, None);
        let status = ServeStatus {
            listen: "127.0.0.1:6432".parse().unwrap(),
            upstream: "127.0.0.1:5432".into(),
            managed: false,
        };
        let line = format!("ok {}", serde_json::to_string(&status).unwrap());
        assert_eq!(parse_status_reply(&line).unwrap(), status);
        let (enabled, keys) = parse_pool_reply("ok {\"enabled\":true,\"keys\":[]}").unwrap();
        assert!(enabled && keys.is_empty());
        for garbage in ["", "ok", "ok nonsense", "ok {", "required AB", "\u{0}"] {
            assert!(matches!(
                parse_reload_reply(garbage),
                Err(ControlError::Refused(_))
            ));
            assert!(matches!(
                parse_status_reply(garbage),
                Err(ControlError::Refused(_))
            ));
            assert!(matches!(
                parse_pool_reply(garbage),
                Err(ControlError::Refused(_))
            ));
        }
    }
}
