//! `pgssl security custom-cert add --cert-file F | delete | list`: the one CA certificate pgssl trusts
//! for its own outgoing TLS (the repository with `repository.tls`, and the external service check).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::model::{Operation, Report, Staged, Upload, Verb, no_arguments};
use super::{
    CommandError, Context, ErrorKind, Output, RecordList, RecordListing, RecordSlot, Removal,
    Staging, apply_hint, describe_expiry, list_record, stage_removal,
};
use crate::control::state::custom_ca::{self, CustomCaError};
use crate::control::state::security::{Change, CustomCa};
use crate::control::state::store::new_id;
use crate::tls::certs::{self, CertInfo};

/// Where the custom CA is in the state.
const SLOT: RecordSlot<CustomCa> = record_slot!(custom_ca);

/// Why a `custom-cert` command refused.
#[derive(Debug, thiserror::Error)]
pub enum CustomCertError {
    /// The file is not a certificate pgssl can trust.
    #[error(transparent)]
    Unusable(CustomCaError),
    /// One is added already.
    #[error(
        "a custom CA certificate is already added; remove it with 'pgssl security custom-cert delete' first"
    )]
    AlreadyAdded,
    /// None is added or staged.
    #[error("there is no custom CA certificate to delete")]
    NothingToDelete,
}

impl CustomCertError {
    /// Each is the caller's to fix.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

/// `custom-cert add`: stages a CA certificate (PEM or DER); refused when one is already added.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {
    /// The CA certificate.
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    pub cert_file: Upload,
}

/// A custom CA record with its certificate's details.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The record.
    pub record: CustomCa,
    /// The certificate's details.
    pub certificate: CertInfo,
}

/// What `add` staged: the record as `list` shows it, and whether the certificate is marked as a CA
/// (basicConstraints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Added {
    /// The staged record.
    pub added: Record,
    /// Whether it is marked as a CA.
    pub is_ca: bool,
}

impl Operation for Add {
    const ACTION: &'static str = "custom-cert add";
    const PATH: &'static str = "/custom-cert/add";
    const VERB: Verb = Verb::Post;
    type Report = Added;

    async fn run(self, ctx: &Context) -> Result<Added, CommandError> {
        let path = std::path::PathBuf::from(self.cert_file.name_or("custom-ca.crt"));
        let ca = custom_ca::parse(
            &path,
            self.cert_file.contents.to_vec(),
            OffsetDateTime::now_utc(),
        )
        .map_err(CustomCertError::Unusable)?;
        let mut staging = Staging::begin(ctx.store_or_create()?)?;
        if staging.next().custom_ca.is_some() {
            return Err(CustomCertError::AlreadyAdded.into());
        }
        let id = new_id()?;
        custom_ca::store(&ca, &staging.store.custom_ca_path(&id))?;
        let record = CustomCa {
            id,
            cert_file_name: self.cert_file.file_name("custom-ca.crt"),
        };
        staging.pending.custom_ca = Some(Change::Set(record.clone()));
        staging.save()?;
        Ok(Added {
            added: Record {
                record,
                certificate: ca.info,
            },
            is_ca: ca.is_ca,
        })
    }

    fn example() -> Add {
        Add {
            cert_file: Upload {
                name: Some("ca.der".into()),
                contents: vec![0x30, 0x82].into(),
            },
        }
    }
}

impl Report for Added {
    fn render(&self, out: &Output) {
        let name = &self.added.record.cert_file_name;
        say!(out, "Staged the custom CA certificate from {name}:");
        print_info(out, &self.added.certificate, "  ");
        if !self.is_ca {
            note!(
                out,
                "warning: {name} is not marked as a CA (basicConstraints); it can only authenticate a server that presents this very certificate"
            );
        }
        apply_hint(out);
    }
}

no_arguments!(
    /// `custom-cert delete`: stages removing the custom CA (or drops one that is only staged).
    Delete
);

impl Operation for Delete {
    const ACTION: &'static str = "custom-cert delete";
    const PATH: &'static str = "/custom-cert/delete";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        match stage_removal(ctx, &SLOT)? {
            Removal::Absent => Err(CustomCertError::NothingToDelete.into()),
            Removal::Staged => Ok(Staged::change("Staged: delete the custom CA certificate.")),
            Removal::DroppedStaged => Ok(Staged::nothing(
                "Dropped the staged custom CA certificate; none is applied.",
            )),
        }
    }

    fn example() -> Delete {
        Delete {}
    }
}

no_arguments!(
    /// `custom-cert list`: the applied (and any staged) custom CA.
    List
);

impl Operation for List {
    const ACTION: &'static str = "custom-cert list";
    const PATH: &'static str = "/custom-cert";
    const VERB: Verb = Verb::Get;
    type Report = RecordList<Record>;

    async fn run(self, ctx: &Context) -> Result<RecordList<Record>, CommandError> {
        SLOT.list(ctx, |store, ca| {
            Ok(Record {
                certificate: certs::read_info(&store.custom_ca_path(&ca.id))?,
                record: ca.clone(),
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
            title: "Custom CA certificate",
            none: "none (outgoing TLS trusts the system CA bundle)",
            staged: &|ca: &Record| format!("add {}", ca.record.cert_file_name),
            removed: "delete",
        };
        list_record(out, how, self, |out, ca, indent| {
            say!(out, "{indent}{:<21}{}", "file:", ca.record.cert_file_name);
            print_info(out, &ca.certificate, indent);
        });
    }
}

fn print_info(out: &Output, info: &CertInfo, indent: &str) {
    let line = |label: &str, value: &str| say!(out, "{indent}{label:<21}{value}");
    line("subject:", &info.subject);
    line("issuer:", &info.issuer);
    line("expires:", &describe_expiry(info.not_after));
    line("SHA-256 fingerprint:", &info.sha256_fingerprint);
}
