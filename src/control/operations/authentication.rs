//! `pgssl authentication lookup-user set --lookup-user NAME --lookup-password PW|- | clear | list |
//! sql`: the role pgssl reads verifiers as on an external repository, so that it can authenticate
//! clients itself (`auth.mode`, README "Authentication"). Staged like every secret and applied with
//! `pending-changes apply`.
//!
//! The flags are `--lookup-user`/`--lookup-password` rather than `--username`/`--password`, which sign
//! in to a remote admin server.

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Said, Staged, Verb, no_arguments, secret_arg};
use super::{
    CommandError, Context, ErrorKind, Output, RecordList, RecordListing, RecordSlot, Removal,
    Staging, check_secret, list_record, prune, stage_removal,
};
use crate::control::state::security::{self, Change, LookupUser};
use crate::control::state::store::new_id;
use crate::keystore::{Keystore, Secret};

/// Where the lookup user is in the state.
const SLOT: RecordSlot<LookupUser> = record_slot!(lookup_user);

/// Why `lookup-user set` refused.
#[derive(Debug, thiserror::Error)]
pub enum LookupUserError {
    /// The repository is the managed one.
    #[error(
        "the managed repository needs no lookup user: pgssl reads its verifiers as its own superuser"
    )]
    ManagedNeedsNone,
    /// The name is empty or holds a NUL byte.
    #[error("--lookup-user must be a role name")]
    NotARoleName,
}

impl LookupUserError {
    /// Each is the caller's to fix.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

/// `authentication lookup-user set`: stages the lookup user and its password (sealed).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Set {
    /// The role pgssl reads verifiers as (see 'pgssl authentication lookup-user sql').
    #[arg(long, value_name = "NAME")]
    pub lookup_user: String,
    /// Its password, or '-' to read it from standard input.
    #[arg(long, value_name = "PW|-", value_parser = secret_arg)]
    pub lookup_password: Secret,
}

impl Operation for Set {
    const ACTION: &'static str = "authentication lookup-user set";
    const PATH: &'static str = "/authentication/lookup-user/set";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        let store = ctx.store_or_create()?;
        if super::served_repository(ctx, &store).await.is_none() {
            return Err(LookupUserError::ManagedNeedsNone.into());
        }
        let name = self.lookup_user.trim();
        if name.is_empty() || name.contains('\0') {
            return Err(LookupUserError::NotARoleName.into());
        }
        check_secret(&self.lookup_password, "--lookup-password")?;
        let mut staging = Staging::begin(store)?;
        let id = new_id()?;
        Keystore::open(&staging.store.config_dir())?
            .set(&security::lookup_password_name(&id), &self.lookup_password)?;
        staging.pending.lookup_user = Some(Change::Set(LookupUser {
            id,
            username: name.to_string(),
        }));
        staging.save()?;
        prune(&staging.store, &ctx.out);
        let mut staged = Staged::change(format!(
            "Staged: read verifiers as lookup user '{name}' (password sealed in the keystore)."
        ));
        if ctx.config.auth.mode == crate::config::AuthMode::Passthrough {
            staged.notes.push(
                "note: auth.mode = \"passthrough\": the lookup user is kept but not used until auth.mode is auto or proxy".into(),
            );
        }
        Ok(staged)
    }

    fn example() -> Set {
        Set {
            lookup_user: "pgssl_lookup".into(),
            lookup_password: Secret::new("password".into()),
        }
    }
}

no_arguments!(
    /// `authentication lookup-user clear`: stages forgetting the lookup user.
    Clear
);

impl Operation for Clear {
    const ACTION: &'static str = "authentication lookup-user clear";
    const PATH: &'static str = "/authentication/lookup-user/clear";
    const VERB: Verb = Verb::Post;
    type Report = Staged;

    async fn run(self, ctx: &Context) -> Result<Staged, CommandError> {
        Ok(match stage_removal(ctx, &SLOT)? {
            Removal::Absent => Staged::nothing("No lookup user is set; nothing to stage."),
            Removal::DroppedStaged => {
                Staged::nothing("Dropped the staged lookup user; none is applied.")
            }
            Removal::Staged => Staged::change("Staged: forget the lookup user."),
        })
    }

