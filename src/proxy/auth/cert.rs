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
                let dn = normalise_dn(&subject_dn(&cert)).ok()?;
                self.map
                    .iter()
                    .find(|(d, _)| *d == dn)
                    .map(|(_, user)| user.clone())
            }
        }
    }
}

/// The subject DN in RFC 4514 order (most specific first), `TYPE=value` joined by commas, each
/// value escaped ([`escape_value`]) so that no value can pass for more attributes: a common name
/// `tableau,O=Example` prints as `CN=tableau\,O=Example`. A value that is no string prints as `#`
/// and its hex, as OpenSSL dumps one.
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
                    let mut out = format!("{name}=");
                    match attr.as_str() {
                        Ok(value) => escape_value(value, &mut out),
                        Err(_) => {
                            out.push('#');
                            for b in attr.attr_value().data.iter() {
                                out.push_str(&format!("{b:02x}"));
                            }
                        }
                    }
                    out
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// Appends `value` escaped as RFC 4514 asks (`,+"\<>;` and `=` behind a backslash, a space at
/// either end and control characters as `\XX`), and `#` as `\23` anywhere, so that a stored map
/// line never reads as a comment.
pub fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\20"),
            '#' => out.push_str("\\23"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// Why a DN could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    /// A `\` not followed by a special character or two hex digits.
    #[error("a backslash must escape a special character or two hex digits")]
    BadEscape,
    /// Escaped bytes that are not UTF-8.
    #[error("escaped bytes are not UTF-8")]
    NotUtf8,
    /// An attribute without `=`, or with an empty type.
    #[error("every attribute must be TYPE=value")]
    NoType,
    /// A `"` outside an escape.
    #[error("a quote must be escaped (\\\")")]
    Quote,
    /// A value written as `#` and the hex of its encoding holds something else than hex pairs.
    #[error("a value starting with # must be hex pairs (escape a leading # as \\#)")]
    BadHex,
}

