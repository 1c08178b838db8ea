//! The typed bodies of the JSON API's requests.
//!
//! Every body is read into one of these with unknown fields refused and each field's type enforced,
//! so `{"internal_only": "true"}` is a 400 naming `internal_only` rather than a silently staged
//! `required`. A field is required where the CLI requires its flag, and also where a silent default
//! would decide something the administrator did not say (`internal_only`).

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::control::operations::regenerate_tokens;
use crate::control::state::security::ConnectionType;

/// Reads `body` as `T`; an empty body reads as `{}`. The error names the offending field.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("invalid request body: {inner}")
        } else {
            format!("invalid request body: field '{path}': {inner}")
        }
    })?;
    de.end().map_err(|e| format!("invalid request body: {e}"))?;
    Ok(value)
}

/// `POST /api/v1/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The administrator.
    pub username: String,
    /// The password.
    pub password: String,
}

/// A change that takes no arguments: the body is empty or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArguments {}

/// `POST /api/v1/repository-ssl/enable`. Required: staging `required` by default would lock out the
/// direct users of an administrator who meant `optional`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySslEnable {
    /// `true` stages `optional` (`--internal-only`), `false` stages `required`.
    pub internal_only: bool,
}

/// `POST /api/v1/regenerate-internal-tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegenerateTokens {
    /// Seconds, 1 to [`regenerate_tokens::MAX_TIMEOUT_SECS`]; default as in the CLI.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

fn default_request_timeout() -> u64 {
    regenerate_tokens::DEFAULT_TIMEOUT_SECS
}

/// The direct users of the managed repository.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectUser {
    /// `tableau`: reads and writes.
    Tableau,
    /// `readonly`: reads only.
    Readonly,
}

impl DirectUser {
    /// The role name.
    pub fn name(self) -> &'static str {
        match self {
            DirectUser::Tableau => "tableau",
            DirectUser::Readonly => "readonly",
        }
    }
}

/// `POST /api/v1/data-access/enable`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataAccessEnable {
    /// The direct user.
    pub repository_username: DirectUser,
    /// The new password.
    pub repository_password: String,
}

/// `POST /api/v1/data-access/disable`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataAccessDisable {
    /// The direct user.
    pub repository_username: DirectUser,
}

/// `POST /api/v1/external-ssl/enable`: the files' contents, and the names they had (for listings).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSslEnable {
    /// The certificate (PEM); a chain may follow.
    pub cert_pem: String,
    /// The private key (PEM).
    pub key_pem: String,
    /// Intermediate certificates (PEM).
    pub chain_pem: Option<String>,
    /// The passphrase of an encrypted key.
    pub passphrase: Option<String>,
    /// The model's protocol list, e.g. `all, -SSLv2, -SSLv3`.
    pub protocols: Option<String>,
    /// The name the certificate file had (shown in listings).
    pub cert_file_name: Option<String>,
    /// The name the key file had.
    pub key_file_name: Option<String>,
    /// The name the chain file had.
    pub chain_file_name: Option<String>,
}

/// `POST /api/v1/custom-cert/add`: exactly one of `cert_pem` and `cert_der_base64`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCertAdd {
    /// A certificate (PEM).
    pub cert_pem: Option<String>,
    /// A certificate (DER, base64).
    pub cert_der_base64: Option<String>,
    /// The name the certificate file had (shown in listings).
    pub cert_file_name: Option<String>,
}

/// `POST /api/v1/vizql-extsvc-ssl/enable`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtsvcEnable {
    /// `rserve`, `rserve-secure`, `tabpy` or `tabpy-secure`.
    #[serde(deserialize_with = "from_str")]
    pub connection_type: ConnectionType,
    /// The service's host.
    pub extsvc_host: String,
    /// The service's port (default by type).
    pub extsvc_port: Option<u16>,
    /// A certificate (PEM).
    pub cert_pem: Option<String>,
    /// The name the certificate file had (shown in listings).
    pub cert_file_name: Option<String>,
    /// The service user.
    pub extsvc_username: Option<String>,
    /// The service user's password.
    pub extsvc_password: Option<String>,
    /// Connect timeout, 1 to [`crate::control::operations::vizql_extsvc::MAX_CONNECT_TIMEOUT_MS`] ms (default 1000).
    pub connect_timeout_ms: Option<u64>,
    /// Whether scripts are disabled (default true).
    pub script_disabled: Option<bool>,
    /// Stage without the live TLS check.
    pub skip_check: Option<bool>,
}

/// A string field read with the type's `FromStr`, so the API words a bad value as the CLI does.
fn from_str<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    let text = String::deserialize(de)?;
    text.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_unknown_and_missing_fields_are_named() {
        for (body, field) in [
            (&br#"{"internal_only": "true"}"#[..], "internal_only"),
            (br#"{"internal_only": 1}"#, "internal_only"),
            (br#"{"internal_only": null}"#, "internal_only"),
            (br#"{"internalOnly": true}"#, "internalOnly"),
            (b"", "internal_only"),
            (br#"{"internal_only": true} x"#, "trailing"),
        ] {
            let e = parse::<RepositorySslEnable>(body).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        assert!(
            parse::<RepositorySslEnable>(br#"{"internal_only": true}"#)
                .unwrap()
                .internal_only
        );
        let e = parse::<ExtsvcEnable>(
            br#"{"connection_type": "tabpy", "extsvc_host": "h", "extsvc_port": "1234"}"#,
        )
        .unwrap_err();
        assert!(e.contains("field 'extsvc_port'"), "{e}");
        let e = parse::<RegenerateTokens>(br#"{"request_timeout_secs": -1}"#).unwrap_err();
        assert!(e.contains("field 'request_timeout_secs'"), "{e}");
        assert_eq!(
            parse::<RegenerateTokens>(b"{}")
                .unwrap()
                .request_timeout_secs,
            1800
        );
        assert!(parse::<NoArguments>(b" ").is_ok() && parse::<NoArguments>(br#"{"x":1}"#).is_err());
    }
}
