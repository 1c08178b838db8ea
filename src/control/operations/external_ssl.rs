//! `pgssl security external-ssl enable --cert-file F --key-file F [--chain-file F] [--passphrase P|-]
//! [--protocols LIST] | disable | list`: serve the administrator's own certificate on the client
//! listener instead of the generated one.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::model::{Operation, Report, Staged, Upload, Verb, no_arguments, secret_arg};
use super::{
    CommandError, Context, ErrorKind, Output, RecordListing, RecordSlot, Removal, Staging,
    apply_hint, blocking, check_secret, describe_expiry, list_record, prune, stage_removal,
};
use crate::control::state::StateStore;
use crate::control::state::external_cert::{self, ExternalCertError, Supplied, SuppliedFiles};
use crate::control::state::security::{self, Change, ExternalSsl};
use crate::control::state::store::new_id;
use crate::keystore::{Keystore, Secret};
use crate::tls::certs::{self, CertInfo};
use crate::tls::protocols::{self, DEFAULT_PROTOCOLS, ProtocolError};

/// Where external SSL is in the state.
const SLOT: RecordSlot<ExternalSsl> = record_slot!(external_ssl);

/// Why `external-ssl enable` refused.
#[derive(Debug, thiserror::Error)]
pub enum ExternalSslError {
    /// The protocol list does not parse.
    #[error(transparent)]
    Protocols(ProtocolError),
    /// The certificate, key or chain cannot be served.
    #[error(transparent)]
    Unusable(ExternalCertError),
}

impl ExternalSslError {
    /// Each is the caller's to fix.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

/// `external-ssl enable`: validates a certificate, its key and chain, and stages them for the client
/// listener.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enable {
    /// The certificate (PEM); may be followed by its chain.
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    pub cert_file: Upload,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1; encrypted PKCS#8 with --passphrase).
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    pub key_file: Upload,
    /// Intermediate certificates (PEM), each followed by its issuer.
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    #[serde(default)]
    pub chain_file: Option<Upload>,
    /// Passphrase of an encrypted key, or '-' to read it from standard input.
    #[arg(long, value_name = "PASSPHRASE|-", value_parser = secret_arg)]
    #[serde(default)]
    pub passphrase: Option<Secret>,
    /// Protocols, e.g. "all, -SSLv2, -SSLv3" or "all -TLSv1.2" [default: all, -SSLv2, -SSLv3].
    #[arg(long, value_name = "LIST")]
    #[serde(default)]
    pub protocols: Option<String>,
}

/// What `enable` staged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enabled {
    /// The certificate file's name.
    pub cert_file_name: String,
    /// The leaf's details (chain length included).
    pub certificate: CertInfo,
    /// The protocols that will be offered.
    pub protocols: String,
    /// Notes about the protocol list (stdout).
    pub notes: Vec<String>,
    /// Whether repository SSL is off in the staged state, so nothing is served yet.
    pub repository_ssl_off: bool,
    /// Warnings, e.g. an expiry within 30 days (stderr).
    pub warnings: Vec<String>,
}

impl Operation for Enable {
    const ACTION: &'static str = "external-ssl enable";
    const PATH: &'static str = "/external-ssl/enable";
    const VERB: Verb = Verb::Post;
    type Report = Enabled;

    async fn run(self, ctx: &Context) -> Result<Enabled, CommandError> {
        enable(ctx, &self)
    }

    fn example() -> Enable {
        let file = |name: &str, text: &str| Upload {
            name: Some(name.into()),
            contents: text.as_bytes().to_vec().into(),
        };
        Enable {
            cert_file: file("server.crt", "-----BEGIN CERTIFICATE-----"),
            key_file: file("server.key", "-----BEGIN PRIVATE KEY-----"),
            chain_file: Some(file("chain.crt", "-----BEGIN CERTIFICATE-----")),
            passphrase: Some(Secret::new("passphrase".into())),
            protocols: Some("all".into()),
        }
    }
}

fn enable<'a>(ctx: &Context, args: &'a Enable) -> Result<Enabled, CommandError> {
    let protocol_list = args.protocols.as_deref().unwrap_or(DEFAULT_PROTOCOLS);
    let parsed = protocols::parse(protocol_list).map_err(ExternalSslError::Protocols)?;
    let notes = parsed.notes.iter().map(|n| format!("note: {n}")).collect();
    let passphrase = args.passphrase.as_ref();
    if let Some(p) = passphrase {
        check_secret(p, "--passphrase")?;
    }
    let supplied = |u: &'a Upload, default: &'static str| Supplied {
        path: std::path::Path::new(u.name_or(default)),
        bytes: &u.contents,
    };
    let files = SuppliedFiles {
        cert: supplied(&args.cert_file, "server.crt"),
        key: supplied(&args.key_file, "server.key"),
        chain: args.chain_file.as_ref().map(|c| supplied(c, "chain.crt")),
    };
    // An encrypted key's derivation may take seconds (its file chooses the cost, within bounds).
    let validated =
        blocking(|| external_cert::validate(files, passphrase, OffsetDateTime::now_utc()))
            .map_err(ExternalSslError::Unusable)?;
    let warnings = validated
        .warnings
        .iter()
        .map(|w| format!("warning: {w}"))
        .collect();

    let mut staging = Staging::begin(ctx.store_or_create()?)?;
    let id = new_id()?;
    validated.store(&staging.store.external_ssl_dir(&id))?;
    if let Some(passphrase) = passphrase {
        let mut keystore = Keystore::open(&staging.store.config_dir())?;
        keystore.set(&security::passphrase_name(&id), passphrase)?;
    }
    let cert_file_name = args.cert_file.file_name("server.crt");
    staging.pending.external_ssl = Some(Change::Set(ExternalSsl {
        id,
        cert_file_name: cert_file_name.clone(),
        key_file_name: args.key_file.file_name("server.key"),
        chain_file_name: args.chain_file.as_ref().map(|c| c.file_name("chain.crt")),
        protocols: protocol_list.to_string(),
        encrypted_key: validated.encrypted,
    }));
    staging.save()?;
    prune(&staging.store, &ctx.out);
    let repository_ssl_off = !staging.next().repository_ssl.mode.offers_tls();
    Ok(Enabled {
        repository_ssl_off,
        cert_file_name,
        certificate: validated.info.clone(),
        protocols: parsed.set.to_string(),
        notes,
        warnings,
    })
}

