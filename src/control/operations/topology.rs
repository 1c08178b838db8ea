//! `pgssl topology get-bootstrap-file | join | list-nodes | remove-node` (README: Cluster).

use serde::{Deserialize, Serialize};

use super::model::{Operation, Report, Said, Upload, Verb, no_arguments, secret_arg};
use super::{CommandError, Context, ErrorKind, Output, external_repository, lock};
use crate::control::cluster::members::{self, NewCluster};
use crate::control::cluster::repo::{self, NodeRow};
use crate::control::cluster::{ClusterError, Membership, bootstrap, publish::TIMEOUT};
use crate::keystore::{Keystore, Secret};

/// `topology get-bootstrap-file`: a bootstrap file for a new node (the CLI writes it, 0600). On a
/// node that is in no cluster yet, it first makes the cluster, with this node as its first member.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[group(skip)]
#[serde(deny_unknown_fields)]
pub struct GetBootstrapFile {
    /// The passphrase that seals the file (at least 8 characters), or '-' to read it from
    /// standard input.
    #[arg(long, value_name = "PW|-", value_parser = secret_arg, default_value = "-")]
    pub passphrase: Secret,
    /// This node's name when this makes the cluster [default: the host name].
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub node_name: Option<String>,
    /// The repository database for the `pgssl` schema when this makes the cluster.
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    #[serde(default = "default_database")]
    pub database: String,
}

fn default_database() -> String {
    "postgres".into()
}

/// Why a `topology` command refused, or could not make the cluster.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The repository is a Unix socket, which other nodes cannot reach.
    #[error(
        "the repository {0} is a Unix socket, which other nodes cannot reach: give repository.address as host:port"
    )]
    UnixSocketRepository(String),
    /// The managed repository is not running.
    #[error(
        "the managed repository runs only while 'pgssl serve' runs on this data directory: start it, then run this command again"
    )]
    ManagedNotRunning,
    /// Other nodes would reach this node's managed repository over TLS, which is off.
    #[error(
        "other nodes reach this node's managed repository through its listener over TLS: enable repository SSL and apply it first"
    )]
    NoServedCertificate,
    /// The managed repository has no Unix socket.
    #[error("the managed repository has no Unix socket")]
    NoUnixSocket,
    /// `serve` runs on the data directory that would join.
    #[error(
        "'pgssl serve' runs on this data directory: stop it, join, then start it again (joining replaces its state with the cluster's)"
    )]
    ServeRunning,
    /// A node named itself for removal.
    #[error("a node cannot remove itself: run remove-node on another node")]
    RemoveSelf,
    /// No node has the name.
    #[error("no node is named '{0}' (see 'pgssl topology list-nodes')")]
    UnknownNode(String),
}

impl TopologyError {
    /// A request that does not fit is the caller's; a managed repository that is not running is
    /// out of reach; one without its socket is pgssl's.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TopologyError::UnixSocketRepository(_)
            | TopologyError::NoServedCertificate
            | TopologyError::ServeRunning
            | TopologyError::RemoveSelf
            | TopologyError::UnknownNode(_) => ErrorKind::User,
            TopologyError::ManagedNotRunning => ErrorKind::Upstream,
            TopologyError::NoUnixSocket => ErrorKind::Server,
        }
    }
}

/// A sealed bootstrap file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapFile {
    /// The file's text (the secrets in it sealed with the passphrase).
    pub text: String,
    /// Whether this call made the cluster.
    pub created: bool,
    /// This node's name.
    pub node_name: String,
    /// The cluster's repository.
    pub repository: String,
    /// Whether the repository's certificate is pinned (else its traffic is plaintext).
    pub pinned: bool,
}

impl Operation for GetBootstrapFile {
    const ACTION: &'static str = "topology get-bootstrap-file";
    const PATH: &'static str = "/topology/get-bootstrap-file";
    const VERB: Verb = Verb::Post;
    const SHARED: bool = false;
    type Report = BootstrapFile;

    async fn run(self, ctx: &Context) -> Result<BootstrapFile, CommandError> {
        bootstrap::check_passphrase(&self.passphrase)?;
        let store = ctx.store()?;
        let config_dir = store.config_dir();
        let existing = Membership::read(&config_dir)?;
        let created = existing.is_none();
        let membership = match existing {
            Some(m) => m,
            None => create(ctx, &self).await?,
        };
        let contents = members::bootstrap_contents(&config_dir, &membership).await?;
        Ok(BootstrapFile {
            text: bootstrap::seal(&contents, &self.passphrase)?,
            created,
            pinned: !contents.repository_fingerprints.is_empty(),
            node_name: membership.node_name,
            repository: contents.repository.clone(),
        })
    }

    fn example() -> GetBootstrapFile {
        GetBootstrapFile {
            passphrase: Secret::new("a long passphrase".into()),
            node_name: Some("node-1".into()),
            database: default_database(),
        }
    }
}

