//! A test PKI made with rcgen: a root CA, an intermediate CA and server certificates, written as PEM
//! files the way an administrator would receive them from their CA.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::{Duration, OffsetDateTime};

/// A root and an intermediate CA, with their files in `dir`.
pub struct TestPki {
    /// Where the files are written.
    pub dir: PathBuf,
    /// The root CA certificate (PEM file).
    pub root: PathBuf,
    /// The intermediate CA certificate (PEM file).
    pub intermediate: PathBuf,
    intermediate_issuer: Issuer<'static, KeyPair>,
    root_issuer: Issuer<'static, KeyPair>,
}

/// A server certificate and its key.
pub struct ServerCert {
    /// Leaf certificate (PEM file).
    pub cert: PathBuf,
    /// Private key (PEM file, PKCS#8, 0600).
    pub key: PathBuf,
    /// The leaf as PEM text.
    pub cert_pem: String,
    /// The key as PEM text.
    pub key_pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl TestPki {
    /// A new root ("`name` Root") and intermediate in `dir`, files prefixed with `name`.
    pub fn new(dir: &Path, name: &str) -> TestPki {
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params(&format!("{name} Root CA"));
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let inter_key = KeyPair::generate().unwrap();
        let inter_params = ca_params(&format!("{name} Intermediate CA"));
        let inter_cert = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
        let root = dir.join(format!("{name}-root.pem"));
        let intermediate = dir.join(format!("{name}-intermediate.pem"));
        std::fs::write(&root, root_cert.pem()).unwrap();
        std::fs::write(&intermediate, inter_cert.pem()).unwrap();
        TestPki {
            dir: dir.to_path_buf(),
            root,
            intermediate,
            intermediate_issuer: Issuer::new(inter_params, inter_key),
            root_issuer,
        }
    }

    /// A leaf for `names`, issued by the intermediate, valid for `days` from an hour ago.
    pub fn server(&self, file: &str, names: &[&str], days: i64) -> ServerCert {
        self.issue(file, names, days, &self.intermediate_issuer)
    }

    /// A leaf for `names` issued directly by the root.
    pub fn server_from_root(&self, file: &str, names: &[&str], days: i64) -> ServerCert {
        self.issue(file, names, days, &self.root_issuer)
    }

    fn issue(
        &self,
        file: &str,
        names: &[&str],
        days: i64,
        issuer: &Issuer<'static, KeyPair>,
    ) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(days);
        let cert = params.signed_by(&key, issuer).unwrap();
        let cert_path = self.dir.join(format!("{file}.crt"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        ServerCert {
            cert: cert_path,
            key: key_path,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Encrypts `key` as PKCS#8 (PBES2, AES-256-CBC) with `passphrase` using the openssl command, as an
/// administrator's CA tooling would; returns the new file.
pub fn encrypt_key(key: &Path, passphrase: &str) -> PathBuf {
    let out = key.with_extension("enc.key");
    let status = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in"])
        .arg(key)
        .arg("-out")
        .arg(&out)
        .arg("-passout")
        .arg(format!("pass:{passphrase}"))
        .status()
        .expect("the openssl command is needed (apt-get install openssl)");
    assert!(status.success());
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("BEGIN ENCRYPTED PRIVATE KEY")
    );
    out
}