/// A DN as it is compared: parsed as RFC 4514 (escapes undone, unescaped white space around `,`,
/// `+` and `=` dropped, attribute types upper case), then written again escaped. Two DNs are the
/// same name exactly when their normal forms are equal; a value's own spaces and commas, escaped,
/// stay part of it.
pub fn normalise_dn(dn: &str) -> Result<String, DnError> {
    let mut out = String::new();
    let mut rest = dn.as_bytes();
    loop {
        // The type, up to the first `=`.
        let eq = rest
            .iter()
            .position(|&b| b == b'=')
            .ok_or(DnError::NoType)?;
        let name = std::str::from_utf8(&rest[..eq])
            .map_err(|_| DnError::NotUtf8)?
            .trim();
        if name.is_empty() || name.contains([',', '+', '\\', '"']) {
            return Err(DnError::NoType);
        }
        out.push_str(&name.to_ascii_uppercase());
        out.push('=');
        rest = &rest[eq + 1..];
        // The value, up to an unescaped `,` or `+`: each byte with whether it was escaped.
        let mut value: Vec<(u8, bool)> = Vec::new();
        let mut end = None;
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\\' => {
                    let next = *rest.get(i + 1).ok_or(DnError::BadEscape)?;
                    let hex = |b: u8| (b as char).to_digit(16);
                    match (hex(next), rest.get(i + 2).and_then(|&b| hex(b))) {
                        (Some(hi), Some(lo)) => {
                            value.push(((hi * 16 + lo) as u8, true));
                            i += 3;
                        }
                        _ if b",+\"\\<>;=# ".contains(&next) => {
                            value.push((next, true));
                            i += 2;
                        }
                        _ => return Err(DnError::BadEscape),
                    }
                }
                b'"' => return Err(DnError::Quote),
                sep @ (b',' | b'+') => {
                    end = Some(sep);
                    i += 1;
                    break;
                }
                b => {
                    value.push((b, false));
                    i += 1;
                }
            }
        }
        rest = &rest[i..];
        let unescaped_space = |&(b, escaped): &(u8, bool)| !escaped && b.is_ascii_whitespace();
        let first = value.iter().position(|v| !unescaped_space(v));
        let last = value.iter().rposition(|v| !unescaped_space(v));
        let bytes: Vec<u8> = match (first, last) {
            (Some(a), Some(b)) => value[a..=b].iter().map(|(b, _)| *b).collect(),
            _ => Vec::new(),
        };
        let text = String::from_utf8(bytes).map_err(|_| DnError::NotUtf8)?;
        match text.strip_prefix('#') {
            // A value given as the hex of its encoding (RFC 4514 2.4) stays as written.
            Some(hex) if first.is_some_and(|a| !value[a].1) => {
                if hex.is_empty()
                    || hex.len() % 2 != 0
                    || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(DnError::BadHex);
                }
                out.push('#');
                out.push_str(&hex.to_ascii_lowercase());
            }
            _ => escape_value(&text, &mut out),
        }
        match end {
            Some(sep) => out.push(sep as char),
            None => return Ok(out),
        }
    }
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
                .map(|(d, u)| (normalise_dn(d).unwrap(), u.to_string()))
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

    fn subject(attrs: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in attrs {
            p.distinguished_name.push(kind.clone(), *value);
        }
        cert(p)
    }

    /// The outside probe's two certificates: a common name with a comma that spells another
    /// attribute, and one padded with spaces. Neither is `CN=tableau,O=Example`.
    #[test]
    fn commas_and_spaces_inside_a_value_do_not_make_another_name() {
        use rcgen::DnType::{CommonName, OrganizationName};
        let ldap = login(NameMapping::Ldap, &[("CN=tableau,O=Example", "tableau")]);
        assert_eq!(
            ldap.user_of(&subject(&[
                (OrganizationName, "Example"),
                (CommonName, "tableau")
            ])),
            Some("tableau".into())
        );
        let comma = subject(&[(CommonName, "tableau,O=Example")]);
        let (_, parsed) = X509Certificate::from_der(&comma).unwrap();
        assert_eq!(subject_dn(&parsed), r"CN=tableau\,O\=Example");
        assert_eq!(ldap.user_of(&comma), None);
        let padded = subject(&[(OrganizationName, "Example"), (CommonName, " tableau ")]);
        let (_, parsed) = X509Certificate::from_der(&padded).unwrap();
        assert_eq!(subject_dn(&parsed), r"CN=\20tableau\20,O=Example");
        assert_eq!(ldap.user_of(&padded), None);
        // The map can name those exactly, escaped.
        let exact = login(
            NameMapping::Ldap,
            &[(r"CN=\ tableau\ ,O=Example", "readonly")],
        );
        assert_eq!(exact.user_of(&padded), Some("readonly".into()));
        let exact = login(
            NameMapping::Ldap,
            &[(r"cn=tableau\2CO\3DExample", "readonly")],
        );
        assert_eq!(exact.user_of(&comma), Some("readonly".into()));
    }

    #[test]
    fn a_dn_is_normalised_once_and_bad_escapes_are_refused() {
        for (given, normal) in [
            (" cn = tableau , o=Example", "CN=tableau,O=Example"),
            (r"CN=a\,b+UID=x", r"CN=a\,b+UID=x"),
            (r"CN=\#hash", r"CN=\23hash"),
            ("CN=#0C0161", "CN=#0c0161"),
            (r"CN=caf\C3\A9", "CN=café"),
            (r"CN=\20x\20", r"CN=\20x\20"),
            ("CN=", "CN="),
        ] {
            let once = normalise_dn(given).unwrap();
            assert_eq!(once, normal, "{given}");
            assert_eq!(normalise_dn(&once).unwrap(), once, "{given}");
        }
        // The fuzzer's find: a '#' value that is no hex came out with unescaped text, so a second
        // pass read it differently.
        let found = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/cert_name/regression-hash-value-not-hex"
        ))
        .unwrap();
        let text = String::from_utf8_lossy(&found);
        if let Ok(once) = normalise_dn(&text) {
            assert_eq!(normalise_dn(&once), Ok(once));
        }
        for bad in [
            r"CN=a\", r"CN=a\q", "CN=\"q\"", "tableau", "=x", r"CN=\FF", "CN=#zz", "CN=#0",
        ] {
            assert!(normalise_dn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn der_lengths_are_checked() {
        assert_eq!(der_value(&[0x0c, 0x02, b'h', b'i'], 0x0c), Some(&b"hi"[..]));
        assert_eq!(der_value(&[0x0c, 0x05, b'h'], 0x0c), None);
        assert_eq!(der_value(&[0x0c, 0x85, 1, 1, 1, 1, 1], 0x0c), None);
        assert_eq!(der_value(&[], 0x0c), None);
    }
}
