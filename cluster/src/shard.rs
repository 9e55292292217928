//! The server side of the rings: shards that own rings (each ring's peering range hashes to
//! one shard), the registrar that routes requests to them, and the operators' ring view.
//!
//! Shards hold soft state: a restarted shard (its supervisor restarts it on failure) is
//! rebuilt from the registrations of the next interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rollcall_runtime::node::{CallError, Deliver, DestinationGone, Incoming, LinkEvent, Node};
use rollcall_runtime::signing::ServerSigner;
use rollcall_runtime::supervisor::{
    ChildSpec, Restart, RestartIntensity, Supervisor, SupervisorArgs,
};
use rollcall_runtime::{NodeId, OperatorRole};
use sha2::{Digest, Sha256};

use crate::error::{AskError, RingServiceError};
use crate::membership::{Backlog, Membership, MembershipConfig};
use crate::proto::{
    AdminRequest, MEMBER, MemberReport, MemberRequest, REGISTRY, RING_ADMIN, RegistrationReply,
    RingId, RingReport, RingsReport, ServerRequest,
};
use crate::questions::{Progress, QuestionStore, QuestionSummary};
use crate::relay::{ChainWalk, Outcome, Step};
use crate::ring::RingConfig;

mod fan_out;

/// Settings of the server's ring service.
#[derive(Debug, Clone)]
pub struct RingServerConfig {
    /// Peering and eviction.
    pub membership: MembershipConfig,
    /// How many shards own rings.
    pub shards: usize,
    /// How often shards check suspicion and silence timeouts.
    pub tick: Duration,
    /// How long a suspect has to answer the server's direct probe.
    pub probe_timeout: Duration,
    /// A member the server hands a question must acknowledge it within this time, and
    /// answer each of the server's probes while it works within it; else the server gives up
    /// on it (asking the next member who has not answered).
    pub hop_timeout: Duration,
    /// How often the server probes a member that acknowledged its question while the member
    /// works on it (members check their successors at their probe interval the same way).
    pub watch_interval: Duration,
    /// How long the server may take to dial a member it asks directly.
    pub dial_timeout: Duration,
    /// How long a member that failed a question is skipped before it is asked again.
    pub retry_interval: Duration,
}

impl Default for RingServerConfig {
    fn default() -> Self {
        RingServerConfig {
            membership: MembershipConfig::default(),
            shards: 4,
            tick: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(5),
            hop_timeout: Duration::from_secs(1),
            watch_interval: Duration::from_secs(2),
            dial_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_secs(1),
        }
    }
}

impl RingServerConfig {
    /// The server's side of rings with `ring` timing: the fan-out expects a member to take
    /// a question within the ring's hop timeout, checks a chain's first member as often as
    /// members check their successors (but at least every two hop timeouts: a question's
    /// timing is never stretched with a large fleet's probe interval), skips a member that
    /// cannot be dialed within two hop timeouts (its neighbours route past it the same
    /// way), asks a failed member again after the ring's retry interval (at most 5 s), and
    /// gives a suspect the ring's dead timeout to answer the server's direct probe.
    pub fn for_ring(ring: &RingConfig, membership: MembershipConfig, shards: usize) -> Self {
        RingServerConfig {
            membership,
            shards,
            probe_timeout: ring.dead_timeout,
            hop_timeout: ring.hop_timeout,
            watch_interval: ring.probe_interval.min(ring.hop_timeout * 2),
            dial_timeout: ring.dial_timeout.min(ring.hop_timeout * 2),
            retry_interval: ring.retry_interval.min(Duration::from_secs(5)),
            ..RingServerConfig::default()
        }
    }
}

type ShardTable = Arc<RwLock<Vec<Option<ActorRef<ShardMsg>>>>>;

/// Messages of a [`ServerShard`].
pub enum ShardMsg {
    /// A request from an endpoint.
    Request {
        /// What it asks.
        req: ServerRequest,
        /// The call, to answer (boxed: the other messages are a few words).
        incoming: Box<Incoming>,
    },
    /// The server's direct probe of a suspect finished.
    ProbeResult {
        /// Who.
        id: NodeId,
        /// Did it answer in time?
        answered: bool,
    },
    /// A connection to this endpoint closed.
    LinkDown(NodeId),
    /// Link events were missed: drop the leadership of every leader without a live link.
    CheckLeaders,
    /// Timer.
    Tick,
    /// Report rings (all, or those the filter names).
    Report {
        /// Ring id or an address inside one.
        filter: Option<String>,
        /// Where to answer.
        reply: RpcReplyPort<(Vec<RingReport>, Vec<MemberReport>)>,
    },
}

