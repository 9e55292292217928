//! A fleet in one process: a server and N endpoints running the production actors (simulated
//! hosts as sensors) on the in-memory network or on real QUIC over loopback, with every fault
//! the chaos tooling applies: kill (silent), restart, pause (grey), slow, partition, loss,
//! duplication, heal, and a server restart. `rollcall sim`, `rollcall chaos` and the
//! fault-scenario suite all drive this.
//!
//! Time is read from tokio's clock only, so the fleet runs in paused time in tests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use crate::chaos::FormationGaps;
use anyhow::{Context, Result, bail};
use ractor::ActorRef;
use rollcall_actors::action::journal::MemJournal;
use rollcall_actors::action::sim::SimExecutor;
use rollcall_actors::desk::{DeskReply, DeskRequest, QuestionDesk};
use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
use rollcall_actors::store::ServerStore;
use rollcall_cluster::member::MemberMsg;
use rollcall_cluster::membership::{MembershipConfig, parse_cidr};
use rollcall_cluster::proto::RingsReport;
use rollcall_cluster::questions::Progress;
use rollcall_cluster::ring::RingConfig;
use rollcall_cluster::shard::{RingServer, RingServerConfig};
use rollcall_patchdist::{MemCache, Origin, PatchConfig, SharedChunks};
use rollcall_runtime::identity::{Ca, Credentials, NodeSecret, PeerRole, Validity};
use rollcall_runtime::node::{Node, NodeOptions};
use rollcall_runtime::signing::{ServerSigner, ServerTrust};
use rollcall_runtime::tls::LinkTimeouts;
use rollcall_runtime::transport::faults::SocketFaults;
use rollcall_runtime::transport::mem::MemNetwork;
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};
use rollcall_runtime::{NodeId, OperatorRole, PeerIdentity};
use serde::{Deserialize, Serialize};

use crate::compose::{self, Answering, EndpointPlan, FilesPlan};

mod acting;

/// Which transport the fleet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum SimTransport {
    /// The in-memory network (every envelope still encoded and decoded).
    Mem,
    /// Real QUIC, each endpoint on its own 127.x.y.z address.
    Quic,
}

/// How endpoints reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Topology {
    /// Rings per subnet; only leaders talk to the server.
    Ring,
    /// Hub and spoke: every endpoint talks to the server directly (the baseline).
    Star,
}

/// The question simulations ask: every machine gives exactly one row.
pub const SIM_QUESTION: &str = "Get Operating System and OS Version from all machines";

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Endpoints.
    pub endpoints: usize,
    /// Endpoints per subnet, i.e. per ring (at most 254).
    pub ring_size: u16,
    /// Transport.
    pub transport: SimTransport,
    /// Rings or hub and spoke.
    pub topology: Topology,
    /// One-way latency of every in-memory link.
    pub hop_latency: Duration,
    /// Seed of host profiles, registration jitter and the network's random choices.
    pub seed: u64,
    /// Ring timing.
    pub ring: RingConfig,
    /// Registration interval bounds.
    pub register_min: Duration,
    /// See `register_min`.
    pub register_max: Duration,
    /// Silence after which the server drops a member.
    pub offline_after: Duration,
    /// Idle timeout of links (QUIC), and of in-memory links across a cut.
    pub idle_timeout: Duration,
    /// Server shards.
    pub shards: usize,
    /// The server keeps its results, settings and actions in a store (in memory) that
    /// outlives its restarts, as a real server's file does.
    pub durable: bool,
    /// Package distribution on each endpoint (pacing, the chunk pool's size).
    pub patch: PatchConfig,
    /// Each endpoint's chunk cache cap, in bytes.
    pub chunk_cache_bytes: u64,
}

/// Endpoints a fleet start lets run ahead of the server's answered first registrations.
const START_WINDOW: usize = 2_000;

