//! Making a cluster, joining one, and the bootstrap file's contents.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::bootstrap::Contents;
use super::publish::{TIMEOUT, catch_up};
use super::repo::{self, Beat, Conn};
use super::snapshot::{PURPOSE, Snapshot};
use super::{ClusterError, Membership, PASSWORD_ENTRY, hosts, membership::check_node_name};
use crate::keystore::{self, Keystore, Secret};
use crate::proxy::repository::RepositoryAddr;
use crate::proxy::repository::tls::RepositoryTls;
use crate::repository::{Login, Session};

/// Length of the cluster role's generated password.
const PASSWORD_LEN: usize = 32;

/// Where a new cluster's store is and who its first node is.
pub struct NewCluster<'a> {
    /// How this node reaches the store: `host:port`, the hosts of one replicated cluster
    /// (`h1:5432,h2:5432`), or `unix:/dir` for its managed repository.
    pub repository: String,
    /// The socket's port for `unix:/dir`.
    pub socket_port: u16,
    /// The store's certificate fingerprints, one per host (none: plaintext or a Unix socket).
    pub repository_fingerprints: Vec<String>,
    /// What bootstrap files name as the repository when other nodes reach it elsewhere than this
    /// node does: this node's listener, in front of its managed repository.
    pub bootstrap_repository: Option<String>,
    /// The database for the `pgssl` schema.
    pub database: &'a str,
    /// This first node's name.
    pub node_name: &'a str,
    /// Its listener, `host:port`.
    pub address: &'a str,
}

fn unreachable(repository: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unreachable {
        repository: repository.to_string(),
        message: e.to_string(),
    }
}

/// An administrator's session on one host, with the configured upstream TLS.
struct AdminLogin<'a> {
    tls: &'a RepositoryTls,
    user: &'a str,
    password: Option<&'a Secret>,
    database: &'a str,
}

impl hosts::LogIn for AdminLogin<'_> {
    async fn log_in(&self, addr: &RepositoryAddr) -> Result<Conn, ClusterError> {
        let host = addr.to_string();
        let stream = addr
            .connect_with(TIMEOUT, self.tls)
            .await
            .map_err(|e| unreachable(&host, e))?;
        let login = Login {
            user: self.user,
            database: self.database,
            application_name: "pgssl topology",
            password: self.password,
        };
        Session::start(stream, &login)
            .await
            .map_err(|source| ClusterError::Admin {
                repository: host,
                user: self.user.to_string(),
                source,
            })
    }
}

/// An administrator's session on an external repository's primary (with `tls`, the configured
/// upstream TLS) and the certificate fingerprints of every one of its hosts, which the cluster
/// pins; `repository` may list the hosts of one replicated cluster.
pub async fn external_admin(
    repository: &str,
    tls: &RepositoryTls,
    user: &str,
    password: Option<&Secret>,
    database: &str,
) -> Result<(Conn, Vec<String>), ClusterError> {
    let hosts = hosts::parse(repository, 5432)?;
    let pins = hosts::fingerprints(&hosts, tls, TIMEOUT).await?;
    let login = AdminLogin {
        tls,
        user,
        password,
        database,
    };
    // The cluster role and schema are made on the primary, as everything after.
    let (admin, _) = hosts::primary(repository, &hosts, TIMEOUT * 2, &login).await?;
    Ok((admin, pins))
}

/// Makes the data directory at `config_dir` the first node of a new cluster: the cluster role and
/// schema are created on `admin` (an administrator's session), and this node's state committed as
/// version 1.
pub async fn create(
    config_dir: &Path,
    mut admin: Conn,
    new: NewCluster<'_>,
) -> Result<Membership, ClusterError> {
    check_node_name(new.node_name)?;
    let repository = new.repository.clone();
    let mut keystore = Keystore::open(config_dir)?;
    let password = keystore.get_or_generate(PASSWORD_ENTRY, PASSWORD_LEN)?;
    repo::create(&mut admin, &password)
        .await
        .map_err(|e| unreachable(&repository, format!("creating the pgssl schema: {e}")))?;
    let _ = admin.terminate().await;
    let mut membership = Membership {
        node_name: new.node_name.to_string(),
        repository: new.repository,
        socket_port: new.socket_port,
        bootstrap_repository: new.bootstrap_repository,
        repository_fingerprints: new.repository_fingerprints,
        database: new.database.to_string(),
        version: 0,
        digest: String::new(),
        through_node: false,
    };
    let (mut conn, host) = repo::connect(&membership, config_dir, &keystore, TIMEOUT).await?;
    let snapshot = Snapshot::read(config_dir)?;
    let sealed = keystore.seal_blob(PURPOSE, &snapshot.to_bytes())?;
    let by = format!("{}: topology get-bootstrap-file", new.node_name);
    let version = match repo::commit(&mut conn, &host, 0, None, &sealed, &by).await {
        Err(ClusterError::Conflict { current, .. }) => {
            return Err(ClusterError::AlreadyHoldsACluster { version: current });
        }
        other => other?,
    };
    register(&mut conn, &host, &membership, new.address).await?;
    membership.version = version;
    membership.digest = snapshot.digest();
    membership.write(config_dir)?;
    Ok(membership)
}

