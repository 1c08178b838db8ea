//! `security vizql-extsvc-ssl` against a local TLS listener started by the test: a trusted
//! certificate, an untrusted one, and nothing listening.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::cli::{CliEnv, failed, ok};
use crate::harness::free_port;
use crate::pki::{ServerCert, TestPki};

/// A TLS listener on 127.0.0.1 that completes handshakes with `cert` and then closes.
async fn tls_listener(cert: &ServerCert) -> (u16, tokio::task::JoinHandle<()>) {
    let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    (port, task)
}

fn enable_args<'a>(kind: &'a str, port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "security",
        "vizql-extsvc-ssl",
        "enable",
        "--connection-type",
        kind,
        "--extsvc-host",
        "localhost",
        "--extsvc-port",
        port,
    ];
    args.extend_from_slice(extra);
    args
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_types_are_checked_with_a_live_handshake_before_staging() {
    let env = CliEnv::new("127.0.0.1:1");
    let pki = TestPki::new(env.dir.path(), "Svc");
    let service = pki.server_from_root("tabpy", &["localhost"], 30);
    let (port, _listener) = tls_listener(&service).await;
    let port = port.to_string();
    let stranger = TestPki::new(env.dir.path(), "Stranger");

    // A certificate that does not vouch for the service: refused, nothing staged.
    let out = env
        .run_with_stdin(
            &enable_args(
                "tabpy-secure",
                &port,
                &["--cert-file", path(&stranger.root)],
            ),
            "",
        )
        .await;
    let err = failed(&out);
    assert!(
        err.contains("TLS handshake with localhost:") && err.contains("nothing was staged"),
        "{err}"
    );
    assert!(
        err.contains("UnknownIssuer") || err.contains("unknown issuer"),
        "{err}"
    );
    assert!(ok(&env.run(&["pending-changes", "list"])).contains("No pending changes"));

    // Nothing listening: refused, with the way out.
    let closed = free_port().to_string();
    let err = failed(&env.run(&enable_args(
        "rserve-secure",
        &closed,
        &["--cert-file", path(&pki.root)],
    )));
    assert!(
        err.contains("cannot connect to localhost:") && err.contains("--skip-check"),
        "{err}"
    );

    // The right CA: checked, staged with the password sealed, listed without it.
    let password = "tabpy-pass-1234";
    let out = env
        .run_with_stdin(
            &enable_args(
                "tabpy-secure",
                &port,
                &[
                    "--cert-file",
                    path(&pki.root),
                    "--extsvc-username",
                    "analyst",
                    "--extsvc-password",
                    "-",
                    "--connect-timeout-ms",
                    "2500",
                ],
            ),
            &format!("{password}\n"),
        )
        .await;
    let staged = ok(&out);
    assert!(
        staged.contains(&format!(
            "Checked: localhost:{port} completed a TLSv1_3 handshake"
        )),
        "{staged}"
    );
    ok(&env.run(&["pending-changes", "apply"]));
    let list = ok(&env.run(&["security", "vizql-extsvc-ssl", "list"]));
    for expected in [
        "connection type:     tabpy-secure",
        "host:                localhost",
        &format!("port:                {port}"),
        "certificate file:    Svc-root.pem",
        "username:            analyst",
        "password:            set (encrypted at rest)",
        "connect timeout:     2500 ms",
        "scripts disabled:    true",
    ] {
        assert!(list.contains(expected), "missing '{expected}' in:\n{list}");
    }
    assert!(!list.contains(password));
    let keystore = std::fs::read_to_string(env.data_dir().join("config/keystore")).unwrap();
    assert!(!keystore.contains(password));
    assert!(
        keystore.contains("extsvc/"),
        "the password is sealed in the keystore"
    );

    // As in the model: enable on an existing configuration says to disable first.
    let err = failed(&env.run(&enable_args("tabpy", "9004", &[])));
    assert!(
        err.contains("already configured") && err.contains("disable"),
        "{err}"
    );

    // The custom CA is the trust anchor when no --cert-file is given.
    ok(&env.run(&["security", "vizql-extsvc-ssl", "disable"]));
    ok(&env.run(&[
        "security",
        "custom-cert",
        "add",
        "--cert-file",
        path(&pki.root),
    ]));
    ok(&env.run(&["pending-changes", "apply"]));
    let staged = ok(&env.run(&enable_args("rserve-secure", &port, &[])));
    assert!(staged.contains("completed a TLSv1_3 handshake"), "{staged}");
    ok(&env.run(&["security", "vizql-extsvc-ssl", "disable"]));
    assert!(ok(&env.run(&["pending-changes", "list"])).contains("No pending changes"));

    // --skip-check stages a secure configuration without the handshake.
    let out = env.run(&enable_args("rserve-secure", &closed, &["--skip-check"]));
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--skip-check"));
    let pending = ok(&env.run(&["pending-changes", "list"]));
    assert!(
        pending.contains(&format!(
            "vizql-extsvc-ssl: enable rserve-secure at localhost:{closed}"
        )),
        "{pending}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_types_take_the_models_defaults_and_refuse_what_does_not_apply() {
    let env = CliEnv::new("127.0.0.1:1");
    let pki = TestPki::new(env.dir.path(), "Plain");
    let err = failed(&env.run(&[
        "security",
        "vizql-extsvc-ssl",
        "enable",
        "--connection-type",
        "rserve",
        "--extsvc-host",
        "r.example",
        "--cert-file",
        path(&pki.root),
    ]));
    assert!(
        err.contains("--cert-file applies only to rserve-secure and tabpy-secure"),
        "{err}"
    );
    let err = failed(&env.run(&[
        "security",
        "vizql-extsvc-ssl",
        "enable",
        "--connection-type",
        "rserve",
        "--extsvc-host",
        "r.example",
        "--extsvc-password",
        "x",
    ]));
    assert!(err.contains("needs --extsvc-username"), "{err}");
    let bad = env.run(&[
        "security",
        "vizql-extsvc-ssl",
        "enable",
        "--connection-type",
        "spark",
        "--extsvc-host",
        "x",
    ]);
    assert_eq!(bad.status.code(), Some(2), "a bad flag is a usage error");

    for (kind, port) in [("rserve", "6311"), ("tabpy", "9004")] {
        ok(&env.run(&[
            "security",
            "vizql-extsvc-ssl",
            "enable",
            "--connection-type",
            kind,
            "--extsvc-host",
            "svc.example",
        ]));
        let list = ok(&env.run(&["security", "vizql-extsvc-ssl", "list"]));
        assert!(
            list.contains(&format!("port:                {port}")),
            "{list}"
        );
        assert!(list.contains("connect timeout:     1000 ms"), "{list}");
        assert!(list.contains("scripts disabled:    true"), "{list}");
        assert!(list.contains("password:            not set"), "{list}");
        let dropped = ok(&env.run(&["security", "vizql-extsvc-ssl", "disable"]));
        assert!(dropped.contains("Dropped the staged"), "{dropped}");
    }
    ok(&env.run(&[
        "security",
        "vizql-extsvc-ssl",
        "enable",
        "--connection-type",
        "tabpy",
        "--extsvc-host",
        "svc.example",
        "--script-disabled",
        "false",
    ]));
    ok(&env.run(&["pending-changes", "apply"]));
    let list = ok(&env.run(&["security", "vizql-extsvc-ssl", "list"]));
    assert!(list.contains("scripts disabled:    false"), "{list}");
    ok(&env.run(&["security", "vizql-extsvc-ssl", "disable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    assert!(
        ok(&env.run(&["security", "vizql-extsvc-ssl", "list"])).contains("enabled:             no")
    );
}