impl FleetConfig {
    /// Large simulations: probing every 2 s and registration every 30–90 s up to 10,000
    /// endpoints. Beyond that these intervals (and retries and repeated suspect reports)
    /// stretch in proportion, because one process runs
    /// every endpoint's background duties on the simulating machine's few cores: the
    /// fleet's aggregate background load (about 5,000 probes and 170 registrations a second)
    /// stays that of 10,000 endpoints, as a real fleet's does per machine. Question hops keep
    /// their timing.
    pub fn sim(endpoints: usize, ring_size: u16, transport: SimTransport, seed: u64) -> Self {
        let k = (endpoints as f64 / 10_000.0).max(1.0);
        let register_max = Duration::from_secs(90).mul_f64(k);
        FleetConfig {
            endpoints,
            ring_size,
            transport,
            topology: Topology::Ring,
            hop_latency: Duration::ZERO,
            seed,
            ring: RingConfig::simulated(endpoints),
            register_min: Duration::from_secs(30).mul_f64(k),
            register_max,
            offline_after: Duration::from_secs(3600).max(register_max * 3),
            idle_timeout: Duration::from_secs(30),
            shards: 8,
            durable: false,
            // One process runs every endpoint's distributor: their timers are paced for it
            // (each machine's nearest successors still hear of each chunk at once).
            patch: PatchConfig {
                pool_workers: 2,
                pool_queue: 16,
                tick: Duration::from_millis(100).mul_f64(k),
                view_every: Duration::from_secs(1).mul_f64(k),
                ..PatchConfig::default()
            },
            chunk_cache_bytes: 1 << 40,
        }
    }

    /// The same, with a ring's leader at most `n` chunks ahead of its neighbours from the
    /// server (see `FetchConfig::server_lead`).
    pub fn with_server_lead(mut self, n: usize) -> Self {
        self.patch.fetch.server_lead = n;
        self
    }

    /// Fault scenarios: LAN-like timing (probe every 400 ms, hop timeout 200 ms, dead after
    /// 1.5 s, registration every 5–10 s, links idle out after 3 s) and 5 ms per hop.
    pub fn chaos(endpoints: usize, ring_size: u16, transport: SimTransport, seed: u64) -> Self {
        FleetConfig {
            hop_latency: Duration::from_millis(5),
            ring: RingConfig::lan(),
            register_min: Duration::from_secs(5),
            register_max: Duration::from_secs(10),
            offline_after: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(3),
            shards: 4,
            durable: true,
            ..FleetConfig::sim(endpoints, ring_size, transport, seed)
        }
        .with_server_lead(2)
    }
}

/// The admin a fleet's own package uploads and approvals come from (not its operator, so
/// approval is by a second person).
pub fn fleet_admin() -> rollcall_runtime::PeerIdentity {
    rollcall_runtime::PeerIdentity {
        id: NodeId("fleet-admin".into()),
        role: PeerRole::Operator(OperatorRole::Admin),
    }
}

/// The operator a fleet's own requests come from.
pub fn fleet_operator() -> rollcall_runtime::PeerIdentity {
    rollcall_runtime::PeerIdentity {
        id: NodeId("fleet-operator".into()),
        role: PeerRole::Operator(OperatorRole::Operator),
    }
}

/// The address of endpoint `i`: subnet `i / ring_size` as 127.A.B.0/24, host `i % ring_size + 1`.
pub fn endpoint_ip(i: usize, ring_size: u16) -> IpAddr {
    let subnet = i / usize::from(ring_size);
    let host = (i % usize::from(ring_size)) as u8 + 1;
    let a = 1 + (subnet / 256) as u8;
    let b = (subnet % 256) as u8;
    IpAddr::V4(Ipv4Addr::new(127, a, b, host))
}

/// One endpoint of the fleet.
pub struct FleetEndpoint {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub ip: IpAddr,
    /// Its simulated host (the ground truth of its answers), shared with its sensors.
    pub host: Arc<SimulatedHost>,
    /// Its action journal (kept across its restarts, as a disk would keep it).
    pub journal: Arc<MemJournal>,
    /// What runs its actions (on `host`'s profile).
    pub executor: Arc<SimExecutor>,
    /// Its chunk cache (kept across its restarts, as a disk would keep it).
    pub chunks: Arc<MemCache>,
    node: Option<Node>,
    member: Option<ActorRef<MemberMsg>>,
    socket: Option<Arc<SocketFaults>>,
    creds: Option<Credentials>,
    secret: NodeSecret,
}

