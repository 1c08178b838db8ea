//! Validation of brought certificates against generated PKI fixtures.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair, CertificateParams) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.clone().self_signed(&key).unwrap();
    (cert, key, params)
}

#[test]
fn a_root_intermediate_leaf_chain_validates_and_a_shuffled_one_does_not() {
    let pki = Pki::new();
    let (root, root_key, root_params) = ca("Test Root");
    let root_issuer = Issuer::new(root_params, &root_key);
    let inter_key = KeyPair::generate().unwrap();
    let mut inter_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    inter_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test Intermediate");
    inter_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let inter = inter_params
        .clone()
        .signed_by(&inter_key, &root_issuer)
        .unwrap();
    let inter_issuer = Issuer::new(inter_params, &inter_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &inter_issuer)
        .unwrap();

    let cert = pki.write("leaf.crt", &leaf.pem());
    let key = pki.write("leaf.key", &leaf_key.serialize_pem());
    let good_chain = pki.write("chain.crt", &(inter.pem() + &root.pem()));
    let bytes = |p: &std::path::Path| std::fs::read(p).unwrap();
    let (cert_bytes, key_bytes, chain_bytes) = (bytes(&cert), bytes(&key), bytes(&good_chain));
    let supplied = |path, bytes| Supplied { path, bytes };
    let files = SuppliedFiles {
        cert: supplied(&cert, &cert_bytes),
        key: supplied(&key, &key_bytes),
        chain: Some(supplied(&good_chain, &chain_bytes)),
    };
    let ok = validate(files, None, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(ok.chain.len(), 3);
    assert!(!ok.encrypted);

    let shuffled = pki.write("bad-chain.crt", &(root.pem() + &inter.pem()));
    let shuffled_bytes = bytes(&shuffled);
    let err = validate(
        SuppliedFiles {
            chain: Some(supplied(&shuffled, &shuffled_bytes)),
            ..files
        },
        None,
        OffsetDateTime::now_utc(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ExternalCertError::BrokenChain { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("bad-chain.crt"), "{err}");

    let other_key = pki.write("other.key", &KeyPair::generate().unwrap().serialize_pem());
    let other_key_bytes = bytes(&other_key);
    let err = validate(
        SuppliedFiles {
            key: supplied(&other_key, &other_key_bytes),
            ..files
        },
        None,
        OffsetDateTime::now_utc(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ExternalCertError::KeyMismatch { .. }),
        "{err}"
    );

    // Expired by the time "now" is far in the future; a warning within 30 days of expiry.
    let late = ok.info.not_after + time::Duration::days(1);
    assert!(matches!(
        validate(files, None, late),
        Err(ExternalCertError::NotValidNow { .. })
    ));
    let soon = ok.info.not_after - time::Duration::days(10);
    assert_eq!(validate(files, None, soon).unwrap().warnings.len(), 1);
}

#[test]
fn key_file_forms_and_refusals() {
    let pki = Pki::new();
    let key = KeyPair::generate().unwrap();
    let der = key.serialize_der();
    let path = pki.path("k");
    let (decoded, encrypted) = decode_key(key.serialize_pem().as_bytes(), None, &path).unwrap();
    assert!(!encrypted);
    assert_eq!(decoded.secret_der(), der.as_slice());
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    assert!(matches!(
        decode_key(legacy.as_bytes(), None, &path),
        Err(ExternalCertError::LegacyEncryptedKey { .. })
    ));
    assert!(matches!(
        decode_key(b"not pem", None, &path),
        Err(ExternalCertError::NoKey { .. })
    ));
    let cert_only = CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    assert!(matches!(
        decode_key(cert_only.as_bytes(), None, &path),
        Err(ExternalCertError::NoKey { .. })
    ));
}
