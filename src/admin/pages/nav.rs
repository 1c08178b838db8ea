//! The pages by name: [`Page`] gives each page its path, title and place in the navigation, and
//! [`Button`] each button that stages an operation without fields its path and the page it returns
//! to. Routes, links, redirects and the navigation all address pages through these two types, so
//! reordering the navigation cannot send a form to another page. The other paths the pages link to
//! are constants here too, for the router and the templates alike.

/// `GET` the sign-in page, `POST` its form.
pub(crate) const LOGIN: &str = "/login";
/// `POST`: sign out.
pub(crate) const LOGOUT: &str = "/logout";
/// `POST` (the banner): apply the pending changes.
pub(crate) const APPLY: &str = "/pending-changes/apply";
/// `POST` (the banner): discard the pending changes.
pub(crate) const DISCARD: &str = "/pending-changes/discard";
/// The pages' one script.
pub(crate) const SCRIPT: &str = "/static/pgssl.js";

/// A signed-in page of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// What an operator looks at first (`status`).
    Status,
    /// Configuration → Security → Repository SSL: the model's three options.
    RepositorySsl,
    /// External SSL: the operator's own certificate.
    ExternalSsl,
    /// The custom CA certificate.
    CustomCert,
    /// The external service (Rserve, TabPy) connection.
    ExternalService,
    /// Regenerate internal tokens.
    RegenerateTokens,
    /// The warm backends (`pool list`), read-only.
    Pool,
    /// The repository hosts (`topology list-repository-hosts`), read-only.
    RepositoryHosts,
    /// The client sessions (`sessions list`), each with a Terminate button.
    Sessions,
    /// Mutual SSL.
    MutualSsl,
}

impl Page {
    /// Every page, in the navigation's order.
    pub(crate) const ALL: [Page; 10] = [
        Page::Status,
        Page::RepositorySsl,
        Page::ExternalSsl,
        Page::CustomCert,
        Page::ExternalService,
        Page::RegenerateTokens,
        Page::Pool,
        Page::RepositoryHosts,
        Page::Sessions,
        Page::MutualSsl,
    ];

    /// Where a signed-in administrator lands (after sign-in, at `/`, after a banner form from an
    /// unknown page).
    pub(crate) const LANDING: Page = Page::Status;

    /// The page's path and its title in the navigation and heading.
    const fn spec(self) -> (&'static str, &'static str) {
        match self {
            Page::Status => ("/status", "Status"),
            Page::RepositorySsl => ("/security/repository-ssl", "Repository SSL"),
            Page::ExternalSsl => ("/security/external-ssl", "External SSL"),
            Page::CustomCert => ("/security/custom-cert", "Custom certificate"),
            Page::ExternalService => ("/security/vizql-extsvc-ssl", "External service"),
            Page::RegenerateTokens => ("/security/regenerate-internal-tokens", "Regenerate tokens"),
            Page::Pool => ("/pool", "Warm backends"),
            Page::RepositoryHosts => ("/topology/repository-hosts", "Repository hosts"),
            Page::Sessions => ("/sessions", "Client sessions"),
            Page::MutualSsl => ("/authentication/mutual-ssl", "Mutual SSL"),
        }
    }

    /// The page's path (its `GET`, and the `POST` of its main form).
    pub(crate) const fn path(self) -> &'static str {
        self.spec().0
    }

    /// The page's title.
    pub(crate) const fn title(self) -> &'static str {
        self.spec().1
    }

    /// The page at `path`, if one is.
    pub(crate) fn at(path: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|p| p.path() == path)
    }
}

/// A button that stages an operation without fields (disable, delete, enable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Button {
    /// External SSL: stage disable.
    ExternalSslDisable,
    /// Custom certificate: stage delete.
    CustomCertDelete,
    /// External service: stage disable.
    ExternalServiceDisable,
    /// Mutual SSL: stage enable.
    MutualSslEnable,
    /// Mutual SSL: stage disable.
    MutualSslDisable,
}

impl Button {
    /// Every button.
    pub(crate) const ALL: [Button; 5] = [
        Button::ExternalSslDisable,
        Button::CustomCertDelete,
        Button::ExternalServiceDisable,
        Button::MutualSslEnable,
        Button::MutualSslDisable,
    ];

    /// The page the button is on (and returns to), and the last segment of its path.
    const fn spec(self) -> (Page, &'static str) {
        match self {
            Button::ExternalSslDisable => (Page::ExternalSsl, "disable"),
            Button::CustomCertDelete => (Page::CustomCert, "delete"),
            Button::ExternalServiceDisable => (Page::ExternalService, "disable"),
            Button::MutualSslEnable => (Page::MutualSsl, "enable"),
            Button::MutualSslDisable => (Page::MutualSsl, "disable"),
        }
    }

    /// The page the button is on; its answer sends the browser back there.
    pub(crate) const fn page(self) -> Page {
        self.spec().0
    }

    /// The path the button posts to: its page's path and its action.
    pub(crate) fn path(self) -> String {
        let (page, action) = self.spec();
        format!("{}/{action}", page.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_have_distinct_paths_and_titles_and_are_found_by_path() {
        for (i, a) in Page::ALL.iter().enumerate() {
            assert_eq!(Page::at(a.path()), Some(*a));
            for b in &Page::ALL[i + 1..] {
                assert_ne!(a, b, "{a:?} is listed twice");
                assert_ne!(a.path(), b.path());
                assert_ne!(a.title(), b.title());
            }
        }
        assert_eq!(Page::at("/security"), None);
        assert!(Page::ALL.contains(&Page::LANDING));
    }

    #[test]
    fn buttons_post_under_their_own_page_and_to_distinct_paths() {
        for (i, a) in Button::ALL.iter().enumerate() {
            let under = a.path().strip_prefix(a.page().path()).map(str::to_string);
            assert!(
                under.as_deref().is_some_and(|rest| rest.starts_with('/')),
                "{a:?}: {}",
                a.path()
            );
            assert_eq!(Page::at(&a.path()), None, "{a:?} posts to a page's path");
            for b in &Button::ALL[i + 1..] {
                assert_ne!(a.path(), b.path());
            }
        }
    }
}
