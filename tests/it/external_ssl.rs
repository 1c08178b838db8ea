//! `security external-ssl` and `security custom-cert` as an administrator uses them: the real binary,
//! a CA chain made in the test, and real psql verifying the served chain with only the root.

use std::path::Path;

use crate::cli::{CliEnv, ServeProcess, failed, ok};
use crate::harness::{Postgres, psql};
use crate::pki::{ServerCert, TestPki, encrypt_key};

fn verify_full(addr: std::net::SocketAddr, root: &Path, extra: &str) -> String {
    format!(
        "host=localhost port={} user=tableau dbname=postgres sslmode=verify-full sslrootcert={} {extra}",
        addr.port(),
        root.display()
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Stages `external-ssl enable` with `leaf` and the test PKI's intermediate as its chain, plus
/// `extra` flags; the command's output.
fn enable_external(env: &CliEnv, leaf: &ServerCert, pki: &TestPki, extra: &[&str]) -> String {
    let mut args = vec![
        "security",
        "external-ssl",
        "enable",
        "--cert-file",
        path(&leaf.cert),
        "--key-file",
        path(&leaf.key),
        "--chain-file",
        path(&pki.intermediate),
    ];
    args.extend_from_slice(extra);
    ok(&env.run(&args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_issued_chain_is_served_verified_by_psql_with_only_the_root_and_protocols_enforced() {
    let pg = Postgres::start();
    let env = CliEnv::new(&pg.repository_text());
    let pki = TestPki::new(env.dir.path(), "Acme");
    let leaf = pki.server("db", &["localhost", "127.0.0.1"], 365);
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    let staged = enable_external(&env, &leaf, &pki, &[]);
    assert!(
        staged.contains("issuer:              CN=Acme Intermediate CA"),
        "{staged}"
    );
    assert!(staged.contains("chain length:        2"), "{staged}");
    assert!(
        staged.contains("protocols:           TLSv1.2, TLSv1.3"),
        "{staged}"
    );
    assert!(
        staged.contains("-SSLv2: pgssl never offers SSLv2"),
        "{staged}"
    );
    ok(&env.run(&["pending-changes", "apply"]));

    let list = ok(&env.run(&["security", "external-ssl", "list"]));
    for expected in [
        "certificate file:    db.crt",
        "key file:            db.key",
        "chain file:          Acme-intermediate.pem",
        "subject:             CN=localhost",
        "issuer:              CN=Acme Intermediate CA",
        "DNS:localhost, IP:127.0.0.1",
        "chain length:        2",
        "protocols:           all, -SSLv2, -SSLv3 (TLSv1.2, TLSv1.3)",
    ] {
        assert!(list.contains(expected), "missing '{expected}' in:\n{list}");
    }
    // Names, never locations.
    assert!(!list.contains(env.dir.path().to_str().unwrap()), "{list}");

    let server = ServeProcess::start(&env, &[]).await;
    let run = psql(&verify_full(server.addr, &pki.root, "")).await;
    assert!(run.ok, "verify-full with only the root: {}", run.stderr);
    // libpq offers AES-256 first; pgssl's order decides.
    assert!(
        run.stdout
            .contains("SSL connection (protocol: TLSv1.3, cipher: TLS_AES_128_GCM_SHA256"),
        "{}",
        run.stdout
    );
    let tls12 = psql(&verify_full(
        server.addr,
        &pki.root,
        "ssl_max_protocol_version=TLSv1.2",
    ))
    .await;
    assert!(tls12.ok, "TLS 1.2 is on by default: {}", tls12.stderr);
    assert!(
        tls12.stdout.contains("SSL connection (protocol: TLSv1.2"),
        "{}",
        tls12.stdout
    );

    // The generated certificate is no longer what clients see.
    let generated = env.dir.path().join("generated.crt");
    let cert = env.dir.path().join("exported.crt");
    std::fs::copy(
        env.data_dir().join("config/pgsql15/security/server.crt"),
        &generated,
    )
    .unwrap();
    let refused = psql(&verify_full(server.addr, &generated, "")).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("certificate verify failed"),
        "{}",
        refused.stderr
    );
    // get-certificate-file hands out the served chain and says which root clients need.
    let got = ok(&env.run(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        path(&cert),
    ]));
    assert!(got.contains("your CA's root certificate"), "{got}");
    assert_eq!(
        std::fs::read_to_string(&cert)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );

    // Re-enable without TLS 1.2, applied live: a TLS 1.2-only client is refused, TLS 1.3 still works.
    enable_external(&env, &leaf, &pki, &["--protocols", "all -TLSv1.2"]);
    let applied = ok(&env.run(&["pending-changes", "apply"]));
    assert!(
        applied.contains("The running pgssl server took the change"),
        "{applied}"
    );
    let tls12 = psql(&verify_full(
        server.addr,
        &pki.root,
        "ssl_max_protocol_version=TLSv1.2",
    ))
    .await;
    assert!(!tls12.ok, "a TLS 1.2-only client must be refused");
    assert!(
        tls12.stderr.contains("SSL error") || tls12.stderr.contains("protocol version"),
        "{}",
        tls12.stderr
    );
    let tls13 = psql(&verify_full(server.addr, &pki.root, "")).await;
    assert!(tls13.ok, "{}", tls13.stderr);

    // disable brings the generated certificate back, live.
    ok(&env.run(&["security", "external-ssl", "disable"]));
    // Until it is applied, get-certificate-file still hands out (and describes) what is served.
    let got = ok(&env.run(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        path(&cert),
    ]));
    assert!(got.contains("your CA's root certificate"), "{got}");
    assert_eq!(
        std::fs::read_to_string(&cert)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    ok(&env.run(&["pending-changes", "apply"]));
    let got = ok(&env.run(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        path(&cert),
    ]));
    assert!(!got.contains("your CA's root certificate"), "{got}");
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        std::fs::read(&generated).unwrap()
    );
    let back = psql(&verify_full(server.addr, &generated, "")).await;
    assert!(back.ok, "{}", back.stderr);
    let gone = psql(&verify_full(server.addr, &pki.root, "")).await;
    assert!(!gone.ok);
    // Copies of disabled certificates are removed.
    let left = std::fs::read_dir(env.data_dir().join("config/external-ssl"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_is_served_with_its_sealed_passphrase_and_bad_inputs_are_refused() {
    let pg = Postgres::start();
    let env = CliEnv::new(&pg.repository_text());
    let pki = TestPki::new(env.dir.path(), "Corp");
    let leaf = pki.server_from_root("db", &["localhost"], 365);
    let passphrase = "correct horse battery staple";
    let encrypted = encrypt_key(&leaf.key, passphrase);
    let enable = |key: &Path, extra: &[&str]| {
        let mut args = vec![
            "security".to_string(),
            "external-ssl".into(),
            "enable".into(),
            "--cert-file".into(),
            path(&leaf.cert).into(),
            "--key-file".into(),
            path(key).into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&refs)
    };

    // Refusals: one line that names the file and the fix.
    let err = failed(&run(enable(&encrypted, &[])));
    assert!(
        err.contains("db.enc.key is encrypted") && err.contains("--passphrase"),
        "{err}"
    );
    let err = failed(&run(enable(&encrypted, &["--passphrase", "wrong"])));
    assert!(
        err.contains("cannot be decrypted with the given passphrase"),
        "{err}"
    );
    let stranger = pki.server_from_root("other", &["localhost"], 365);
    let err = failed(&run(enable(&stranger.key, &[])));
    assert!(
        err.contains("other.key does not belong to the certificate in"),
        "{err}"
    );
    let expired = pki.server_from_root("old", &["localhost"], -1);
    let err = failed(&env.run(&[
        "security",
        "external-ssl",
        "enable",
        "--cert-file",
        path(&expired.cert),
        "--key-file",
        path(&expired.key),
    ]));
    assert!(err.contains("old.crt") && err.contains("expired"), "{err}");
    let soon = pki.server_from_root("soon", &["localhost"], 10);
    let out = env.run(&[
        "security",
        "external-ssl",
        "enable",
        "--cert-file",
        path(&soon.cert),
        "--key-file",
        path(&soon.key),
    ]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: the certificate in"));
    let wrong_chain = failed(&run(enable(
        &leaf.key,
        &["--chain-file", path(&pki.intermediate)],
    )));
    assert!(
        wrong_chain.contains("is not the issuer of"),
        "{wrong_chain}"
    );
    for (list, expected) in [
        ("all, +SSLv3", "SSLv3 cannot be enabled"),
        ("all -TLSv1.2 -TLSv1.3", "leaves no protocol enabled"),
        ("all -TLSv9", "unknown entry '-TLSv9'"),
    ] {
        let err = failed(&run(enable(&leaf.key, &["--protocols", list])));
        assert!(err.contains(expected), "{list}: {err}");
    }
    let not_pem = env.dir.path().join("junk.crt");
    std::fs::write(&not_pem, "hello").unwrap();
    let err = failed(&env.run(&[
        "security",
        "external-ssl",
        "enable",
        "--cert-file",
        path(&not_pem),
        "--key-file",
        path(&leaf.key),
    ]));
    assert!(
        err.contains("junk.crt is not a PEM X.509 certificate"),
        "{err}"
    );

    // The right passphrase, typed on standard input: staged, applied, served.
    let args = enable(&encrypted, &["--passphrase", "-"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&env.run_with_stdin(&refs, &format!("{passphrase}\n")).await);
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    let list = ok(&env.run(&["security", "external-ssl", "list"]));
    assert!(
        list.contains("(encrypted; passphrase in the keystore)"),
        "{list}"
    );
    // The key stays encrypted on disk and the passphrase is nowhere in plaintext.
    let config = env.data_dir().join("config");
    for entry in walk(&config) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(passphrase),
            "{} holds the passphrase",
            entry.display()
        );
        if entry.to_string_lossy().contains("external-ssl") && entry.ends_with("server.key") {
            assert!(
                text.contains("BEGIN ENCRYPTED PRIVATE KEY"),
                "{}",
                entry.display()
            );
        }
    }
    let server = ServeProcess::start(&env, &[]).await;
    let run = psql(&verify_full(server.addr, &pki.root, "")).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(!server.log_text().contains(passphrase));
    drop(server);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_cert_takes_pem_or_der_one_at_a_time() {
    let env = CliEnv::new("127.0.0.1:1");
    let pki = TestPki::new(env.dir.path(), "Trust");
    let der = env.dir.path().join("root.der");
    let pem_text = std::fs::read_to_string(&pki.root).unwrap();
    std::fs::write(&der, pem::parse(&pem_text).unwrap().contents()).unwrap();
    ok(&env.run(&["security", "repository-ssl", "disable"]));

    let list = ok(&env.run(&["security", "custom-cert", "list"]));
    assert!(list.contains("none"), "{list}");
    let err = failed(&env.run(&["security", "custom-cert", "delete"]));
    assert!(err.contains("no custom CA certificate to delete"), "{err}");

    let added = ok(&env.run(&[
        "security",
        "custom-cert",
        "add",
        "--cert-file",
        path(&pki.root),
    ]));
    assert!(
        added.contains("subject:             CN=Trust Root CA"),
        "{added}"
    );
    let err = failed(&env.run(&["security", "custom-cert", "add", "--cert-file", path(&der)]));
    assert!(
        err.contains("already added") && err.contains("custom-cert delete"),
        "{err}"
    );
    // Deleting one that is only staged drops it.
    let dropped = ok(&env.run(&["security", "custom-cert", "delete"]));
    assert!(dropped.contains("Dropped the staged"), "{dropped}");
    assert!(ok(&env.run(&["pending-changes", "list"])).contains("No pending changes"));

    ok(&env.run(&["security", "custom-cert", "add", "--cert-file", path(&der)]));
    let pending = ok(&env.run(&["pending-changes", "list"]));
    assert!(
        pending.contains("custom-cert: trust the CA certificate from root.der"),
        "{pending}"
    );
    ok(&env.run(&["pending-changes", "apply"]));
    let list = ok(&env.run(&["security", "custom-cert", "list"]));
    assert!(list.contains("file:                root.der"), "{list}");
    assert!(
        list.contains("subject:             CN=Trust Root CA"),
        "{list}"
    );
    let err = failed(&env.run(&[
        "security",
        "custom-cert",
        "add",
        "--cert-file",
        path(&pki.root),
    ]));
    assert!(err.contains("already added"), "{err}");

    let bundle = env.dir.path().join("bundle.pem");
    std::fs::write(&bundle, pem_text.repeat(2)).unwrap();
    ok(&env.run(&["security", "custom-cert", "delete"]));
    let err = failed(&env.run(&[
        "security",
        "custom-cert",
        "add",
        "--cert-file",
        path(&bundle),
    ]));
    assert!(err.contains("holds 2 certificates"), "{err}");
    ok(&env.run(&["pending-changes", "apply"]));
    assert!(ok(&env.run(&["security", "custom-cert", "list"])).contains("none"));
    let left = std::fs::read_dir(env.data_dir().join("config/custom-ca"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "the deleted CA's copy is removed");
}

/// Every certificate pgssl serves or trusts is in `pgssl_certificate_expiry_seconds` with its time
/// left, and one within 30 days of expiry is warned about when serve starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_near_expiry_are_warned_about_and_measured() {
    let pg = Postgres::start();
    let env = CliEnv::new(&pg.repository_text());
    let pki = TestPki::new(env.dir.path(), "Soon");
    let leaf = pki.server("db", &["localhost", "127.0.0.1"], 10);
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    enable_external(&env, &leaf, &pki, &[]);
    ok(&env.run(&[
        "security",
        "custom-cert",
        "add",
        "--cert-file",
        path(&pki.root),
    ]));
    ok(&env.run(&["pending-changes", "apply"]));
    let metrics = format!("127.0.0.1:{}", crate::harness::free_port());
    let server = ServeProcess::start(&env, &["--metrics", &metrics]).await;
    server.wait_for_log("expires soon", 1).await;
    let log = server.log_text();
    assert!(
        log.contains("certificate=\"served\"") || log.contains("certificate=served"),
        "{log}"
    );
    let text = crate::metrics::scrape(&metrics).await;
    let value = |kind: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("pgssl_certificate_expiry_seconds{")
                    && l.contains(&format!("certificate=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} gauge in:\n{text}"))
    };
    let served = value("served");
    assert!(
        served > 9.0 * 86_400.0 && served < 10.0 * 86_400.0,
        "{served}"
    );
    // The root is the test PKI's long-lived CA: more than a year left, not warned about.
    assert!(value("custom_ca") > 365.0 * 86_400.0);
    assert_eq!(log.matches("expires soon").count(), 1, "{log}");
    server.stop().await;
}

/// `tls.tls13_ciphersuites` and `tls.groups` decide what TLS 1.3 handshakes negotiate; an unknown name
/// stops serve with the key and the names it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_cipher_suite_and_group_are_negotiated_and_unknown_ones_refused() {
    let pg = Postgres::start();
    let env = CliEnv::new(&pg.repository_text());
    let mut config = std::fs::read_to_string(env.config()).unwrap();
    config.push_str(
        "[tls]\ntls13_ciphersuites = [\"TLS_CHACHA20_POLY1305_SHA256\"]\ngroups = [\"secp384r1\"]\n",
    );
    std::fs::write(env.config(), &config).unwrap();
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    let server = ServeProcess::start(&env, &[]).await;
    let session = crate::client::connect_tls_unverified(
        server.addr,
        "tableau",
        "postgres",
        crate::harness::PASSWORD,
    )
    .await
    .unwrap();
    let tls = session.tls.as_ref().unwrap();
    assert_eq!(
        tls.cipher_suite,
        Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
    assert_eq!(tls.kx_group, Some(rustls::NamedGroup::secp384r1));
    server.stop().await;

    std::fs::write(env.config(), config.replace("secp384r1", "ffdhe2048")).unwrap();
    let out = env.run(&["serve", "--listen", "127.0.0.1:0", "--no-admin"]);
    let why = failed(&out);
    assert!(
        why.contains("tls.groups") && why.contains("'ffdhe2048' is not one of X25519"),
        "{why}"
    );
}
