//! `pgssl authentication mutual-ssl configure --ca-cert FILE [--fallback-enable true|false]
//! [--user-name-map cn|upn|ldap] [--map-file FILE] [--revocation-file FILE] | enable | disable |
//! list`, and `pgssl security internal-ca get-certificate-file`: client certificates as credentials,
//! staged and applied like every other change (README "Mutual SSL").

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::model::{Operation, Report, ReportFile, Staged, Upload, Verb, no_arguments};
use super::{
    CommandError, Context, ErrorKind, Output, RecordList, RecordListing, RecordSlot, Staging,
    list_record, lock, prune,
};
use crate::control::state::mutual_ssl::{self, CrlInfo, Given, MutualSslError, MutualSslFiles};
use crate::control::state::security::{Change, MutualSsl};
use crate::control::state::store::new_id;
use crate::proxy::auth::cert::NameMapping;
use crate::tls::certs::{self, CertInfo};

/// Where mutual SSL is in the state.
const SLOT: RecordSlot<MutualSsl> = record_slot!(mutual_ssl);

/// Why a `mutual-ssl` command or the internal CA failed.
#[derive(Debug, thiserror::Error)]
pub enum MutualSslCommandError {
    /// `--user-name-map ldap` without its map.
    #[error("--user-name-map ldap needs --map-file with 'DN user' lines")]
    LdapNeedsMapFile,
    /// The CA bundle, CRL or map file given cannot be used.
    #[error(transparent)]
    Refused(MutualSslError),
    /// Neither applied nor staged.
    #[error(
        "mutual SSL is not configured; run 'pgssl authentication mutual-ssl configure --ca-cert FILE' first"
    )]
    NotConfigured,
    /// The copies of a configuration's files cannot be read.
    #[error(transparent)]
    Stored(MutualSslError),
    /// The internal CA cannot be read or made.
    #[error(transparent)]
    InternalCa(MutualSslError),
    /// The internal CA was not made.
    #[error("the internal CA could not be made")]
    InternalCaNotMade,
}

impl MutualSslCommandError {
    /// A request or file the caller gave is theirs to fix; pgssl's own copies and CA are pgssl's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MutualSslCommandError::LdapNeedsMapFile
            | MutualSslCommandError::Refused(_)
            | MutualSslCommandError::NotConfigured => ErrorKind::User,
            MutualSslCommandError::Stored(_)
            | MutualSslCommandError::InternalCa(_)
            | MutualSslCommandError::InternalCaNotMade => ErrorKind::Server,
        }
    }
}

/// `mutual-ssl configure`: checks and stages the CA bundle, the mapping, the map file and the CRL.
/// Keeps mutual SSL on or off as it is (a first `configure` leaves it off until `enable`).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Configure {
    /// The CA certificate(s) client certificates must chain to (PEM bundle or one DER).
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    pub ca_cert: Upload,
    /// Whether clients without a certificate may still log in with a password [default: true].
    #[arg(long, value_name = "true|false")]
    #[serde(default)]
    pub fallback_enable: Option<bool>,
    /// How a certificate names its user [default: cn].
    #[arg(long, value_name = "cn|upn|ldap")]
    #[serde(default)]
    pub user_name_map: Option<NameMapping>,
    /// For ldap: lines of 'DN user' (the subject DN as PostgreSQL prints it, e.g. CN=alice,O=Example).
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    #[serde(default)]
    pub map_file: Option<Upload>,
    /// A certificate revocation list (PEM or DER) from the CA, checked on every handshake.
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    #[serde(default)]
    pub revocation_file: Option<Upload>,
}

