//! pgssl's internal CA: the issuer of the short-lived client certificates pgssl presents to an
//! external repository that authenticates by certificate (`hostssl … cert`), one per role, with
//! CN = the role. The repository trusts it through `ssl_ca_file` (`pgssl security internal-ca
//! get-certificate-file`). Its key is sealed in the keystore by the control plane; here it is only
//! held in memory.

use std::time::Duration as StdDuration;

use aws_lc_rs::rand::SecureRandom;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::certs::CertError;

/// How long the internal CA certificate is valid.
const CA_VALIDITY_DAYS: i64 = 3650;

/// The CA, able to mint client certificates.
pub struct InternalCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for InternalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalCa").finish_non_exhaustive()
    }
}

/// A minted client certificate: the chain (leaf, then the CA) and its key.
pub struct ClientIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// When the leaf stops being valid.
    pub not_after: OffsetDateTime,
}

fn serial() -> Result<SerialNumber, CertError> {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CertError::Random)?;
    serial[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&serial))
}

/// `now` as an internal CA's name dates it, `YYYY-MM-DDTHH:MM:SSZ`: to the second, so that names
/// written in the same second are equal and later ones sort after them.
pub fn dated_to_the_second(now: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

impl InternalCa {
    /// A new CA (ECDSA P-256); returns it with its key as PEM, for the keystore.
    pub fn generate() -> Result<(InternalCa, String), CertError> {
        InternalCa::generate_named("pgssl internal CA", "pgssl")
    }

    /// A new CA named `name` (and the date) of `organization`: the internal CA, or the repository
    /// CA that issues the served certificate.
    pub fn generate_named(
        name: &str,
        organization: &str,
    ) -> Result<(InternalCa, String), CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        let now = OffsetDateTime::now_utc();
        // Dated, so that the CAs before and after a rotation are told apart (pg_stat_ssl.issuer_dn).
        dn.push(
            DnType::CommonName,
            format!("{name} {}", dated_to_the_second(now)),
        );
        dn.push(DnType::OrganizationName, organization);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        params.serial_number = Some(serial()?);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let ca = InternalCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        };
        Ok((ca, key_pem))
    }

    /// The CA from its certificate and key (both PEM).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<InternalCa, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = super::certs::pem_certificate_blocks(cert_pem.as_bytes())
            .ok()
            .and_then(|mut blocks| (!blocks.is_empty()).then(|| blocks.remove(0)))
            .ok_or(CertError::NoCertificate {
                path: "internal-ca/ca.crt".into(),
            })?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(InternalCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    /// Its key (`key_pem`) and certificate as one PEM text, as the keystore keeps a CA: one atomic
    /// write replaces both, so a crash can never pair a new key with an old certificate.
    pub fn key_and_certificate(&self, key_pem: &str) -> String {
        format!("{key_pem}{}", self.cert_pem)
    }

    /// The CA from its [`InternalCa::key_and_certificate`] text; `name` names it in errors.
    pub fn from_key_and_certificate(text: &str, name: &str) -> Result<InternalCa, CertError> {
        let at = text
            .find("-----BEGIN CERTIFICATE-----")
            .ok_or(CertError::NoCertificate { path: name.into() })?;
        InternalCa::load(&text[at..], &text[..at])
    }

    /// The CA certificate (PEM), for the repository's `ssl_ca_file`.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER).
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues the served certificate for `sans`, valid for `validity_days`, and writes it with its
    /// key as the pair at `paths`: the leaf, then this CA, so that a client that trusts the CA
    /// verifies every leaf it issues.
    pub fn issue_served(
        &self,
        paths: &super::certs::CertPaths,
        sans: &[String],
        validity_days: u32,
    ) -> Result<super::certs::CertInfo, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert =
            super::certs::served_params(sans, validity_days)?.signed_by(&key, &self.issuer)?;
        let chain = format!("{}{}", cert.pem(), self.cert_pem);
        super::certs::write_served(paths, &key, chain.as_bytes())?;
        super::certs::describe(cert.der(), 2, &paths.cert)
    }

    /// Mints a client certificate for `role`, valid for `validity` (backdated a little for clocks
    /// that lag).
    pub fn mint(&self, role: &str, validity: StdDuration) -> Result<ClientIdentity, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, role);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        let not_after = now + Duration::try_from(validity).unwrap_or(Duration::hours(24));
        params.not_after = not_after;
        params.serial_number = Some(serial()?);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ClientIdentity {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn a_minted_certificate_names_the_role_and_chains_to_a_reloaded_ca() {
        let (ca, key_pem) = InternalCa::generate().unwrap();
        let again = InternalCa::load(ca.certificate_pem(), &key_pem).unwrap();
        let id = again.mint("tableau", StdDuration::from_secs(3600)).unwrap();
        let (_, leaf) = X509Certificate::from_der(&id.chain[0]).unwrap();
        let cn = leaf.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "tableau");
        let (_, root) = X509Certificate::from_der(ca.certificate_der()).unwrap();
        assert_eq!(leaf.issuer(), root.subject());
        leaf.verify_signature(Some(root.public_key())).unwrap();
        assert!(InternalCa::load(ca.certificate_pem(), "not a key").is_err());
    }
}
