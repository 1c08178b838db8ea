//! `[tls]`.

use serde::Deserialize;

use super::ConfigError;
use crate::tls::policy::{self, NameKind};

/// `[tls]`: generated certificates, and what served TLS 1.3 offers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Extra DNS names or IP addresses for the certificate, beside `localhost`, `127.0.0.1`, `::1` and
    /// the host name. Default none.
    pub subject_alt_names: Vec<String>,
    /// Validity of a generated certificate in days. Default 825.
    pub certificate_validity_days: u32,
    /// How long a next repository CA is published before it signs (`regenerate-internal-tokens
    /// --ca`), in days. Default 30.
    pub ca_overlap_days: u32,
    /// How long before its expiry the served certificate renews itself, in days. Default 30.
    pub renew_before_days: u32,
    /// TLS 1.3 cipher suites offered, in order of preference; empty: all (see `tls::policy`).
    pub tls13_ciphersuites: Vec<String>,
    /// Key-exchange groups offered, in order of preference; empty: all.
    pub groups: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            subject_alt_names: Vec::new(),
            certificate_validity_days: 825,
            ca_overlap_days: 30,
            renew_before_days: 30,
            tls13_ciphersuites: Vec::new(),
            groups: Vec::new(),
        }
    }
}

impl TlsConfig {
    /// The served TLS provider of `tls13_ciphersuites` and `groups`; an unknown name is an error
    /// naming its key.
    pub fn served_provider(&self) -> Result<rustls::crypto::CryptoProvider, ConfigError> {
        policy::provider(&self.tls13_ciphersuites, &self.groups).map_err(|e| ConfigError::Invalid {
            key: match e.kind {
                NameKind::Suite => "tls.tls13_ciphersuites",
                NameKind::Group => "tls.groups",
            },
            message: e.to_string(),
        })
    }
}
