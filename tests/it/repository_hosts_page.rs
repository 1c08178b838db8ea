//! The admin page *Repository hosts* (`/topology/repository-hosts`) over real HTTPS, in front of a
//! real primary and a pg_basebackup standby: `pgssl serve` probes both, and the signed-in page shows
//! each host's row with the role its probe found, as the JSON API reports it. Without a session the
//! page leads to sign-in like every page.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{HeaderMap, Method, StatusCode};
use pgssl::cli::remote::http_request;
use pgssl::tls::client::{Verification, connector_with_alpn};
use rustls::pki_types::ServerName;

use crate::admin::{ADMIN, ADMIN_PASSWORD, Api, serve_with_admin};
use crate::cli::CliEnv;
use crate::harness::{Postgres, wait_for};

const PAGE: &str = "/topology/repository-hosts";

/// How long both hosts may take to be probed and their roles settled.
const WAIT: Duration = Duration::from_secs(40);

/// `GET path` on the admin server, with `cookie` as the session cookie: status, headers, body.
async fn get(
    admin: SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let connector = connector_with_alpn(Verification::None, &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let headers: Vec<(&str, String)> = cookie
        .map(|c| ("cookie", format!("pgssl_admin={c}")))
        .into_iter()
        .collect();
    let (status, headers, body) =
        http_request(tls, Method::GET, &admin.to_string(), path, &headers, None)
            .await
            .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The HTML of the table row of host `address`, if the page has one.
fn row<'a>(html: &'a str, address: &str) -> Option<&'a str> {
    let start = html.find(&format!("<tr data-host=\"{address}\">"))?;
    let rest = &html[start..];
    rest.find("</tr>").map(|end| &rest[..end])
}

/// The role cell of `address`'s row: `primary`, `standby`, … (or what the row holds instead).
fn role<'a>(html: &'a str, address: &str) -> Option<&'a str> {
    let cell = row(html, address)?.split("<td class=\"role\">").nth(1)?;
    cell.split('<').next()
}

/// The plain cells after the role in a row, in the page's order: reachable, timeline, lag bytes,
/// lag seconds, sessions, warm backends.
fn cells(row: &str) -> Vec<&str> {
    row.split("<td>")
        .skip(1)
        .filter_map(|c| c.split('<').next())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_hosts_page_shows_the_primary_and_the_standby_in_their_roles() {
    let primary = Postgres::start_with_tcp();
    let standby = primary.start_standby();
    let p = format!("127.0.0.1:{}", primary.tcp_port.unwrap());
    let s = format!("127.0.0.1:{}", standby.tcp_port.unwrap());
    let env = CliEnv::new(&format!("{p},{s}"));
    env.add_config("repository", "probe_interval = \"250ms\"");
    let (_env, server, admin) = serve_with_admin(env).await;

    // Without a session, or with one that was never issued, the page leads to sign-in.
    for cookie in [None, Some("not-a-session")] {
        let (status, headers, body) = get(admin, PAGE, cookie).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{cookie:?}: {body}");
        assert_eq!(headers["location"], "/login", "{cookie:?}");
        assert!(!body.contains("data-host"), "{body}");
    }

    let mut api = Api::new(admin);
    let (status, headers, body) = api.sign_in(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .strip_prefix("pgssl_admin=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();

    // The probes settle both roles within a few intervals; until then a host may be `unknown`.
    let html = wait_for("the page to list the primary and the standby", WAIT, || {
        let cookie = cookie.clone();
        let (p, s) = (p.clone(), s.clone());
        async move {
            let (status, _, html) = get(admin, PAGE, Some(&cookie)).await;
            let roles = (role(&html, &p), role(&html, &s));
            if status == StatusCode::OK && roles == (Some("primary"), Some("standby")) {
                Ok(html)
            } else {
                Err(format!("{status}, roles {roles:?}: {html}"))
            }
        }
    })
    .await;
    assert_eq!(html.matches("<tr data-host=").count(), 2, "{html}");
    assert!(html.contains("<h1>Repository hosts</h1>"), "{html}");
    assert!(
        html.contains(&format!("<a href=\"{PAGE}\" aria-current=\"page\">")),
        "{html}"
    );
    // Both answer their probes, on the new cluster's first timeline; with two hosts neither is the
    // unprobed single host.
    assert!(!html.contains("id=\"unprobed\""), "{html}");
    let primary_row = cells(row(&html, &p).unwrap());
    let standby_row = cells(row(&html, &s).unwrap());
    assert_eq!(primary_row[..2], ["yes", "1"], "{html}");
    assert_eq!(standby_row[..2], ["yes", "1"], "{html}");
    // The standby's lag is known (it has a primary to be behind), the primary has none.
    assert_eq!(primary_row[2..4], ["–", "–"], "{html}");
    assert!(standby_row[2].parse::<u64>().is_ok(), "{html}");
    assert!(standby_row[3].parse::<f64>().is_ok(), "{html}");

    // The JSON API answers from the same operation: the same hosts in the same roles.
    let (status, body) = api
        .json(Method::GET, "/api/v1/topology/repository-hosts", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let roles: Vec<(String, String)> = body["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let field = |k: &str| h[k].as_str().unwrap_or_default().to_string();
            (field("address"), field("role"))
        })
        .collect();
    assert_eq!(
        roles,
        [(p.clone(), "primary".into()), (s.clone(), "standby".into())]
    );
    server.stop().await;
}
