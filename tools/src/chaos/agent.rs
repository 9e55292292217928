//! The chaos agent of a real endpoint: applies to its own process the faults the server
//! relays from an admin's `rollcall chaos`, when the endpoint was started with
//! `--allow-chaos` (or `[chaos] allow = true`), and refuses them otherwise.
//!
//! Every command is signed by the server (purpose `Chaos`), names this machine, is current
//! and is taken once; anything else is refused and counted (`chaos_refused`). The route is
//! open to the server's role only, and faults never hold it
//! ([`rollcall_runtime::node::CHAOS_AGENT_ROUTE`]): a paused machine still hears "resume".
//! Every fault but a kill ends by itself after `[chaos] fault_limit_secs`, so a machine cut
//! off from the server (which then cannot send "heal") comes back on its own.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_runtime::node::{Deliver, DestinationGone, NodeFaults};
use rollcall_runtime::signing::{Purpose, ServerSigner, ServerTrust, Stamp};
use rollcall_runtime::stats::WireStats;
use rollcall_runtime::transport::faults::SocketFaults;
use rollcall_runtime::{Incoming, NodeId, PeerRole};
use serde::{Deserialize, Serialize};

/// A fault for one endpoint's own process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentFault {
    /// Exit at once: no goodbye, not even a close frame.
    Kill,
    /// A grey machine: connections kept, nothing handled or sent.
    Pause,
    /// Undo `Pause`.
    Resume,
    /// Delay every envelope in and out by this many milliseconds.
    Slow(u64),
    /// Lose this share (percent) of datagrams each way.
    Loss(f64),
    /// Send this share (percent) of datagrams twice.
    Duplicate(f64),
    /// Drop every datagram to and from these addresses (other endpoints), and the server's
    /// if `server`.
    Partition {
        /// Peers cut off.
        peers: Vec<IpAddr>,
        /// The server too.
        server: bool,
    },
    /// Clear every fault.
    Heal,
}

impl std::fmt::Display for AgentFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentFault::Kill => f.write_str("kill"),
            AgentFault::Pause => f.write_str("pause"),
            AgentFault::Resume => f.write_str("resume"),
            AgentFault::Slow(ms) => write!(f, "slow by {ms} ms"),
            AgentFault::Loss(p) => write!(f, "lose {p}%"),
            AgentFault::Duplicate(p) => write!(f, "duplicate {p}%"),
            AgentFault::Partition { peers, server } => write!(
                f,
                "cut off from {} endpoints{}",
                peers.len(),
                if *server { " and the server" } else { "" }
            ),
            AgentFault::Heal => f.write_str("heal"),
        }
    }
}

/// What the server signs: the fault and the one machine it is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOrder {
    /// The machine's node id.
    pub to: String,
    /// The fault.
    pub fault: AgentFault,
}

/// A signed [`AgentOrder`] as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentCommand {
    /// Unique per command (a replay is refused).
    pub id: u64,
    /// Issue time and expiry.
    pub stamp: Stamp,
    /// The encoded order.
    #[serde(with = "serde_bytes")]
    pub order: Vec<u8>,
    /// The server's signature over the order.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// How long a signed command may be acted on.
pub const COMMAND_TTL: Duration = Duration::from_secs(30);