    fn example() -> Clear {
        Clear {}
    }
}

no_arguments!(
    /// `authentication lookup-user list`: the applied (and any staged) lookup user; never its
    /// password.
    List
);

impl Operation for List {
    const ACTION: &'static str = "authentication lookup-user list";
    const PATH: &'static str = "/authentication/lookup-user";
    const VERB: Verb = Verb::Get;
    type Report = RecordList<LookupUser>;

    async fn run(self, ctx: &Context) -> Result<RecordList<LookupUser>, CommandError> {
        SLOT.list(ctx, |_, l| Ok(l.clone()))
    }

    fn example() -> List {
        List {}
    }
}

impl Report for RecordList<LookupUser> {
    fn render(&self, out: &Output) {
        let how = RecordListing {
            title: "Lookup user (authentication)",
            none: "none (with an external repository, the repository authenticates its clients)",
            staged: &|l: &LookupUser| format!("set {}", l.username),
            removed: "clear",
        };
        list_record(out, how, self, |out, l, indent| {
            say!(out, "{indent}{:<21}{}", "user:", l.username);
            say!(out, "{indent}{:<21}set (encrypted at rest)", "password:");
        });
    }
}

/// `authentication lookup-user sql --lookup-user NAME`: the SQL a DBA runs so that the lookup user
/// needs no superuser, and the `auth.lookup_query` that uses it.
pub fn sql(lookup_user: &str) -> Said {
    let role = postgres_protocol::escape::escape_identifier(lookup_user);
    let text = format!(
        "-- Run as a superuser in the database pgssl's lookup user connects to (auth.lookup_database).\n\
CREATE SCHEMA IF NOT EXISTS pgssl;\n\
DROP FUNCTION IF EXISTS pgssl.lookup(text);\n\
CREATE FUNCTION pgssl.lookup(role_name text, OUT rolpassword text, OUT expired text, OUT canlogin text)\n\
  RETURNS SETOF record LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$\n\
    SELECT rolpassword::text, coalesce(rolvaliduntil < now(), false)::text, rolcanlogin::text\n\
      FROM pg_catalog.pg_authid WHERE rolname = role_name $$;\n\
REVOKE ALL ON FUNCTION pgssl.lookup(text) FROM PUBLIC;\n\
GRANT USAGE ON SCHEMA pgssl TO {role};\n\
GRANT EXECUTE ON FUNCTION pgssl.lookup(text) TO {role};\n\
-- Then, in pgssl's configuration:\n\
--   [auth]\n\
--   lookup_query = \"SELECT * FROM pgssl.lookup($1)\""
    );
    Said {
        said: text.lines().map(str::to_string).collect(),
    }
}

/// Whether `serve` relays logins in passthrough over TLS to an external repository — `auth.mode =
/// "passthrough"`, or `auto` with no lookup user applied — where every libpq client with the default
/// `channel_binding=prefer` is refused: the warning `serve` and `repository-ssl list` give then,
/// `None` otherwise.
pub fn passthrough_over_tls_warning(
    config: &crate::config::Config,
    external: bool,
    lookup_applied: bool,
) -> Option<String> {
    use crate::config::AuthMode;
    use crate::proxy::repository::tls::RepositoryTlsMode;
    let tls = config.repository.tls;
    let passthrough = match config.auth.mode {
        AuthMode::Passthrough => true,
        AuthMode::Auto => !lookup_applied,
        AuthMode::Proxy => false,
    };
    (external && passthrough && tls != RepositoryTlsMode::Disable).then(|| {
        format!(
            "logins are relayed to the repository in passthrough while repository.tls = {tls}: libpq clients with the default channel_binding=prefer are refused ('SCRAM channel binding negotiation error'); run 'pgssl authentication lookup-user set' and 'pgssl pending-changes apply' so that pgssl authenticates clients itself"
        )
    })
}
