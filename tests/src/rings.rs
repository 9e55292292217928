//! A server and ring endpoints on real QUIC, each endpoint on its own 127.0.N.x address with a
//! fault-injecting socket, so tests can kill (silently), restart and firewall them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use rollcall_cluster::member::{EvaluatorHandle, MemberMsg, MemberStatus, status};
use rollcall_cluster::membership::MembershipConfig;
use rollcall_cluster::proto::RingsReport;
use rollcall_cluster::ring::RingConfig;
use rollcall_cluster::shard::{RingServer, RingServerConfig};
use rollcall_runtime::identity::{Ca, Credentials, NodeSecret, PeerRole};
use rollcall_runtime::node::{Node, NodeOptions};
use rollcall_runtime::signing::{ServerSigner, ServerTrust};
use rollcall_runtime::tls::LinkTimeouts;
use rollcall_runtime::transport::faults::SocketFaults;
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};

use crate::creds;
use rollcall::compose::{self, Answering, EndpointPlan};

/// Ring timing for the loopback tests, where 60 debug-built endpoints share two cores: probe
/// every 200 ms, hop timeout 400 ms, dead after 1 s, predecessor timeout 1 s.
pub fn test_ring_config() -> RingConfig {
    RingConfig::loopback_tests()
}

/// Registration every 1–2 s in tests.
pub const REGISTER_MAX: Duration = Duration::from_secs(2);

/// Link timeouts for ring tests: keep-alive 300 ms, idle 2 s.
pub const RING_TIMEOUTS: LinkTimeouts = LinkTimeouts {
    keep_alive_ms: 300,
    idle_timeout_ms: 2_000,
    initial_rtt_ms: rollcall_runtime::tls::DEFAULT_INITIAL_RTT_MS,
    max_ack_delay_ms: rollcall_runtime::tls::DEFAULT_MAX_ACK_DELAY_MS,
};

/// One endpoint of a [`RingCluster`].
pub struct Endpoint {
    /// Its node.
    pub node: Node,
    /// Its ring actor.
    pub member: ActorRef<MemberMsg>,
    /// Faults on its socket.
    pub faults: Arc<SocketFaults>,
    /// Its identity (kept for restarts).
    pub creds: Credentials,
    /// Its node secret (kept for restarts).
    pub secret: NodeSecret,
    /// Its address.
    pub ip: IpAddr,
    /// Whether it is running.
    pub alive: bool,
    /// How it answers questions (kept for restarts).
    pub evaluator: Option<EvaluatorHandle>,
    /// What its probe actor recorded (casts, and work handed over at registration).
    pub recorded: tokio::sync::mpsc::UnboundedReceiver<(rollcall_runtime::PeerIdentity, u32)>,
}

/// A server with its ring service and endpoints.
pub struct RingCluster {
    /// The CA.
    pub ca: Arc<Ca>,
    /// The server node.
    pub server: Node,
    /// Its ring service.
    pub rings: RingServer,
    /// Endpoints in creation order.
    pub endpoints: Vec<Endpoint>,
    /// The server's signing key.
    pub signer: Arc<ServerSigner>,
    /// The pin every endpoint holds (the server's id and public signing key).
    pub trust: Arc<ServerTrust>,
}

impl RingCluster {
    /// A server on 127.0.0.1 with `membership` settings, and no endpoints yet.
    pub async fn start(membership: MembershipConfig) -> RingCluster {
        RingCluster::start_with(membership, None).await
    }

    /// Like [`RingCluster::start`], with a backlog of work for returning endpoints.
    pub async fn start_with(
        membership: MembershipConfig,
        backlog: Option<Arc<dyn rollcall_cluster::membership::Backlog>>,
    ) -> RingCluster {
        let ca = crate::ca();
        let server_creds = creds(&ca, PeerRole::Server);
        let t = QuicTransport::bind(
            "127.0.0.1:0".parse().expect("addr"),
            &server_creds,
            &NodeSecret::generate(),
            QuicOptions {
                timeouts: RING_TIMEOUTS,
                ..Default::default()
            },
        )
        .expect("bind server");
        let server = Node::start(t, NodeOptions::default())
            .await
            .expect("server");
        let cfg = RingServerConfig {
            tick: Duration::from_millis(100),
            ..RingServerConfig::for_ring(&test_ring_config(), membership, 4)
        };
        let signer = Arc::new(ServerSigner::generate().expect("signing key"));
        let trust = Arc::new(ServerTrust::new(
            Some(server_creds.identity.id.clone()),
            signer.public_key(),
        ));
        let rings = compose::start_server_services(&server, cfg, None, backlog, signer.clone())
            .await
            .expect("ring server")
            .rings;
        RingCluster {
            ca,
            server,
            rings,
            endpoints: Vec::new(),
            signer,
            trust,
        }
    }

    /// Adds an endpoint at `ip`; returns its index.
    pub async fn add(&mut self, ip: &str) -> usize {
        self.add_with(ip, None).await
    }

    /// Adds a compromised endpoint at `ip` that answers with `evaluator` and changes the
    /// answers it passes on as `tamper` says.
    pub async fn add_compromised(
        &mut self,
        ip: &str,
        evaluator: Option<EvaluatorHandle>,
        tamper: rollcall_cluster::relay::tamper::Tamper,
    ) -> usize {
        self.add_member(ip, evaluator, Some(tamper)).await
    }

    /// Adds an endpoint at `ip` that answers questions with `evaluator`.
    pub async fn add_with(&mut self, ip: &str, evaluator: Option<EvaluatorHandle>) -> usize {
        self.add_member(ip, evaluator, None).await
    }

