//! SCRAM terminated at pgssl (`auth.mode = "proxy"`): pgssl authenticates the client itself, with
//! channel binding to the certificate this connection was served, then logs into the repository as
//! the same role by SCRAM pass-through — the ClientKey recovered from the client's proof signs the
//! repository's exchange, bound to the repository's own certificate when that leg is TLS. No password
//! exists anywhere.
//!
//! Failures look like PostgreSQL's: a wrong password, an unknown user (who goes through a mock
//! exchange with a salt derived from the name, so names cannot be probed), an expired or non-SCRAM
//! password all end in `FATAL 28P01 password authentication failed for user "…"`.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

pub use super::write_frame;
use super::{FrameError, read_frame};

use super::scram::{
    self, Binding, ClientFinal, ClientFirst, SCRAM, SCRAM_PLUS, ScramError, Verifier,
};
use crate::proxy::protocol::auth_message::{
    self, AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, AuthMessageError, Frame,
};

/// What the repository holds for a role, as a verifier lookup reads it.
#[derive(Debug, Clone)]
pub struct RoleSecret {
    /// `pg_authid.rolpassword` (a SCRAM verifier, an MD5 hash, or none).
    pub password: Option<String>,
    /// Whether `rolvaliduntil` has passed.
    pub expired: bool,
    /// `rolcanlogin` (true when the lookup query does not say).
    pub can_login: bool,
}

/// A failed lookup: the repository could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// A boxed lookup future.
pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<RoleSecret>, LookupError>> + Send + 'a>>;

/// Where verifiers come from: the repository itself, over one persistent connection (built by the
/// composition root; the data plane knows only this interface).
pub trait VerifierSource: Send + Sync + std::fmt::Debug {
    /// The role's secret, `None` when there is no such role.
    fn lookup<'a>(&'a self, role: &'a str) -> LookupFuture<'a>;

    /// The role's secret as the repository has it now, past any cache (the pool's re-checks).
    fn fresh<'a>(&'a self, role: &'a str) -> LookupFuture<'a> {
        self.lookup(role)
    }

    /// A proof against what `lookup` gave for `role` failed: anything kept about it is stale.
    fn forget(&self, _role: &str) {}

    /// The applied state changed (pgssl may have set passwords): nothing kept is trusted.
    fn forget_all(&self) {}

    /// A proof against what `lookup` gave for `role` failed: reads the role again at once and
    /// answers whether what was given differs from the repository's now (the password changed
    /// under a cache, so the proof was computed with the old salt and may be the right new
    /// password). A source that keeps nothing answers `false` without asking.
    fn stale<'a>(&'a self, role: &'a str) -> StaleFuture<'a> {
        self.forget(role);
        Box::pin(std::future::ready(false))
    }
}

/// A boxed [`VerifierSource::stale`] future.
pub type StaleFuture<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// A client that proved it knows the role's password.
#[derive(Clone)]
pub struct Proven {
    /// Its ClientKey, to sign the repository's exchange.
    client_key: [u8; 32],
    /// The role's verifier (its ServerKey checks the repository's answer).
    verifier: Verifier,
    /// The SASLFinal pgssl owes the client once the repository has let the session in.
    pub client_final: Frame,
    /// Which mechanism the client used.
    pub mechanism: &'static str,
    /// Whether the role may log in (a NOLOGIN role's proof can be right; the repository refuses it,
    /// so it must never get a warm session).
    pub can_login: bool,
}

