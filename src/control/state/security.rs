//! The records of the `security` settings beside repository SSL, as they are staged and applied:
//! the administrator's own certificate (`external-ssl`), the custom CA (`custom-cert`), and the external
//! analytics service (`vizql-extsvc-ssl`).
//!
//! Files and secrets are named by a random `id` chosen when a record is staged, so a staged record never
//! overwrites what the applied one uses.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `security external-ssl`: serve the administrator's certificate on the client listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSsl {
    /// Folder `config/external-ssl/<id>` holding the copies.
    pub id: String,
    /// The `--cert-file` name as given (no folder), for `list`.
    pub cert_file_name: String,
    /// The `--key-file` name.
    pub key_file_name: String,
    /// The `--chain-file` name, if one was given.
    pub chain_file_name: Option<String>,
    /// The `--protocols` list as given.
    pub protocols: String,
    /// Whether the key is encrypted (its passphrase is in the keystore).
    pub encrypted_key: bool,
}

/// `authentication mutual-ssl`: client certificates as credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutualSsl {
    /// Folder `config/mutual-ssl/<id>` holding the copies.
    pub id: String,
    /// The `--ca-cert` name as given.
    pub ca_file_name: String,
    /// Whether a client without a certificate may log in otherwise.
    pub fallback: bool,
    /// How a certificate names its user.
    pub user_name_map: crate::proxy::auth::cert::NameMapping,
    /// The `--map-file` name, if one was given.
    pub map_file_name: Option<String>,
    /// The `--revocation-file` name, if one was given.
    pub revocation_file_name: Option<String>,
    /// Whether certificates are asked for (`enable`/`disable`).
    pub enabled: bool,
}

/// `security custom-cert`: the CA pgssl trusts for its own outgoing TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCa {
    /// File `config/custom-ca/<id>.crt` (PEM).
    pub id: String,
    /// The `--cert-file` name as given.
    pub cert_file_name: String,
}

/// The kind of external analytics service. Read from text (state files, JSON) the way the CLI reads
/// its flag, so a wrong value is worded the same everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ConnectionType {
    /// Rserve, plaintext.
    Rserve,
    /// Rserve over TLS.
    RserveSecure,
    /// TabPy, plaintext.
    Tabpy,
    /// TabPy over TLS.
    TabpySecure,
}

impl ConnectionType {
    /// The model's default port: Rserve 6311, TabPy 9004.
    pub fn default_port(self) -> u16 {
        match self {
            ConnectionType::Rserve | ConnectionType::RserveSecure => 6311,
            ConnectionType::Tabpy | ConnectionType::TabpySecure => 9004,
        }
    }

    /// Whether the service is reached over TLS.
    pub fn is_secure(self) -> bool {
        matches!(
            self,
            ConnectionType::RserveSecure | ConnectionType::TabpySecure
        )
    }
}

impl std::str::FromStr for ConnectionType {
    type Err = String;

    fn from_str(s: &str) -> Result<ConnectionType, String> {
        Ok(match s {
            "rserve" => ConnectionType::Rserve,
            "rserve-secure" => ConnectionType::RserveSecure,
            "tabpy" => ConnectionType::Tabpy,
            "tabpy-secure" => ConnectionType::TabpySecure,
            _ => {
                return Err(format!(
                    "'{s}' is not a connection type (rserve, rserve-secure, tabpy, tabpy-secure)"
                ));
            }
        })
    }
}

impl TryFrom<String> for ConnectionType {
    type Error = String;

    fn try_from(s: String) -> Result<ConnectionType, String> {
        s.parse()
    }
}

impl From<ConnectionType> for String {
    fn from(t: ConnectionType) -> String {
        t.to_string()
    }
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectionType::Rserve => "rserve",
            ConnectionType::RserveSecure => "rserve-secure",
            ConnectionType::Tabpy => "tabpy",
            ConnectionType::TabpySecure => "tabpy-secure",
        })
    }
}

/// `security vizql-extsvc-ssl`: the external analytics service connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalService {
    /// Names `config/extsvc/<id>.crt` and the keystore entry of the password.
    pub id: String,
    /// Rserve or TabPy, plaintext or TLS.
    pub connection_type: ConnectionType,
    /// `--extsvc-host`.
    pub host: String,
    /// `--extsvc-port`.
    pub port: u16,
    /// The `--cert-file` name as given, if one was (its copy is `config/extsvc/<id>.crt`).
    pub cert_file_name: Option<String>,
    /// `--extsvc-username`.
    pub username: Option<String>,
    /// Whether a password is sealed in the keystore.
    pub has_password: bool,
    /// `--connect-timeout-ms`.
    pub connect_timeout_ms: u64,
    /// `--script-disabled`.
    pub script_disabled: bool,
}

/// A staged change to an optional record: set it, or remove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Change<T> {
    /// Install this record.
    Set(T),
    /// Remove the record.
    Remove,
}

impl<T: Clone> Change<T> {
    /// The record after the change.
    pub fn result(&self) -> Option<T> {
        match self {
            Change::Set(t) => Some(t.clone()),
            Change::Remove => None,
        }
    }
}

/// Keystore name of the external certificate key's passphrase.
pub fn passphrase_name(id: &str) -> String {
    format!("external-ssl/{id}/passphrase")
}

/// Keystore name of the external service's password.
pub fn extsvc_password_name(id: &str) -> String {
    format!("extsvc/{id}/password")
}

/// `authentication lookup-user set`: the role pgssl reads verifiers as on an external repository
/// (its password sealed in the keystore under [`lookup_password_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupUser {
    /// The record's id (names its secret).
    pub id: String,
    /// The role.
    pub username: String,
}

/// Keystore name of a lookup user's password.
pub fn lookup_password_name(id: &str) -> String {
    format!("auth/lookup/{id}/password")
}
