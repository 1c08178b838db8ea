//! The cluster's tables on a real PostgreSQL, through the library's statements: a cluster made by
//! the previous version (its sealed state base64 in a text column, `sealed`) is migrated to `bytea`
//! under a new name (`sealed_bytes`) when a node connects, once, and then read and committed to as
//! before, while a node of the previous version still running fails loudly instead of writing base64
//! that would corrupt it; a commit wakes a listening session.

use std::time::Duration;

use pgssl::control::cluster::repo::{self, Reach};
use pgssl::control::cluster::{CHANNEL, ClusterError, schema};
use pgssl::keystore::Secret;
use pgssl::repository::{Login, Session};

use crate::harness::{PASSWORD, Postgres};

const TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const CLUSTER_PASSWORD: &str = "cluster-pw-0123456789";

/// What turns this version's tables into the previous version's: they differ in one column, the
/// sealed state, which the previous version kept as base64 text named `sealed`.
const TO_PREVIOUS_VERSION: &str = "ALTER TABLE pgssl.state
       ALTER COLUMN sealed_bytes TYPE text USING encode(sealed_bytes, 'base64');
     ALTER TABLE pgssl.state RENAME COLUMN sealed_bytes TO sealed";

/// A commit as the previous version made it: the sealed state as base64 text in `sealed`.
const PREVIOUS_VERSION_COMMIT: &str = "UPDATE pgssl.state SET version = version + 1,
       sealed = 'AP8Qww==', applied_by = 'n1: old', applied_at = now()
     WHERE id = 1";

/// Makes the cluster's role (with [`CLUSTER_PASSWORD`]) and schema on an administrator's session,
/// as a new cluster's first node does; returns the session.
pub(crate) async fn make_cluster(pg: &Postgres) -> Session {
    let admin_login = Login {
        user: "postgres",
        database: "postgres",
        application_name: "test",
        password: Some(&Secret::new(PASSWORD.into())),
    };
    let stream = pg.upstream().connect(TIMEOUT).await.unwrap();
    let mut admin = Session::start(stream, &admin_login).await.unwrap();
    repo::create(&mut admin, &Secret::new(CLUSTER_PASSWORD.into()))
        .await
        .unwrap();
    admin
}

fn reach(pg: &Postgres) -> (String, u16) {
    (pg.repository_text(), pg.port())
}

pub(crate) async fn connect(repository: &str, port: u16) -> Result<repo::Conn, ClusterError> {
    let reach = Reach {
        repository,
        socket_port: port,
        pins: Vec::new(),
        database: "postgres",
    };
    repo::connect_as(&reach, &Secret::new(CLUSTER_PASSWORD.into()), TIMEOUT)
        .await
        .map(|(conn, _)| conn)
}

/// The type of `pgssl.state`'s column `name`; empty when it has none.
fn column_type(pg: &Postgres, name: &str) -> String {
    pg.sql(&format!(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'pgssl.state'::regclass AND attname = '{name}' AND NOT attisdropped"
    ))
}