impl Proven {
    /// The verifier the client proved itself against: a warm session is only handed to a client who
    /// proved the same one (a changed password changes it).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

/// Why the client leg did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// The proof was wrong, the role unknown, its password expired or not SCRAM; the client gets
    /// 28P01. `reason` is for the operator's log only.
    #[error("password authentication failed: {reason}")]
    Failed {
        /// What the log says.
        reason: &'static str,
        /// Whether the role exists (for the metric).
        known: bool,
    },
    /// A SCRAM message broke the grammar or the channel-binding rules (08P01, as PostgreSQL).
    #[error(transparent)]
    Protocol(#[from] ScramError),
    /// A frame was malformed or too large.
    #[error(transparent)]
    Frame(#[from] AuthMessageError),
    /// The client sent something other than a SASL response.
    #[error("expected a SASL response, got message type {0:?}")]
    Unexpected(char),
    /// The verifier lookup failed.
    #[error("could not look up the role's credentials: {0}")]
    Lookup(#[from] LookupError),
    /// The socket failed or the client left.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Runs the SCRAM exchange with the client as the server. `binding` is the `tls-server-end-point`
/// data of the certificate this connection was served (offering `-PLUS`), `None` on a plaintext
/// connection; `mock_secret` derives unknown users' salts.
pub async fn authenticate_client<C>(
    client: &mut C,
    role: &str,
    binding: Option<&[u8]>,
    lookup: &dyn VerifierSource,
    mock_secret: &[u8],
) -> Result<Proven, ClientAuthError>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let offer: &[&str] = if binding.is_some() {
        &[SCRAM_PLUS, SCRAM]
    } else {
        &[SCRAM]
    };
    // The offer goes out first and the lookup runs while the client answers it: the lookup's round
    // trip to the repository then overlaps the client's, instead of adding to every login's latency.
    // An unknown user takes the same path as a known one.
    write_frame(client, &auth_message::sasl_offer(offer)).await?;
    let (secret, initial) = tokio::join!(lookup.lookup(role), read_answer(client));
    let (secret, initial) = (secret?, initial?);
    let (verifier, failure) = verifier_for(secret.as_ref(), role, mock_secret);
    let can_login = secret.as_ref().is_none_or(|s| s.can_login);
    let (mechanism, data) = auth_message::sasl_initial_response(&initial.body)?;
    let mechanism = match mechanism {
        m if m == SCRAM_PLUS && binding.is_some() => SCRAM_PLUS,
        m if m == SCRAM => SCRAM,
        _ => return Err(ScramError::Malformed("a mechanism that was not offered").into()),
    };
    let first = ClientFirst::parse(data)?;
    let binding_data = binding_for(mechanism, first.binding, binding)?;
    let expected_binding = [first.gs2_header.as_bytes(), binding_data].concat();
    let server_nonce = scram::nonce().ok_or(ScramError::Malformed("no random nonce"))?;
    let server_first = verifier.server_first(&first.nonce, &server_nonce);
    let continue_ = auth_message::auth_request(AUTH_SASL_CONTINUE, server_first.as_bytes());
    write_frame(client, &continue_).await?;

    let response = read_answer(client).await?;
    let last = ClientFinal::parse(&response.body)?;
    if last.channel_binding != expected_binding {
        return Err(ScramError::ChannelBinding("the channel-binding data does not match").into());
    }
    if last.nonce != format!("{}{server_nonce}", first.nonce) {
        return Err(ScramError::Nonce.into());
    }
    let message = scram::auth_message(&first.bare, &server_first, &last.without_proof);
    let checked = verifier.check(&message, &last.proof);
    if let Some((reason, known)) = failure {
        return Err(ClientAuthError::Failed { reason, known });
    }
    let client_key = checked.map_err(|_| ClientAuthError::Failed {
        reason: "wrong password",
        known: true,
    })?;
    let signature = scram::server_signature(&verifier.server_key, &message);
    let client_final = auth_message::auth_request(
        AUTH_SASL_FINAL,
        format!("v={}", scram::encode(&signature)).as_bytes(),
    );
    Ok(Proven {
        client_key,
        verifier,
        client_final,
        mechanism,
        can_login,
    })
}

/// Why a login cannot succeed whatever the proof, for the log, and whether the role exists.
type Failure = Option<(&'static str, bool)>;

/// The verifier the exchange runs against: the role's, or a mock one (with why it must fail) for an
/// unknown role, an expired password or one that is not SCRAM, so that those take the same path.
fn verifier_for(
    secret: Option<&RoleSecret>,
    role: &str,
    mock_secret: &[u8],
) -> (Verifier, Failure) {
    let failure = match secret {
        None => ("no such role", false),
        Some(s) if s.expired => ("the role's password has expired", true),
        Some(s) => match s.password.as_deref().map(Verifier::parse) {
            Some(Ok(v)) => return (v, None),
            _ => (
                "the role has no SCRAM-SHA-256 password (reset it with password_encryption = scram-sha-256)",
                true,
            ),
        },
    };
    (Verifier::mock(role, mock_secret), Some(failure))
}

/// The channel-binding data the client's `c=` must carry, after the GS2 header: checks the GS2 flag
/// against the mechanism and what pgssl offered (`binding` is `Some` when it offered PLUS).
fn binding_for<'a>(
    mechanism: &str,
    flag: Binding,
    binding: Option<&'a [u8]>,
) -> Result<&'a [u8], ScramError> {
    match (mechanism == SCRAM_PLUS, flag) {
        (true, Binding::Bound) => Ok(binding.unwrap_or_default()),
        (true, _) => Err(ScramError::ChannelBinding(
            "SCRAM-SHA-256-PLUS without binding",
        )),
        (false, Binding::Bound) => Err(ScramError::ChannelBinding(
            "binding requested with SCRAM-SHA-256",
        )),
        // The client thinks pgssl cannot bind, but it offered PLUS: someone took it out (RFC 5802 §6).
        (false, Binding::ClientOnly) if binding.is_some() => Err(ScramError::ChannelBinding(
            "the client supports channel binding but thinks the server does not",
        )),
        _ => Ok(&[]),
    }
}

/// How the repository leg ended when it did not let the session in.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryAuthError {
    /// The repository refused with this ErrorResponse (relayed to the client as it is).
    #[error("the repository refused the login")]
    Refused(Frame),
    /// It asked for a method pgssl cannot answer without the password.
    #[error("the repository asks for {0} authentication")]
    Method(&'static str),
    /// Its SCRAM messages were wrong, or its signature did not prove it knows the verifier.
    #[error("the repository's SCRAM exchange failed: {0}")]
    Scram(#[from] ScramError),
    /// A frame was malformed or too large.
    #[error(transparent)]
    Frame(#[from] AuthMessageError),
    /// After AuthenticationOk it sent what a PostgreSQL server does not.
    #[error("unexpected start-up answer from the repository: {0}")]
    Unexpected(&'static str),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for RepositoryAuthError {
    fn from(e: FrameError) -> RepositoryAuthError {
        match e {
            FrameError::Malformed(m) => RepositoryAuthError::Frame(m),
            FrameError::Io(io) => RepositoryAuthError::Io(io),
        }
    }
}

/// Logs into the repository (whose start-up was already sent) as the proven client: answers its
/// SCRAM with the client's ClientKey, bound to `upstream_cert` when the repository offers
/// SCRAM-SHA-256-PLUS on a TLS leg. Returns the repository's NegotiateProtocolVersion, if it sent
/// one (the client must see it: it changes the protocol the session speaks).
pub async fn log_in<U>(
    upstream: &mut U,
    proven: &Proven,
    upstream_cert: Option<&[u8]>,
) -> Result<Option<Frame>, RepositoryAuthError>
where
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut exchange: Option<Exchange> = None;
    let mut expected_signature = None;
    let mut negotiated = None;
    loop {
        let frame = read_frame(upstream).await?;
        match frame.kind {
            b'E' => return Err(RepositoryAuthError::Refused(frame)),
            b'N' => continue,
            b'v' => {
                negotiated = Some(frame);
                continue;
            }
            _ => {}
        }
        let Some(code) = frame.auth_code() else {
            return Err(
                ScramError::Malformed("a message other than an authentication request").into(),
            );
        };
        let data = &frame.body[4..];
        match code {
            AUTH_OK => return Ok(negotiated),
            AUTH_SASL => {
                let (first, state) = client_first(&frame, upstream_cert)?;
                write_frame(upstream, &first).await?;
                exchange = Some(state);
            }
            AUTH_SASL_CONTINUE => {
                let state = exchange
                    .as_ref()
                    .ok_or(ScramError::Malformed("SASLContinue before SASL"))?;
                let (last, signature) = client_final(state, data, proven)?;
                write_frame(upstream, &last).await?;
                expected_signature = Some(signature);
            }
            AUTH_SASL_FINAL => {
                let expected = expected_signature
                    .as_ref()
                    .ok_or(ScramError::Malformed("SASLFinal before SASLContinue"))?;
                if !scram::server_final_matches(data, expected) {
                    return Err(ScramError::Proof.into());
                }
            }
            3 => return Err(RepositoryAuthError::Method("password (cleartext)")),
            5 => return Err(RepositoryAuthError::Method("md5")),
            7 | 8 => return Err(RepositoryAuthError::Method("gss")),
            9 => return Err(RepositoryAuthError::Method("sspi")),
            _ => return Err(RepositoryAuthError::Method("an unknown")),
        }
    }
}

/// The repository leg's exchange so far: `c=` of the final message, pgssl's nonce, the first message
/// without its GS2 header.
struct Exchange {
    channel_binding: String,
    nonce: String,
    first_bare: String,
}

/// Answers the repository's AuthenticationSASL: PLUS bound to its certificate when it offers it on a
/// TLS leg, else SCRAM-SHA-256 with the flag that says whether pgssl could have bound.
fn client_first(
    offer: &Frame,
    upstream_cert: Option<&[u8]>,
) -> Result<(Frame, Exchange), RepositoryAuthError> {
    let offered = auth_message::sasl_mechanisms(&offer.body)?;
    let bind = upstream_cert.filter(|_| offered.contains(&SCRAM_PLUS));
    let (mechanism, gs2) = match (bind, upstream_cert) {
        (Some(_), _) => (SCRAM_PLUS, "p=tls-server-end-point,,"),
        (None, _) if !offered.contains(&SCRAM) => {
            return Err(RepositoryAuthError::Method("SASL (without SCRAM-SHA-256)"));
        }
        // Over TLS pgssl could bind; the repository did not offer it (RFC 5802's `y`).
        (None, Some(_)) => (SCRAM, "y,,"),
        (None, None) => (SCRAM, "n,,"),
    };
    let nonce = scram::nonce().ok_or(ScramError::Malformed("no random nonce"))?;
    let first_bare = format!("n=,r={nonce}");
    let first = format!("{gs2}{first_bare}");
    let binding = bind.map(scram::tls_server_end_point).unwrap_or_default();
    Ok((
        auth_message::sasl_initial_response_frame(mechanism, first.as_bytes()),
        Exchange {
            channel_binding: scram::channel_binding_attribute(gs2, &binding),
            nonce,
            first_bare,
        },
    ))
}

/// Answers the repository's server-first message with a proof made from the client's ClientKey;
/// returns it and the signature the repository must answer with.
fn client_final(
    state: &Exchange,
    server_first: &[u8],
    proven: &Proven,
) -> Result<(Frame, [u8; 32]), RepositoryAuthError> {
    let server_first =
        std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let nonce = state.nonce.as_str();
    let combined = server_first
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|r| r.starts_with(nonce) && r.len() > nonce.len())
        .ok_or(ScramError::Nonce)?;
    let without_proof = format!("c={},r={combined}", state.channel_binding);
    let message = scram::auth_message(&state.first_bare, server_first, &without_proof);
    let proof = scram::proof(&proven.client_key, &message);
    let last = format!("{without_proof},p={}", scram::encode(&proof));
    Ok((
        auth_message::sasl_response_frame(last.as_bytes()),
        scram::server_signature(&proven.verifier.server_key, &message),
    ))
}

/// Reads the client's answer to a request: a `p` frame.
async fn read_answer<C: AsyncRead + Unpin + ?Sized>(
    client: &mut C,
) -> Result<Frame, ClientAuthError> {
    let frame = read_frame(client).await.map_err(|e| match e {
        FrameError::Malformed(f) => ClientAuthError::Frame(f),
        FrameError::Io(io) => ClientAuthError::Io(io),
    })?;
    if frame.kind != b'p' {
        return Err(ClientAuthError::Unexpected(frame.kind as char));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn proven() -> Proven {
        Proven {
            client_key: [7; 32],
            verifier: Verifier::mock("u", b"s"),
            client_final: auth_message::auth_request(AUTH_SASL_FINAL, b"v="),
            mechanism: SCRAM,
            can_login: true,
        }
    }

    /// On a TLS leg whose repository offers PLUS, pgssl binds to the repository's certificate; on a
    /// plaintext leg it uses SCRAM-SHA-256 with the `n` flag; with TLS but no PLUS offered, `y`.
    #[tokio::test]
    async fn the_repository_leg_binds_when_it_can() {
        for (cert, offer, mechanism, gs2) in [
            (
                Some(&b"repository certificate"[..]),
                &[SCRAM_PLUS, SCRAM][..],
                SCRAM_PLUS,
                "p=tls-server-end-point,,",
            ),
            (None, &[SCRAM_PLUS, SCRAM][..], SCRAM, "n,,"),
            (
                Some(&b"repository certificate"[..]),
                &[SCRAM][..],
                SCRAM,
                "y,,",
            ),
        ] {
            let (mut pgssl, mut repository) = duplex(4096);
            let proven = proven();
            let login =
                tokio::spawn(async move { log_in(&mut pgssl, &proven, cert).await.map(|_| ()) });
            write_frame(&mut repository, &auth_message::sasl_offer(offer))
                .await
                .unwrap();
            let initial = read_frame(&mut repository).await.unwrap();
            let (used, data) = auth_message::sasl_initial_response(&initial.body).unwrap();
            assert_eq!(used, mechanism);
            assert!(
                std::str::from_utf8(data).unwrap().starts_with(gs2),
                "{data:?}"
            );
            // A refusal ends the leg with the repository's own frame.
            let error = Frame {
                kind: b'E',
                body: bytes::Bytes::from_static(b"SFATAL\0C28P01\0Mno\0\0"),
            };
            write_frame(&mut repository, &error).await.unwrap();
            assert!(
                matches!(login.await.unwrap(), Err(RepositoryAuthError::Refused(f)) if f == error)
            );
        }
    }
}
