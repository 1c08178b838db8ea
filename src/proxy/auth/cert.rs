//! Client certificates as credentials (`authentication mutual-ssl`): the TLS handshake has already
//! verified the chain against the configured CA, its dates and the CRL; here the certificate's name
//! is mapped to a user and compared with the start-up's.
//!
//! Mappings: `cn`, the subject's common name; `upn`, the local part of the UserPrincipalName
//! otherName SAN (or, failing that, of an e-mail SAN); `ldap`, the subject DN in RFC 4514 form (as
//! PostgreSQL's `clientname=DN` prints it, most specific first: `CN=alice,O=Example,C=US`) looked up
//! in a map of `DN user` lines.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// How a certificate names its user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameMapping {
    /// The subject's common name.
    #[default]
    Cn,
    /// The UserPrincipalName (or e-mail) SAN's local part.
    Upn,
    /// The subject DN, through the map file.
    Ldap,
}

impl std::str::FromStr for NameMapping {
    type Err = String;

    fn from_str(s: &str) -> Result<NameMapping, String> {
        match s {
            "cn" => Ok(NameMapping::Cn),
            "upn" => Ok(NameMapping::Upn),
            "ldap" => Ok(NameMapping::Ldap),
            other => Err(format!(
                "unknown user name mapping '{other}'; use cn, upn or ldap"
            )),
        }
    }
}

impl std::fmt::Display for NameMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameMapping::Cn => "cn",
            NameMapping::Upn => "upn",
            NameMapping::Ldap => "ldap",
        })
    }
}

/// The live mutual-SSL settings the login needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertLogin {
    /// How names are read.
    pub mapping: NameMapping,
    /// `ldap`: (normalised DN, user) pairs.
    pub map: Vec<(String, String)>,
    /// Whether a client without a certificate may log in otherwise (SCRAM or the repository).
    pub fallback: bool,
}

/// What a client's certificate says about its login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertCheck {
    /// No certificate was presented (or the connection is not TLS).
    NotPresented,
    /// The certificate names another user, or no user (`named` is what it maps to, for the log).
    Mismatch {
        /// The mapped name, if any.
        named: Option<String>,
    },
    /// The certificate names the start-up's user.
    Authenticated,
}

impl CertLogin {
    /// Checks `leaf` (DER, already verified by the handshake) against the start-up's `user`.
    pub fn check(&self, leaf: Option<&[u8]>, user: &str) -> CertCheck {
        let Some(leaf) = leaf else {
            return CertCheck::NotPresented;
        };
        let named = self.user_of(leaf);
        if named.as_deref() == Some(user) {
            CertCheck::Authenticated
        } else {
            CertCheck::Mismatch { named }
        }
    }

    /// The user a certificate names under this mapping.
    pub fn user_of(&self, leaf: &[u8]) -> Option<String> {
        let (_, cert) = X509Certificate::from_der(leaf).ok()?;
        match self.mapping {
            NameMapping::Cn => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string),
            NameMapping::Upn => upn_of(&cert),
            NameMapping::Ldap => {
                let dn = normalise_dn(&subject_dn(&cert));
                self.map
                    .iter()
                    .find(|(d, _)| *d == dn)
                    .map(|(_, user)| user.clone())
            }
        }
    }
}

