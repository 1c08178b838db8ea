//! `pgssl-bench bare-server`: the least any TLS front end must do, for comparison.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The baseline: SSLRequest → `S`, rustls handshake, read the start-up, refuse it, close.
pub async fn bare_server(
    listen: SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<()> {
    let paths = pgssl::control::state::CertPaths {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(pgssl::tls::server_config(&paths)?);
    let listener = TcpListener::bind(listen).await?;
    errln!("bare rustls server listening on {}", listener.local_addr()?);
    let refusal = pgssl::proxy::protocol::ErrorResponse::fatal(
        pgssl::proxy::protocol::SqlState::InvalidAuthorizationSpecification,
        "no PostgreSQL user name specified in startup packet",
    )
    .encode();
    loop {
        let (mut tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let (acceptor, refusal) = (acceptor.clone(), refusal.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let mut request = [0u8; 8];
            if tcp.read_exact(&mut request).await.is_err() || tcp.write_all(b"S").await.is_err() {
                return;
            }
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut buf = [0u8; 512];
            if tls.read(&mut buf).await.is_ok() {
                let _ = tls.write_all(&refusal).await;
                let _ = tls.shutdown().await;
            }
        });
    }
}