/// Arguments of a [`ServerShard`].
#[derive(Clone)]
pub struct ShardArgs {
    index: usize,
    table: ShardTable,
    cfg: RingServerConfig,
    node: Node,
    backlog: Option<Arc<dyn Backlog>>,
    questions: Arc<QuestionStore>,
    extras: Extras,
    joined: Arc<AtomicUsize>,
    registrations: Arc<std::sync::atomic::AtomicU64>,
}

/// Items handed to every endpoint at every registration (sensor configuration).
type Extras = Arc<RwLock<Vec<crate::proto::Handoff>>>;

/// One shard: owns the rings whose ids hash to it.
#[derive(Debug, Clone, Copy)]
pub struct ServerShard;

/// A shard's state.
pub struct ShardState {
    core: Membership,
    args: ShardArgs,
    /// When this shard started: until `offline_after` has passed it may not have heard
    /// from every member (a restarted server), and says so in its replies.
    started: std::time::Instant,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor for ServerShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        rollcall_runtime::sync::write(&args.table)[args.index] = Some(myself.clone());
        myself.send_interval(args.cfg.tick, || ShardMsg::Tick);
        Ok(ShardState {
            core: Membership::new(args.cfg.membership.clone()),
            args,
            started: now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        st: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Request { req, mut incoming } => {
                let from = incoming.from.id.clone();
                match req {
                    ServerRequest::Register(reg) => {
                        st.args.registrations.fetch_add(1, Ordering::Relaxed);
                        let r = st.core.register(&from, &reg, now());
                        if r.returning == Some(None) {
                            st.args.joined.fetch_add(1, Ordering::Relaxed);
                        }
                        let mut handoffs = match (&r.returning, &st.args.backlog) {
                            (Some(since), Some(b)) => b.missed(&from, r.ring.as_ref(), *since),
                            _ => Vec::new(),
                        };
                        // Open questions whose fan-out went on without it.
                        handoffs.extend(st.args.questions.missed(&from));
                        handoffs.extend(
                            rollcall_runtime::sync::read(&st.args.extras)
                                .iter()
                                .cloned(),
                        );
                        if let Some(since) = r.returning {
                            tracing::info!(node = %from, ring = ?r.ring, returning = since.is_some(), "endpoint joined");
                        }
                        incoming.answer(&RegistrationReply {
                            ring: r.ring,
                            members: r.members,
                            handoffs,
                            answer_key: st.args.questions.answer_key_for(&from).to_vec(),
                            warming: now().saturating_duration_since(st.started)
                                < st.args.cfg.membership.offline_after,
                        })?;
                    }
                    ServerRequest::Suspect { suspect, reason } => {
                        incoming.answer(&())?;
                        if let Some(order) = st.core.suspect(&from, &suspect, reason, now()) {
                            tracing::info!(%suspect, reporter = %from, ?reason, "suspect; probing it directly");
                            let node = st.args.node.clone();
                            let t = st.args.cfg.probe_timeout;
                            let me = myself.clone();
                            tokio::spawn(async move {
                                // Under packet loss one probe on a new connection can fail
                                // although the member is alive: probe again (each attempt
                                // its own connection) before leaving it to the suspicion
                                // timeout. Each step has its own timeout, so the link is
                                // always closed.
                                let mut answered = false;
                                for _ in 0..SUSPECT_PROBES {
                                    answered = match node.connect_once(order.member.addr, t).await {
                                        Ok(link) => {
                                            let r: Result<(), CallError> =
                                                link.call(MEMBER, &MemberRequest::Probe, t).await;
                                            link.close();
                                            r.is_ok()
                                        }
                                        Err(_) => false,
                                    };
                                    if answered {
                                        break;
                                    }
                                }
                                let _ = me.send_message(ShardMsg::ProbeResult {
                                    id: order.member.id,
                                    answered,
                                });
                            });
                        }
                    }
                    ServerRequest::Leader(sides) => {
                        // An announcement that arrives after its link closed is stale: the
                        // member has stopped leading, or will announce again.
                        if !sides.any() || st.args.node.is_connected_to(&from) {
                            st.core.set_leader(&from, sides);
                        }
                        incoming.answer(&())?;
                    }
                    ServerRequest::Answer { id, answer } => {
                        st.args.questions.late_answer(id, from, answer);
                        incoming.answer(&())?;
                    }
                }
            }
            ShardMsg::ProbeResult { id, answered } => {
                tracing::info!(node = %id, answered, "direct probe of suspect finished");
                st.core.probe_result(&id, answered, now());
            }
            ShardMsg::CheckLeaders => {
                for id in st.core.leaders() {
                    if !st.args.node.is_connected_to(&id) {
                        st.core.link_down(&id);
                    }
                }
            }
            ShardMsg::LinkDown(id) => {
                if !st.args.node.is_connected_to(&id) {
                    st.core.link_down(&id);
                }
            }
            ShardMsg::Tick => {
                for (ring, id) in st.core.tick(now()) {
                    tracing::warn!(%ring, node = %id, "evicted");
                }
                // A leader whose link is gone no longer leads, even if its link-down event
                // raced with its announcement.
                for id in st.core.leaders() {
                    if !st.args.node.is_connected_to(&id) {
                        st.core.link_down(&id);
                    }
                }
            }
            ShardMsg::Report { filter, reply } => {
                let _ = reply.send(st.core.report(filter.as_deref()));
            }
        }
        Ok(())
    }
}

