//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as pgssl needs it on both legs of a session, over bytes only.
//!
//! - The client leg, where pgssl is the server: [`ClientFirst`] and [`ClientFinal`] parse what the
//!   client sends; [`Verifier::check`] proves the client knows the password (without learning it) and
//!   recovers its ClientKey.
//! - The repository leg, where pgssl is the client: [`proof`] signs the repository's exchange with that
//!   ClientKey, and [`server_signature`] checks the repository's answer with the ServerKey. So pgssl
//!   logs in as the client's role with no password anywhere, at rest or in memory.
//!
//! Channel binding is `tls-server-end-point` (RFC 5929): the hash of the certificate the TLS
//! connection presented, with the hash function of its signature (SHA-256 for MD5 and SHA-1).
//! Nothing here allocates more than its input's length; every length is bounded by the frame reader.

use aws_lc_rs::{digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;

/// The mechanism without channel binding.
pub const SCRAM: &str = "SCRAM-SHA-256";
/// The mechanism with channel binding.
pub const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The channel-binding type pgssl speaks.
pub const CHANNEL_BINDING_TYPE: &str = "tls-server-end-point";

/// Why a SCRAM message or verifier is unusable, or a proof wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The message does not follow RFC 5802's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A channel-binding request that does not fit what was offered (a downgrade, or binding
    /// without TLS).
    #[error("SCRAM channel binding negotiation error: {0}")]
    ChannelBinding(&'static str),
    /// The nonce of the final message is not the exchange's.
    #[error("SCRAM nonce mismatch")]
    Nonce,
    /// The proof (or the server's signature) is wrong.
    #[error("SCRAM proof is wrong")]
    Proof,
    /// A stored password is not a SCRAM-SHA-256 verifier.
    #[error("not a SCRAM-SHA-256 verifier")]
    NotScram,
}

/// The GS2 channel-binding flag of a client-first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `n`: the client does not support channel binding.
    None,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=tls-server-end-point`: the client binds.
    Bound,
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The channel-binding flag.
    pub binding: Binding,
    /// The GS2 header as sent (`n,,`, `y,,` or `p=tls-server-end-point,,`): part of `c=` later.
    pub gs2_header: String,
    /// The client's nonce.
    pub nonce: String,
    /// `client-first-message-bare`, part of the AuthMessage.
    pub bare: String,
}

fn text(bytes: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(bytes).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// An extension attribute: `x=value` with a letter for `x`.
fn is_extension(attribute: &str) -> bool {
    let b = attribute.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}

/// A nonce is printable ASCII except `,`.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ClientFirst {
    /// Parses `gs2-header client-first-message-bare`.
    pub fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        let message = text(message)?;
        let (flag, rest) = message
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let binding = match flag {
            "n" => Binding::None,
            "y" => Binding::ClientOnly,
            "p=tls-server-end-point" => Binding::Bound,
            f if f.starts_with("p=") => {
                return Err(ScramError::ChannelBinding(
                    "unsupported channel-binding type",
                ));
            }
            _ => return Err(ScramError::Malformed("bad GS2 channel-binding flag")),
        };
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 authorization identity field"))?;
        if !authzid.is_empty() {
            // PostgreSQL refuses an authorization identity too.
            return Err(ScramError::Malformed(
                "authorization identities are not supported",
            ));
        }
        let mut parts = bare.split(',');
        let user = parts.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        if !user.starts_with("n=") {
            return Err(ScramError::Malformed("no user name attribute"));
        }
        let nonce = parts
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .filter(|n| valid_nonce(n))
            .ok_or(ScramError::Malformed("no valid client nonce"))?;
        if !parts.all(is_extension) {
            return Err(ScramError::Malformed("bad extension attribute"));
        }
        Ok(ClientFirst {
            binding,
            gs2_header: format!("{flag},,"),
            nonce: nonce.to_string(),
            bare: bare.to_string(),
        })
    }
}

/// A parsed client-final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFinal {
    /// The decoded `c=`: the GS2 header followed by any channel-binding data.
    pub channel_binding: Vec<u8>,
    /// The combined nonce.
    pub nonce: String,
    /// The decoded proof.
    pub proof: [u8; 32],
    /// `client-final-message-without-proof`, part of the AuthMessage.
    pub without_proof: String,
}

impl ClientFinal {
    /// Parses `c=…,r=…[,extensions],p=…`.
    pub fn parse(message: &[u8]) -> Result<ClientFinal, ScramError> {
        let message = text(message)?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut parts = without_proof.split(',');
        let channel_binding = parts
            .next()
            .and_then(|c| c.strip_prefix("c="))
            .and_then(|c| B64.decode(c).ok())
            .ok_or(ScramError::Malformed("no valid channel-binding attribute"))?;
        let nonce = parts
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("the proof is not 32 bytes of base64"))?;
        Ok(ClientFinal {
            channel_binding,
            nonce: nonce.to_string(),
            proof,
            without_proof: without_proof.to_string(),
        })
    }
}

/// A role's SCRAM-SHA-256 verifier as PostgreSQL stores it:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier(iterations {}, ***)", self.iterations)
    }
}

fn key(b64: &str) -> Result<[u8; 32], ScramError> {
    B64.decode(b64)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(ScramError::NotScram)
}

impl Verifier {
    /// Parses `rolpassword`; an MD5 hash or anything else is [`ScramError::NotScram`].
    pub fn parse(stored: &str) -> Result<Verifier, ScramError> {
        let rest = stored
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::NotScram)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::NotScram)?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::NotScram)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(ScramError::NotScram)?;
        Ok(Verifier {
            iterations: iterations
                .parse()
                .ok()
                .filter(|i| *i > 0)
                .ok_or(ScramError::NotScram)?,
            salt: B64.decode(salt).map_err(|_| ScramError::NotScram)?,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }

    /// A verifier no proof matches, with a salt derived from the user name and `secret`, so that an
    /// unknown user's exchange looks like a known one's (as PostgreSQL's mock authentication does).
    pub fn mock(user: &str, secret: &[u8]) -> Verifier {
        let salt = hmac_sha256(secret, user.as_bytes());
        Verifier {
            iterations: 4096,
            salt: salt[..16].to_vec(),
            stored_key: hmac_sha256(secret, b"stored"),
            server_key: hmac_sha256(secret, b"server"),
        }
    }

    /// The server-first message for a client nonce and pgssl's own nonce.
    pub fn server_first(&self, client_nonce: &str, server_nonce: &str) -> String {
        format!(
            "r={client_nonce}{server_nonce},s={},i={}",
            B64.encode(&self.salt),
            self.iterations
        )
    }

    /// Checks the client's proof over `auth_message`; the client's ClientKey when it is right. The
    /// comparison takes the same time whatever the proof.
    pub fn check(&self, auth_message: &str, proof: &[u8; 32]) -> Result<[u8; 32], ScramError> {
        let signature = hmac_sha256(&self.stored_key, auth_message.as_bytes());
        let client_key = xor(proof, &signature);
        let stored = sha256(&client_key);
        if bool::from(stored.ct_eq(&self.stored_key)) {
            Ok(client_key)
        } else {
            Err(ScramError::Proof)
        }
    }
}

/// `AuthMessage = client-first-bare "," server-first "," client-final-without-proof`.
pub fn auth_message(
    client_first_bare: &str,
    server_first: &str,
    final_without_proof: &str,
) -> String {
    format!("{client_first_bare},{server_first},{final_without_proof}")
}

/// The client's proof for `auth_message`, made from its ClientKey (the repository leg).
pub fn proof(client_key: &[u8; 32], auth_message: &str) -> [u8; 32] {
    let stored = sha256(client_key);
    xor(client_key, &hmac_sha256(&stored, auth_message.as_bytes()))
}

/// `ServerSignature = HMAC(ServerKey, AuthMessage)`.
pub fn server_signature(server_key: &[u8; 32], auth_message: &str) -> [u8; 32] {
    hmac_sha256(server_key, auth_message.as_bytes())
}

/// Whether `v=` of a server-final message is the expected signature (constant time).
pub fn server_final_matches(message: &[u8], expected: &[u8; 32]) -> bool {
    let Some(v) = std::str::from_utf8(message)
        .ok()
        .and_then(|m| m.strip_prefix("v="))
        .and_then(|v| B64.decode(v.split(',').next().unwrap_or_default()).ok())
    else {
        return false;
    };
    bool::from(v.as_slice().ct_eq(expected.as_slice()))
}

/// `tls-server-end-point` data for a certificate (RFC 5929 §4.1): its hash, with the hash of its
/// signature algorithm, SHA-256 for MD5 and SHA-1 and anything unknown.
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    use x509_parser::oid_registry as oids;
    let algorithm = x509_parser::parse_x509_certificate(cert_der)
        .ok()
        .map(|(_, c)| c.signature_algorithm.algorithm.clone());
    let hash = match algorithm {
        Some(a) if a == oids::OID_PKCS1_SHA384WITHRSA || a == oids::OID_SIG_ECDSA_WITH_SHA384 => {
            &digest::SHA384
        }
        Some(a) if a == oids::OID_PKCS1_SHA512WITHRSA || a == oids::OID_SIG_ECDSA_WITH_SHA512 => {
            &digest::SHA512
        }
        _ => &digest::SHA256,
    };
    digest::digest(hash, cert_der).as_ref().to_vec()
}

/// `c=` of a client-final message: base64 of the GS2 header and any binding data.
pub fn channel_binding_attribute(gs2_header: &str, binding_data: &[u8]) -> String {
    let mut input = gs2_header.as_bytes().to_vec();
    input.extend_from_slice(binding_data);
    B64.encode(input)
}

/// A fresh nonce: 18 random bytes, base64 (24 printable characters), as PostgreSQL makes them.
pub fn nonce() -> Option<String> {
    let mut raw = [0u8; 18];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut raw).ok()?;
    Some(B64.encode(raw))
}

/// Base64, for proofs and signatures on the wire.
pub fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's example exchange (user "user", password "pencil").
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// The RFC's password as PostgreSQL would store it.
    fn pencil() -> Verifier {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut salted = [0u8; 32];
        aws_lc_rs::pbkdf2::derive(
            aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(4096).unwrap(),
            &salt,
            b"pencil",
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored = format!(
            "SCRAM-SHA-256$4096:{}${}:{}",
            B64.encode(&salt),
            B64.encode(sha256(&client_key)),
            B64.encode(hmac_sha256(&salted, b"Server Key"))
        );
        Verifier::parse(&stored).unwrap()
    }

    #[test]
    fn the_rfc_7677_exchange_verifies_on_the_server_and_replays_as_a_client() {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(
            (
                first.binding,
                first.gs2_header.as_str(),
                first.nonce.as_str()
            ),
            (Binding::None, "n,,", "rOprNGfwEbeRWgbNEkqO")
        );
        let verifier = pencil();
        assert_eq!(
            verifier.server_first(&first.nonce, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"),
            SERVER_FIRST
        );
        let last = ClientFinal::parse(CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(last.channel_binding, b"n,,");
        let message = auth_message(&first.bare, SERVER_FIRST, &last.without_proof);
        let client_key = verifier.check(&message, &last.proof).unwrap();
        // The server's answer is the RFC's.
        let signature = server_signature(&verifier.server_key, &message);
        assert_eq!(format!("v={}", encode(&signature)), SERVER_FINAL);
        assert!(server_final_matches(SERVER_FINAL.as_bytes(), &signature));
        assert!(!server_final_matches(b"v=AAAA", &signature));
        // The recovered ClientKey makes the same proof a client with the password makes.
        assert_eq!(proof(&client_key, &message), last.proof);
        // A wrong proof fails; so does any proof against a mock verifier.
        let mut wrong = last.proof;
        wrong[0] ^= 1;
        assert_eq!(verifier.check(&message, &wrong), Err(ScramError::Proof));
        let mock = Verifier::mock("user", b"secret");
        assert_eq!(mock.check(&message, &last.proof), Err(ScramError::Proof));
        assert_eq!(mock.salt, Verifier::mock("user", b"secret").salt);
        assert_ne!(mock.salt, Verifier::mock("other", b"secret").salt);
    }

    #[test]
    fn malformed_messages_and_verifiers_are_refused() {
        for bad in [
            &b""[..],
            b"n",
            b"x,,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=,r=",
            b"n,,n=,r=a,b",
            b"n,,n=,r=\x7f",
            b"\xff,,n=,r=abc",
        ] {
            assert!(ClientFirst::parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            ClientFirst::parse(b"p=tls-unique,,n=,r=abc"),
            Err(ScramError::ChannelBinding(_))
        ));
        let bound = ClientFirst::parse(b"p=tls-server-end-point,,n=,r=abc").unwrap();
        assert_eq!(bound.binding, Binding::Bound);
        assert_eq!(bound.gs2_header, "p=tls-server-end-point,,");
        assert_eq!(
            ClientFirst::parse(b"y,,n=,r=abc").unwrap().binding,
            Binding::ClientOnly
        );
        for bad in [
            &b"c=biws,r=x"[..],
            b"c=!!,r=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            b"c=biws,r=x,p=AAAA",
            b"r=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        ] {
            assert!(ClientFinal::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "md5abcdef",
            "SCRAM-SHA-256$0:AA==$AA==:AA==",
            "SCRAM-SHA-256$4096:AA==$AA==",
            "SCRAM-SHA-256$4096:!$AA==:AA==",
            "",
        ] {
            assert_eq!(Verifier::parse(bad), Err(ScramError::NotScram), "{bad}");
        }
        assert_eq!(
            channel_binding_attribute("p=tls-server-end-point,,", &[1, 2]),
            B64.encode(b"p=tls-server-end-point,,\x01\x02")
        );
    }
}
