//! The served TLS stack's key exchange: hybrid post-quantum (X25519MLKEM768) preferred when the
//! client offers it, the classical groups kept for clients that do not (libpq on OpenSSL 3.0, say).

use rustls::NamedGroup;
use rustls::pki_types::ServerName;

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::client::{connector_for_groups, ssl_request};
use crate::harness::{Postgres, psql_commands};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_post_quantum_key_exchange_is_preferred_and_classical_clients_still_connect() {
    let pg = Postgres::start();
    let env = CliEnv::new(&pg.repository_text());
    ok(&env.run(&["security", "repository-ssl", "enable"]));
    ok(&env.run(&["pending-changes", "apply"]));
    let root = env.dir.path().join("root.crt");
    ok(&env.run(&[
        "security",
        "repository-ssl",
        "get-certificate-file",
        "-f",
        root.to_str().unwrap(),
    ]));
    let server = ServeProcess::start(&env, &[]).await;
    // A client that offers the hybrid as current OpenSSL and rustls do (first, with its key share,
    // X25519 after it) gets the hybrid; classical-only clients get what they offer, with no retry.
    for (offered, expected) in [
        (
            vec![NamedGroup::X25519MLKEM768, NamedGroup::X25519],
            NamedGroup::X25519MLKEM768,
        ),
        (vec![NamedGroup::X25519], NamedGroup::X25519),
        (vec![NamedGroup::secp256r1], NamedGroup::secp256r1),
    ] {
        let (answer, tcp) = ssl_request(server.addr).await;
        assert_eq!(answer, b'S');
        let tls = connector_for_groups(&root, &offered)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let group = tls
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| g.name());
        assert_eq!(group, Some(expected), "offered {offered:?}");
    }
    // libpq with the system's OpenSSL (no ML-KEM in OpenSSL 3.0) still verifies and logs in.
    let dsn = format!(
        "host=localhost port={} user=tableau dbname=postgres sslmode=verify-full sslrootcert={}",
        server.addr.port(),
        root.display()
    );
    let out = psql_commands(&dsn, &["SELECT current_user"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "tableau");
    server.stop().await;
}