impl Operation for Configure {
    const ACTION: &'static str = "authentication mutual-ssl configure";
    const PATH: &'static str = "/authentication/mutual-ssl/configure";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        let mapping = self.user_name_map.unwrap_or_default();
        if mapping == NameMapping::Ldap && self.map_file.is_none() {
            return Err(MutualSslCommandError::LdapNeedsMapFile.into());
        }
        let given = |u: &Upload, default: &'static str| (u.file_name(default), u.contents.clone());
        let ca = given(&self.ca_cert, "ca.pem");
        let crl = self.revocation_file.as_ref().map(|u| given(u, "crl.pem"));
        let map = self.map_file.as_ref().map(|u| given(u, "user-map"));
        fn as_given(f: &(String, zeroize::Zeroizing<Vec<u8>>)) -> Given<'_> {
            Given {
                name: &f.0,
                bytes: &f.1,
            }
        }
        let files = mutual_ssl::validate(
            as_given(&ca),
            crl.as_ref().map(as_given),
            map.as_ref().map(as_given),
            OffsetDateTime::now_utc(),
        )
        .map_err(MutualSslCommandError::Refused)?;
        let mut staging = Staging::begin(ctx.store_or_create()?)?;
        // The internal CA is made now, so the repository can be told to trust it before apply.
        mutual_ssl::internal_ca(&staging.store.config_dir(), true)
            .map_err(MutualSslCommandError::InternalCa)?;
        let current = staging.next().mutual_ssl;
        let id = new_id()?;
        files.store(&staging.store.mutual_ssl_dir(&id))?;
        let record = MutualSsl {
            id,
            ca_file_name: ca.0.clone(),
            fallback: self.fallback_enable.unwrap_or(true),
            user_name_map: mapping,
            map_file_name: map.map(|m| m.0),
            revocation_file_name: crl.map(|c| c.0),
            enabled: current.is_some_and(|c| c.enabled),
        };
        let summary = format!(
            "Staged mutual SSL: clients' certificates must chain to {} ({} CA certificate(s)); the user is the certificate's {}; without a certificate a client {}.",
            record.ca_file_name,
            files.cas.len(),
            describe_mapping(mapping),
            if record.fallback {
                "may still log in with a password"
            } else {
                "is refused"
            }
        );
        let enabled = record.enabled;
        staging.pending.mutual_ssl = Some(Change::Set(record));
        staging.save()?;
        prune(&staging.store, &ctx.out);
        let mut staged = Staged::change(summary);
        if !enabled {
            staged
                .notes
                .push("note: mutual SSL is off; run 'pgssl authentication mutual-ssl enable' and apply to ask clients for certificates".into());
        }
        Ok(staged)
    }

    fn example() -> Configure {
        Configure {
            ca_cert: Upload {
                name: Some("client-ca.pem".into()),
                contents: b"-----BEGIN CERTIFICATE-----".to_vec().into(),
            },
            fallback_enable: Some(false),
            user_name_map: Some(NameMapping::Cn),
            map_file: None,
            revocation_file: None,
        }
    }
}

fn describe_mapping(mapping: NameMapping) -> &'static str {
    match mapping {
        NameMapping::Cn => "subject CN",
        NameMapping::Upn => "UserPrincipalName (or e-mail) local part",
        NameMapping::Ldap => "subject DN, through the map file",
    }
}

/// Stages turning mutual SSL on or off.
fn stage_enabled(ctx: &Context, on: bool) -> Result<Staged, CommandError> {
    let mut staging = Staging::begin(ctx.store_or_create()?)?;
    let Some(mut record) = staging.next().mutual_ssl else {
        return Err(MutualSslCommandError::NotConfigured.into());
    };
    if record.enabled == on {
        return Ok(Staged::nothing(format!(
            "Mutual SSL is already {}; nothing to stage.",
            if on { "on" } else { "off" }
        )));
    }
    record.enabled = on;
    staging.pending.mutual_ssl = Some(Change::Set(record));
    staging.save()?;
    Ok(Staged::change(if on {
        "Staged: ask clients for certificates and log in those that name their user."
    } else {
        "Staged: stop asking clients for certificates."
    }))
}

no_arguments!(
    /// `mutual-ssl enable`: stages asking clients for certificates.
    Enable
);

impl Operation for Enable {
    const ACTION: &'static str = "authentication mutual-ssl enable";
    const PATH: &'static str = "/authentication/mutual-ssl/enable";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        stage_enabled(ctx, true)
    }

    fn example() -> Enable {
        Enable {}
    }
}

no_arguments!(
    /// `mutual-ssl disable`: stages no longer asking for certificates (the configuration is kept).
    Disable
);

impl Operation for Disable {
    const ACTION: &'static str = "authentication mutual-ssl disable";
    const PATH: &'static str = "/authentication/mutual-ssl/disable";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        stage_enabled(ctx, false)
    }

    fn example() -> Disable {
        Disable {}
    }
}

/// A mutual-SSL record as `list` shows it: never where its files came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Whether clients are asked for certificates.
    pub enabled: bool,
    /// The CA certificates' details.
    pub cas: Vec<CertInfo>,
    /// How names are read.
    pub user_name_map: NameMapping,
    /// Map entries (ldap).
    pub map_entries: usize,
    /// The CRL, if one is configured.
    pub crl: Option<CrlInfo>,
    /// Whether clients without a certificate may log in otherwise.
    pub fallback: bool,
}

no_arguments!(
    /// `mutual-ssl list`: the applied (and any staged) configuration.
    List
);

impl Operation for List {
    const ACTION: &'static str = "authentication mutual-ssl list";
    const PATH: &'static str = "/authentication/mutual-ssl";
    const VERB: Verb = Verb::Get;
    type Report = RecordList<Record>;