/// Makes the cluster: on an external repository as `repository.probe_user`; on the managed one as
/// its superuser, the other nodes then reaching it through this node's listener.
async fn create(ctx: &Context, request: &GetBootstrapFile) -> Result<Membership, CommandError> {
    let store = ctx.store()?;
    let running = ctx.running().await?;
    let address = running.as_ref().map_or_else(
        || ctx.config.server.listen.to_string(),
        |s| crate::control::cluster::membership::advertised(s.listen),
    );
    let node_name = request
        .node_name
        .clone()
        .unwrap_or_else(crate::control::cluster::membership::default_node_name);
    let database = request.database.as_str();
    let (admin, new) = match external_repository(ctx, running.as_ref()) {
        Some(repository) if names_a_socket(&repository) => {
            return Err(TopologyError::UnixSocketRepository(repository).into());
        }
        Some(repository) => {
            let applied = store.applied()?;
            let tls = crate::control::settings::repository_tls_for(
                &store,
                &applied,
                ctx.config.repository.tls,
            )?;
            let password = std::env::var(crate::repository::version::PASSWORD_ENV)
                .ok()
                .map(Secret::new);
            let user = &ctx.config.repository.probe_user;
            let (admin, pins) =
                members::external_admin(&repository, &tls, user, password.as_ref(), database)
                    .await?;
            let new = NewCluster {
                repository,
                socket_port: 5432,
                repository_fingerprints: pins,
                bootstrap_repository: None,
                database,
                node_name: &node_name,
                address: &address,
            };
            (admin, new)
        }
        None => {
            managed_store(
                ctx,
                &store,
                running.is_some(),
                database,
                &node_name,
                &address,
            )
            .await?
        }
    };
    Ok(members::create(&store.config_dir(), admin, new).await?)
}

/// Whether `repository` (one address or several) names a Unix socket, which other nodes cannot
/// reach.
fn names_a_socket(repository: &str) -> bool {
    repository
        .split(',')
        .any(|a| a.trim().starts_with("unix:") || a.trim().starts_with('/'))
}

/// The managed repository as the cluster's store: this node reaches it on its Unix socket as the
/// superuser; bootstrap files name this node's listener, reached over TLS.
async fn managed_store<'a>(
    ctx: &Context,
    store: &crate::control::state::StateStore,
    running: bool,
    database: &'a str,
    node_name: &'a str,
    address: &'a str,
) -> Result<(repo::Conn, NewCluster<'a>), CommandError> {
    if !running {
        return Err(TopologyError::ManagedNotRunning.into());
    }
    if crate::control::cluster::membership::served_fingerprint(&store.config_dir()).is_none() {
        return Err(TopologyError::NoServedCertificate.into());
    }
    // Locating runs `pg_config`: off the runtime's one worker.
    let repo = super::blocking(|| {
        crate::repository::managed::ManagedRepository::locate(&ctx.data_dir, &ctx.config)
    })?;
    let keystore = Keystore::open(&store.config_dir())?;
    let admin = repo.connect_admin(&keystore, database).await?;
    let crate::proxy::repository::RepositoryAddr::Unix { dir, port } = repo.upstream() else {
        return Err(TopologyError::NoUnixSocket.into());
    };
    let new = NewCluster {
        repository: format!("unix:{}", dir.display()),
        socket_port: port,
        repository_fingerprints: Vec::new(),
        bootstrap_repository: Some(address.to_string()),
        database,
        node_name,
        address,
    };
    Ok((admin, new))
}

impl Report for BootstrapFile {
    fn render(&self, out: &Output) {
        if self.created {
            say!(
                out,
                "Made a cluster in the repository {} (schema pgssl, role pgssl_cluster) with this node, '{}', as its first member; a running 'pgssl serve' follows it from now on.",
                self.repository,
                self.node_name
            );
        }
        if !self.pinned {
            out.warning(format!(
                "warning: the repository {} offers no TLS: the cluster's state (sealed) and its credential travel in plaintext; turn on ssl in its postgresql.conf",
                self.repository
            ));
        }
        say!(
            out,
            "On the new machine: pgssl topology join --bootstrap-file FILE --node-name NAME (the passphrase on standard input), then pgssl serve. Delete the file once used."
        );
    }
}

/// `topology join`: makes this data directory a node of the bootstrap file's cluster.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The file from 'pgssl topology get-bootstrap-file'.
    #[arg(long, value_name = "FILE", value_parser = Upload::from_path)]
    pub bootstrap_file: Upload,
    /// Its passphrase, or '-' to read it from standard input.
    #[arg(long, value_name = "PW|-", value_parser = secret_arg, default_value = "-")]
    pub passphrase: Secret,
    /// This node's name in the cluster [default: the host name].
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub node_name: Option<String>,
}

impl Operation for Join {
    const ACTION: &'static str = "topology join";
    const PATH: &'static str = "/topology/join";
    const VERB: Verb = Verb::Post;
    const SHARED: bool = false;
    type Report = Said;

