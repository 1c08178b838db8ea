//! Full TLS 1.3 handshakes in memory, one thread, per provider × key-exchange group, with the same
//! ECDSA P-256 server certificate pgssl generates. Reports handshakes/s of the pair and the server's
//! own CPU time per handshake (measured around the server's calls only), which is what a proxy pays.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::{aws_lc_rs, ring, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, NamedGroup, RootCertStore, ServerConfig, ServerConnection};

const RUN: Duration = Duration::from_secs(3);

fn main() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let cert_der = CertificateDer::from(cert.der().to_vec());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    println!("provider\tgroup\thandshakes_per_s\tserver_us_per_handshake");
    for (name, provider) in [("ring", ring::default_provider()), ("aws-lc-rs", aws_lc_rs::default_provider())] {
        for group in [NamedGroup::secp256r1, NamedGroup::X25519, NamedGroup::X25519MLKEM768] {
            let Some(kx) = provider.kx_groups.iter().find(|g| g.name() == group).copied() else {
                println!("{name}\t{group:?}\tnot offered\t-");
                continue;
            };
            let (per_s, server_us) = measure(&provider, kx, &cert_der, &key_der);
            println!("{name}\t{group:?}\t{per_s:.0}\t{server_us:.1}");
        }
    }
}

fn measure(
    base: &CryptoProvider,
    kx: &'static dyn SupportedKxGroup,
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
) -> (f64, f64) {
    let provider = Arc::new(CryptoProvider { kx_groups: vec![kx], ..base.clone() });
    let server = Arc::new(
        ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.clone_key())
            .expect("server config"),
    );
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).expect("root");
    let client = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let (mut count, mut server_time) = (0u32, Duration::ZERO);
    let start = Instant::now();
    while start.elapsed() < RUN {
        server_time += handshake(&client, &server);
        count += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    (f64::from(count) / secs, server_time.as_secs_f64() * 1e6 / f64::from(count))
}

/// One handshake, fresh connections (no resumption, as a new PostgreSQL login); returns the time
/// spent inside the server's calls.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Duration {
    let name = ServerName::try_from("localhost").expect("name");
    let mut c = ClientConnection::new(client.clone(), name).expect("client");
    let mut server_time = Duration::ZERO;
    let t = Instant::now();
    let mut s = ServerConnection::new(server.clone()).expect("server");
    server_time += t.elapsed();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client write");
        }
        let t = Instant::now();
        if !buf.is_empty() {
            s.read_tls(&mut &buf[..]).expect("server read");
            s.process_new_packets().expect("server process");
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server write");
        }
        server_time += t.elapsed();
        if !buf.is_empty() {
            c.read_tls(&mut &buf[..]).expect("client read");
            c.process_new_packets().expect("client process");
        }
    }
    server_time
}
