//! The security pages' forms: each decodes into its operation's request (or says what is missing)
//! and runs it like the API does.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{MethodRouter, post};
use serde::Deserialize;

use super::act;
use super::nav::Page;
use crate::admin::AdminState;
use crate::admin::auth::Admin;
use crate::control::operations::model::Operation;
use crate::control::operations::model::Upload;
use crate::control::operations::{custom_cert, external_ssl, mutual_ssl, vizql_extsvc};
use crate::keystore::Secret;

type Shared = Arc<AdminState>;

/// A page's form: its fields and the operation they make.
pub(super) trait PageForm: serde::de::DeserializeOwned + Send + 'static {
    /// The operation.
    type Request: Operation;
    /// The request, or what is missing.
    fn request(self) -> Result<Self::Request, String>;
}

/// `POST` of `page`'s form: decode it, run its operation, flash the outcome, back to `page`.
pub(super) fn submit<F: PageForm>(page: Page) -> MethodRouter<Shared> {
    post(
        move |State(state): State<Shared>, Extension(admin): Extension<Admin>, body: Bytes| async move {
            let request = fields::<F>(&body).and_then(F::request);
            act(&state, &admin, request, page).await
        },
    )
}

/// `POST` of a button on `page` that stages an operation without arguments (disable, delete,
/// regenerate), then back to `page`.
pub(super) fn stage<T: Operation + Default>(page: Page) -> MethodRouter<Shared> {
    post(
        move |State(state): State<Shared>, Extension(admin): Extension<Admin>| async move {
            act(&state, &admin, Ok(T::default()), page).await
        },
    )
}

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
pub(super) struct ExternalSslForm {
    cert_pem: Option<String>,
    key_pem: Option<String>,
    chain_pem: Option<String>,
    passphrase: Option<String>,
    protocols: Option<String>,
}

impl PageForm for ExternalSslForm {
    type Request = external_ssl::Enable;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CustomCertForm {
    cert_pem: Option<String>,
}

impl PageForm for CustomCertForm {
    type Request = custom_cert::Add;
    fn request(self) -> Result<custom_cert::Add, String> {
        Ok(custom_cert::Add {
            cert_file: pasted(self.cert_pem.ok_or("paste the CA certificate")?),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExtsvcForm {
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

impl PageForm for ExtsvcForm {
    type Request = vizql_extsvc::Enable;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MutualSslForm {
    ca_pem: Option<String>,
    user_name_map: Option<String>,
    map_text: Option<String>,
    crl_pem: Option<String>,
    fallback_enable: Option<String>,
}

impl PageForm for MutualSslForm {
    type Request = mutual_ssl::Configure;
    fn request(self) -> Result<mutual_ssl::Configure, String> {
        Ok(mutual_ssl::Configure {
            ca_cert: pasted(self.ca_pem.ok_or("paste the CA certificate")?),
            fallback_enable: self.fallback_enable.map(|f| f != "false"),
            user_name_map: self.user_name_map.map(|m| m.parse()).transpose()?,
            map_file: self.map_text.map(pasted),
            revocation_file: self.crl_pem.map(pasted),
        })
    }
}