/// Records a node's first heartbeat (version 0: it serves nothing of the cluster's yet).
async fn register(
    conn: &mut Conn,
    host: &str,
    m: &Membership,
    address: &str,
) -> Result<u8, ClusterError> {
    let beat = Beat {
        name: &m.node_name,
        address,
        version: 0,
        fingerprint: "",
    };
    repo::reclaim_id(conn, host, &m.node_name).await?;
    repo::heartbeat(conn, host, &beat)
        .await?
        .ok_or_else(|| ClusterError::NodeRemoved(m.node_name.clone()))
}

/// What a bootstrap file made on this node carries.
pub async fn bootstrap_contents(
    config_dir: &Path,
    m: &Membership,
) -> Result<Contents, ClusterError> {
    let keystore = Keystore::open(config_dir)?;
    let (mut conn, host) = repo::connect(m, config_dir, &keystore, TIMEOUT).await?;
    let generation = repo::head(&mut conn, &host)
        .await?
        .map_or(1, |h| h.generation);
    let _ = conn.terminate().await;
    let password = keystore
        .get(PASSWORD_ENTRY)?
        .ok_or(ClusterError::NoPassword)?;
    let (master_key_id, key) = keystore.export_master_key()?;
    let (repository, repository_fingerprints) = match &m.bootstrap_repository {
        // The managed store is reached through this node's listener, with the certificate it
        // serves now.
        Some(listener) => (
            listener.clone(),
            vec![
                super::membership::served_fingerprint(config_dir)
                    .ok_or(ClusterError::ListenerWithoutTls)?,
            ],
        ),
        None => (m.repository.clone(), m.repository_fingerprints.clone()),
    };
    Ok(Contents {
        repository,
        repository_fingerprints,
        database: m.database.clone(),
        password: password.expose().to_string(),
        master_key_id,
        master_key: BASE64.encode(&key[..]),
        generation,
        through_node: m.bootstrap_repository.is_some(),
    })
}

/// The message for a bootstrap file the cluster no longer takes.
const STALE: &str = "this bootstrap file is stale: the cluster's internal tokens were regenerated after it was made (or it is from another cluster); get a new one with 'pgssl topology get-bootstrap-file' on a cluster node";

/// Joins the data directory at `config_dir` to the cluster of `contents` as `node_name`: installs the
/// master key and the cluster's newest state, and registers the node.
pub async fn join(
    config_dir: &Path,
    contents: &Contents,
    node_name: &str,
    address: &str,
) -> Result<Membership, ClusterError> {
    check_node_name(node_name)?;
    let password = contents.password();
    let reach = repo::Reach {
        repository: &contents.repository,
        socket_port: 5432,
        pins: contents.repository_fingerprints.clone(),
        database: &contents.database,
    };
    let (mut conn, host) =
        repo::connect_as(&reach, &password, TIMEOUT)
            .await
            .map_err(|e| match e {
                ClusterError::Refused { .. } => ClusterError::Bootstrap(STALE.into()),
                other => other,
            })?;
    let repository = &contents.repository;
    let head = repo::head(&mut conn, &host).await?;
    if head.is_some_and(|h| h.generation > contents.generation) {
        return Err(ClusterError::Bootstrap(STALE.into()));
    }
    let live = repo::nodes(&mut conn, &host).await?;
    if live.iter().any(|n| n.name == node_name && n.is_live()) {
        return Err(ClusterError::NameTaken(node_name.to_string()));
    }
    let key = contents.master_key()?;
    let stored = repo::fetch(&mut conn, &host)
        .await?
        .ok_or_else(|| ClusterError::Corrupt("the repository holds no committed state".into()))?;
    let plain = keystore::open_with(&key, PURPOSE, &stored.sealed).map_err(|_| {
        ClusterError::Bootstrap(
            "the bootstrap file's master key does not open the cluster's state".into(),
        )
    })?;
    let snapshot = Snapshot::from_bytes(&plain)?;
    keystore::import_master_key(config_dir, &contents.master_key_id, &key)?;
    snapshot.install(config_dir)?;
    repo::readmit(&mut conn, &host, node_name).await?;
    let mut membership = Membership {
        node_name: node_name.to_string(),
        repository: repository.clone(),
        socket_port: 5432,
        bootstrap_repository: None,
        repository_fingerprints: contents.repository_fingerprints.clone(),
        database: contents.database.clone(),
        version: stored.head.version,
        digest: snapshot.digest(),
        through_node: contents.through_node,
    };
    membership.write(config_dir)?;
    register(&mut conn, &host, &membership, address).await?;
    // A commit between the fetch and now: take it too.
    catch_up(&mut conn, &host, config_dir, &mut membership).await?;
    let _ = conn.terminate().await;
    Ok(membership)
}