/// Direct probes of a suspect, at most, before the server leaves it to its suspicion
/// timeout (the first answer ends them).
const SUSPECT_PROBES: usize = 3;

fn shard_of(ring: &Option<RingId>, shards: usize) -> usize {
    match ring {
        None => 0,
        Some(r) => {
            let h = Sha256::digest(r.0.as_bytes());
            (u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) % shards as u64)
                as usize
        }
    }
}

/// Routes [`REGISTRY`] requests to the shard that owns the sender's ring.
struct Registrar {
    table: ShardTable,
    /// For the address a registering machine's connection comes from.
    node: Node,
    questions: Arc<QuestionStore>,
    cfg: RingServerConfig,
    /// Which shard each registered endpoint's ring lives in.
    placed: Arc<RwLock<HashMap<NodeId, usize>>>,
}

impl Deliver for Registrar {
    fn deliver(&self, mut incoming: Incoming) -> Result<(), DestinationGone> {
        let Ok(req) = incoming.decode::<ServerRequest>() else {
            incoming.refuse();
            return Ok(());
        };
        let from = incoming.from.id.clone();
        if let ServerRequest::Answer { id, answer } = req {
            // A machine's own answer (its certificate's id), and only from one this server
            // has placed in a ring.
            let placed = rollcall_runtime::sync::read(&self.placed).contains_key(&from);
            if !placed {
                incoming.stats().incr(|s| &s.rejected_answers);
                tracing::warn!(node = %from, question = id, "refused a late answer from a machine not registered here");
                incoming.refuse();
                return Ok(());
            }
            self.questions.late_answer(id, from, answer);
            let _ = incoming.answer(&());
            return Ok(());
        }
        let mut req = req;
        if let ServerRequest::Register(reg) = &req
            && let Err(why) = reg.check(self.cfg.membership.max_hostname_bytes)
        {
            incoming.stats().incr(|s| &s.rejected_protocol);
            tracing::warn!(node = %from, "refused a registration: {why}");
            incoming.refuse();
            return Ok(());
        }
        if let ServerRequest::Register(reg) = &mut req {
            // Placed where the server sees it, not where it says it is.
            let observed = self.node.observed_addr(&from);
            let placed = self.cfg.membership.placement(reg.addr, observed);
            if placed != reg.addr {
                tracing::debug!(node = %from, declared = %reg.addr, observed = %placed, "placing by the observed address");
                reg.addr = placed;
            }
        }
        let idx = match &req {
            ServerRequest::Register(reg) => {
                let ring = self.cfg.membership.ring_of(reg.addr.ip());
                let idx = shard_of(&ring, self.cfg.shards);
                rollcall_runtime::sync::write(&self.placed).insert(from, idx);
                Some(idx)
            }
            _ => {
                Some(rollcall_runtime::sync::read(&self.placed)).and_then(|p| p.get(&from).copied())
            }
        };
        let shard = idx.and_then(|i| {
            Some(rollcall_runtime::sync::read(&self.table))
                .and_then(|t| t.get(i).cloned().flatten())
        });
        match shard {
            Some(s) => s
                .send_message(ShardMsg::Request {
                    req,
                    incoming: Box::new(incoming),
                })
                .map_err(|_| DestinationGone),
            None => {
                // Not registered yet (or its shard is restarting): it will register again.
                incoming.refuse();
                Ok(())
            }
        }
    }
}

