//! The downgrade proof (SECURITY.md, promise 1): for every mode × user class × way in, a capturing
//! relay between pgssl and PostgreSQL shows that no start-up of a user who must use TLS reaches the
//! repository over a plaintext client connection, and that what does reach it is byte for byte the
//! start-up the client sent, with only pgssl's `pgssl.*` values added. With mutual SSL on, the same holds for every login without the user's
//! own valid client certificate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgssl::proxy::policy::Mode;
use pgssl::proxy::repository::RepositoryAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{raw_packet, startup_packet};
use crate::harness::{INTERNAL_USER, Postgres, Proxy};

/// What pgssl sent the repository, one entry per connection it opened.
type Captured = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A TCP relay to `target` recording the bytes pgssl sends on each connection.
async fn capturing_relay(target: std::net::SocketAddr) -> (std::net::SocketAddr, Captured) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let captured: Captured = Arc::default();
    let all = captured.clone();
    tokio::spawn(async move {
        while let Ok((mut from_pgssl, _)) = listener.accept().await {
            let record = Arc::new(Mutex::new(Vec::new()));
            all.lock().unwrap().push(record.clone());
            tokio::spawn(async move {
                let Ok(to_pg) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut pg_read, mut pg_write) = to_pg.into_split();
                let (mut in_read, mut in_write) = from_pgssl.split();
                let upstream = async {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match in_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if pg_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = pg_write.shutdown().await;
                };
                let downstream = tokio::io::copy(&mut pg_read, &mut in_write);
                let _ = tokio::join!(upstream, downstream);
            });
        }
    });
    (addr, captured)
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// The ways a client may try to get in without TLS.
#[derive(Debug, Clone, Copy)]
enum Way {
    /// A plaintext start-up.
    Plaintext,
    /// Protocol 3.2's start-up, plaintext.
    Protocol32,
    /// SSLRequest, then a plaintext start-up whatever the answer.
    SslRequestThenPlaintext,
    /// GSSENCRequest (answered N), then a plaintext start-up.
    GssencThenPlaintext,
    /// SSLRequest and the start-up in one write.
    Pipelined,
    /// A start-up naming two users.
    RepeatedUser,
    /// A TLS ClientHello without ALPN at once (direct TLS needs ALPN `postgresql`).
    DirectTlsWithoutAlpn,
    /// A plaintext CancelRequest with a key pgssl never gave out, then a start-up on the same
    /// connection (a cancel connection carries nothing after its one packet).
    CancelThenStartup,
    /// The right way: SSLRequest, a TLS handshake, the start-up inside TLS (when TLS is offered).
    Tls,
}

const WAYS: [Way; 9] = [
    Way::Tls,
    Way::Plaintext,
    Way::Protocol32,
    Way::SslRequestThenPlaintext,
    Way::GssencThenPlaintext,
    Way::Pipelined,
    Way::RepeatedUser,
    Way::DirectTlsWithoutAlpn,
    Way::CancelThenStartup,
];

/// Runs one attempt as `user` and returns the start-up bytes the client sent in plaintext.
async fn attempt(addr: std::net::SocketAddr, way: Way, user: &str) -> Vec<u8> {
    let params = [("user", user), ("database", "postgres")];
    let plain = startup_packet(&params, if matches!(way, Way::Protocol32) { 2 } else { 0 });
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut sent = plain.clone();
    match way {
        Way::Plaintext | Way::Protocol32 => tcp.write_all(&plain).await.unwrap(),
        Way::SslRequestThenPlaintext | Way::GssencThenPlaintext => {
            let code = if matches!(way, Way::SslRequestThenPlaintext) {
                SSL_REQUEST
            } else {
                GSSENC_REQUEST
            };
            tcp.write_all(&raw_packet(code, &[])).await.unwrap();
            let mut answer = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut answer)).await;
            let _ = tcp.write_all(&plain).await;
        }
        Way::CancelThenStartup => {
            let mut both = raw_packet(
                pgssl::proxy::protocol::first_packet::CANCEL_REQUEST_CODE,
                &[0x7f, 1, 2, 3, 4, 5, 6, 7],
            );
            both.extend_from_slice(&plain);
            let _ = tcp.write_all(&both).await;
            sent = both;
        }
        Way::Pipelined => {
            let mut both = raw_packet(SSL_REQUEST, &[]);
            both.extend_from_slice(&plain);
            tcp.write_all(&both).await.unwrap();
        }
        Way::RepeatedUser => {
            sent = startup_packet(
                &[
                    ("user", "tableau"),
                    ("database", "postgres"),
                    ("user", user),
                ],
                0,
            );
            tcp.write_all(&sent).await.unwrap();
        }
        Way::Tls => {
            tcp.write_all(&raw_packet(SSL_REQUEST, &[])).await.unwrap();
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await.unwrap();
            if answer[0] != b'S' {
                return plain;
            }
            let connector = pgssl::tls::client::require_mode_connector().unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(&plain).await.unwrap();
            let mut sink = vec![0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut sink)).await;
            return plain;
        }
        Way::DirectTlsWithoutAlpn => {
            let connector = pgssl::tls::client::require_mode_connector().unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            if let Ok(Ok(mut tls)) =
                tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await
            {
                let _ = tls.write_all(&plain).await;
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut sink)).await;
            }
            return plain;
        }
    }
    // Whatever the answer (an error, or the repository's authentication request), read a little
    // and leave.
    let mut sink = vec![0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut sink)).await;
    sent
}