impl AgentCommand {
    /// `fault` for machine `to`, signed by `signer`.
    pub fn sign(signer: &ServerSigner, to: &NodeId, fault: AgentFault) -> AgentCommand {
        let order = rmp_serde::to_vec(&AgentOrder {
            to: to.to_string(),
            fault,
        })
        .unwrap_or_default();
        let id = rand::random::<u64>();
        let stamp = Stamp::now_for(COMMAND_TTL);
        let signature = signer.sign(Purpose::Chaos, id, stamp, &order);
        AgentCommand {
            id,
            stamp,
            order,
            signature,
        }
    }
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentReply {
    /// Applied; what is in force now.
    Applied(String),
    /// Refused, and why.
    Refused(String),
}

/// The chaos agent of one endpoint.
pub struct ChaosAgent {
    allowed: bool,
    me: NodeId,
    trust: Arc<ServerTrust>,
    node: Arc<NodeFaults>,
    socket: Option<Arc<SocketFaults>>,
    stats: Arc<WireStats>,
    limit: Duration,
    server_ip: IpAddr,
    seen: Mutex<VecDeque<u64>>,
    /// Bumped by every applied fault: a fault's expiry clears only if none came after it.
    generation: AtomicU64,
}

/// Commands remembered against replay (each is current for [`COMMAND_TTL`] only).
const SEEN: usize = 1024;

impl ChaosAgent {
    /// The agent of the endpoint whose node is `node` and whose server is at `server_ip`:
    /// applies faults if `allowed`, each for at most `limit`.
    pub fn install(
        node: &rollcall_runtime::Node,
        allowed: bool,
        trust: Arc<ServerTrust>,
        socket: Option<Arc<SocketFaults>>,
        limit: Duration,
        server_ip: IpAddr,
    ) -> Arc<ChaosAgent> {
        let agent = Arc::new(ChaosAgent::new(
            node.identity().id.clone(),
            allowed,
            trust,
            node.faults().clone(),
            socket,
            node.wire_stats().clone(),
            limit,
            server_ip,
        ));
        node.router().register(
            rollcall_runtime::node::CHAOS_AGENT_ROUTE,
            rollcall_runtime::Roles::SERVER,
            Arc::new(AgentRoute(agent.clone())),
        );
        agent
    }

    /// The agent of machine `me`, applying faults to `node` and `socket`, counting in
    /// `stats`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: NodeId,
        allowed: bool,
        trust: Arc<ServerTrust>,
        node: Arc<NodeFaults>,
        socket: Option<Arc<SocketFaults>>,
        stats: Arc<WireStats>,
        limit: Duration,
        server_ip: IpAddr,
    ) -> ChaosAgent {
        ChaosAgent {
            allowed,
            me,
            trust,
            node,
            socket,
            stats,
            limit,
            server_ip,
            seen: Mutex::new(VecDeque::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Checks and applies one command from `from`.
    pub fn handle(self: &Arc<Self>, from: &NodeId, cmd: &AgentCommand) -> AgentReply {
        match self.check(from, cmd).and_then(|fault| self.apply(fault)) {
            Ok(said) => {
                self.stats.incr(|s| &s.chaos_applied);
                tracing::warn!(%from, fault = %said, "chaos fault applied");
                AgentReply::Applied(said)
            }
            Err(why) => {
                self.stats.incr(|s| &s.chaos_refused);
                tracing::warn!(%from, reason = %why, "chaos command refused");
                AgentReply::Refused(why)
            }
        }
    }

    fn check(&self, from: &NodeId, cmd: &AgentCommand) -> Result<AgentFault, String> {
        if let Some(server) = &self.trust.server_id
            && server != from
        {
            return Err(format!(
                "{from} is not the server this machine enrolled with"
            ));
        }
        self.trust
            .verify(
                Purpose::Chaos,
                cmd.id,
                cmd.stamp,
                &cmd.order,
                &cmd.signature,
                rollcall_runtime::signing::unix_ms(),
            )
            .map_err(|e| format!("the command's signature: {e}"))?;
        let order: AgentOrder =
            rmp_serde::from_slice(&cmd.order).map_err(|e| format!("unreadable order: {e}"))?;
        if order.to != self.me.as_str() {
            return Err(format!("the command is for {}, not this machine", order.to));
        }
        {
            let mut seen = rollcall_runtime::sync::lock(&self.seen);
            if seen.contains(&cmd.id) {
                return Err(format!("command {} was already taken", cmd.id));
            }
            if seen.len() >= SEEN {
                seen.pop_front();
            }
            seen.push_back(cmd.id);
        }
        if !self.allowed {
            return Err(
                "this endpoint takes no chaos commands (start it with --allow-chaos)".into(),
            );
        }
        Ok(order.fault)
    }

    fn apply(self: &Arc<Self>, fault: AgentFault) -> Result<String, String> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let said = fault.to_string();
        match fault {
            AgentFault::Kill => {
                // The answer leaves first; then nothing more does, and the process ends
                // without running any shutdown (no close frame, no goodbye).
                let socket = self.socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(s) = socket {
                        s.set_blackhole(true);
                    }
                    tracing::warn!("killed by a chaos command");
                    std::process::exit(137);
                });
                return Ok("exiting now".into());
            }
            AgentFault::Pause => self.node.set_paused(true),
            AgentFault::Resume => self.node.set_paused(false),
            AgentFault::Slow(ms) => self.node.set_delay(Duration::from_millis(ms)),
            AgentFault::Loss(p) => self.socket_faults()?.set_loss(p / 100.0),
            AgentFault::Duplicate(p) => self.socket_faults()?.set_duplication(p / 100.0),
            AgentFault::Partition { peers, server } => {
                let s = self.socket_faults()?;
                for ip in peers {
                    s.block(ip);
                }
                if server {
                    s.block(self.server_ip);
                }
            }
            AgentFault::Heal => {
                self.clear();
                return Ok(said);
            }
        }
        let me = self.clone();
        let limit = self.limit;
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            if me.generation.load(Ordering::SeqCst) == generation {
                tracing::warn!(after = ?limit, "chaos faults expired; healed");
                me.clear();
            }
        });
        Ok(format!("{said} (for at most {} s)", self.limit.as_secs()))
    }

    fn socket_faults(&self) -> Result<&SocketFaults, String> {
        self.socket
            .as_deref()
            .ok_or_else(|| "this endpoint's socket takes no faults".to_string())
    }

    fn clear(&self) {
        self.node.clear();
        if let Some(s) = &self.socket {
            s.clear();
        }
    }
}