/// Answers operators' [`AdminRequest`]s from every shard.
struct RingAdmin {
    table: ShardTable,
    node: Node,
}

impl Deliver for RingAdmin {
    fn deliver(&self, mut incoming: Incoming) -> Result<(), DestinationGone> {
        let Ok(AdminRequest::Show { subnet }) = incoming.decode::<AdminRequest>() else {
            incoming.refuse();
            return Ok(());
        };
        if !incoming.from.role.allows(OperatorRole::Viewer) {
            incoming.refuse();
            return Ok(());
        }
        let shards: Vec<ActorRef<ShardMsg>> = Some(rollcall_runtime::sync::read(&self.table))
            .map(|t| t.iter().flatten().cloned().collect())
            .unwrap_or_default();
        let node = self.node.clone();
        tokio::spawn(async move {
            // An operator's view of any fleet fits one reply (the server's own callers,
            // such as the fan-out, take the whole report).
            let report = rings_report(&node, &shards, subnet)
                .await
                .within_one_reply();
            let _ = incoming.answer(&report);
        });
        Ok(())
    }
}

async fn rings_report(
    node: &Node,
    shards: &[ActorRef<ShardMsg>],
    filter: Option<String>,
) -> RingsReport {
    let mut rings = Vec::new();
    let mut isolated = Vec::new();
    // Every shard at once: each walks its own members, on whichever thread is free.
    let calls = shards.iter().map(|s| {
        let f = filter.clone();
        s.call(
            |reply| ShardMsg::Report { filter: f, reply },
            Some(Duration::from_secs(5)),
        )
    });
    for answer in futures::future::join_all(calls).await {
        if let Ok(ractor::rpc::CallResult::Success((r, i))) = answer {
            rings.extend(r);
            isolated.extend(i);
        }
    }
    rings.sort_by(|a: &RingReport, b| a.ring.cmp(&b.ring));
    let ring_connections = rings.iter().map(|r| r.leader_links).sum::<usize>()
        + isolated.iter().filter(|m| m.leads.any()).count();
    RingsReport {
        rings,
        isolated,
        isolated_total: 0,
        server_connections: node.connected_peers().len(),
        ring_connections,
    }
}

/// The running ring service of a server.
#[derive(Clone)]
pub struct RingServer {
    table: ShardTable,
    signer: Arc<ServerSigner>,
    node: Node,
    questions: Arc<QuestionStore>,
    extras: Extras,
    fan: FanOut,
    joined: Arc<AtomicUsize>,
    registrations: Arc<std::sync::atomic::AtomicU64>,
}

/// Timing of a question's fan-out.
#[derive(Debug, Clone, Copy)]
struct FanOut {
    hop: Duration,
    watch: Duration,
    dial: Duration,
    retry: Duration,
}

/// Closes a link when dropped.
struct CloseOnDrop(rollcall_runtime::node::PeerHandle);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Asks of one chain under way at once when none of them was taken in time (see
/// [`ChainWalk::hedged`]): a few dead members in a row are then waited out side by side.
const HEDGED_ASKS: usize = 4;

/// A chain the fan-out walks: a ring, or one isolated machine.
enum Chain {
    Ring(crate::proto::RingId),
    Alone(crate::proto::MemberReport),
}

impl std::fmt::Debug for RingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingServer")
    }
}

