//! An operator's connection to the server's question desk, for the CLI and the console.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rollcall_actors::desk::{DESK, DeskReply, DeskRequest};
use rollcall_actors::question::SensorSpec;
use rollcall_cluster::questions::Progress;
use rollcall_runtime::identity::{self, Credentials};
use rollcall_runtime::node::{Node, NodeOptions};
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};

/// The file in an operator's credentials directory that names the server they were issued
/// for (written by `rollcall ca issue-operator` when the server's state is beside the CA).
pub const SERVER_PIN_FILE: &str = "server.id";

/// The server an operator's credentials in `cert_dir` are pinned to, if any.
pub fn server_pin(cert_dir: &Path) -> Result<Option<rollcall_runtime::NodeId>> {
    match std::fs::read_to_string(cert_dir.join(SERVER_PIN_FILE)) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(rollcall_runtime::NodeId::new(t.trim()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading the server pin"),
    }
}

/// A client-only node for an operator's requests.
pub async fn operator_node(creds: &Credentials, server: SocketAddr) -> Result<Node> {
    let bind = match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        IpAddr::V4(_) => "0.0.0.0:0".parse()?,
        IpAddr::V6(_) => "[::]:0".parse()?,
    };
    let t = QuicTransport::bind(
        bind,
        creds,
        &identity::NodeSecret::generate(),
        QuicOptions::default(),
    )?;
    Ok(Node::start(t, NodeOptions::default()).await?)
}

/// An operator's connection to the server's question desk.
pub struct DeskClient {
    node: Node,
    link: rollcall_runtime::PeerHandle,
}

impl DeskClient {
    /// Connects to the desk of the server at `server` with the operator credentials in
    /// `cert_dir`.
    pub async fn connect(server: SocketAddr, cert_dir: &Path) -> Result<DeskClient> {
        let creds = Credentials::load(cert_dir).context("loading operator credentials")?;
        DeskClient::with_creds_pinned(&creds, server, server_pin(cert_dir)?.as_ref()).await
    }

    /// Connects with credentials already loaded (any server certificate of the CA).
    pub async fn with_creds(creds: &Credentials, server: SocketAddr) -> Result<DeskClient> {
        DeskClient::with_creds_pinned(creds, server, None).await
    }

    /// Connects with credentials already loaded, to the server `pinned` names if given.
    pub async fn with_creds_pinned(
        creds: &Credentials,
        server: SocketAddr,
        pinned: Option<&rollcall_runtime::NodeId>,
    ) -> Result<DeskClient> {
        let node = operator_node(creds, server).await?;
        let link = node.connect(server).await?;
        link.wait_connected(Duration::from_secs(10))
            .await
            .with_context(|| format!("connecting to {server}"))?;
        if let Err(e) = link.require_peer(rollcall_runtime::PeerRole::Server, pinned) {
            node.shutdown();
            bail!("{e}: not the rollcall server these credentials were issued for");
        }
        Ok(DeskClient { node, link })
    }

    /// One request to the desk.
    pub async fn call(&self, req: DeskRequest) -> Result<DeskReply> {
        self.link
            .call(DESK, &req, Duration::from_secs(30))
            .await
            .context("asking the question desk")
    }

    /// The sensor catalog (to show each column's values in its unit); empty if the server
    /// would not say.
    pub async fn catalog(&self) -> Vec<SensorSpec> {
        match self.call(DeskRequest::Sensors).await {
            Ok(DeskReply::Sensors(list)) => list,
            _ => Vec::new(),
        }
    }

    /// Where question `id` stands: its first page of rows (and the first machines not
    /// answered and problems; `Progress::cut` says how many there are in all).
    pub async fn progress(&self, id: u64) -> Result<Progress> {
        self.progress_from(id, 0).await
    }

    async fn progress_from(&self, id: u64, rows_from: usize) -> Result<Progress> {
        match self.call(DeskRequest::Progress { id, rows_from }).await? {
            DeskReply::Progress(p) => Ok(p),
            DeskReply::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// Where question `id` stands, with every row (fetched page by page).
    pub async fn progress_all_rows(&self, id: u64) -> Result<Progress> {
        let mut p = self.progress_from(id, 0).await?;
        while p.cut.rows_total > p.rows.len() {
            let next = self.progress_from(id, p.rows.len()).await?;
            if next.rows.is_empty() {
                break;
            }
            p.rows.extend(next.rows);
        }
        p.cut.rows_total = 0;
        Ok(p)
    }

    /// The rings as the server reports them (viewer role).
    pub async fn rings(&self) -> Result<rollcall_cluster::proto::RingsReport> {
        self.link
            .call(
                rollcall_cluster::proto::RING_ADMIN,
                &rollcall_cluster::proto::AdminRequest::Show { subnet: None },
                Duration::from_secs(10),
            )
            .await
            .context("asking for the rings")
    }

    /// Closes the connection and its node.
    pub async fn close(self) {
        self.node.shutdown_and_wait(Duration::from_secs(1)).await;
    }
}