impl Report for Enabled {
    fn render(&self, out: &Output) {
        let info = &self.certificate;
        for note in &self.notes {
            say!(out, "{note}");
        }
        for warning in &self.warnings {
            note!(out, "{warning}");
        }
        say!(
            out,
            "Staged external SSL with the certificate from {}:",
            self.cert_file_name
        );
        say!(out, "  subject:             {}", info.subject);
        say!(out, "  issuer:              {}", info.issuer);
        say!(
            out,
            "  subject alt names:   {}",
            info.subject_alt_names.join(", ")
        );
        say!(
            out,
            "  expires:             {}",
            describe_expiry(info.not_after)
        );
        say!(out, "  chain length:        {}", info.chain_len);
        say!(out, "  protocols:           {}", self.protocols);
        if self.repository_ssl_off {
            say!(
                out,
                "note: repository SSL is off, so no certificate is served until 'pgssl security repository-ssl enable' is applied too"
            );
        }
        apply_hint(out);
    }
}

no_arguments!(
    /// `external-ssl disable`: stages serving the generated certificate again.
    Disable
);

impl Operation for Disable {
    const ACTION: &'static str = "external-ssl disable";
    const PATH: &'static str = "/external-ssl/disable";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        Ok(match stage_removal(ctx, &SLOT)? {
            Removal::Absent | Removal::DroppedStaged => {
                Staged::nothing("External SSL is not enabled; nothing to stage.")
            }
            Removal::Staged => Staged::change(
                "Staged: disable external SSL and serve the generated repository certificate again.",
            ),
        })
    }

    fn example() -> Disable {
        Disable {}
    }
}

no_arguments!(
    /// `external-ssl list`: the applied (and any staged) external certificate, without file
    /// locations.
    List
);

/// An external-SSL record with its certificate's details.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The record.
    pub record: ExternalSsl,
    /// The certificate's details.
    pub certificate: CertInfo,
    /// The offered protocols (or why the list does not parse).
    pub protocol_set: String,
}

/// The applied record and any staged change.
pub type Listing = super::RecordList<Record>;

impl Operation for List {
    const ACTION: &'static str = "external-ssl list";
    const PATH: &'static str = "/external-ssl";
    const VERB: Verb = Verb::Get;
    type Report = Listing;

    async fn run(self, ctx: &Context) -> Result<Listing, CommandError> {
        SLOT.list(ctx, detail)
    }

    fn example() -> List {
        List {}
    }
}

fn detail(store: &StateStore, record: &ExternalSsl) -> Result<Record, CommandError> {
    Ok(Record {
        certificate: certs::read_info(&store.external_ssl_paths(&record.id).cert)?,
        protocol_set: protocols::parse(&record.protocols)
            .map(|p| p.set.to_string())
            .unwrap_or_else(|e| e.to_string()),
        record: record.clone(),
    })
}

impl Report for Listing {
    fn render(&self, out: &Output) {
        let how = RecordListing {
            title: "External SSL",
            none: "enabled:             no (the generated repository certificate is served)",
            staged: &|_: &Record| "enable with a new certificate".to_string(),
            removed: "disable",
        };
        list_record(out, how, self, print_record);
    }
}

fn print_record(out: &Output, shown: &Record, indent: &str) {
    let (external, info, protocols) = (&shown.record, &shown.certificate, &shown.protocol_set);
    let line = |label: &str, value: &str| say!(out, "{indent}{label:<21}{value}");
    line("enabled:", "yes");
    line("certificate file:", &external.cert_file_name);
    line(
        "key file:",
        &format!(
            "{}{}",
            external.key_file_name,
            if external.encrypted_key {
                " (encrypted; passphrase in the keystore)"
            } else {
                ""
            }
        ),
    );
    line(
        "chain file:",
        external.chain_file_name.as_deref().unwrap_or("none"),
    );
    line("subject:", &info.subject);
    line("issuer:", &info.issuer);
    line("subject alt names:", &info.subject_alt_names.join(", "));
    line("expires:", &describe_expiry(info.not_after));
    line("chain length:", &info.chain_len.to_string());
    line(
        "protocols:",
        &format!("{} ({protocols})", external.protocols),
    );
    line("SHA-256 fingerprint:", &info.sha256_fingerprint);
}
