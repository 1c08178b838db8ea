//! The pages' routing table against the handlers: every page is served and frames itself, every
//! form and button returns to its own page.

use axum::body::Body;
use axum::http::{Method, Request};
use tower::ServiceExt;

use super::*;
use crate::control::node::{NodeFuture, PoolSnapshot, RunningNode};
use crate::control::reload::{ReloadReport, ServeStatus};
use crate::proxy::repository::hosts::HostStatus;

/// The signed-in routes for an administrator.
struct Pages {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

impl Pages {
    /// On an empty data directory: the listings read that nothing is set up.
    fn empty() -> Pages {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        let data_dir = dir.path().to_path_buf();
        Pages::on(dir, data_dir)
    }

    /// On a data directory that cannot exist (under a file): every operation fails at once,
    /// so no change (regenerating tokens included) gets under way, and the pages say so.
    fn unusable() -> Pages {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let data_dir = dir.path().join("file").join("data");
        Pages::on(dir, data_dir)
    }

    fn on(dir: tempfile::TempDir, data_dir: std::path::PathBuf) -> Pages {
        // No `serve` answers on the data directory's control socket: the pages ask no running node.
        let node = crate::control::socket::SocketNode::new(data_dir.join("run/control.sock"));
        Pages::asking(dir, data_dir, Arc::new(node))
    }

    /// On an empty data directory, served by `node`.
    fn served_by(node: Arc<dyn RunningNode>) -> Pages {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        let data_dir = dir.path().to_path_buf();
        Pages::asking(dir, data_dir, node)
    }

    fn asking(
        dir: tempfile::TempDir,
        data_dir: std::path::PathBuf,
        node: Arc<dyn RunningNode>,
    ) -> Pages {
        let state = Arc::new(AdminState::new(
            data_dir,
            crate::config::Config::default(),
            node,
        ));
        let admin = Admin {
            user: "admin".into(),
            peer: [127, 0, 0, 1].into(),
            token: "token".into(),
            csrf: "csrf".into(),
        };
        Pages {
            app: routes().layer(Extension(admin)).with_state(state),
            _dir: dir,
        }
    }

    /// `method path` with `form` as its body: status, `Location`, body.
    async fn ask(&self, method: Method, path: &str, form: &str) -> (StatusCode, String, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(request).await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

#[tokio::test]
async fn every_page_is_routed_and_shows_itself_as_current() {
    let pages = Pages::empty();
    for page in Page::ALL {
        let (status, _, html) = pages.ask(Method::GET, page.path(), "").await;
        assert_eq!(status, StatusCode::OK, "{page:?}: {html}");
        let current = format!("<a href=\"{}\" aria-current=\"page\">", page.path());
        assert_eq!(html.matches("aria-current").count(), 1, "{page:?}: {html}");
        assert!(html.contains(&current), "{page:?}: {html}");
        assert!(
            html.contains(&format!("<h1>{}</h1>", page.title())),
            "{html}"
        );
    }
    let (status, location, _) = pages.ask(Method::GET, "/", "").await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, Page::LANDING.path())
    );
    assert_eq!(
        pages.ask(Method::GET, "/security", "").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_form_and_button_returns_to_its_own_page() {
    let pages = Pages::unusable();
    for button in Button::ALL {
        let (status, location, _) = pages.ask(Method::POST, &button.path(), "").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{button:?}");
        assert_eq!(location, button.page().path(), "{button:?}");
    }
    for page in Page::ALL {
        let form = match page {
            Page::RepositorySsl => "mode=off",
            // Read-only pages take no form.
            Page::Status | Page::Pool | Page::RepositoryHosts => {
                let (status, _, _) = pages.ask(Method::POST, page.path(), "").await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{page:?}");
                continue;
            }
            _ => "",
        };
        let (status, location, body) = pages.ask(Method::POST, page.path(), form).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{page:?}: {body}");
        assert_eq!(location, page.path(), "{page:?}");
    }
    // The banner's forms return to the page named in the form, or to the landing page.
    for page in Page::ALL {
        let form = format!("back={}", page.path());
        let (_, location, _) = pages.ask(Method::POST, nav::DISCARD, &form).await;
        assert_eq!(location, page.path());
    }
    let (_, location, _) = pages.ask(Method::POST, nav::APPLY, "back=/elsewhere").await;
    assert_eq!(location, Page::LANDING.path());
}

/// A running node with two repository hosts (whatever else it is asked, it answers that no
/// `serve` runs).
#[derive(Debug)]
struct TwoHosts;

impl RunningNode for TwoHosts {
    fn status(&self) -> NodeFuture<'_, Option<ServeStatus>> {
        Box::pin(async { Ok(None) })
    }

    fn reload(&self) -> NodeFuture<'_, Option<ReloadReport>> {
        Box::pin(async { Ok(None) })
    }

    fn pool(&self) -> NodeFuture<'_, Option<PoolSnapshot>> {
        Box::pin(async { Ok(None) })
    }

    fn repository_hosts(&self) -> NodeFuture<'_, Option<Vec<HostStatus>>> {
        let host = |address: &str, role: &str, lag: Option<u64>| HostStatus {
            lag_bytes: lag,
            ..super::hosts::tests::host(address, role)
        };
        Box::pin(async move {
            Ok(Some(vec![
                host("10.0.0.1:5432", "primary", None),
                host("10.0.0.2:5432", "standby", Some(4096)),
            ]))
        })
    }

    fn sessions(
        &self,
        _: crate::proxy::sessions::Selector,
    ) -> NodeFuture<'_, Option<Vec<crate::proxy::sessions::SessionInfo>>> {
        Box::pin(async { Ok(None) })
    }

    fn terminate(
        &self,
        _: crate::proxy::sessions::Selector,
        _: String,
    ) -> NodeFuture<'_, Option<Vec<u64>>> {
        Box::pin(async { Ok(None) })
    }

    fn inventory(&self) -> NodeFuture<'_, Option<Vec<crate::proxy::inventory::Seen>>> {
        Box::pin(async { Ok(None) })
    }
}

#[tokio::test]
async fn the_repository_hosts_page_shows_the_running_nodes_hosts_or_that_none_runs() {
    let path = Page::RepositoryHosts.path();
    let pages = Pages::served_by(Arc::new(TwoHosts));
    let (status, _, html) = pages.ask(Method::GET, path, "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("<tr data-host=").count(), 2, "{html}");
    for (address, role) in [("10.0.0.1:5432", "primary"), ("10.0.0.2:5432", "standby")] {
        let row = format!(
            "<tr data-host=\"{address}\"><th scope=\"row\">{address}</th><td class=\"role\">{role}</td>"
        );
        assert!(html.contains(&row), "{row}: {html}");
    }
    assert!(html.contains("<td>4096</td>"), "{html}");

    // With no `serve` on the data directory, both pages give the same answer.
    let pages = Pages::empty();
    let (status, _, html) = pages.ask(Method::GET, path, "").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let none = "error: no pgssl server is running on this data directory";
    assert!(html.contains(none), "{html}");
    assert!(!html.contains("<table"), "{html}");
    let (_, _, pool) = pages.ask(Method::GET, Page::Pool.path(), "").await;
    assert!(pool.contains(none), "{pool}");
}