impl RingServer {
    /// Starts the shards under the node's supervisor and registers [`REGISTRY`] and
    /// [`RING_ADMIN`] on the node. Questions are signed with `signer`, the key endpoints
    /// pinned at enrolment.
    pub async fn start(
        node: &Node,
        cfg: RingServerConfig,
        backlog: Option<Arc<dyn Backlog>>,
        signer: Arc<ServerSigner>,
    ) -> Result<RingServer, RingServiceError> {
        let shards = cfg.shards.max(1);
        let cfg = RingServerConfig { shards, ..cfg };
        let joined = Arc::new(AtomicUsize::new(0));
        let registrations = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let fan = FanOut {
            hop: cfg.hop_timeout,
            watch: cfg.watch_interval,
            dial: cfg.dial_timeout,
            retry: cfg.retry_interval,
        };
        let table: ShardTable = Arc::new(RwLock::new(vec![None; shards]));
        let questions = Arc::new(QuestionStore::new(1000, signer.clone()));
        let extras: Extras = Arc::new(RwLock::new(Vec::new()));
        let specs: Vec<ChildSpec> = (0..shards)
            .map(|index| {
                let args = ShardArgs {
                    index,
                    table: table.clone(),
                    cfg: cfg.clone(),
                    node: node.clone(),
                    backlog: backlog.clone(),
                    questions: questions.clone(),
                    extras: extras.clone(),
                    joined: joined.clone(),
                    registrations: registrations.clone(),
                };
                ChildSpec::new(
                    format!("shard-{index}"),
                    Restart::Permanent,
                    ServerShard,
                    move || args.clone(),
                )
            })
            .collect();
        let sup = ChildSpec::new("ring.shards", Restart::Permanent, Supervisor, move || {
            SupervisorArgs {
                intensity: RestartIntensity::default(),
                children: specs.clone(),
                stop_when_idle: false,
            }
        });
        node.start_child(sup).await?;
        // Registrations, suspicion reports, leadership and late answers come from
        // endpoints only.
        node.router().register(
            REGISTRY,
            rollcall_runtime::Roles::ENDPOINT,
            Arc::new(Registrar {
                table: table.clone(),
                node: node.clone(),
                questions: questions.clone(),
                cfg,
                placed: Arc::new(RwLock::new(HashMap::new())),
            }),
        );
        node.router().register(
            RING_ADMIN,
            rollcall_runtime::Roles::OPERATORS,
            Arc::new(RingAdmin {
                table: table.clone(),
                node: node.clone(),
            }),
        );
        // Closed links clear leadership (a leader whose link died no longer holds its end).
        let mut events = node.link_events();
        let watch_table = table.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(LinkEvent::Down { peer: Some(p), .. }) => {
                        let shards: Vec<_> = Some(rollcall_runtime::sync::read(&watch_table))
                            .map(|t| t.iter().flatten().cloned().collect())
                            .unwrap_or_default();
                        for s in shards {
                            let _ = s.send_message(ShardMsg::LinkDown(p.id.clone()));
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(
                            missed = n,
                            "ring service missed link events; rechecking leaders"
                        );
                        let shards: Vec<_> = Some(rollcall_runtime::sync::read(&watch_table))
                            .map(|t| t.iter().flatten().cloned().collect())
                            .unwrap_or_default();
                        for s in shards {
                            let _ = s.send_message(ShardMsg::CheckLeaders);
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(RingServer {
            table,
            signer,
            node: node.clone(),
            questions,
            extras,
            fan,
            joined,
            registrations,
        })
    }

    /// Also answers operators' ring requests ([`RING_ADMIN`]) arriving at `front`, a second
    /// node in the same process (a simulation's operator-facing QUIC node).
    pub fn serve_admin_on(&self, front: &Node) {
        front.router().register(
            RING_ADMIN,
            rollcall_runtime::Roles::OPERATORS,
            Arc::new(RingAdmin {
                table: self.table.clone(),
                node: self.node.clone(),
            }),
        );
    }

    /// Endpoints whose first registration this server has answered since it started.
    pub fn joined(&self) -> usize {
        self.joined.load(Ordering::Relaxed)
    }

    /// Registrations served since the server started (every one, not only first joins).
    pub fn registrations(&self) -> u64 {
        self.registrations.load(Ordering::Relaxed)
    }

    /// What the questions have come to since the server started.
    pub fn question_counts(&self) -> crate::questions::QuestionCounts {
        self.questions.counts()
    }

    /// One ring's members, from the shard that owns it alone (a fan-out asks this once per
    /// ring and round: it must not stop every shard).
    async fn ring_members(&self, ring: &RingId) -> Vec<crate::proto::MemberReport> {
        let shard = Some(rollcall_runtime::sync::read(&self.table)).and_then(|t| {
            let i = shard_of(&Some(ring.clone()), t.len());
            t.get(i).cloned().flatten()
        });
        let Some(s) = shard else {
            return Vec::new();
        };
        let filter = Some(ring.0.clone());
        match s
            .call(
                |reply| ShardMsg::Report { filter, reply },
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success((rings, _))) => rings
                .into_iter()
                .find(|r| &r.ring == ring)
                .map(|r| r.members)
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The rings as an operator sees them.
    pub async fn report(&self, filter: Option<String>) -> RingsReport {
        let shards: Vec<_> = Some(rollcall_runtime::sync::read(&self.table))
            .map(|t| t.iter().flatten().cloned().collect())
            .unwrap_or_default();
        rings_report(&self.node, &shards, filter).await
    }

    /// Asks every live machine a question: records it, sends it to each ring's forward
    /// leader (and each isolated machine), merges what comes back, and retries rings whose
    /// leader failed until every expected machine answered, the fan-out succeeded
    /// everywhere, or the question expired. Returns its id at once.
    pub async fn ask(
        &self,
        text: String,
        columns: Vec<String>,
        body: Vec<u8>,
        ttl: Duration,
    ) -> u64 {
        self.ask_as(None, text, columns, body, ttl).await
    }

    /// [`RingServer::ask`] under a given id (`None`: the next one): a question that was open
    /// when the server stopped, asked again once it is back.
    pub async fn ask_as(
        &self,
        id: Option<u64>,
        text: String,
        columns: Vec<String>,
        body: Vec<u8>,
        ttl: Duration,
    ) -> u64 {
        let report = self.report(None).await;
        let live = report.online().map(|m| (&m.id, &m.hostname));
        let id = self.questions.create_as(id, text, columns, body, ttl, live);
        let me = self.clone();
        tokio::spawn(async move { me.fan_out(id, report).await });
        id
    }

    /// The key the server signs with (questions here; the desk's sensor configuration).
    pub fn signer(&self) -> &Arc<ServerSigner> {
        &self.signer
    }

    /// Sets what every endpoint is handed at every registration.
    pub fn set_registration_extras(&self, items: Vec<crate::proto::Handoff>) {
        *rollcall_runtime::sync::write(&self.extras) = items;
    }

    /// New questions get ids above `last` (ids kept from before a restart stay unique).
    pub fn resume_question_ids(&self, last: u64) {
        self.questions.resume_ids(last);
    }

    /// How many machines question `id` expects answers from.
    pub fn expected(&self, id: u64) -> Option<usize> {
        self.questions.expected(id)
    }

    /// How many machines have answered question `id` so far.
    pub fn answered(&self, id: u64) -> Option<usize> {
        self.questions.answered(id)
    }

    /// The machines that have answered question `id`.
    pub fn responders(&self, id: u64) -> Option<Vec<NodeId>> {
        self.questions.responders(id)
    }

    /// Where question `id` stands.
    pub fn progress(&self, id: u64) -> Option<Progress> {
        self.questions.progress(id)
    }

    /// Question `id`'s distinct answers, each with the machines that gave it.
    pub fn answers_by_machine(
        &self,
        id: u64,
    ) -> Option<Vec<(crate::proto::NodeAnswer, Vec<NodeId>)>> {
        self.questions.answers_by_machine(id)
    }

    /// Closes question `id`: no more hand-offs to returning machines, no late answers.
    pub fn close(&self, id: u64) {
        self.questions.close(id);
    }

    /// Whether question `id` has fanned out, and whether it is still open.
    pub fn is_open(&self, id: u64) -> Option<(bool, bool)> {
        self.questions.is_open(id)
    }

    /// The kept questions, newest first.
    pub fn questions(&self) -> Vec<QuestionSummary> {
        self.questions.list()
    }
}
