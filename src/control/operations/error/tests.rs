//! Each error type answers its own kind, and [`CommandError`] answers the kind of what it wraps.

use std::path::PathBuf;

use super::*;
use crate::control::cluster::ClusterError;
use crate::control::state::admin_users::AdminUserError;
use crate::keystore::KeystoreError;
use crate::repository::managed::ManagedError;

use ErrorKind::{Server, Upstream, User};

fn io() -> std::io::Error {
    std::io::Error::other("disk on fire")
}

#[test]
fn each_failure_has_one_kind_and_one_status() {
    let user = CommandError::Apply(ApplyError::NothingPending);
    let upstream = CommandError::Control(ControlError::NotRunning);
    let server = CommandError::MutualSsl(MutualSslCommandError::InternalCaNotMade);
    assert_eq!(
        (user.kind(), user.kind().http_status()),
        (ErrorKind::User, 400)
    );
    assert_eq!(
        (upstream.kind(), upstream.kind().http_status()),
        (ErrorKind::Upstream, 503)
    );
    assert_eq!(
        (server.kind(), server.kind().http_status()),
        (ErrorKind::Server, 500)
    );
    let missing = CommandError::State(StateError::Missing("/nowhere".into()));
    assert_eq!(missing.kind(), ErrorKind::User);
    let corrupt = CommandError::State(StateError::Corrupt {
        path: "/x/applied.toml".into(),
        message: "bad".into(),
    });
    assert_eq!(corrupt.kind(), ErrorKind::Server);
    assert_eq!(CommandError::BadSecret { what: "x" }.kind(), User);
}

#[test]
fn config_cert_and_load_errors_are_the_administrators() {
    let config = ConfigError::Invalid {
        key: "server.listen",
        message: "no".into(),
    };
    assert_eq!(config.kind(), User);
    let cert = CertError::NoCertificate {
        path: PathBuf::from("server.crt"),
    };
    assert_eq!(cert.kind(), User);
    assert_eq!(LoadError::MissingPassphrase.kind(), User);
    assert_eq!(
        LoadError::State(StateError::Missing("/x".into())).kind(),
        User
    );
    assert_eq!(CommandError::from(config).kind(), User);
    assert_eq!(CommandError::from(cert).kind(), User);
}

#[test]
fn state_errors_are_the_callers_only_for_a_missing_data_directory() {
    assert_eq!(StateError::Missing("/x".into()).kind(), User);
    let io = StateError::Io {
        path: "/x/pending.toml".into(),
        source: io(),
    };
    assert_eq!(io.kind(), Server);
}

#[test]
fn keystore_errors_are_pgssls() {
    assert_eq!(KeystoreError::Tampered("role/x".into()).kind(), Server);
    assert_eq!(
        CommandError::from(KeystoreError::Random).kind(),
        ErrorKind::Server
    );
}

#[test]
fn admin_user_errors_are_the_callers_for_names_only() {
    for user in [
        AdminUserError::BadName("a b".into()),
        AdminUserError::Exists("a".into()),
        AdminUserError::Unknown("a".into()),
    ] {
        assert_eq!(user.kind(), User, "{user}");
    }
    for server in [
        AdminUserError::Hash("no memory".into()),
        AdminUserError::Io {
            path: "/x".into(),
            source: io(),
        },
    ] {
        assert_eq!(server.kind(), Server, "{server}");
    }
}

#[test]
fn control_errors_say_who_acts() {
    assert_eq!(ControlError::AlreadyRunning("/x".into()).kind(), User);
    assert_eq!(ControlError::NotRunning.kind(), Upstream);
    assert_eq!(ControlError::Refused("bad".into()).kind(), Server);
    assert_eq!(ControlError::Unexpected("garbage".into()).kind(), Server);
}

#[test]
fn cluster_errors_follow_their_classification() {
    let conflict = ClusterError::Conflict {
        base: 1,
        current: 2,
    };
    assert_eq!(conflict.kind(), User);
    let unreachable = ClusterError::Unreachable {
        repository: "db:5432".into(),
        message: "refused".into(),
    };
    assert_eq!(unreachable.kind(), Upstream);
    assert_eq!(ClusterError::Corrupt("x".into()).kind(), Server);
    assert_eq!(CommandError::from(unreachable).kind(), Upstream);
}

#[test]
fn managed_errors_are_upstream_when_the_repository_is_out_of_reach() {
    let not_ready = ManagedError::NotReady("starting".into(), "/x/log".into());
    assert_eq!(not_ready.kind(), Upstream);
    assert_eq!(ManagedError::NoBinaries.kind(), Server);
    assert_eq!(ManagedError::Initdb("no".into()).kind(), Server);
}

#[test]
fn command_family_errors_say_who_acts() {
    let cases: Vec<(CommandError, ErrorKind)> = vec![
        (ApplyError::NothingPending.into(), User),
        (
            ApplyError::NotReloaded(ControlError::Refused("x".into())).into(),
            Server,
        ),
        (
            ApplyError::DataAccess(ManagedError::NotReady("x".into(), "/l".into())).into(),
            Upstream,
        ),
        (TopologyError::RemoveSelf.into(), User),
        (TopologyError::ManagedNotRunning.into(), Upstream),
        (TopologyError::NoUnixSocket.into(), Server),
        (RegenerateError::TimedOut(5).into(), Upstream),
        (RegenerateError::ManagedNotRunning.into(), Upstream),
        (RepositorySslError::Off.into(), User),
        (CustomCertError::NothingToDelete.into(), User),
        (ExtsvcError::PasswordWithoutUser.into(), User),
        (MutualSslCommandError::NotConfigured.into(), User),
        (MutualSslCommandError::InternalCaNotMade.into(), Server),
        (LookupUserError::NotARoleName.into(), User),
        (
            DataAccessError::ExternalRepository("db:5432".into()).into(),
            User,
        ),
        (
            CredentialsError::NoPassword("tblwgadmin".into()).into(),
            User,
        ),
    ];
    for (error, kind) in cases {
        assert_eq!(error.kind(), kind, "{error}");
    }
    let protocols = crate::tls::protocols::parse("TLSv9").unwrap_err();
    assert_eq!(
        CommandError::from(ExternalSslError::Protocols(protocols)).kind(),
        User
    );
}

#[test]
fn family_errors_keep_the_words_the_tests_and_scripts_know() {
    assert_eq!(
        ApplyError::NothingPending.to_string(),
        "there are no pending changes to apply (stage one with 'pgssl security repository-ssl enable' or 'disable')"
    );
    assert_eq!(
        TopologyError::UnknownNode("n9".into()).to_string(),
        "no node is named 'n9' (see 'pgssl topology list-nodes')"
    );
    assert_eq!(
        CommandError::BadSecret {
            what: "--lookup-password"
        }
        .to_string(),
        "--lookup-password must not be empty or contain NUL bytes"
    );
    assert_eq!(
        CredentialsError::NotInternal {
            user: "x".into(),
            roles: "a, b".into()
        }
        .to_string(),
        "'x' is not an internal role (internal roles: a, b; add it to repository.internal_roles)"
    );
}
