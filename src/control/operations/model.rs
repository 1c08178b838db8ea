//! The operation model: every command is one typed request ([`Operation`]) with one handler
//! ([`Operation::run`]) and one typed answer ([`Report`]).
//!
//! A request type carries both grammars: clap's (`--internal-only`, `--cert-file FILE`) for the
//! CLI and serde's (`{"internal_only": true}`, `{"cert_file": {"name": …, "pem": …}}`) for the JSON
//! API, so the local CLI, the remote CLI, the API and the web forms decode into the same value and
//! none of them lists a command's fields again. Files travel as their bytes ([`Upload`]): the CLI
//! reads them while parsing its flags, the API takes them in the body, and an operation never opens
//! a path a caller chose.
//!
//! [`each_remote`] lists the operations the admin API serves, once: the router, the remote CLI, the
//! OpenAPI check and the generated request tests all walk it.

use std::io::BufRead;
use std::num::NonZeroU16;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CommandError, Context, Output};
use crate::keystore::Secret;

/// How the API reaches an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Reads state: `GET`, no body, no CSRF token, not audited.
    Get,
    /// Changes state: `POST` with a JSON body, the CSRF token, audited.
    Post,
}

/// One command: its request is `Self`, its answer [`Operation::Report`].
pub trait Operation: Serialize + DeserializeOwned + Send + 'static {
    /// The command's words after `pgssl` (less `security`), also the audit log's action:
    /// `repository-ssl enable`.
    const ACTION: &'static str;
    /// The API path under `/api/v1`.
    const PATH: &'static str;
    /// Read or change.
    const VERB: Verb;
    /// The answer.
    type Report: Report;

    /// Runs the operation on the data directory of `ctx`. Long operations may report progress on
    /// `ctx.out` as they go; the result is the report. The future is `Send`: the admin server runs
    /// it as a task of its own.
    fn run(self, ctx: &Context) -> impl Future<Output = Result<Self::Report, CommandError>> + Send;

    /// A valid request, from which the tests derive wrongly typed, unknown and missing fields for
    /// every operation.
    fn example() -> Self;

    /// Whether, on a cluster node, what the operation changes is committed for every node (see
    /// [`execute`]); `false` for the commands that make or change the membership itself.
    const SHARED: bool = true;

    /// Runs on a cluster node after the operation's change was committed as `version` (`None`: it
    /// changed nothing): e.g. waiting for the nodes to take it.
    fn after_commit(
        _report: &mut Self::Report,
        _ctx: &Context,
        _change: &mut crate::control::cluster::publish::Change,
        _version: Option<u64>,
    ) -> impl Future<Output = Result<(), CommandError>> + Send {
        async { Ok(()) }
    }
}

/// Runs `request` on `ctx`'s data directory, as every caller (CLI, remote CLI, API, pages) does. On a
/// cluster node a change is made on the cluster's newest state and committed for every node after
/// it ran; when that cannot be done, the node's files are put back and the error says so.
pub async fn execute<T: Operation>(request: T, ctx: &Context) -> Result<T::Report, CommandError> {
    if T::VERB == Verb::Get || !T::SHARED {
        return request.run(ctx).await;
    }
    let config_dir = ctx.data_dir.join("config");
    let Some(mut change) = begin_change(&config_dir).await? else {
        return request.run(ctx).await;
    };
    let result = request.run(ctx).await;
    let by = format!("{}: {}", change.membership().node_name, T::ACTION);
    let version = change.commit(&by, None).await?;
    change.unlock();
    let mut report = result?;
    T::after_commit(&mut report, ctx, &mut change, version).await?;
    Ok(report)
}

/// Begins a change on a cluster node ([`Change::begin`]), which waits for the cluster lock another
/// command may hold while it runs: on a thread of its own when the runtime has other workers, so
/// the wait holds up nothing else (as [`super::blocking`] does for other long waits).
///
/// [`Change::begin`]: crate::control::cluster::publish::Change::begin
async fn begin_change(
    config_dir: &std::path::Path,
) -> Result<Option<crate::control::cluster::publish::Change>, crate::control::cluster::ClusterError>
{
    use crate::control::cluster::publish::Change;
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::current();
    if handle.runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| handle.block_on(Change::begin(config_dir)))
    } else {
        Change::begin(config_dir).await
    }
}

/// An operation's typed answer: serialised as the API's JSON (its fields at the top level), and
/// rendered as the lines the CLI prints, locally or from the API's answer.
pub trait Report: Serialize + DeserializeOwned + Send + 'static {
    /// The human text, appended to `out`.
    fn render(&self, out: &Output);

    /// A report that is a file: the API answers it as that file unless JSON is asked for.
    fn file(&self) -> Option<ReportFile<'_>> {
        None
    }
}

/// A report's file: what the API answers for a browser's download link.
#[derive(Debug, Clone, Copy)]
pub struct ReportFile<'a> {
    /// Its media type.
    pub content_type: &'static str,
    /// The name to save it as.
    pub name: &'static str,
    /// Its contents.
    pub contents: &'a [u8],
}