struct AgentRoute(Arc<ChaosAgent>);

impl Deliver for AgentRoute {
    fn deliver(&self, mut incoming: Incoming) -> Result<(), DestinationGone> {
        // The router lets only the server's role through; `handle` checks it is ours.
        if incoming.from.role != PeerRole::Server {
            incoming.refuse();
            return Ok(());
        }
        let reply = match incoming.decode::<AgentCommand>() {
            Ok(cmd) => self.0.handle(&incoming.from.id, &cmd),
            Err(e) => {
                // Counted as a rejected frame by `decode`.
                AgentReply::Refused(format!("unreadable chaos command: {e}"))
            }
        };
        let _ = incoming.answer(&reply);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    struct Rig {
        signer: ServerSigner,
        server: NodeId,
        me: NodeId,
        node: Arc<NodeFaults>,
        socket: Arc<SocketFaults>,
        stats: Arc<WireStats>,
    }

    fn rig() -> Rig {
        let signer = ServerSigner::generate().expect("key");
        Rig {
            signer,
            server: NodeId::new("server-1".to_string()),
            me: NodeId::new("e-7".to_string()),
            node: Arc::new(NodeFaults::default()),
            socket: Arc::new(SocketFaults::seeded(1)),
            stats: Arc::new(WireStats::default()),
        }
    }

    fn agent(r: &Rig, allowed: bool) -> Arc<ChaosAgent> {
        Arc::new(ChaosAgent::new(
            r.me.clone(),
            allowed,
            Arc::new(ServerTrust::new(
                Some(r.server.clone()),
                r.signer.public_key(),
            )),
            r.node.clone(),
            Some(r.socket.clone()),
            r.stats.clone(),
            Duration::from_secs(60),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        ))
    }

    fn refused(reply: AgentReply, needle: &str) {
        match reply {
            AgentReply::Refused(why) => assert!(why.contains(needle), "{why}"),
            other => panic!("applied: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn signed_commands_apply_once_and_faults_end_by_themselves() {
        let r = rig();
        let a = agent(&r, true);
        let pause = AgentCommand::sign(&r.signer, &r.me, AgentFault::Pause);
        assert_eq!(
            a.handle(&r.server, &pause),
            AgentReply::Applied("pause (for at most 60 s)".into())
        );
        assert!(r.node.is_paused());
        // The same command again is a replay.
        refused(a.handle(&r.server, &pause), "already taken");
        let resume = AgentCommand::sign(&r.signer, &r.me, AgentFault::Resume);
        assert!(matches!(
            a.handle(&r.server, &resume),
            AgentReply::Applied(_)
        ));
        assert!(!r.node.is_paused());

        // A partition from the server blocks its address; it heals by itself after the
        // limit unless another fault came since.
        let cut = AgentCommand::sign(
            &r.signer,
            &r.me,
            AgentFault::Partition {
                peers: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 4, 2))],
                server: true,
            },
        );
        assert!(matches!(a.handle(&r.server, &cut), AgentReply::Applied(_)));
        let slow = AgentCommand::sign(&r.signer, &r.me, AgentFault::Slow(40));
        assert!(matches!(a.handle(&r.server, &slow), AgentReply::Applied(_)));
        assert_eq!(r.node.delay(), Duration::from_millis(40));
        tokio::time::sleep(Duration::from_secs(61)).await;
        tokio::task::yield_now().await;
        assert_eq!(r.node.delay(), Duration::ZERO, "expired");
        let s = r.stats.snapshot();
        assert_eq!((s.chaos_applied, s.chaos_refused), (4, 1));
    }