    async fn add_member(
        &mut self,
        ip: &str,
        evaluator: Option<EvaluatorHandle>,
        tamper: Option<rollcall_cluster::relay::tamper::Tamper>,
    ) -> usize {
        let creds = creds(&self.ca, PeerRole::Endpoint);
        let ep = self
            .launch_with(
                creds,
                NodeSecret::generate(),
                ip.parse().expect("ip"),
                Arc::new(SocketFaults::default()),
                evaluator,
                tamper,
            )
            .await;
        self.endpoints.push(ep);
        self.endpoints.len() - 1
    }

    async fn launch(
        &self,
        creds: Credentials,
        secret: NodeSecret,
        ip: IpAddr,
        faults: Arc<SocketFaults>,
        evaluator: Option<EvaluatorHandle>,
    ) -> Endpoint {
        self.launch_with(creds, secret, ip, faults, evaluator, None)
            .await
    }

    async fn launch_with(
        &self,
        creds: Credentials,
        secret: NodeSecret,
        ip: IpAddr,
        faults: Arc<SocketFaults>,
        evaluator: Option<EvaluatorHandle>,
        tamper: Option<rollcall_cluster::relay::tamper::Tamper>,
    ) -> Endpoint {
        let t = QuicTransport::bind(
            SocketAddr::new(ip, 0),
            &creds,
            &secret,
            QuicOptions {
                timeouts: RING_TIMEOUTS,
                faults: Some(faults.clone()),
                ..Default::default()
            },
        )
        .expect("bind endpoint");
        let node = Node::start(t, NodeOptions::default())
            .await
            .expect("endpoint");
        let recorded = crate::start_probe(&node).await;
        let member = compose::start_endpoint_with(
            &node,
            EndpointPlan {
                server: self.server.local_addr(),
                advertise: node.local_addr(),
                hostname: format!("host-{ip}"),
                ring: test_ring_config(),
                register_min: Duration::from_secs(1),
                register_max: REGISTER_MAX,
                server_timeout: Duration::from_secs(5),
                seed: u64::from(match ip {
                    IpAddr::V4(v) => u32::from(v),
                    IpAddr::V6(_) => 0,
                }),
                answering: match &evaluator {
                    Some(e) => Answering::Evaluator(e.clone()),
                    None => Answering::Nothing,
                },
                trust: self.trust.clone(),
            },
            |mc| mc.tamper = tamper,
        )
        .await
        .expect("member");
        Endpoint {
            node,
            member,
            faults,
            creds,
            secret,
            ip,
            alive: true,
            evaluator,
            recorded,
        }
    }

    /// Waits until endpoint `i` has registered (it takes questions from then on).
    pub async fn registered(&self, i: usize) {
        crate::eventually(
            "the endpoint registered",
            Duration::from_secs(20),
            || async { (self.status(i).await.registrations > 0).then_some(()) },
        )
        .await;
    }

    /// Kills endpoint `i` silently: its socket drops everything first, so no close frame
    /// reaches anyone; peers must notice by timeouts.
    pub fn kill(&mut self, i: usize) {
        let ep = &mut self.endpoints[i];
        ep.faults.set_blackhole(true);
        // The node's supervisor stops the member with everything else on it.
        ep.node.shutdown();
        ep.alive = false;
    }

    /// Restarts endpoint `i` with its identity, at its address (a new port).
    pub async fn restart(&mut self, i: usize) {
        let (creds, secret, ip, evaluator) = {
            let ep = &self.endpoints[i];
            (
                ep.creds.clone(),
                ep.secret.clone(),
                ep.ip,
                ep.evaluator.clone(),
            )
        };
        self.endpoints[i] = self
            .launch(
                creds,
                secret,
                ip,
                Arc::new(SocketFaults::default()),
                evaluator,
            )
            .await;
    }

    /// Status of endpoint `i`'s ring actor.
    pub async fn status(&self, i: usize) -> MemberStatus {
        status(&self.endpoints[i].member)
            .await
            .expect("member status")
    }

    /// The server's view of every ring.
    pub async fn report(&self) -> RingsReport {
        self.rings.report(None).await
    }

    /// Index of the endpoint with this id.
    pub fn index_of(&self, id: &rollcall_runtime::NodeId) -> usize {
        self.endpoints
            .iter()
            .position(|e| &e.node.identity().id == id)
            .expect("known endpoint")
    }
}

/// Whether `report` shows `expected` rings of `size` members each, every one `ok`, each
/// ring with exactly its first member leading forward, its last leading backward, and 2
/// leader links.
pub fn well_formed(report: &RingsReport, expected: usize, size: usize) -> bool {
    formed(report, expected, size)
        && report.rings.iter().all(|r| {
            r.members
                .iter()
                .all(|m| m.health == rollcall_cluster::proto::Health::Ok)
        })
}

/// Like [`well_formed`], but members may be slow (under load, probes answered late are):
/// the shape — sizes, leaders, leader links — and nobody suspect or offline.
pub fn formed(report: &RingsReport, expected: usize, size: usize) -> bool {
    use rollcall_cluster::proto::Health;
    report.rings.len() == expected
        && report.rings.iter().all(|r| {
            let n = r.members.len();
            n == size
                && r.members
                    .iter()
                    .all(|m| matches!(m.health, Health::Ok | Health::Slow))
                && r.leader_links == 2
                && r.members
                    .iter()
                    .enumerate()
                    .all(|(i, m)| m.leads.forward == (i == 0) && m.leads.backward == (i == n - 1))
        })
}

/// The server's connection counts, then one line per ring (see [`rollcall::chaos::shape`]).
pub fn shape(report: &RingsReport) -> String {
    format!(
        "server connections {}, ring connections {}\n{}",
        report.server_connections,
        report.ring_connections,
        rollcall::chaos::shape(report)
    )
}