/// Something that visits operation types, e.g. to route them or document them.
pub trait Visit {
    /// Called once per operation type.
    fn operation<T: Operation>(&mut self);
}

/// Every operation the admin API serves (and the remote CLI can call), each once.
pub fn each_remote(v: &mut impl Visit) {
    use super::{
        authentication, custom_cert, data_access, external_ssl, failover, mutual_ssl,
        pending_changes, pool, preflight, regenerate_tokens, repository_hosts, repository_ssl,
        sessions, status, vizql_extsvc,
    };
    v.operation::<repository_ssl::Enable>();
    v.operation::<repository_ssl::Disable>();
    v.operation::<repository_ssl::List>();
    v.operation::<repository_ssl::Certificate>();
    v.operation::<preflight::WhoWouldBeRefused>();
    v.operation::<pending_changes::List>();
    v.operation::<pending_changes::Apply>();
    v.operation::<pending_changes::Discard>();
    v.operation::<external_ssl::Enable>();
    v.operation::<external_ssl::Disable>();
    v.operation::<external_ssl::List>();
    v.operation::<custom_cert::Add>();
    v.operation::<custom_cert::Delete>();
    v.operation::<custom_cert::List>();
    v.operation::<vizql_extsvc::Enable>();
    v.operation::<vizql_extsvc::Disable>();
    v.operation::<vizql_extsvc::List>();
    v.operation::<regenerate_tokens::Regenerate>();
    v.operation::<data_access::Enable>();
    v.operation::<data_access::Disable>();
    v.operation::<authentication::Set>();
    v.operation::<authentication::Clear>();
    v.operation::<authentication::List>();
    v.operation::<mutual_ssl::Configure>();
    v.operation::<mutual_ssl::Enable>();
    v.operation::<mutual_ssl::Disable>();
    v.operation::<mutual_ssl::List>();
    v.operation::<mutual_ssl::InternalCaCertificate>();
    v.operation::<pool::List>();
    v.operation::<sessions::List>();
    v.operation::<sessions::Terminate>();
    v.operation::<status::Status>();
    v.operation::<repository_hosts::ListRepositoryHosts>();
    v.operation::<failover::FailoverRepository>();
}

/// A report that is only lines of text, for answers with nothing more to say than a sentence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Said {
    /// What happened.
    pub said: Vec<String>,
}

impl Said {
    /// One sentence.
    pub fn one(line: impl Into<String>) -> Said {
        Said {
            said: vec![line.into()],
        }
    }
}

impl Report for Said {
    fn render(&self, out: &Output) {
        for line in &self.said {
            out.info(line.clone());
        }
    }
}

/// The answer of a staging command: what was staged (or that nothing needed staging), with notes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staged {
    /// Whether something is now staged that was not before; `false` means nothing needed staging.
    pub staged: bool,
    /// The sentence that says what.
    pub summary: String,
    /// Notes and warnings (stderr).
    pub notes: Vec<String>,
}

impl Staged {
    /// A staged change.
    pub fn change(summary: impl Into<String>) -> Staged {
        Staged {
            staged: true,
            summary: summary.into(),
            notes: Vec::new(),
        }
    }

    /// Nothing to stage.
    pub fn nothing(summary: impl Into<String>) -> Staged {
        Staged {
            staged: false,
            ..Staged::change(summary)
        }
    }
}

impl Report for Staged {
    fn render(&self, out: &Output) {
        out.info(self.summary.clone());
        for note in &self.notes {
            out.warning(note.clone());
        }
        if self.staged {
            super::apply_hint(out);
        }
    }
}

/// An empty request: the body is empty or `{}` (any field is refused).
macro_rules! no_arguments {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, clap::Args, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {}
    };
}
pub(crate) use no_arguments;

/// A file the caller supplies: the name it had (for messages and listings; never opened or written
/// under) and its contents. On the wire: `{"name": "ca.pem", "pem": "-----BEGIN …"}` or
/// `{"name": "ca.der", "der_base64": "MIIB…"}`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "UploadWire", into = "UploadWire")]
pub struct Upload {
    /// The name (the CLI: the path as given).
    pub name: Option<String>,
    /// The bytes; wiped on drop (a key may be among them).
    pub contents: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upload({:?}, {} bytes)", self.name, self.contents.len())
    }
}

/// Largest file an operation takes (certificates, keys, CRLs are kilobytes).
pub const MAX_UPLOAD: u64 = 512 * 1024;

impl Upload {
    /// Reads the file at `path` (the CLI's value parser for `--cert-file` and the like).
    pub fn from_path(path: &str) -> Result<Upload, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {path}: {e}"))?
            .len();
        if size > MAX_UPLOAD {
            return Err(format!(
                "{path} is {size} bytes; a certificate or key file is at most {MAX_UPLOAD}"
            ));
        }
        let contents = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        Ok(Upload {
            name: Some(path.to_string()),
            contents: Zeroizing::new(contents),
        })
    }

    /// The name for messages, or `default`.
    pub fn name_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.name.as_deref().unwrap_or(default)
    }

    /// The last component of the name: what listings show, without saying where the file was.
    pub fn file_name(&self, default: &str) -> String {
        super::file_name(std::path::Path::new(self.name_or(default)))
    }
}