/// Whether `user` must use TLS in `mode` (the client users `tableau`, `readonly` may skip it in
/// optional mode).
fn must_use_tls(mode: Mode, user: &str) -> bool {
    match mode {
        Mode::Off => false,
        Mode::Optional => !matches!(user, "tableau" | "readonly"),
        Mode::Required => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_startup_of_a_user_who_must_use_tls_reaches_the_repository() {
    let pg = Postgres::start_with_tcp();
    let target = format!("127.0.0.1:{}", pg.tcp_port.unwrap())
        .parse()
        .unwrap();
    let (relay, captured) = capturing_relay(target).await;
    let mut reached_somewhere = 0;
    for mode in [Mode::Off, Mode::Optional, Mode::Required] {
        let proxy = Proxy::start_with(RepositoryAddr::Tcp(relay.to_string()), mode, |_| {}).await;
        for user in ["tableau", INTERNAL_USER] {
            for way in WAYS {
                let before = captured.lock().unwrap().len();
                let sent = attempt(proxy.addr, way, user).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let opened = opened_since(&captured, before);
                let case = format!("{mode:?} × {user} × {way:?}");
                // (A cancel carries no user: it is judged below.)
                if must_use_tls(mode, user) && !matches!(way, Way::Tls | Way::CancelThenStartup) {
                    assert!(
                        opened.iter().all(|b| b.is_empty()),
                        "{case}: {opened:?} reached the repository"
                    );
                }
                if matches!(way, Way::CancelThenStartup) {
                    // In passthrough the keys are the repository's, so the cancel goes on as sent
                    // (PostgreSQL checks the key and ignores an unknown one); the start-up behind
                    // it never does.
                    for bytes in &opened {
                        assert!(
                            bytes.is_empty() || *bytes == sent[..16],
                            "{case}: the repository got {bytes:?}"
                        );
                    }
                    continue;
                }
                // What reaches the repository is exactly the start-up the client sent, with
                // pgssl's seven pgssl.* values added (a passthrough session is its client's alone).
                for bytes in opened.iter().filter(|b| !b.is_empty()) {
                    let (own, added) = without_identity(bytes);
                    assert!(
                        own.starts_with(&sent),
                        "{case}: the repository got {bytes:?}, the client sent {sent:?}"
                    );
                    assert_eq!(added, 7, "{case}: pgssl.* values added");
                    reached_somewhere += 1;
                }
                if matches!(way, Way::RepeatedUser | Way::DirectTlsWithoutAlpn) {
                    assert!(
                        opened.iter().all(|b| b.is_empty()),
                        "{case} must never reach it"
                    );
                }
            }
        }
        proxy.stop().await;
    }
    // The allowed ways did reach it, each once: in off mode both users over plaintext, 3.2, GSSENC,
    // SSLRequest answered N and SSLRequest pipelined with its (then plaintext) start-up (10); in
    // optional mode tableau over plaintext, 3.2 and GSSENC (3) — SSLRequest is answered S there, so a
    // plaintext start-up after it is a broken handshake; and over TLS both users in optional and
    // required mode (4).
    assert_eq!(reached_somewhere, 17);
}

/// A client certificate a mutual-SSL attempt presents (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Presented {
    /// None at all.
    Nothing,
    /// The user's own, from the configured CA.
    Own,
    /// Another user's, from the configured CA.
    OtherUsers,
    /// One naming the user, from a CA pgssl does not trust.
    Stranger,
    /// The user's, expired yesterday.
    Expired,
    /// The user's, listed in the configured CRL.
    Revoked,
    /// One from the configured CA with no common name.
    Nameless,
}

const PRESENTED: [Presented; 7] = [
    Presented::Nothing,
    Presented::Own,
    Presented::OtherUsers,
    Presented::Stranger,
    Presented::Expired,
    Presented::Revoked,
    Presented::Nameless,
];

/// The client certificates of the mutual-SSL proof.
struct Certificates {
    by_user: std::collections::HashMap<(&'static str, Presented), crate::mutual_ssl::ClientCert>,
    ca: std::path::PathBuf,
    crl: std::path::PathBuf,
}

impl Certificates {
    fn make(dir: &std::path::Path, users: [&'static str; 2]) -> Certificates {
        use crate::mutual_ssl::ClientCa;
        let mut ca = ClientCa::new(dir, "client-ca");
        let mut stranger = ClientCa::new(dir, "stranger-ca");
        let mut by_user = std::collections::HashMap::new();
        let mut revoked = Vec::new();
        for (i, user) in users.into_iter().enumerate() {
            let other = users[1 - i];
            let made = [
                (
                    Presented::Own,
                    ca.issue(&format!("{user}-own"), user, 0, 30),
                ),
                (
                    Presented::OtherUsers,
                    ca.issue(&format!("{user}-other"), other, 0, 30),
                ),
                (
                    Presented::Stranger,
                    stranger.issue(&format!("{user}-stranger"), user, 0, 30),
                ),
                (
                    Presented::Expired,
                    ca.issue(&format!("{user}-expired"), user, -30, -1),
                ),
                (
                    Presented::Revoked,
                    ca.issue(&format!("{user}-revoked"), user, 0, 30),
                ),
                (
                    Presented::Nameless,
                    ca.issue_with(&format!("{user}-nameless"), 0, 30, |p| {
                        p.distinguished_name
                            .push(rcgen::DnType::OrganizationName, "no user here")
                    }),
                ),
            ];
            for (presented, cert) in made {
                if presented == Presented::Revoked {
                    revoked.push(cert.serial);
                }
                by_user.insert((user, presented), cert);
            }
        }
        Certificates {
            by_user,
            ca: ca.file("client-ca.pem"),
            crl: ca.crl("client-ca.crl", &revoked),
        }
    }

    fn identity(&self, user: &'static str, presented: Presented) -> Option<Identity> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert = self.by_user.get(&(user, presented))?;
        let chain = CertificateDer::pem_file_iter(&cert.cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        Some((chain, PrivateKeyDer::from_pem_file(&cert.key).unwrap()))
    }
}

type Identity = pgssl::tls::client::Identity;

/// SSLRequest, a TLS handshake presenting `identity`, and a start-up as `user` with no password
/// and application name `tag`; once logged in, who the repository says the session is
/// (`current_user application_name`).
async fn certificate_attempt(
    addr: std::net::SocketAddr,
    user: &str,
    identity: Option<Identity>,
    tag: &str,
) -> Option<String> {
    use pgssl::tls::client::{Verification, connector_with_identity};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&raw_packet(SSL_REQUEST, &[])).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S', "mutual SSL offers TLS");
    let connector = connector_with_identity(Verification::None, &[], identity).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    let params = [
        ("user", user),
        ("database", "postgres"),
        ("application_name", tag),
    ];
    let start = crate::client::Session::start(tls, &params, None);
    let mut session = tokio::time::timeout(Duration::from_secs(5), start)
        .await
        .ok()?
        .ok()?;
    let rows = session
        .simple_query("SELECT current_user || ' ' || current_setting('application_name')")
        .await
        .ok()?;
    rows.first()?.first()?.clone()
}

/// What pgssl sent on each connection it opened toward the repository since `before`.
/// `bytes` with the `pgssl.*` pairs taken out of the start-up packet they begin with (its length
/// fixed), and how many there were.
fn without_identity(bytes: &[u8]) -> (Vec<u8>, usize) {
    let Some(len) = bytes
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .filter(|&len| len >= 8 && len <= bytes.len() && bytes[4..6] == [0, 3])
    else {
        return (bytes.to_vec(), 0);
    };
    let mut pairs = Vec::new();
    let mut added = 0;
    let mut rest = &bytes[8..len];
    while let Some(end) = rest.iter().position(|&b| b == 0).filter(|&e| e > 0) {
        let name = &rest[..end];
        let value_len = rest[end + 1..].iter().position(|&b| b == 0).unwrap();
        let pair = &rest[..end + 1 + value_len + 1];
        if name.starts_with(b"pgssl.") {
            added += 1;
        } else {
            pairs.extend_from_slice(pair);
        }
        rest = &rest[pair.len()..];
    }
    let mut out = ((8 + pairs.len() + 1) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&bytes[4..8]);
    out.extend_from_slice(&pairs);
    out.push(0);
    out.extend_from_slice(&bytes[len..]);
    (out, added)
}

fn opened_since(captured: &Captured, before: usize) -> Vec<Vec<u8>> {
    captured.lock().unwrap()[before..]
        .iter()
        .map(|r| r.lock().unwrap().clone())
        .collect()
}

/// How many of `opened` carried any byte.
fn reached(opened: &[Vec<u8>]) -> usize {
    opened.iter().filter(|b| !b.is_empty()).count()
}

/// With `authentication mutual-ssl` on, the certificate is the credential: in optional and
/// required mode, with fallback off and on, every plaintext way in above and every TLS login
/// without the user's own valid certificate (none, another user's, an untrusted CA's, expired,
/// revoked, nameless) is stopped before pgssl opens anything toward the repository — except a TLS
/// login with no certificate where fallback lets it log in as usual. The repository runs
/// `hostssl … cert` and trusts pgssl's internal CA; the relay sees pgssl's TLS, so what reached it is
/// judged by the session the repository gave: the start-up's user and application name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_ssl_no_start_up_without_the_users_own_valid_certificate_reaches_the_repository()
 {
    use crate::cli::{CliEnv, ServeProcess, ok};
    let tmp = tempfile::tempdir().unwrap();
    let users = ["tableau", "readonly"];
    let certs = Certificates::make(tmp.path(), users);
    let server = crate::pki::TestPki::new(tmp.path(), "repo").server(
        "repo",
        &["localhost", "127.0.0.1"],
        30,
    );
    let pg = Postgres::start_with_tls(&server.cert_pem, &server.key_pem);
    let target = format!("127.0.0.1:{}", pg.port()).parse().unwrap();
    let (relay, captured) = capturing_relay(target).await;
    let mut logged_in = 0;
    for (mode, fallback) in [
        (Mode::Optional, false),
        (Mode::Required, false),
        (Mode::Optional, true),
        (Mode::Required, true),
    ] {
        let env = CliEnv::new(&relay.to_string());
        crate::harness::prepare_data_dir(&env.data_dir(), mode);
        let fallback_flag = if fallback { "true" } else { "false" };
        crate::mutual_ssl::configure(
            &env,
            &certs.ca,
            &[
                "--fallback-enable",
                fallback_flag,
                "--revocation-file",
                certs.crl.to_str().unwrap(),
            ],
        );
        ok(&env.run(&["authentication", "mutual-ssl", "enable"]));
        ok(&env.run(&["pending-changes", "apply"]));
        crate::mutual_ssl::trust_pgssl(&pg, &env);
        let serve = ServeProcess::start(&env, &["--repository", &relay.to_string()]).await;
        for user in users {
            let case = |way: &dyn std::fmt::Debug| {
                format!("{mode:?} × fallback {fallback} × {user} × {way:?}")
            };
            // Without TLS there is no certificate: with fallback off nobody gets in that way; with
            // it on the mode decides, as without mutual SSL.
            for way in WAYS.into_iter().filter(|w| !matches!(w, Way::Tls)) {
                let before = captured.lock().unwrap().len();
                let sent = attempt(serve.addr, way, user).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let opened = opened_since(&captured, before);
                if matches!(way, Way::CancelThenStartup) {
                    // The cancel goes on as sent (the keys are the repository's), never the
                    // start-up behind it.
                    assert!(
                        opened.iter().all(|b| b.is_empty() || *b == sent[..16]),
                        "{}: the repository got {opened:?}",
                        case(&way)
                    );
                    continue;
                }
                let may = fallback
                    && !must_use_tls(mode, user)
                    && matches!(
                        way,
                        Way::Plaintext | Way::Protocol32 | Way::GssencThenPlaintext
                    );
                assert_eq!(
                    reached(&opened),
                    usize::from(may),
                    "{}: what reached the repository",
                    case(&way)
                );
            }
            for presented in PRESENTED {
                let before = captured.lock().unwrap().len();
                let tag = format!("proof-{user}-{presented:?}");
                let session =
                    certificate_attempt(serve.addr, user, certs.identity(user, presented), &tag)
                        .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let reached = reached(&opened_since(&captured, before));
                match presented {
                    Presented::Own => {
                        assert_eq!(
                            session.as_deref(),
                            Some(format!("{user} {tag}").as_str()),
                            "{}: {}",
                            case(&presented),
                            serve.log_text()
                        );
                        logged_in += 1;
                    }
                    // Fallback: the repository decides as without mutual SSL (here it asks a
                    // password for no certificate over pgssl's plaintext upstream, and the client
                    // has none).
                    Presented::Nothing if fallback => {
                        assert_eq!(session, None, "{}", case(&presented));
                        assert_eq!(reached, 1, "{}", case(&presented));
                    }
                    _ => {
                        assert_eq!(session, None, "{}", case(&presented));
                        assert_eq!(reached, 0, "{} reached the repository", case(&presented));
                    }
                }
            }
        }
        drop(serve);
    }
    // Each user's own certificate logged in, in all four settings.
    assert_eq!(logged_in, 8);
}
