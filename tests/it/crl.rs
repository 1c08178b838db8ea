//! A revocation list is checked, when it is staged, by the TLS stack that will use it: a CRL that
//! parses but that the stack refuses (one without the CRL number extension, as `openssl ca -gencrl`
//! makes without a `crlnumber` file) is refused by `mutual-ssl configure` with what it lacks,
//! instead of being staged and failing `pending-changes apply`. Real openssl CA tooling.

use std::path::Path;
use std::process::Command;

use crate::cli::{CliEnv, ServeProcess, failed, ok};

/// Runs openssl in `dir`, failing the test with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA made by openssl in `dir` (ca.pem, ca.key) and a CRL it issues, with a CRL number or
/// without, as `openssl ca -gencrl` makes it.
fn openssl_crl(dir: &Path, with_number: bool) -> std::path::PathBuf {
    if !dir.join("ca.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=CRL test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    std::fs::write(dir.join("index.txt"), "").unwrap();
    let mut config = String::from(
        "[ca]\ndefault_ca = CA_default\n[CA_default]\ndatabase = index.txt\ndefault_md = sha256\ndefault_crl_days = 30\n",
    );
    if with_number {
        std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
        config.push_str("crlnumber = crlnumber\n");
    }
    std::fs::write(dir.join("ca.cnf"), config).unwrap();
    let out = if with_number {
        "numbered.crl"
    } else {
        "plain.crl"
    };
    openssl(
        dir,
        &[
            "ca", "-gencrl", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem", "-out",
            out,
        ],
    );
    dir.join(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_the_tls_stack_cannot_use_is_refused_when_staged_and_one_it_can_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = openssl_crl(tmp.path(), false);
    let numbered = openssl_crl(tmp.path(), true);
    let ca = tmp.path().join("ca.pem");
    let env = CliEnv::managed();
    let serve = ServeProcess::start(&env, &[]).await;
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    let configure = |crl: &Path| {
        env.run(&[
            "authentication",
            "mutual-ssl",
            "configure",
            "--ca-cert",
            ca.to_str().unwrap(),
            "--revocation-file",
            crl.to_str().unwrap(),
        ])
    };
    let why = failed(&configure(&plain));
    assert!(
        why.contains("plain.crl") && why.contains("no CRL number extension"),
        "{why}"
    );
    let pending = ok(&env.run(&["pending-changes", "list"]));
    assert!(!pending.contains("mutual"), "nothing staged: {pending}");
    // With a CRL number the same CA's list is staged and applied.
    ok(&configure(&numbered));
    ok(&env.run(&["authentication", "mutual-ssl", "enable"]));
    let applied = ok(&env.run(&["pending-changes", "apply"]));
    assert!(!applied.contains("error"), "{applied}");
    let listed = ok(&env.run(&["authentication", "mutual-ssl", "list"]));
    assert!(
        listed.contains("CRL test CA") && listed.contains("revoked"),
        "{listed}"
    );
    serve.stop().await;
}
