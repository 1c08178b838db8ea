//! The state pgssl serves and stages, as data: [`AppliedState`] (what `applied.toml` holds) and
//! [`PendingChanges`] (only what was staged since), with the rules that merge, normalise and describe
//! them. Reading and writing them is [`super::store`]'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::security::{Change, CustomCa, ExternalService, ExternalSsl, LookupUser, MutualSsl};
use crate::proxy::policy::Mode;

/// The state a server serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppliedState {
    /// Repository SSL settings.
    pub repository_ssl: RepositorySsl,
    /// Direct-connection users of a managed repository, by name.
    pub data_access: BTreeMap<String, Access>,
    /// The administrator's certificate for the client listener, if enabled.
    pub external_ssl: Option<ExternalSsl>,
    /// The custom CA for pgssl's outgoing TLS, if added.
    pub custom_ca: Option<CustomCa>,
    /// The external analytics service, if enabled.
    pub extsvc: Option<ExternalService>,
    /// The role verifiers are read as on an external repository, if set.
    pub lookup_user: Option<LookupUser>,
    /// Client certificates as credentials, if configured.
    pub mutual_ssl: Option<MutualSsl>,
}

/// Whether a direct-connection user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// LOGIN with the password sealed in the keystore.
    Enabled,
    /// NOLOGIN.
    Disabled,
}

/// `[repository_ssl]` of the applied state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositorySsl {
    /// The SSL mode.
    pub mode: Mode,
    /// The PostgreSQL major version whose `config/pgsql<major>/security` folder holds the certificate;
    /// set when SSL is first enabled.
    pub postgres_major: Option<u32>,
}

/// Changes staged by the CLI and not yet applied. `None` means "unchanged".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PendingChanges {
    /// A new repository SSL mode.
    pub repository_ssl_mode: Option<Mode>,
    /// A new certificate folder version.
    pub postgres_major: Option<u32>,
    /// Direct-connection users to enable (with a new password, sealed in the keystore under
    /// [`pending_password_name`]) or disable.
    pub data_access: BTreeMap<String, Access>,
    /// `external-ssl enable` or `disable`.
    pub external_ssl: Option<Change<ExternalSsl>>,
    /// `custom-cert add` or `delete`.
    pub custom_ca: Option<Change<CustomCa>>,
    /// `vizql-extsvc-ssl enable` or `disable`.
    pub extsvc: Option<Change<ExternalService>>,
    /// `authentication lookup-user set`.
    pub lookup_user: Option<Change<LookupUser>>,
    /// `authentication mutual-ssl configure`, `enable` or `disable`.
    pub mutual_ssl: Option<Change<MutualSsl>>,
}

/// Keystore name of a staged direct-user password.
pub fn pending_password_name(user: &str) -> String {
    format!("pending/role/{user}")
}

impl PendingChanges {
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self == &PendingChanges::default()
    }

    /// The state `apply` would produce.
    pub fn merged_into(&self, applied: &AppliedState) -> AppliedState {
        let mut next = applied.clone();
        if let Some(mode) = self.repository_ssl_mode {
            next.repository_ssl.mode = mode;
        }
        if let Some(major) = self.postgres_major {
            next.repository_ssl.postgres_major = Some(major);
        }
        for (user, access) in &self.data_access {
            next.data_access.insert(user.clone(), *access);
        }
        if let Some(change) = &self.external_ssl {
            next.external_ssl = change.result();
        }
        if let Some(change) = &self.custom_ca {
            next.custom_ca = change.result();
        }
        if let Some(change) = &self.extsvc {
            next.extsvc = change.result();
        }
        if let Some(change) = &self.lookup_user {
            next.lookup_user = change.result();
        }
        if let Some(change) = &self.mutual_ssl {
            next.mutual_ssl = change.result();
        }
        next
    }

    /// Drops entries that equal the applied state, so that staging the current value stages nothing.
    pub fn normalised_against(mut self, applied: &AppliedState) -> PendingChanges {
        if self.repository_ssl_mode == Some(applied.repository_ssl.mode) {
            self.repository_ssl_mode = None;
        }
        if self.postgres_major.is_some()
            && self.postgres_major == applied.repository_ssl.postgres_major
        {
            self.postgres_major = None;
        }
        // Enabling always carries a new password, so only a repeated disable is a no-op.
        self.data_access.retain(|user, access| {
            *access == Access::Enabled || applied.data_access.get(user) != Some(&Access::Disabled)
        });
        fn no_op<T: PartialEq + Clone>(change: &Option<Change<T>>, applied: &Option<T>) -> bool {
            change.as_ref().is_some_and(|c| c.result() == *applied)
        }
        if no_op(&self.external_ssl, &applied.external_ssl) {
            self.external_ssl = None;
        }
        if no_op(&self.custom_ca, &applied.custom_ca) {
            self.custom_ca = None;
        }
        if no_op(&self.extsvc, &applied.extsvc) {
            self.extsvc = None;
        }
        if no_op(&self.lookup_user, &applied.lookup_user) {
            self.lookup_user = None;
        }
        if no_op(&self.mutual_ssl, &applied.mutual_ssl) {
            self.mutual_ssl = None;
        }
        self
    }

    /// One human-readable line per staged change.
    pub fn describe(&self, applied: &AppliedState) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(mode) = self.repository_ssl_mode {
            lines.push(format!(
                "repository-ssl mode: {} -> {} ({})",
                applied.repository_ssl.mode,
                mode,
                mode.description()
            ));
        }
        if let Some(major) = self.postgres_major {
            let from = applied
                .repository_ssl
                .postgres_major
                .map_or("none".to_string(), |m| format!("pgsql{m}"));
            lines.push(format!(
                "repository-ssl certificate folder: {from} -> pgsql{major}"
            ));
        }
        for (user, access) in &self.data_access {
            lines.push(match access {
                Access::Enabled => format!("data-access {user}: enable login with a new password"),
                Access::Disabled => {
                    format!("data-access {user}: disable login and end its sessions")
                }
            });
        }
        match &self.external_ssl {
            Some(Change::Set(e)) => lines.push(format!(
                "external-ssl: serve the certificate from {} (protocols: {})",
                e.cert_file_name, e.protocols
            )),
            Some(Change::Remove) => lines.push(
                "external-ssl: disable; serve the generated repository certificate again".into(),
            ),
            None => {}
        }
        match &self.custom_ca {
            Some(Change::Set(c)) => lines.push(format!(
                "custom-cert: trust the CA certificate from {}",
                c.cert_file_name
            )),
            Some(Change::Remove) => lines.push("custom-cert: delete the custom CA".into()),
            None => {}
        }
        match &self.extsvc {
            Some(Change::Set(x)) => lines.push(format!(
                "vizql-extsvc-ssl: enable {} at {}:{}",
                x.connection_type, x.host, x.port
            )),
            Some(Change::Remove) => {
                lines.push("vizql-extsvc-ssl: disable the external service".into())
            }
            None => {}
        }
        match &self.lookup_user {
            Some(Change::Set(l)) => lines.push(format!(
                "authentication lookup-user: read verifiers as {} (new password)",
                l.username
            )),
            Some(Change::Remove) => lines.push(
                "authentication lookup-user: clear; pgssl stops authenticating clients itself"
                    .into(),
            ),
            None => {}
        }
        if let Some(Change::Set(m)) = &self.mutual_ssl {
            lines.push(format!(
                "authentication mutual-ssl: {} (CA from {}, names by {}, fallback {})",
                if m.enabled { "on" } else { "off" },
                m.ca_file_name,
                m.user_name_map,
                m.fallback
            ));
        }
        lines
    }
}
