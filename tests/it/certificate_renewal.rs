//! The served certificate is issued by the repository CA (issue #31): clients holding the file of
//! `get-certificate-file` keep verifying — libpq and pgjdbc with `verify-full` — when the
//! certificate is renewed by `regenerate-internal-tokens`, under a load of logins, with no file
//! copied; a CA rotation publishes the next CA in the file before it signs; the certificate renews
//! itself before it expires.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{CliEnv, ServeProcess, ok};
use crate::client::{connect_tls, connect_tls_unverified, peer_fingerprint};
use crate::harness::{PASSWORD, Postgres, psql, wait_for, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// A repository, pgssl in front of it with `tls` lines in `[tls]`, repository SSL required and
/// applied, and the file of `get-certificate-file` as a client would keep it.
struct Served {
    _pg: Postgres,
    env: CliEnv,
    serve: Option<ServeProcess>,
    upstream: String,
    file: PathBuf,
}

impl Served {
    async fn start(tls: &str) -> Served {
        let pg = Postgres::start_with_tcp();
        let upstream = format!("127.0.0.1:{}", pg.port());
        let env = CliEnv::new(&upstream);
        env.add_config("tls", tls);
        let serve = ServeProcess::start(&env, &["--repository", &upstream]).await;
        ok(&env.run(&["security", "repository-ssl", "enable"]));
        ok(&env.run(&["pending-changes", "apply"]));
        let file = env.dir.path().join("repository.pem");
        let served = Served {
            _pg: pg,
            env,
            serve: Some(serve),
            upstream,
            file,
        };
        served.fetch(&served.file);
        served
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.serve.as_ref().expect("serving").addr
    }

    /// `get-certificate-file -f path`.
    fn fetch(&self, path: &Path) {
        let path = path.to_str().unwrap();
        let args = [
            "security",
            "repository-ssl",
            "get-certificate-file",
            "-f",
            path,
        ];
        ok(&self.env.run(&args));
    }

    /// The fingerprint of the certificate served now.
    async fn served(&self) -> String {
        let s = connect_tls_unverified(self.addr(), "tableau", "postgres", PASSWORD)
            .await
            .expect("a TLS login");
        peer_fingerprint(&s)
    }

    /// psql with `verify-full` against `root`: whether it got in over TLS.
    async fn libpq_verifies(&self, root: &Path) -> Result<(), String> {
        let run = psql(&format!(
            "host=localhost hostaddr=127.0.0.1 port={} dbname=postgres user=tableau sslmode=verify-full sslrootcert={}",
            self.addr().port(),
            root.display()
        ))
        .await;
        if run.ok && run.stdout.contains("SSL connection") {
            Ok(())
        } else {
            Err(format!("{}{}", run.stdout, run.stderr))
        }
    }

    /// pgjdbc with `verify-full` against `root`: `SELECT 1`'s answer, or its error.
    async fn pgjdbc(&self, root: &Path) -> String {
        let url = format!(
            "jdbc:postgresql://localhost:{}/postgres?user=tableau&password={PASSWORD}&sslmode=verify-full&sslrootcert={}",
            self.addr().port(),
            root.display()
        );
        crate::mutual_ssl::jdbc(&url, "SELECT 1").await
    }
}

/// The subjects of the certificates in a PEM file.
fn subjects(path: &Path) -> Vec<String> {
    pgssl::tls::certs::read_chain(path)
        .unwrap()
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
            cert.subject().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_keeps_verify_full_clients_in_under_load_with_no_file_copied() {
    let s = Served::start("").await;
    // The file: the served certificate, then the repository CA that issued it.
    let held = subjects(&s.file);
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held[1].contains("pgssl repository CA"), "{held:?}");
    s.libpq_verifies(&s.file).await.unwrap();
    let before = s.served().await;
    let kept = std::fs::read(&s.file).unwrap();

    // Logins that verify the server against the file, all through the renewal.
    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (stop, logins, failures) = (stop.clone(), logins.clone(), failures.clone());
        let (addr, file) = (s.addr(), s.file.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match connect_tls(addr, "tableau", &file).await {
                    Ok(mut session) => match session.simple_query("SELECT 1").await {
                        Ok(_) => {
                            logins.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    },
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    let counted = &logins;
    wait_until("logins before the renewal", WAIT, || async move {
        counted.load(Ordering::Relaxed) >= 10
    })
    .await;
    let regenerated = s
        .env
        .run_with_stdin(&["security", "regenerate-internal-tokens"], "")
        .await;
    let said = ok(&regenerated);
    assert!(
        said.contains("issued") && said.contains("pgssl repository CA"),
        "{said}"
    );
    let at_renewal = logins.load(Ordering::Relaxed);
    let (sref, before_ref) = (&s, &before);
    wait_for("the renewed certificate served", WAIT, || async move {
        let now = sref.served().await;
        if now != *before_ref { Ok(()) } else { Err(now) }
    })
    .await;
    wait_until("logins after the renewal", WAIT, || async move {
        counted.load(Ordering::Relaxed) >= at_renewal + 10
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let failed = failures.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} logins failed: {failed:?}",
        failed.len()
    );

    // The same file, never re-fetched, still verifies the new certificate: libpq and pgjdbc.
    assert_eq!(std::fs::read(&s.file).unwrap(), kept);
    s.libpq_verifies(&s.file).await.unwrap();
    assert_eq!(s.pgjdbc(&s.file).await, "1");
    // A fresh copy holds the new certificate and the same CA.
    let fresh = s.env.dir.path().join("fresh.pem");
    s.fetch(&fresh);
    assert_eq!(subjects(&fresh)[1], held[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_publishes_the_next_ca_before_it_signs() {
    // No overlap: the rotation completes at the next regenerate (30 days by default).
    let s = Served::start("ca_overlap_days = 0").await;
    let first = subjects(&s.file);
    let rotate = ["security", "regenerate-internal-tokens", "--ca"];
    let said = ok(&s.env.run_with_stdin(&rotate, "").await);
    assert!(said.contains("published the next CA"), "{said}");
    // During the overlap: the file holds both CAs; the old file still verifies (the current CA
    // still signs).
    let during = s.env.dir.path().join("during.pem");
    s.fetch(&during);
    let both = subjects(&during);
    assert_eq!(both.len(), 3, "{both:?}");
    assert_eq!(both[1], first[1]);
    assert_ne!(both[2], first[1]);
    let listed = ok(&s.env.run(&["security", "repository-ssl", "list"]));
    assert!(listed.contains("next repository CA:"), "{listed}");
    s.libpq_verifies(&s.file).await.unwrap();
    s.libpq_verifies(&during).await.unwrap();

    // The next CA signs: the file fetched during the overlap verifies, libpq and pgjdbc; the one
    // fetched before it does not (its holder skipped the window).
    let said = ok(&s
        .env
        .run_with_stdin(&["security", "regenerate-internal-tokens"], "")
        .await);
    assert!(said.contains("the next CA now signs"), "{said}");
    let (sref, next_ca) = (&s, &both[2]);
    wait_for("the next CA's certificate served", WAIT, || async move {
        let fresh = sref.env.dir.path().join("after.pem");
        sref.fetch(&fresh);
        let now = subjects(&fresh);
        if now.get(1) == Some(next_ca) && now.len() == 2 {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    let (sref, during_ref) = (&s, &during);
    wait_until("the file of the overlap to verify", WAIT, || async move {
        sref.libpq_verifies(during_ref).await.is_ok()
    })
    .await;
    assert_eq!(s.pgjdbc(&during).await, "1");
    let stale = s.libpq_verifies(&s.file).await.unwrap_err();
    assert!(stale.contains("certificate verify failed"), "{stale}");
    let listed = ok(&s.env.run(&["security", "repository-ssl", "list"]));
    assert!(!listed.contains("next repository CA:"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_due_for_renewal_renews_itself_when_the_server_starts() {
    let mut s = Served::start("certificate_validity_days = 10\nrenew_before_days = 5").await;
    let before = s.served().await;
    // Ten days left is now within the renewal window: the restarted server renews at once.
    let config = std::fs::read_to_string(s.env.config()).unwrap();
    let longer = config.replace(
        "certificate_validity_days = 10\nrenew_before_days = 5",
        "certificate_validity_days = 60\nrenew_before_days = 30",
    );
    assert_ne!(config, longer);
    std::fs::write(s.env.config(), longer).unwrap();
    s.serve.take().unwrap().stop().await;
    s.serve = Some(ServeProcess::start(&s.env, &["--repository", &s.upstream]).await);
    let (sref, before_ref) = (&s, &before);
    wait_for("the renewed certificate served", WAIT, || async move {
        let now = sref.served().await;
        if now != *before_ref { Ok(()) } else { Err(now) }
    })
    .await;
    let log = s.serve.as_ref().unwrap().log_text();
    assert!(log.contains("renewed the served certificate"), "{log}");
    // The client's file is the one from before: it still verifies.
    s.libpq_verifies(&s.file).await.unwrap();
    let listed = ok(&s.env.run(&["security", "repository-ssl", "list"]));
    assert!(
        listed.contains("(in 59 days)") || listed.contains("(in 60 days)"),
        "{listed}"
    );
}