/// The subject DN in RFC 4514 order (most specific first), `TYPE=value` joined by commas.
pub fn subject_dn(cert: &X509Certificate<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let name = x509_parser::objects::oid2abbrev(oid, registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| oid.to_id_string());
                    format!("{name}={}", attr.as_str().unwrap_or("?"))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// A DN as it is compared: whitespace around `,`, `+` and `=` dropped, attribute names upper case.
pub fn normalise_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            rdn.split('+')
                .map(|attr| match attr.split_once('=') {
                    Some((k, v)) => format!("{}={}", k.trim().to_ascii_uppercase(), v.trim()),
                    None => attr.trim().to_string(),
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The UserPrincipalName otherName's local part, else an e-mail SAN's.
fn upn_of(cert: &X509Certificate<'_>) -> Option<String> {
    const UPN: &str = "1.3.6.1.4.1.311.20.2.3";
    let san = cert.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    let upn = names.iter().find_map(|n| match n {
        GeneralName::OtherName(oid, value) if oid.to_id_string() == UPN => utf8_in_explicit(value),
        _ => None,
    });
    let email = || {
        names.iter().find_map(|n| match n {
            GeneralName::RFC822Name(mail) => Some(mail.to_string()),
            _ => None,
        })
    };
    let full = upn.or_else(email)?;
    let local = full.split('@').next().unwrap_or_default();
    (!local.is_empty()).then(|| local.to_string())
}

/// The string in `[0] EXPLICIT UTF8String` (an otherName's value).
fn utf8_in_explicit(der: &[u8]) -> Option<String> {
    let inner = der_value(der, 0xa0)?;
    let text = der_value(inner, 0x0c)?;
    std::str::from_utf8(text).ok().map(str::to_string)
}

/// The value of the DER element at the start of `der` with tag `tag`.
fn der_value(der: &[u8], tag: u8) -> Option<&[u8]> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    rest.get(..len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn named(cn: &str) -> rcgen::CertificateParams {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p
    }

    fn login(mapping: NameMapping, map: &[(&str, &str)]) -> CertLogin {
        CertLogin {
            mapping,
            map: map
                .iter()
                .map(|(d, u)| (normalise_dn(d), u.to_string()))
                .collect(),
            fallback: false,
        }
    }

    #[test]
    fn cn_names_the_user_and_another_user_is_a_mismatch() {
        let der = cert(named("tableau"));
        let cn = login(NameMapping::Cn, &[]);
        assert_eq!(cn.check(Some(&der), "tableau"), CertCheck::Authenticated);
        assert_eq!(
            cn.check(Some(&der), "readonly"),
            CertCheck::Mismatch {
                named: Some("tableau".into())
            }
        );
        assert_eq!(cn.check(None, "tableau"), CertCheck::NotPresented);
        assert_eq!(cn.user_of(b"not a certificate"), None);
    }

    #[test]
    fn upn_takes_the_principal_name_or_the_email_local_part() {
        let mut p = named("Alice Example");
        p.subject_alt_names = vec![rcgen::SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            rcgen::OtherNameValue::Utf8String("alice@corp.example".into()),
        ))];
        let upn = login(NameMapping::Upn, &[]);
        assert_eq!(upn.user_of(&cert(p)).as_deref(), Some("alice"));
        let mut p = named("Bob");
        p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(
            "bob@corp.example".try_into().unwrap(),
        )];
        assert_eq!(upn.user_of(&cert(p)).as_deref(), Some("bob"));
        assert_eq!(upn.user_of(&cert(named("nobody"))), None);
    }

    #[test]
    fn ldap_maps_the_subject_dn_through_the_map() {
        let ldap = login(
            NameMapping::Ldap,
            &[("cn = tableau , o=Example", "readonly")],
        );
        let der = cert(named("tableau"));
        let (_, parsed) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(subject_dn(&parsed), "CN=tableau,O=Example");
        assert_eq!(ldap.user_of(&der).as_deref(), Some("readonly"));
        assert_eq!(ldap.user_of(&cert(named("other"))), None);
    }

    #[test]
    fn der_lengths_are_checked() {
        assert_eq!(der_value(&[0x0c, 0x02, b'h', b'i'], 0x0c), Some(&b"hi"[..]));
        assert_eq!(der_value(&[0x0c, 0x05, b'h'], 0x0c), None);
        assert_eq!(der_value(&[0x0c, 0x85, 1, 1, 1, 1, 1], 0x0c), None);
        assert_eq!(der_value(&[], 0x0c), None);
    }
}
