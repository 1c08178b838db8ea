//! One client's unit of work in each mode: a connection (`connect`), a refused start-up after the
//! handshake (`handshake`), queries over one connection (`steady`), held connections (`idle`).

use super::*;

/// A client stream: plaintext or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn open(
    args: &RunArgs,
    target: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> anyhow::Result<Box<dyn Stream>> {
    let mut tcp = TcpStream::connect(target).await?;
    tcp.set_nodelay(true)?;
    if args.tls == Tls::Disable {
        return Ok(Box::new(tcp));
    }
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    let answer = tcp.read_u8().await?;
    if answer != b'S' {
        bail!("the server answered {:?} to SSLRequest", answer as char);
    }
    let name = ServerName::try_from("localhost")?;
    Ok(Box::new(connector.connect(name, tcp).await?))
}

pub(crate) async fn connect_once(
    args: &RunArgs,
    target: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> anyhow::Result<()> {
    let stream = open(args, target, connector).await?;
    let params = [
        ("user", args.user.as_str()),
        ("database", args.database.as_str()),
    ];
    let mut session = Session::start(stream, &params, Some(&args.password)).await?;
    session.simple_query("SELECT 1").await?;
    session.terminate().await?;
    Ok(())
}

pub(crate) async fn handshake_once(
    args: &RunArgs,
    target: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> anyhow::Result<()> {
    let mut stream = open(args, target, connector).await?;
    // A start-up without a user name: refused by the front end itself.
    let body = b"database\0postgres\0\0";
    let mut packet = BytesMut::with_capacity(8 + body.len());
    packet.put_u32(8 + body.len() as u32);
    packet.put_u32(3 << 16);
    packet.put_slice(body);
    stream.write_all(&packet).await?;
    stream.flush().await?;
    let tag = stream.read_u8().await?;
    if tag != b'E' {
        bail!("expected an ErrorResponse, got {:?}", tag as char);
    }
    Ok(())
}

pub(crate) async fn steady_client(
    args: &RunArgs,
    target: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    stats: &Stats,
) {
    let mut session = loop {
        if stats.stop.load(Ordering::Relaxed) {
            return;
        }
        let stream = match open(args, target, connector).await {
            Ok(s) => s,
            Err(e) => {
                stats.record_login_failure(e).await;
                tokio::time::sleep(Duration::from_millis(args.retry_pause_ms)).await;
                continue;
            }
        };
        let params = [
            ("user", args.user.as_str()),
            ("database", args.database.as_str()),
        ];
        match Session::start(stream, &params, Some(&args.password)).await {
            Ok(s) => break s,
            Err(e) => {
                stats.record_login_failure(e.into()).await;
                tokio::time::sleep(Duration::from_millis(args.retry_pause_ms)).await;
            }
        }
    };
    while !stats.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = session
            .simple_query(&args.sql)
            .await
            .map(|_| ())
            .map_err(Into::into);
        let failed = result.is_err();
        stats.record(started, result).await;
        if failed {
            return;
        }
    }
    let _ = session.terminate().await;
}

pub(crate) async fn run_idle(
    args: &RunArgs,
    target: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> anyhow::Result<()> {
    let rss_before = args.server_pid.and_then(process_rss_kib);
    let mut sessions = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let stream = open(args, target, connector)
            .await
            .with_context(|| format!("connection {i}"))?;
        let params = [
            ("user", args.user.as_str()),
            ("database", args.database.as_str()),
        ];
        let mut s = Session::start(stream, &params, Some(&args.password))
            .await
            .with_context(|| format!("connection {i}"))?;
        s.simple_query("SELECT 1").await?;
        sessions.push(s);
        if (i + 1) % 100 == 0 {
            errln!("{} idle connections open", i + 1);
        }
    }
    // Let the server settle (allocator, lazily freed buffers) before sampling.
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let rss_after = args.server_pid.and_then(process_rss_kib);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / args.clients as f64),
        _ => None,
    };
    let result = serde_json::json!({
        "mode": "idle",
        "target": args.target,
        "clients": args.clients,
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "server_rss_kib_per_connection": per_conn,
    });
    outln!(
        "idle connections: {}  server RSS before: {} KiB  after: {} KiB  per connection: {}",
        args.clients,
        rss_before.map_or("-".into(), |v| v.to_string()),
        rss_after.map_or("-".into(), |v| v.to_string()),
        per_conn.map_or("-".into(), |v| format!("{v:.1} KiB"))
    );
    write_json(args.json.as_ref(), &result)?;
    for s in sessions {
        let _ = s.terminate().await;
    }
    Ok(())
}