    #[test]
    fn forged_misdirected_and_disallowed_commands_are_refused_and_counted() {
        let r = rig();
        let a = agent(&r, true);
        // Signed by another key.
        let other = ServerSigner::generate().expect("key");
        refused(
            a.handle(
                &r.server,
                &AgentCommand::sign(&other, &r.me, AgentFault::Kill),
            ),
            "signature",
        );
        // A body changed after signing.
        let mut bent = AgentCommand::sign(&r.signer, &r.me, AgentFault::Heal);
        bent.order = rmp_serde::to_vec(&AgentOrder {
            to: r.me.to_string(),
            fault: AgentFault::Kill,
        })
        .expect("encode");
        refused(a.handle(&r.server, &bent), "signature");
        // Expired.
        let mut old = AgentCommand::sign(&r.signer, &r.me, AgentFault::Pause);
        old.stamp = Stamp {
            issued_unix_ms: 1_000,
            expires_unix_ms: 2_000,
        };
        old.signature = r.signer.sign(Purpose::Chaos, old.id, old.stamp, &old.order);
        refused(a.handle(&r.server, &old), "expired");
        // For another machine (a command captured and replayed elsewhere).
        let theirs = AgentCommand::sign(
            &r.signer,
            &NodeId::new("e-8".to_string()),
            AgentFault::Pause,
        );
        refused(a.handle(&r.server, &theirs), "not this machine");
        // From a server other than the pinned one.
        let pause = AgentCommand::sign(&r.signer, &r.me, AgentFault::Pause);
        refused(
            a.handle(&NodeId::new("server-2".to_string()), &pause),
            "not the server",
        );
        // Not allowed on this machine: refused, whatever the signature.
        let off = agent(&r, false);
        refused(
            off.handle(
                &r.server,
                &AgentCommand::sign(&r.signer, &r.me, AgentFault::Pause),
            ),
            "--allow-chaos",
        );
        assert!(!r.node.is_paused());
        let s = r.stats.snapshot();
        assert_eq!((s.chaos_applied, s.chaos_refused), (0, 6));
    }

    proptest::proptest! {
        /// Any bytes as a command frame, and any bytes signed by the server as an order:
        /// refused with a reason and counted, never a panic, never a fault applied.
        #[test]
        fn any_bytes_as_a_command_or_an_order_are_refused(
            frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            order in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let r = rig();
            let a = agent(&r, true);
            let decoded: Result<AgentCommand, _> = rmp_serde::from_slice(&frame);
            if let Ok(cmd) = decoded {
                // Whatever decoded carries no valid signature of this server's key.
                proptest::prop_assert!(matches!(a.handle(&r.server, &cmd), AgentReply::Refused(_)));
            }
            let id = 7;
            let stamp = Stamp::now_for(COMMAND_TTL);
            let signed = AgentCommand {
                id,
                stamp,
                signature: r.signer.sign(Purpose::Chaos, id, stamp, &order),
                order: order.clone(),
            };
            let parsed: Option<AgentOrder> = rmp_serde::from_slice(&order).ok();
            let reply = a.handle(&r.server, &signed);
            match parsed {
                // A well-formed order for this machine is the server's to give.
                Some(o) if o.to == r.me.as_str() => {}
                _ => proptest::prop_assert!(matches!(reply, AgentReply::Refused(_)), "{reply:?}"),
            }
        }
    }
}
