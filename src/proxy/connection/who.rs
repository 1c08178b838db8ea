//! Who a session is: its address, role, database, class and transport, for the policy and every
//! log line, its place in `sessions list`, and what the repository is told of it (`pgssl.*`).

use std::net::SocketAddr;
use std::sync::Arc;

use super::ConnectionContext;
use crate::proxy::metrics::{AuthMechanism, AuthOutcome};
use crate::proxy::policy::{Transport, UserClass};
use crate::proxy::sessions::Registered;

/// Who a session is, for the policy and every log line about it.
pub(crate) struct Who {
    pub(crate) peer: SocketAddr,
    pub(crate) user: String,
    pub(crate) database: String,
    pub(crate) class: UserClass,
    /// The TLS version for the log, `none` in plaintext.
    pub(crate) tls: &'static str,
    pub(crate) transport: Transport,
    /// Its place in `sessions list`, until it ends.
    pub(crate) session: Registered,
}

impl Who {
    /// The login succeeded by `mechanism`: counted, shown by `sessions list`, and added to the
    /// inventory of who logs in.
    pub(crate) fn logged_in(&self, ctx: &ConnectionContext, mechanism: AuthMechanism) {
        ctx.metrics.auth(mechanism, AuthOutcome::Ok).increment(1);
        self.session.logged_in(mechanism);
        let facts = self.session.facts();
        let tls = facts.tls.as_ref();
        ctx.inventory.record(crate::proxy::inventory::Client {
            user: self.user.clone(),
            database: self.database.clone(),
            application: facts.application_name.clone(),
            address: self.peer.ip().to_string(),
            tls: tls.map(|t| t.version.to_string()),
            channel_binding: matches!(mechanism, AuthMechanism::ScramPlus),
            certificate: tls.is_some_and(|t| t.client_cert_subject.is_some()),
        });
    }

    /// The `pgssl.*` values of this client once logged in by `mechanism`; `None` when identity is
    /// off.
    pub(crate) fn identity(
        &self,
        ctx: &ConnectionContext,
        mechanism: AuthMechanism,
    ) -> Option<Arc<crate::proxy::identity::Identity>> {
        let options = ctx.identity.as_ref()?;
        let facts = self.session.facts();
        Some(Arc::new(crate::proxy::identity::Identity::new(
            self.peer.ip(),
            facts.tls.as_ref(),
            mechanism,
            &options.node,
        )))
    }
}