/// The column types of this version's tables: the sealed state is `bytea`, named `sealed_bytes`,
/// and no `sealed` column is left for an older version to write to.
fn assert_current(pg: &Postgres) {
    assert_eq!(column_type(pg, "sealed_bytes"), "bytea");
    assert_eq!(column_type(pg, "sealed"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_made_by_the_previous_version_is_migrated_to_bytea_and_keeps_working() {
    let pg = Postgres::start();
    // The tables as the previous version made them.
    make_cluster(&pg).await.terminate().await.unwrap();
    pg.sql(TO_PREVIOUS_VERSION);
    // What the previous version committed: the sealed snapshot as base64 text (bytes that are no
    // valid UTF-8, so a text round trip would show), and a node that beat.
    pg.sql(
        "INSERT INTO pgssl.state (id, version, generation, sealed, applied_by) \
         VALUES (1, 3, 2, encode('\\x00ff10c3'::bytea, 'base64'), 'n1: old')",
    );
    pg.sql(
        "INSERT INTO pgssl.nodes (name, id, address, version, fingerprint) \
         VALUES ('n1', 1, '127.0.0.1:6432', 3, 'AB:CD')",
    );
    assert_eq!(column_type(&pg, "sealed"), "text");
    assert_eq!(column_type(&pg, "sealed_bytes"), "");
    let (repository, port) = reach(&pg);

    // Two nodes connect at once: the column is converted, once, and both read the old state.
    let (a, b) = tokio::join!(connect(&repository, port), connect(&repository, port));
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert_current(&pg);
    for conn in [&mut a, &mut b] {
        let stored = repo::fetch(conn, &repository).await.unwrap().unwrap();
        assert_eq!(
            (stored.head.version, stored.head.generation),
            (3, 2),
            "the head survives"
        );
        assert_eq!(stored.sealed, [0x00, 0xff, 0x10, 0xc3], "the bytes survive");
    }
    // Nothing left to migrate.
    assert!(!schema::migrate(&a).await.unwrap());

    // A node of the previous version still running fails loudly, reading or committing: no base64
    // text reaches the column (PostgreSQL would take it as escape-format bytea, which no node of
    // this version could open).
    for old in [
        PREVIOUS_VERSION_COMMIT,
        "SELECT version, generation, sealed FROM pgssl.state WHERE id = 1",
    ] {
        let refused = b.batch_execute(old).await.unwrap_err();
        assert_eq!(refused.code().map(|c| c.code()), Some("42703"), "{refused}");
    }
    let stored = repo::fetch(&mut a, &repository).await.unwrap().unwrap();
    assert_eq!((stored.head.version, stored.head.generation), (3, 2));
    assert_eq!(
        stored.sealed,
        [0x00, 0xff, 0x10, 0xc3],
        "the old commit changed nothing"
    );

    // The new version commits on top, and everyone reads what it committed.
    let next = [7u8, 0, 8, 0xfe];
    let version = repo::commit(&mut a, &repository, 3, None, &next, "n2: new")
        .await
        .unwrap();
    assert_eq!(version, 4);
    let stored = repo::fetch(&mut b, &repository).await.unwrap().unwrap();
    assert_eq!((stored.head.version, stored.head.generation), (4, 2));
    assert_eq!(stored.sealed, next);
    assert_eq!(
        pg.sql("SELECT encode(sealed_bytes, 'hex'), applied_by FROM pgssl.state"),
        "070008fe|n2: new"
    );
    // A commit on a stale base is a conflict naming the current version.
    let stale = repo::commit(&mut b, &repository, 3, Some(9), &next, "n1: stale").await;
    assert!(
        matches!(
            stale,
            Err(ClusterError::Conflict {
                base: 3,
                current: 4
            })
        ),
        "{stale:?}"
    );

    // The nodes table the previous version filled is read and beaten into as before.
    let nodes = repo::nodes(&mut a, &repository).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].name.as_str(), nodes[0].id, nodes[0].version),
        ("n1", 1, 3)
    );
    assert_eq!(nodes[0].fingerprint, "AB:CD");
    assert!(!nodes[0].removed);
    let beat = repo::Beat {
        name: "n2",
        address: "127.0.0.2:6432",
        version: 4,
        fingerprint: "",
    };
    assert_eq!(
        repo::heartbeat(&mut a, &repository, &beat).await.unwrap(),
        Some(2)
    );
    assert!(repo::remove(&mut a, &repository, "n1").await.unwrap());
    assert!(!repo::remove(&mut a, &repository, "nobody").await.unwrap());
    a.terminate().await.unwrap();
    b.terminate().await.unwrap();

    // Making the cluster again on the same repository (an administrator's session) keeps the
    // migrated tables and their state, and gives the role the password again.
    make_cluster(&pg).await.terminate().await.unwrap();
    assert_current(&pg);
    let mut again = connect(&repository, port).await.unwrap();
    let head = repo::head(&mut again, &repository).await.unwrap().unwrap();
    assert_eq!((head.version, head.generation), (4, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_keeps_bytea_and_a_commit_wakes_a_listening_session() {
    let pg = Postgres::start();
    let _admin = make_cluster(&pg).await;
    assert_current(&pg);
    assert_eq!(
        pg.sql("SELECT has_table_privilege('pgssl_cluster', 'pgssl.state', 'SELECT')"),
        "t"
    );

    let (repository, port) = reach(&pg);
    let mut listener = connect(&repository, port).await.unwrap();
    repo::listen(&mut listener, &repository).await.unwrap();
    // Nothing announced yet: the wait times out.
    assert!(
        !listener
            .wait_notification(Duration::from_millis(200))
            .await
            .unwrap()
    );
    let mut writer = connect(&repository, port).await.unwrap();
    assert_eq!(
        repo::commit(&mut writer, &repository, 0, None, b"first", "n1")
            .await
            .unwrap(),
        1
    );
    assert!(
        listener.wait_notification(TIMEOUT).await.unwrap(),
        "the commit's NOTIFY on {CHANNEL} reaches the listener"
    );
    // The first commit again is a conflict: the repository holds version 1.
    let again = repo::commit(&mut writer, &repository, 0, None, b"other", "n2").await;
    assert!(
        matches!(
            again,
            Err(ClusterError::Conflict {
                base: 0,
                current: 1
            })
        ),
        "{again:?}"
    );

    // The repository ends the listener's session: the wait says so instead of timing out quietly.
    pg.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = 'pgssl_cluster' AND query LIKE 'LISTEN%'",
    );
    let ended = listener.wait_notification(TIMEOUT).await;
    assert!(ended.is_err(), "{ended:?}");

    // A wrong password is the repository's refusal, with its SQLSTATE kept.
    let reach = Reach {
        repository: &repository,
        socket_port: port,
        pins: Vec::new(),
        database: "postgres",
    };
    let refused = repo::connect_as(&reach, &Secret::new("wrong".into()), TIMEOUT).await;
    match refused {
        Err(ClusterError::Refused { source, .. }) => {
            assert_eq!(source.sqlstate(), Some("28P01"), "{source}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bytea_column_still_named_sealed_is_renamed_with_its_bytes() {
    let pg = Postgres::start();
    // The tables as a build between the two made them: `bytea` already, under the old name.
    make_cluster(&pg).await.terminate().await.unwrap();
    pg.sql("ALTER TABLE pgssl.state RENAME COLUMN sealed_bytes TO sealed");
    pg.sql(
        "INSERT INTO pgssl.state (id, version, generation, sealed, applied_by) \
         VALUES (1, 5, 1, '\\x00ff10c3'::bytea, 'n1')",
    );
    let (repository, port) = reach(&pg);
    let mut conn = connect(&repository, port).await.unwrap();
    assert_current(&pg);
    let stored = repo::fetch(&mut conn, &repository).await.unwrap().unwrap();
    assert_eq!((stored.head.version, stored.head.generation), (5, 1));
    assert_eq!(stored.sealed, [0x00, 0xff, 0x10, 0xc3]);
}