impl FleetEndpoint {
    /// Whether it runs (not killed).
    pub fn alive(&self) -> bool {
        self.node.is_some()
    }

    /// Whether it runs and is not paused.
    pub fn responsive(&self) -> bool {
        self.node.as_ref().is_some_and(|n| !n.faults().is_paused())
    }

    /// Its node, while it runs.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}

/// A server and its endpoints in this process.
pub struct Fleet {
    /// How it was built.
    pub cfg: FleetConfig,
    ca: Option<Arc<Ca>>,
    net: MemNetwork,
    server_creds: Option<Credentials>,
    server_secret: NodeSecret,
    signer: Arc<ServerSigner>,
    trust: Arc<ServerTrust>,
    server_addr: SocketAddr,
    server: Node,
    rings: RingServer,
    desk: Arc<QuestionDesk>,
    /// The origin of packages' files (its chunks outlive server restarts).
    origin: Arc<Origin>,
    origin_chunks: Arc<MemCache>,
    /// One copy of each chunk, shared by the endpoints' caches.
    shared_chunks: Arc<SharedChunks>,
    /// Packages added so far (server restarts included).
    packages_added: std::sync::atomic::AtomicU64,
    /// The server's store, kept across its restarts (`durable` fleets).
    store: Option<Arc<ServerStore>>,
    /// Fronts (operator-facing nodes) that serve the desk and ring admin too.
    fronts: Vec<Node>,
    /// The endpoints, in creation order.
    pub endpoints: Vec<FleetEndpoint>,
    by_id: HashMap<NodeId, usize>,
    /// Applied to endpoint `i`'s member settings as it starts (tests that set a member
    /// apart, such as a compromised one).
    adjust: Option<MemberAdjust>,
}

/// See [`Fleet::adjust_members`].
pub type MemberAdjust =
    Arc<dyn Fn(usize, &mut rollcall_cluster::member::MemberConfig) + Send + Sync>;

fn link_timeouts(cfg: &FleetConfig) -> LinkTimeouts {
    let idle = cfg.idle_timeout.as_millis() as u64;
    LinkTimeouts {
        keep_alive_ms: (idle / 4).max(50),
        idle_timeout_ms: idle.max(200),
        ..LinkTimeouts::default()
    }
}

impl Fleet {
    /// Starts the server and every endpoint; `progress(started)` is called as they start.
    pub async fn start(cfg: FleetConfig, mut progress: impl FnMut(usize)) -> Result<Fleet> {
        if cfg.endpoints == 0 {
            bail!("a fleet needs at least 1 endpoint");
        }
        if usize::from(cfg.ring_size) * 255 * 256 < cfg.endpoints {
            bail!(
                "too many endpoints for rings of {}: use a larger ring size",
                cfg.ring_size
            );
        }
        let net = MemNetwork::new(cfg.seed, cfg.idle_timeout);
        net.set_default_latency(cfg.hop_latency);
        let (ca, server_creds) = match cfg.transport {
            SimTransport::Mem => (None, None),
            SimTransport::Quic => {
                let ca = Arc::new(Ca::generate("rollcall sim CA")?);
                let c = ca.issue(PeerRole::Server, None, Validity::default())?;
                (Some(ca), Some(c))
            }
        };
        let server_secret = NodeSecret::generate();
        // One signing key for the fleet's life (the server keeps it across restarts, as a
        // real server keeps it beside its CA), and one pin that every simulated endpoint
        // shares: verification is memoised per process (see `ServerTrust`).
        let signer = Arc::new(ServerSigner::generate()?);
        let server_id = match &server_creds {
            Some(c) => c.identity.id.clone(),
            None => NodeId("server".into()),
        };
        let trust = Arc::new(ServerTrust::new(Some(server_id), signer.public_key()));
        let bind = match cfg.transport {
            SimTransport::Mem => "127.0.0.1:7000".parse()?,
            SimTransport::Quic => "127.0.0.1:0".parse()?,
        };
        let store = if cfg.durable {
            Some(Arc::new(ServerStore::in_memory(100)?))
        } else {
            None
        };
        let origin_chunks = Arc::new(MemCache::new(u64::MAX));
        let (server, services) = Fleet::start_server(
            &cfg,
            &net,
            server_creds.as_ref(),
            &server_secret,
            bind,
            signer.clone(),
            (store.clone(), origin_chunks.clone()),
        )
        .await?;
        let server_addr = server.local_addr();
        let mut fleet = Fleet {
            cfg,
            ca,
            net,
            server_creds,
            server_secret,
            signer,
            trust,
            server_addr,
            server,
            rings: services.rings,
            desk: services.desk,
            origin: services.origin,
            origin_chunks,
            shared_chunks: Arc::new(SharedChunks::default()),
            packages_added: std::sync::atomic::AtomicU64::new(0),
            store,
            fronts: Vec::new(),
            endpoints: Vec::new(),
            by_id: HashMap::new(),
            adjust: None,
        };
        let n = fleet.cfg.endpoints;
        fleet.endpoints.reserve(n);
        for i in 0..n {
            let ip = endpoint_ip(i, fleet.cfg.ring_size);
            let profile = HostProfile::from_seed(
                fleet
                    .cfg
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(i as u64),
                Some(ip),
            );
            let creds = match &fleet.ca {
                Some(ca) => Some(ca.issue(PeerRole::Endpoint, None, Validity::default())?),
                None => None,
            };
            let id = match &creds {
                Some(c) => c.identity.id.clone(),
                None => NodeId(format!("e{i:07}").into()),
            };
            fleet.by_id.insert(id.clone(), i);
            let host = Arc::new(SimulatedHost::new(profile));
            let chunks = Arc::new(MemCache::sharing(
                fleet.cfg.chunk_cache_bytes,
                fleet.shared_chunks.clone(),
            ));
            fleet.endpoints.push(FleetEndpoint {
                id,
                ip,
                chunks,
                journal: Arc::new(MemJournal::default()),
                executor: Arc::new(SimExecutor::new(host.clone())),
                host,
                node: None,
                member: None,
                socket: None,
                creds,
                secret: NodeSecret::generate(),
            });
            fleet.launch(i).await?;
            progress(i + 1);
            // Machines boot over a while, not in one instant: keep the endpoints that have
            // started but not yet registered within what the server takes in, so one
            // process starting 100,000 does not bury its own server in registrations that
            // time out and are retried.
            if (i + 1) % 500 == 0 {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while i + 1 > fleet.rings().joined() + START_WINDOW
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(fleet)
    }

    async fn start_server(
        cfg: &FleetConfig,
        net: &MemNetwork,
        creds: Option<&Credentials>,
        secret: &NodeSecret,
        bind: SocketAddr,
        signer: Arc<ServerSigner>,
        (store, chunks): (Option<Arc<ServerStore>>, Arc<MemCache>),
    ) -> Result<(Node, compose::ServerServices)> {
        let opts = NodeOptions {
            link_event_capacity: 65_536,
            ..NodeOptions::default()
        };
        let server = match creds {
            None => {
                let id = PeerIdentity {
                    id: NodeId("server".into()),
                    role: PeerRole::Server,
                };
                Node::start(net.bind(bind, id)?, opts).await?
            }
            Some(c) => {
                let t = QuicTransport::bind(
                    bind,
                    c,
                    secret,
                    QuicOptions {
                        timeouts: link_timeouts(cfg),
                        ..QuicOptions::default()
                    },
                )?;
                Node::start(t, opts).await?
            }
        };
        let isolated = match cfg.topology {
            Topology::Ring => Vec::new(),
            Topology::Star => vec![parse_cidr("0.0.0.0/0").map_err(anyhow::Error::msg)?],
        };
        let membership = MembershipConfig {
            isolated,
            offline_after: cfg.offline_after,
            ..MembershipConfig::default()
        };
        let rcfg = RingServerConfig::for_ring(&cfg.ring, membership, cfg.shards);
        let services =
            compose::start_server_services_with(&server, rcfg, store, None, signer, chunks).await?;
        Ok((server, services))
    }

    /// Starts endpoint `i` (again), with its identity, at its address.
    async fn launch(&mut self, i: usize) -> Result<()> {
        let cfg = &self.cfg;
        let ep = &self.endpoints[i];
        let (node, socket) = match &ep.creds {
            None => {
                let id = PeerIdentity {
                    id: ep.id.clone(),
                    role: PeerRole::Endpoint,
                };
                let t = self.net.bind(SocketAddr::new(ep.ip, 7000), id)?;
                (Node::start(t, NodeOptions::default()).await?, None)
            }
            Some(creds) => {
                let faults = Arc::new(SocketFaults::seeded(cfg.seed ^ (i as u64) << 20));
                let t = QuicTransport::bind(
                    SocketAddr::new(ep.ip, 0),
                    creds,
                    &ep.secret,
                    QuicOptions {
                        timeouts: link_timeouts(cfg),
                        faults: Some(faults.clone()),
                        ..QuicOptions::default()
                    },
                )
                .with_context(|| format!("binding {}", ep.ip))?;
                (Node::start(t, NodeOptions::default()).await?, Some(faults))
            }
        };
        let host: Arc<dyn rollcall_actors::sensors::HostView> = ep.host.clone();
        let hostname = ep.host.profile().hostname.clone();
        // What was running when it stopped is interrupted, as on a real machine's restart.
        ep.journal.restarted();
        let answering = Answering::Acting {
            host,
            journal: ep.journal.clone(),
            executor: ep.executor.clone(),
            files: Some(Box::new(FilesPlan {
                cache: ep.chunks.clone(),
                cfg: cfg.patch.clone(),
                work_dir: None,
            })),
            // A simulated host answers from its seeded history.
            history: None,
        };
        let adjust = self.adjust.clone();
        let member = compose::start_endpoint_with(
            &node,
            EndpointPlan {
                server: self.server_addr,
                advertise: node.local_addr(),
                hostname,
                ring: cfg.ring,
                register_min: cfg.register_min,
                register_max: cfg.register_max,
                server_timeout: Duration::from_secs(5),
                seed: cfg.seed ^ i as u64,
                answering,
                trust: self.trust.clone(),
            },
            |mc| {
                if let Some(f) = adjust {
                    f(i, mc);
                }
            },
        )
        .await?;
        let ep = &mut self.endpoints[i];
        ep.node = Some(node);
        ep.member = Some(member);
        ep.socket = socket;
        Ok(())
    }

    /// What endpoint `i`'s ring actor reports about itself, while it runs.
    pub async fn member_status(&self, i: usize) -> Option<rollcall_cluster::member::MemberStatus> {
        rollcall_cluster::member::status(self.endpoints[i].member.as_ref()?).await
    }

    /// The server node.
    pub fn server(&self) -> &Node {
        &self.server
    }

    /// The server's ring service.
    pub fn rings(&self) -> &RingServer {
        &self.rings
    }

    /// The server's question desk.
    pub fn desk(&self) -> &Arc<QuestionDesk> {
        &self.desk
    }

    /// The index of the endpoint with this id.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// How many rings the fleet should form.
    pub fn expected_rings(&self) -> usize {
        match self.cfg.topology {
            Topology::Ring => self.cfg.endpoints.div_ceil(usize::from(self.cfg.ring_size)),
            Topology::Star => 0,
        }
    }

    /// Indices of the endpoints in ring `r` (creation order is ring order of addresses).
    pub fn ring_members(&self, r: usize) -> std::ops::Range<usize> {
        let size = usize::from(self.cfg.ring_size);
        let start = (r * size).min(self.endpoints.len());
        start..((r + 1) * size).min(self.endpoints.len())
    }

    /// Serves the desk and ring admin on `front` too (an operator-facing node).
    pub fn add_front(&mut self, front: Node) {
        front.router().register(
            rollcall_actors::desk::DESK,
            rollcall_runtime::Roles::OPERATORS,
            rollcall_actors::desk::route(self.desk.clone()),
        );
        self.rings.serve_admin_on(&front);
        // `rollcall status` and the metrics listener at the front show the fleet's server.
        front.set_figures(Arc::new(crate::figures::ServerFigures {
            rings: self.rings.clone(),
            desk: self.desk.clone(),
            origin: self.origin.clone(),
        }));
        self.fronts.push(front);
    }

    /// The fleet's CA (QUIC fleets only).
    pub fn ca(&self) -> Option<&Arc<Ca>> {
        self.ca.as_ref()
    }

    /// Kills endpoint `i` silently: nothing leaves or reaches it any more (not even a close),
    /// so its peers notice only by timeouts. Returns false if it was not running.
    pub fn kill(&mut self, i: usize) -> bool {
        let ep = &mut self.endpoints[i];
        let Some(node) = ep.node.take() else {
            return false;
        };
        match &ep.socket {
            Some(s) => s.set_blackhole(true),
            None => self.net.crash(ep.ip),
        }
        // The node's supervisor stops the member with everything else on it.
        ep.member = None;
        node.shutdown();
        true
    }

    /// Sets what each endpoint's member settings get as it (re)starts; restart an endpoint
    /// for it to take effect.
    pub fn adjust_members(&mut self, adjust: MemberAdjust) {
        self.adjust = Some(adjust);
    }

    /// Restarts endpoint `i` with its identity (killing it first if it runs).
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.launch(i).await
    }

    /// Pauses (a grey node: connections kept, nothing handled) or resumes endpoint `i`.
    pub fn pause(&self, i: usize, paused: bool) -> bool {
        match &self.endpoints[i].node {
            Some(n) => {
                n.faults().set_paused(paused);
                true
            }
            None => false,
        }
    }

    /// Delays every envelope in and out of endpoint `i` by `delay` (zero clears).
    pub fn slow(&self, i: usize, delay: Duration) -> bool {
        match &self.endpoints[i].node {
            Some(n) => {
                n.faults().set_delay(delay);
                true
            }
            None => false,
        }
    }

    /// Loses a share `p` of what endpoint `i` sends and receives (in memory: a lost frame is
    /// resent after a delay, as QUIC would; on QUIC: datagrams).
    pub fn loss(&self, i: usize, p: f64) {
        let ep = &self.endpoints[i];
        match &ep.socket {
            Some(s) => s.set_loss(p),
            None => self.net.set_host_loss(ep.ip, p),
        }
    }

    /// Duplicates a share `p` of what endpoint `i` sends and receives (in memory: casts
    /// delivered twice; on QUIC: datagrams sent twice).
    pub fn duplicate(&self, i: usize, p: f64) {
        let ep = &self.endpoints[i];
        match &ep.socket {
            Some(s) => s.set_duplication(p),
            None => self.net.set_host_duplication(ep.ip, p),
        }
    }

    /// Cuts endpoints `a` off from endpoints `b` (and from the server if `server_in_b`).
    pub fn partition(&self, a: &[usize], b: &[usize], server_in_b: bool) {
        let ips =
            |s: &[usize]| -> Vec<IpAddr> { s.iter().map(|&i| self.endpoints[i].ip).collect() };
        let (a_ips, mut b_ips) = (ips(a), ips(b));
        if server_in_b {
            b_ips.push(self.server_addr.ip());
        }
        match self.cfg.transport {
            SimTransport::Mem => self.net.partition(&a_ips, &b_ips),
            SimTransport::Quic => {
                for &i in a {
                    if let Some(s) = &self.endpoints[i].socket {
                        b_ips.iter().for_each(|ip| s.block(*ip));
                    }
                }
                for &i in b {
                    if let Some(s) = &self.endpoints[i].socket {
                        a_ips.iter().for_each(|ip| s.block(*ip));
                    }
                }
            }
        }
    }

    /// Clears every fault on running endpoints and the network (killed endpoints stay down).
    pub fn heal(&self) {
        self.net.clear_faults();
        for ep in &self.endpoints {
            ep.chunks.tamper_served(false);
            if let Some(n) = &ep.node {
                n.faults().clear();
            }
            if let Some(s) = &ep.socket {
                s.clear();
            }
        }
    }

    /// Clears every fault and restarts killed endpoints: a clean fleet for the next scenario.
    pub async fn reset(&mut self) -> Result<()> {
        self.heal();
        for i in 0..self.endpoints.len() {
            if !self.endpoints[i].alive() {
                self.launch(i).await?;
            }
        }
        Ok(())
    }

    /// Restarts the server at its address. Open questions are lost with it (as they are
    /// when a server without a result store restarts); endpoints re-register and leaders
    /// link again.
    pub async fn restart_server(&mut self) -> Result<()> {
        match self.cfg.transport {
            SimTransport::Mem => self.net.crash(self.server_addr.ip()),
            SimTransport::Quic => {}
        }
        self.server
            .shutdown_and_wait(Duration::from_millis(200))
            .await;
        let (server, services) = Fleet::start_server(
            &self.cfg,
            &self.net,
            self.server_creds.as_ref(),
            &self.server_secret,
            self.server_addr,
            self.signer.clone(),
            (self.store.clone(), self.origin_chunks.clone()),
        )
        .await?;
        self.server = server;
        self.rings = services.rings;
        self.desk = services.desk;
        self.origin = services.origin;
        let fronts = std::mem::take(&mut self.fronts);
        for f in fronts {
            self.add_front(f);
        }
        Ok(())
    }

    /// The server's view of every ring.
    pub async fn report(&self) -> RingsReport {
        self.rings.report(None).await
    }

    /// Whether every ring has formed: all running endpoints registered, each ring's online
    /// members one chain (first leads forward, last leads backward, two leader links),
    /// nobody suspect. Killed endpoints must be offline or gone.
    pub fn one_chain_each(&self, report: &RingsReport) -> bool {
        self.formation_gaps(report).formed()
    }

    /// What still keeps the rings from forming (see [`Fleet::one_chain_each`]), counted: for
    /// progress lines while a large fleet forms, and for the reason when it does not.
    pub fn formation_gaps(&self, report: &RingsReport) -> FormationGaps {
        let alive = self.endpoints.iter().filter(|e| e.alive()).count();
        FormationGaps::of(report, alive)
    }

    /// Waits until [`Fleet::one_chain_each`] holds, polling every `every`; returns how long it
    /// took, or `None` after `timeout`.
    pub async fn wait_formed(&self, timeout: Duration, every: Duration) -> Option<Duration> {
        let t0 = tokio::time::Instant::now();
        loop {
            let r = self.report().await;
            if self.one_chain_each(&r) {
                return Some(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Asks `text` through the desk, as an operator; returns the question's id.
    pub async fn ask(&self, text: &str, ttl: Duration) -> Result<u64> {
        match self
            .desk
            .serve(
                DeskRequest::Ask {
                    text: text.into(),
                    ttl_ms: Some(ttl.as_millis() as u64),
                },
                &fleet_operator(),
            )
            .await
        {
            DeskReply::Asked { id, .. } => Ok(id),
            other => bail!("ask failed: {other:?}"),
        }
    }

    /// Where question `id` stands.
    pub fn progress(&self, id: u64) -> Option<Progress> {
        self.rings.progress(id)
    }

    /// What the profiles say [`SIM_QUESTION`]'s rows are over the endpoints in `who`.
    pub fn ground_truth<'a>(
        &self,
        who: impl IntoIterator<Item = &'a NodeId>,
    ) -> std::collections::BTreeMap<Vec<String>, u64> {
        let mut t = std::collections::BTreeMap::new();
        for id in who {
            if let Some(&i) = self.by_id.get(id) {
                let p = self.endpoints[i].host.profile();
                *t.entry(vec![p.os.clone(), p.os_version.clone()])
                    .or_default() += 1;
            }
        }
        t
    }

    /// Stops every node.
    pub async fn shutdown(&mut self) {
        for ep in &mut self.endpoints {
            if let Some(m) = ep.member.take() {
                m.stop(None);
            }
            if let Some(n) = ep.node.take() {
                n.shutdown();
            }
        }
        for f in &self.fronts {
            f.shutdown();
        }
        self.server
            .shutdown_and_wait(Duration::from_millis(500))
            .await;
    }
}
