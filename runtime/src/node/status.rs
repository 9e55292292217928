//! The built-in status service (`node.status`).

use crate::identity::{OperatorRole, PeerIdentity};
use crate::stats::WireStatsSnapshot;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[allow(unused_imports)]
use super::*;

/// Asks a node for its status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRequest;

/// A node's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub identity: PeerIdentity,
    /// Its address.
    pub addr: SocketAddr,
    /// Its connected peers.
    pub peers: Vec<PeerInfo>,
    /// Its counters.
    pub stats: WireStatsSnapshot,
    /// The identity of whoever asked, as this node read it from their certificate.
    pub asked_by: PeerIdentity,
    /// Every figure the metrics listener shows (process, links, rings, questions, actions,
    /// chunks).
    #[serde(default)]
    pub figures: Vec<crate::figures::Figure>,
}

/// Answers [`StatusRequest`] from servers and operators (any role), right in the stream's
/// task: the answer is a read of shared state, so it needs no mailbox (an actor would cost
/// every node kilobytes for it).
pub(super) struct StatusService(pub(super) std::sync::Weak<Shared>);

impl Deliver for StatusService {
    fn deliver(&self, mut msg: Incoming) -> Result<(), DestinationGone> {
        let shared = self.0.upgrade().ok_or(DestinationGone)?;
        if msg.decode::<StatusRequest>().is_err() || !msg.from.role.allows(OperatorRole::Viewer) {
            msg.refuse();
            return Ok(());
        }
        let peers = connected_peers(&shared);
        let status = NodeStatus {
            identity: shared.identity.clone(),
            addr: shared.transport.local_addr(),
            peers,
            stats: shared.stats.snapshot(),
            asked_by: msg.from.clone(),
            figures: Vec::new(),
        };
        // The services' figures are gathered from their actors: off the stream's task.
        let figures = shared_figures(&shared);
        tokio::spawn(async move {
            let status = NodeStatus {
                figures: figures.await,
                ..status
            };
            if let Err(e) = msg.answer(&status) {
                tracing::warn!(error = %e, "status could not be encoded");
            }
        });
        Ok(())
    }
}