    async fn run(self, ctx: &Context) -> Result<Said, CommandError> {
        let store = ctx.store_or_create()?;
        let _lock = lock(&store)?;
        let config_dir = store.config_dir();
        if let Some(m) = Membership::read(&config_dir)? {
            return Err(ClusterError::AlreadyANode {
                node: m.node_name,
                repository: m.repository,
            }
            .into());
        }
        if ctx.running().await?.is_some() {
            return Err(TopologyError::ServeRunning.into());
        }
        let text = String::from_utf8_lossy(&self.bootstrap_file.contents).into_owned();
        let contents = bootstrap::open(&text, &self.passphrase)?;
        let name = self
            .node_name
            .unwrap_or_else(crate::control::cluster::membership::default_node_name);
        let address = ctx.config.server.listen.to_string();
        let m = members::join(&config_dir, &contents, &name, &address).await?;
        Ok(Said::one(format!(
            "Joined the cluster at {} as node '{}' with its state version {}; start 'pgssl serve' on this data directory.",
            m.repository, m.node_name, m.version
        )))
    }

    fn example() -> Join {
        Join {
            bootstrap_file: Upload {
                name: Some("bootstrap.toml".into()),
                contents: zeroize::Zeroizing::new(b"format = \"x\"".to_vec()),
            },
            passphrase: Secret::new("a long passphrase".into()),
            node_name: None,
        }
    }
}

no_arguments!(
    /// `topology list-nodes`: every node of the cluster.
    ListNodes
);

/// The cluster's nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nodes {
    /// The state version committed.
    pub version: u64,
    /// This node's name.
    pub this_node: String,
    /// Every node.
    pub nodes: Vec<NodeRow>,
}

/// The membership of a cluster node, or the error saying this is none.
fn member(ctx: &Context) -> Result<(std::path::PathBuf, Membership), CommandError> {
    let config_dir = ctx.store()?.config_dir();
    let m = Membership::read(&config_dir)?.ok_or(ClusterError::NotANode)?;
    Ok((config_dir, m))
}

impl Operation for ListNodes {
    const ACTION: &'static str = "topology list-nodes";
    const PATH: &'static str = "/topology/nodes";
    const VERB: Verb = Verb::Get;
    type Report = Nodes;

    async fn run(self, ctx: &Context) -> Result<Nodes, CommandError> {
        let (config_dir, m) = member(ctx)?;
        let keystore = Keystore::open(&config_dir)?;
        let (mut conn, host) = repo::connect(&m, &config_dir, &keystore, TIMEOUT).await?;
        let head = repo::head(&mut conn, &host).await?;
        let nodes = repo::nodes(&mut conn, &host).await?;
        Ok(Nodes {
            version: head.map_or(0, |h| h.version),
            this_node: m.node_name,
            nodes,
        })
    }

    fn example() -> ListNodes {
        ListNodes {}
    }
}

impl Report for Nodes {
    fn render(&self, out: &Output) {
        say!(out, "Cluster state version {}:", self.version);
        for n in &self.nodes {
            let state = if n.removed {
                "removed".to_string()
            } else if n.is_live() {
                "live".to_string()
            } else {
                format!("unreachable since {}", n.heartbeat)
            };
            let me = if n.name == self.this_node {
                " (this node)"
            } else {
                ""
            };
            say!(
                out,
                "  {}{me}: id {}, {}, serves version {}, certificate {}, last heartbeat {} ({state})",
                n.name,
                n.id,
                n.address,
                n.version,
                if n.fingerprint.is_empty() {
                    "none"
                } else {
                    &n.fingerprint
                },
                n.heartbeat
            );
        }
    }
}

/// `topology remove-node NAME`: the node stops following the cluster (it keeps serving its last
/// state alone) and leaves the list; a node of the name may join again later.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveNode {
    /// The node's name (see list-nodes).
    #[arg(value_name = "NAME")]
    pub name: String,
}

impl Operation for RemoveNode {
    const ACTION: &'static str = "topology remove-node";
    const PATH: &'static str = "/topology/remove-node";
    const VERB: Verb = Verb::Post;
    const SHARED: bool = false;
    type Report = Said;

    async fn run(self, ctx: &Context) -> Result<Said, CommandError> {
        let (config_dir, m) = member(ctx)?;
        if self.name == m.node_name {
            return Err(TopologyError::RemoveSelf.into());
        }
        let keystore = Keystore::open(&config_dir)?;
        let (mut conn, host) = repo::connect(&m, &config_dir, &keystore, TIMEOUT).await?;
        if !repo::remove(&mut conn, &host, &self.name).await? {
            return Err(TopologyError::UnknownNode(self.name).into());
        }
        Ok(Said::one(format!(
            "Removed node '{}': it no longer follows the cluster.",
            self.name
        )))
    }

    fn example() -> RemoveNode {
        RemoveNode {
            name: "node-2".into(),
        }
    }
}
