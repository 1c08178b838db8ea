//! The CA bundle, CRL and map checks, on certificates made with rcgen.

use super::*;

fn ca(cn: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = p.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(p, key))
}

fn crl(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, revoked: &[u8]) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(7),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(u64::from(*s)),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params.signed_by(issuer).unwrap().der().to_vec()
}

#[test]
fn a_bundle_a_crl_of_its_ca_and_a_map_are_accepted_and_survive_a_round_trip() {
    let (one, issuer) = ca("Client CA");
    let (two, _) = ca("Other CA");
    let bundle = format!("{}{}", one.pem(), two.pem());
    let crl_der = crl(&issuer, &[7, 9]);
    let map = b"# who is who\nCN=alice,O=Example alice\n\"CN=bob, O=Example\"   readonly\n";
    let now = OffsetDateTime::now_utc();
    let files = validate(
        Given {
            name: "ca.pem",
            bytes: bundle.as_bytes(),
        },
        Some(Given {
            name: "crl.der",
            bytes: &crl_der,
        }),
        Some(Given {
            name: "map",
            bytes: map,
        }),
        now,
    )
    .unwrap();
    assert_eq!(files.cas.len(), 2);
    let (_, info) = files.crl.as_ref().unwrap();
    assert_eq!(info.revoked, 2);
    assert!(info.next_update.unwrap() > now);
    assert_eq!(files.map[1], ("CN=bob,O=Example".into(), "readonly".into()));
    let dir = tempfile::tempdir().unwrap();
    files.store(dir.path()).unwrap();
    let back = MutualSslFiles::load(dir.path(), now).unwrap();
    assert_eq!(back.cas, files.cas);
    assert_eq!(back.crl.unwrap().0, files.crl.unwrap().0);
    assert_eq!(back.map, files.map);
}

#[test]
fn a_crl_of_another_ca_garbage_and_bad_map_lines_are_refused_with_their_file() {
    let (one, _) = ca("Client CA");
    let (_, other) = ca("Other CA");
    let now = OffsetDateTime::now_utc();
    let pem = one.pem();
    let bundle = Given {
        name: "ca.pem",
        bytes: pem.as_bytes(),
    };
    let foreign = crl(&other, &[]);
    let err = validate(
        bundle,
        Some(Given {
            name: "other.crl",
            bytes: &foreign,
        }),
        None,
        now,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("other.crl") && err.contains("Other CA"),
        "{err}"
    );
    let err = validate(
        Given {
            name: "junk.pem",
            bytes: b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        },
        None,
        None,
        now,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("junk.pem"), "{err}");
    let err = validate(
        bundle,
        Some(Given {
            name: "x.crl",
            bytes: b"garbage",
        }),
        None,
        now,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("x.crl") && err.contains("revocation list"),
        "{err}"
    );
    let err = validate(
        bundle,
        None,
        Some(Given {
            name: "map",
            bytes: b"CN=alice alice\njustoneword\n",
        }),
        now,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("map line 2"), "{err}");
}

#[test]
fn the_internal_ca_is_made_once_sealed_and_rotated_with_the_previous_kept() {
    let dir = tempfile::tempdir().unwrap();
    assert!(internal_ca(dir.path(), false).unwrap().is_none());
    assert!(
        rotate_internal_ca(&mut Keystore::open(dir.path()).unwrap())
            .unwrap()
            .is_none()
    );
    let made = internal_ca(dir.path(), true).unwrap().unwrap();
    let again = internal_ca(dir.path(), false).unwrap().unwrap();
    assert_eq!(
        made.current.certificate_pem(),
        again.current.certificate_pem()
    );
    assert!(again.previous.is_none());
    // Nothing of it is on disk outside the keystore.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| !f.to_string_lossy().contains("internal-ca")),
        "{files:?}"
    );

    rotate_internal_ca(&mut Keystore::open(dir.path()).unwrap())
        .unwrap()
        .unwrap();
    let rotated = internal_ca(dir.path(), false).unwrap().unwrap();
    assert_ne!(
        rotated.current.certificate_pem(),
        made.current.certificate_pem()
    );
    assert_eq!(
        rotated.previous.as_ref().unwrap().certificate_pem(),
        made.current.certificate_pem()
    );
    let bundle = rotated.bundle_pem();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(!bundle.contains("PRIVATE KEY"));
}

/// A `#` inside a DN is part of it (RFC 4514 values may hold one); only a line starting with `#` is
/// a comment. Cutting at the first `#` mapped `CN=Data` to the user `Team`.
#[test]
fn a_hash_inside_a_dn_is_part_of_it_and_comments_are_whole_lines() {
    let map = b"  # a comment\nCN=Data Team #1,O=Example tableau\nCN=\\#x readonly\n";
    let parsed = parse_map(Given {
        name: "map",
        bytes: map,
    })
    .unwrap();
    assert_eq!(
        parsed,
        vec![
            (
                "CN=Data Team \\231,O=Example".to_string(),
                "tableau".to_string()
            ),
            ("CN=\\23x".to_string(), "readonly".to_string()),
        ]
    );
}
