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

/// A key file encrypted under `kdf` (PBES2, AES-256-CBC).
fn encrypted_key(kdf: pkcs8::pkcs5::pbes2::Kdf) -> String {
    encrypted_key_then(kdf, |_| {})
}

/// A key file encrypted under `kdf`, whose parameters `patch` then changes as a crafted file could
/// (some of them could not be used to encrypt at all).
fn encrypted_key_then(
    kdf: pkcs8::pkcs5::pbes2::Kdf,
    patch: impl FnOnce(&mut pkcs8::pkcs5::pbes2::Kdf),
) -> String {
    use pkcs8::der::{Decode, Encode};
    use pkcs8::pkcs5::pbes2;
    let key = KeyPair::generate().unwrap();
    let plain = key.serialize_der();
    let params = pbes2::Parameters {
        kdf,
        encryption: pbes2::EncryptionScheme::Aes256Cbc { iv: [9; 16] },
    };
    let doc = pkcs8::PrivateKeyInfoRef::try_from(plain.as_slice())
        .unwrap()
        .encrypt_with_params(params, "pw")
        .unwrap();
    let mut info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(doc.as_bytes()).unwrap();
    let pkcs8::pkcs5::EncryptionScheme::Pbes2(ref mut scheme) = info.encryption_algorithm else {
        unreachable!("encrypted with PBES2 above")
    };
    patch(&mut scheme.kdf);
    crate::tls::certs::pem_block("ENCRYPTED PRIVATE KEY", &info.to_der().unwrap())
}

#[test]
fn an_encrypted_key_that_asks_for_too_much_work_is_refused_before_any() {
    use pkcs8::pkcs5::pbes2::{Kdf, Pbkdf2Params, ScryptParams};
    let pass = Secret::new("pw".into());
    let path = Path::new("key.pem");
    let pbkdf2 = |iterations| {
        let mut p = Pbkdf2Params::hmac_sha256(1, &[7; 16]).unwrap();
        p.iteration_count = iterations;
        Kdf::Pbkdf2(p)
    };
    let scrypt = |n, r, p| {
        Kdf::Scrypt(ScryptParams {
            salt: pkcs8::pkcs5::pbes2::Salt::new([7; 16]).unwrap(),
            cost_parameter: n,
            block_size: r,
            parallelization: p,
            key_length: None,
        })
    };
    // Hours of PBKDF2, a panic in the scrypt parameters' conversion (N = 0), N not a power of
    // two, gigabytes of scrypt memory: each is named, with the file.
    // Each crafted file starts as a cheap PBKDF2 one (1 round) and is then given its parameters.
    for bad in [
        pbkdf2(u32::MAX),
        pbkdf2(0),
        scrypt(0, 8, 1),
        scrypt(3, 8, 1),
        scrypt(1 << 40, 8, 1),
        scrypt(1 << 14, 65_535, 1),
        scrypt(1 << 14, 8, 65_535),
    ] {
        let pem = encrypted_key_then(pbkdf2(1), |kdf| *kdf = bad.clone());
        let err = decode_key(pem.as_bytes(), Some(&pass), path).unwrap_err();
        assert!(
            matches!(err, ExternalCertError::KeyTooCostly { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("key.pem"), "{err}");
    }
    // What OpenSSL 3 writes still decrypts: PBKDF2 with 2,048 rounds (`openssl pkcs8 -topk8`) and
    // scrypt at N = 2^14, r = 8, p = 1 (`-scrypt`).
    for good in [pbkdf2(2048), scrypt(1 << 14, 8, 1)] {
        let pem = encrypted_key(good.clone());
        let (_, encrypted) = decode_key(pem.as_bytes(), Some(&pass), path)
            .unwrap_or_else(|e| panic!("{good:?}: {e}"));
        assert!(encrypted);
    }
}