    async fn run(self, ctx: &Context) -> Result<RecordList<Record>, CommandError> {
        let now = OffsetDateTime::now_utc();
        SLOT.list(ctx, |store, m| {
            let files = MutualSslFiles::load(&store.mutual_ssl_dir(&m.id), now)
                .map_err(MutualSslCommandError::Stored)?;
            Ok(Record {
                enabled: m.enabled,
                cas: files.ca_info,
                user_name_map: m.user_name_map,
                map_entries: files.map.len(),
                crl: files.crl.map(|(_, info)| info),
                fallback: m.fallback,
            })
        })
    }

    fn example() -> List {
        List {}
    }
}

impl Report for RecordList<Record> {
    fn render(&self, out: &Output) {
        let how = RecordListing {
            title: "Mutual SSL (client certificates)",
            none: "not configured",
            staged: &|r: &Record| format!("configure ({})", if r.enabled { "on" } else { "off" }),
            removed: "remove",
        };
        list_record(out, how, self, |out, r, indent| {
            let line = |label: &str, value: &str| say!(out, "{indent}{label:<21}{value}");
            line("status:", if r.enabled { "on" } else { "off" });
            for ca in &r.cas {
                line("CA subject:", &ca.subject);
                line("CA SHA-256:", &ca.sha256_fingerprint);
            }
            line("user name map:", &r.user_name_map.to_string());
            if r.user_name_map == NameMapping::Ldap {
                line("map entries:", &r.map_entries.to_string());
            }
            match &r.crl {
                Some(crl) => {
                    let next = crl.next_update.map_or("not stated".to_string(), |t| {
                        let past = if t < OffsetDateTime::now_utc() {
                            " (PAST: update the CRL)"
                        } else {
                            ""
                        };
                        format!("{}{past}", t.date())
                    });
                    line("CRL next update:", &next);
                    line("CRL revoked:", &crl.revoked.to_string());
                }
                None => line("CRL:", "none"),
            }
            line(
                "fallback:",
                if r.fallback {
                    "password logins allowed without a certificate"
                } else {
                    "off: a certificate is required"
                },
            );
        });
    }
}

no_arguments!(
    /// `security internal-ca get-certificate-file`: pgssl's internal CA certificate, for the
    /// repository's `ssl_ca_file` (made on first use).
    InternalCaCertificate
);

/// The internal CA certificates: the current one, and the previous one after a rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InternalCaFile {
    /// PEM, the current CA first.
    pub pem: String,
    /// The current CA's details.
    pub info: CertInfo,
    /// Whether the previous CA (replaced by the last rotation) is in the file too.
    pub previous: bool,
}

impl Operation for InternalCaCertificate {
    const ACTION: &'static str = "internal-ca get-certificate-file";
    const PATH: &'static str = "/internal-ca/certificate";
    const VERB: Verb = Verb::Get;
    type Report = InternalCaFile;

    async fn run(self, ctx: &Context) -> Result<InternalCaFile, CommandError> {
        let store = ctx.store_or_create()?;
        let _lock = lock(&store)?;
        let cas = mutual_ssl::internal_ca(&store.config_dir(), true)
            .map_err(MutualSslCommandError::InternalCa)?
            .ok_or(MutualSslCommandError::InternalCaNotMade)?;
        Ok(InternalCaFile {
            pem: cas.bundle_pem(),
            info: certs::describe(
                cas.current.certificate_der(),
                1,
                std::path::Path::new("internal-ca.crt"),
            )?,
            previous: cas.previous.is_some(),
        })
    }

    fn example() -> InternalCaCertificate {
        InternalCaCertificate {}
    }
}

impl Report for InternalCaFile {
    fn file(&self) -> Option<ReportFile<'_>> {
        Some(ReportFile {
            content_type: "application/x-pem-file",
            name: "internal-ca.crt",
            contents: self.pem.as_bytes(),
        })
    }

    fn render(&self, out: &Output) {
        say!(out, "  subject:             {}", self.info.subject);
        say!(
            out,
            "  SHA-256 fingerprint: {}",
            self.info.sha256_fingerprint
        );
        if self.previous {
            say!(
                out,
                "  and the previous internal CA, replaced by the last regenerate-internal-tokens: the repository may trust both until the next rotation"
            );
        }
        say!(
            out,
            "Give it to the repository as ssl_ca_file, with 'hostssl all all <pgssl's address> cert' in its pg_hba.conf: pgssl then logs certificate-authenticated clients in with a certificate of its own whose CN is the role."
        );
    }
}