/// [`Upload`] as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    der_base64: Option<String>,
}

impl TryFrom<UploadWire> for Upload {
    type Error = String;

    fn try_from(w: UploadWire) -> Result<Upload, String> {
        use base64::Engine;
        let contents = match (w.pem, w.der_base64) {
            (Some(pem), None) => pem.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("'der_base64' is not base64: {e}"))?,
            _ => return Err("give exactly one of 'pem' and 'der_base64'".into()),
        };
        if contents.len() as u64 > MAX_UPLOAD {
            return Err(format!("the file is larger than {MAX_UPLOAD} bytes"));
        }
        Ok(Upload {
            name: w.name,
            contents: Zeroizing::new(contents),
        })
    }
}

impl From<Upload> for UploadWire {
    fn from(u: Upload) -> UploadWire {
        use base64::Engine;
        let text = std::str::from_utf8(&u.contents)
            .ok()
            .filter(|t| t.trim_start().starts_with("-----BEGIN"));
        let (pem, der_base64) = match text {
            Some(t) => (Some(t.to_string()), None),
            None => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&*u.contents)),
            ),
        };
        UploadWire {
            name: u
                .name
                .as_deref()
                .map(|n| super::file_name(std::path::Path::new(n))),
            pem,
            der_base64,
        }
    }
}

/// The CLI's value parser for a secret flag: `-` reads the first line of standard input (keeping the
/// secret out of the process list and shell history); anything else is taken as given, with a note.
pub fn secret_arg(value: &str) -> Result<Secret, String> {
    if value == "-" {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read it from standard input: {e}"))?;
        return Ok(Secret::new(line.trim_end_matches(['\n', '\r']).to_string()));
    }
    super::print_line(
        &mut std::io::stderr(),
        "note: a secret given on the command line is visible in the process list and shell history; prefer '-' and standard input",
    );
    Ok(Secret::new(value.to_string()))
}

/// A whole number within `MIN..=MAX`, checked the same way from a flag and from JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Bounded<const MIN: u64, const MAX: u64, const DEFAULT: u64>(pub u64);

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> TryFrom<u64>
    for Bounded<MIN, MAX, DEFAULT>
{
    type Error = String;

    fn try_from(v: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&v) {
            Ok(Bounded(v))
        } else {
            Err(format!("must be {MIN} to {MAX}, not {v}"))
        }
    }
}

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> From<Bounded<MIN, MAX, DEFAULT>> for u64 {
    fn from(b: Bounded<MIN, MAX, DEFAULT>) -> u64 {
        b.0
    }
}

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> Default for Bounded<MIN, MAX, DEFAULT> {
    fn default() -> Self {
        Bounded(DEFAULT)
    }
}

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> std::str::FromStr
    for Bounded<MIN, MAX, DEFAULT>
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let v: u64 = s
            .parse()
            .map_err(|_| format!("'{s}' is not a whole number"))?;
        Bounded::try_from(v)
    }
}

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64> std::fmt::Display
    for Bounded<MIN, MAX, DEFAULT>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A TCP port, 1 to 65535.
pub type Port = NonZeroU16;

/// `true`, for serde defaults.
pub(crate) fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_read_pem_or_base64_der_and_refuse_both_or_neither() {
        let u: Upload =
            serde_json::from_str(r#"{"name": "a.pem", "pem": "-----BEGIN X"}"#).unwrap();
        assert_eq!(
            (u.name.as_deref(), &u.contents[..]),
            (Some("a.pem"), &b"-----BEGIN X"[..])
        );
        let u: Upload = serde_json::from_str(r#"{"der_base64": "AAEC"}"#).unwrap();
        assert_eq!(&u.contents[..], &[0, 1, 2]);
        for bad in [
            r#"{}"#,
            r#"{"pem": "x", "der_base64": "AA=="}"#,
            r#"{"der_base64": "!"}"#,
            r#"{"pem": "x", "path": "/etc/passwd"}"#,
        ] {
            assert!(serde_json::from_str::<Upload>(bad).is_err(), "{bad}");
        }
        // The name sent on is the file's name only, never where it was.
        let u = Upload {
            name: Some("/secret/dir/ca.der".into()),
            contents: Zeroizing::new(vec![1, 2]),
        };
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "ca.der", "der_base64": "AQI="})
        );
    }

    #[test]
    fn bounded_numbers_are_checked_from_flags_and_json() {
        type T = Bounded<1, 10, 5>;
        assert_eq!("7".parse::<T>(), Ok(Bounded(7)));
        assert!("0".parse::<T>().is_err() && "x".parse::<T>().is_err());
        assert!(serde_json::from_str::<T>("11").is_err());
        assert!(serde_json::from_str::<T>("\"3\"").is_err());
        assert_eq!(T::default().0, 5);
    }
}
