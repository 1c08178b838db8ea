//! The full matrix through real psql/libpq: mode × user × sslmode.

use pgssl::proxy::policy::Mode;

use crate::harness::{INTERNAL_USER, Postgres, Proxy, psql};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Connected without TLS.
    Plain,
    /// Connected over TLS (1.3 with libpq 15 and OpenSSL 3).
    Tls,
    /// Refused by pgssl's policy (FATAL 28000 "SSL required").
    PolicyRefused,
    /// libpq gave up because the proxy answered `N` to SSLRequest.
    ClientNeedsSsl,
}

const SSLMODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

fn expected(mode: Mode, client_user: bool, sslmode: &str) -> Expect {
    let wants_tls = matches!(sslmode, "require" | "verify-ca" | "verify-full");
    match mode {
        Mode::Off if wants_tls => Expect::ClientNeedsSsl,
        Mode::Off => Expect::Plain,
        // libpq's allow tries plaintext first and falls back to TLS only when refused.
        _ if sslmode == "allow" && mode == Mode::Optional && client_user => Expect::Plain,
        _ if sslmode == "disable" && (mode == Mode::Required || !client_user) => {
            Expect::PolicyRefused
        }
        _ if sslmode == "disable" => Expect::Plain,
        _ => Expect::Tls,
    }
}

async fn run_matrix(mode: Mode) {
    let pg = Postgres::start();
    let proxy = Proxy::start(&pg, mode).await;
    let cert = proxy.cert_path();
    let mut failures = Vec::new();
    for user in ["tableau", INTERNAL_USER] {
        for sslmode in SSLMODES {
            let expect = expected(mode, user == "tableau", sslmode);
            // hostaddr pins IPv4 while host names the certificate identity for verify-full.
            let conninfo = format!(
                "host=localhost hostaddr=127.0.0.1 port={} dbname=postgres user={user} sslmode={sslmode} sslrootcert={} gssencmode=disable",
                proxy.addr.port(),
                cert.display()
            );
            let run = psql(&conninfo).await;
            let got_ok = match expect {
                Expect::Plain => {
                    run.ok
                        && run.stdout.contains(&format!("as user \"{user}\""))
                        && !run.stdout.contains("SSL connection")
                        && run.stdout.trim_end().ends_with(user)
                }
                Expect::Tls => {
                    run.ok
                        && run.stdout.contains("SSL connection (protocol: TLSv1.3")
                        && run.stdout.trim_end().ends_with(user)
                }
                Expect::PolicyRefused => {
                    !run.ok
                        && run
                            .stderr
                            .contains(&format!("FATAL:  SSL required for user \"{user}\""))
                }
                Expect::ClientNeedsSsl => {
                    !run.ok
                        && run
                            .stderr
                            .contains("server does not support SSL, but SSL was required")
                }
            };
            if !got_ok {
                failures.push(format!(
                    "{mode} {user} sslmode={sslmode}: expected {expect:?}, got ok={} stdout={:?} stderr={:?}",
                    run.ok, run.stdout, run.stderr
                ));
            }
        }
    }
    proxy.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_answers_n_and_libpq_sslmodes_behave_accordingly() {
    run_matrix(Mode::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_requires_tls_of_internal_users_only() {
    run_matrix(Mode::Optional).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_requires_tls_of_every_user() {
    run_matrix(Mode::Required).await;
}

#[test]
fn the_expectation_table_is_what_the_issue_specifies() {
    // A guard on the test's own oracle, spot-checking the policy cells.
    assert_eq!(
        expected(Mode::Required, true, "disable"),
        Expect::PolicyRefused
    );
    assert_eq!(expected(Mode::Optional, true, "disable"), Expect::Plain);
    assert_eq!(
        expected(Mode::Optional, false, "disable"),
        Expect::PolicyRefused
    );
    assert_eq!(expected(Mode::Optional, false, "allow"), Expect::Tls);
    assert_eq!(
        expected(Mode::Off, false, "verify-full"),
        Expect::ClientNeedsSsl
    );
}
