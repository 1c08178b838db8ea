//! The security pages' forms: each decodes into its operation's request (or says what is missing)
//! and runs it like the API does.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::act;
use crate::admin::AdminState;
use crate::admin::auth::Admin;
use crate::control::operations::model::Upload;
use crate::control::operations::{custom_cert, external_ssl, vizql_extsvc};
use crate::keystore::Secret;

type Shared = Arc<AdminState>;

/// A form's fields; an empty text field counts as not given.
fn fields<F: serde::de::DeserializeOwned>(body: &[u8]) -> Result<F, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| format!("the form does not decode: {e}"))?;
    let kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, v)| k != "csrf_token" && !v.trim().is_empty())
        .collect();
    let encoded = serde_urlencoded::to_string(kept).map_err(|e| e.to_string())?;
    serde_urlencoded::from_str(&encoded).map_err(|e| format!("the form does not fit: {e}"))
}

/// Pasted PEM text as an upload without a name.
fn pasted(text: String) -> Upload {
    Upload {
        name: None,
        contents: text.into_bytes().into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalSslForm {
    cert_pem: Option<String>,
    key_pem: Option<String>,
    chain_pem: Option<String>,
    passphrase: Option<String>,
    protocols: Option<String>,
}

impl ExternalSslForm {
    fn request(self) -> Result<external_ssl::Enable, String> {
        Ok(external_ssl::Enable {
            cert_file: pasted(self.cert_pem.ok_or("paste the certificate")?),
            key_file: pasted(self.key_pem.ok_or("paste the private key")?),
            chain_file: self.chain_pem.map(pasted),
            passphrase: self.passphrase.map(Secret::new),
            protocols: self.protocols,
        })
    }
}

pub(super) async fn external_ssl_form(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Response {
    let request = fields::<ExternalSslForm>(&body).and_then(ExternalSslForm::request);
    act(&state, &admin, request, "/security/external-ssl").await
}

pub(super) async fn external_ssl_disable(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Response {
    act(
        &state,
        &admin,
        Ok(external_ssl::Disable {}),
        "/security/external-ssl",
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomCertForm {
    cert_pem: Option<String>,
}

pub(super) async fn custom_cert_form(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Response {
    let request = fields::<CustomCertForm>(&body).and_then(|f| {
        Ok(custom_cert::Add {
            cert_file: pasted(f.cert_pem.ok_or("paste the CA certificate")?),
        })
    });
    act(&state, &admin, request, "/security/custom-cert").await
}

pub(super) async fn custom_cert_delete(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Response {
    act(
        &state,
        &admin,
        Ok(custom_cert::Delete {}),
        "/security/custom-cert",
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtsvcForm {
    connection_type: Option<String>,
    extsvc_host: Option<String>,
    extsvc_port: Option<String>,
    cert_pem: Option<String>,
    extsvc_username: Option<String>,
    extsvc_password: Option<String>,
    connect_timeout_ms: Option<String>,
    script_disabled: Option<String>,
    skip_check: Option<String>,
}

impl ExtsvcForm {
    fn request(self) -> Result<vizql_extsvc::Enable, String> {
        let number = |field: &str, value: Option<String>| {
            value
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{field} must be a whole number"))
                })
                .transpose()
        };
        let port = number("the port", self.extsvc_port)?
            .map(|p| {
                u16::try_from(p)
                    .ok()
                    .and_then(std::num::NonZeroU16::new)
                    .ok_or("the port must be 1 to 65535")
            })
            .transpose()?;
        Ok(vizql_extsvc::Enable {
            connection_type: self
                .connection_type
                .ok_or("choose a connection type")?
                .parse()?,
            extsvc_host: self.extsvc_host.ok_or("give the host")?,
            extsvc_port: port,
            cert_file: self.cert_pem.map(pasted),
            extsvc_username: self.extsvc_username,
            extsvc_password: self.extsvc_password.map(Secret::new),
            connect_timeout_ms: match number("the connect timeout", self.connect_timeout_ms)? {
                Some(ms) => ms
                    .try_into()
                    .map_err(|e| format!("the connect timeout {e}"))?,
                None => Default::default(),
            },
            script_disabled: self.script_disabled.as_deref() != Some("false"),
            skip_check: self.skip_check.is_some(),
        })
    }
}

pub(super) async fn extsvc_form(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Response {
    let request = fields::<ExtsvcForm>(&body).and_then(ExtsvcForm::request);
    act(&state, &admin, request, "/security/vizql-extsvc-ssl").await
}

pub(super) async fn extsvc_disable(
    State(state): State<Shared>,
    Extension(admin): Extension<Admin>,
) -> Response {
    act(
        &state,
        &admin,
        Ok(vizql_extsvc::Disable {}),
        "/security/vizql-extsvc-ssl",
    )
    .await
}
