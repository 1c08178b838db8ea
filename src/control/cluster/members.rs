//! Making a cluster, joining one, and the bootstrap file's contents.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::bootstrap::Contents;
use super::publish::{TIMEOUT, catch_up};
use super::repo::{self, Beat, Conn};
use super::snapshot::{PURPOSE, Snapshot};
use super::{ClusterError, Membership, PASSWORD_ENTRY, membership::check_node_name};
use crate::keystore::{self, Keystore, Secret};
use crate::proxy::repository::RepositoryAddr;
use crate::proxy::repository::tls::RepositoryTls;
use crate::repository::{Login, Session};

/// Length of the cluster role's generated password.
const PASSWORD_LEN: usize = 32;

/// Where a new cluster's store is and who its first node is.
pub struct NewCluster<'a> {
    /// How this node reaches the store: `host:port`, or `unix:/dir` for its managed repository.
    pub repository: String,
    /// The socket's port for `unix:/dir`.
    pub socket_port: u16,
    /// The store's certificate fingerprint (`None`: plaintext or a Unix socket).
    pub repository_fingerprint: Option<String>,
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

/// The repository's certificate fingerprint, learnt over a TLS session that checks what
/// `tls` checks; `None` when it refuses TLS.
async fn repository_fingerprint(
    addr: &RepositoryAddr,
    tls: &RepositoryTls,
    repository: &str,
) -> Result<Option<String>, ClusterError> {
    let tls = if tls.mode() == crate::proxy::repository::tls::RepositoryTlsMode::Disable {
        RepositoryTls::new(
            crate::proxy::repository::tls::RepositoryTlsMode::Require,
            None,
        )
        .map_err(|e| unreachable(repository, e))?
    } else {
        tls.clone()
    };
    match addr.connect_with(TIMEOUT, &tls).await {
        Ok(stream) => Ok(stream
            .peer_certificate()
            .map(crate::tls::certs::sha256_fingerprint)),
        Err(crate::proxy::repository::RepositoryConnectError::Tls(
            crate::proxy::repository::tls::RepositoryTlsFailure::Refused(_),
        )) => Ok(None),
        Err(e) => Err(unreachable(repository, e)),
    }
}

/// An administrator's session on an external repository (with `tls`, the configured upstream TLS)
/// and the repository's certificate fingerprint.
pub async fn external_admin(
    repository: &str,
    tls: &RepositoryTls,
    user: &str,
    password: Option<&Secret>,
    database: &str,
) -> Result<(Conn, Option<String>), ClusterError> {
    let addr = RepositoryAddr::parse(repository, 5432).map_err(|e| unreachable(repository, e.0))?;
    let fingerprint = repository_fingerprint(&addr, tls, repository).await?;
    let stream = addr
        .connect_with(TIMEOUT, tls)
        .await
        .map_err(|e| unreachable(repository, e))?;
    let login = Login {
        user,
        database,
        application_name: "pgssl topology",
        password,
    };
    let admin = Session::start(stream, &login)
        .await
        .map_err(|source| ClusterError::Admin {
            repository: repository.to_string(),
            user: user.to_string(),
            source,
        })?;
    Ok((admin, fingerprint))
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
        repository_fingerprint: new.repository_fingerprint,
        database: new.database.to_string(),
        version: 0,
        digest: String::new(),
        through_node: false,
    };
    let mut conn = repo::connect(&membership, config_dir, &keystore, TIMEOUT).await?;
    let snapshot = Snapshot::read(config_dir)?;
    let sealed = keystore.seal_blob(PURPOSE, &snapshot.to_bytes())?;
    let by = format!("{}: topology get-bootstrap-file", new.node_name);
    let version = match repo::commit(&mut conn, &repository, 0, None, &sealed, &by).await {
        Err(ClusterError::Conflict { current, .. }) => {
            return Err(ClusterError::AlreadyHoldsACluster { version: current });
        }
        other => other?,
    };
    register(&mut conn, &membership, new.address).await?;
    membership.version = version;
    membership.digest = snapshot.digest();
    membership.write(config_dir)?;
    Ok(membership)
}

/// Records a node's first heartbeat (version 0: it serves nothing of the cluster's yet).
async fn register(conn: &mut Conn, m: &Membership, address: &str) -> Result<u8, ClusterError> {
    let beat = Beat {
        name: &m.node_name,
        address,
        version: 0,
        fingerprint: "",
    };
    repo::reclaim_id(conn, &m.repository, &m.node_name).await?;
    repo::heartbeat(conn, &m.repository, &beat)
        .await?
        .ok_or_else(|| ClusterError::NodeRemoved(m.node_name.clone()))
}

/// What a bootstrap file made on this node carries.
pub async fn bootstrap_contents(
    config_dir: &Path,
    m: &Membership,
) -> Result<Contents, ClusterError> {
    let keystore = Keystore::open(config_dir)?;
    let mut conn = repo::connect(m, config_dir, &keystore, TIMEOUT).await?;
    let generation = repo::head(&mut conn, &m.repository)
        .await?
        .map_or(1, |h| h.generation);
    let _ = conn.terminate().await;
    let password = keystore
        .get(PASSWORD_ENTRY)?
        .ok_or(ClusterError::NoPassword)?;
    let (master_key_id, key) = keystore.export_master_key()?;
    let (repository, repository_fingerprint) = match &m.bootstrap_repository {
        // The managed store is reached through this node's listener, with the certificate it
        // serves now.
        Some(listener) => (
            listener.clone(),
            Some(
                super::membership::served_fingerprint(config_dir)
                    .ok_or(ClusterError::ListenerWithoutTls)?,
            ),
        ),
        None => (m.repository.clone(), m.repository_fingerprint.clone()),
    };
    Ok(Contents {
        repository,
        repository_fingerprint,
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
        pins: contents.repository_fingerprint.iter().cloned().collect(),
        database: &contents.database,
    };
    let mut conn = repo::connect_as(&reach, &password, TIMEOUT)
        .await
        .map_err(|e| match e {
            ClusterError::Refused { .. } => ClusterError::Bootstrap(STALE.into()),
            other => other,
        })?;
    let repository = &contents.repository;
    let head = repo::head(&mut conn, repository).await?;
    if head.is_some_and(|h| h.generation > contents.generation) {
        return Err(ClusterError::Bootstrap(STALE.into()));
    }
    let live = repo::nodes(&mut conn, repository).await?;
    if live.iter().any(|n| n.name == node_name && n.is_live()) {
        return Err(ClusterError::NameTaken(node_name.to_string()));
    }
    let key = contents.master_key()?;
    let stored = repo::fetch(&mut conn, repository)
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
    repo::readmit(&mut conn, repository, node_name).await?;
    let mut membership = Membership {
        node_name: node_name.to_string(),
        repository: repository.clone(),
        socket_port: 5432,
        bootstrap_repository: None,
        repository_fingerprint: contents.repository_fingerprint.clone(),
        database: contents.database.clone(),
        version: stored.head.version,
        digest: snapshot.digest(),
        through_node: contents.through_node,
    };
    membership.write(config_dir)?;
    register(&mut conn, &membership, address).await?;
    // A commit between the fetch and now: take it too.
    catch_up(&mut conn, config_dir, &mut membership).await?;
    let _ = conn.terminate().await;
    Ok(membership)
}
