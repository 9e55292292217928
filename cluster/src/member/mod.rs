//! The endpoint's ring actor: registers with the server, drives its [`RingCore`], probes and
//! splices neighbours, reports suspects, and keeps a server link while it leads an end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rollcall_runtime::node::{CallError, Incoming, Node, PeerHandle};
use rollcall_runtime::signing::ServerTrust;
use rollcall_runtime::{NodeId, PeerIdentity, PeerRole};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::proto::{
    LeaderSides, MEMBER, MemberInfo, MemberRequest, NodeAnswer, Partial, REGISTRY,
    RegistrationReply, RingId, ServerRequest,
};
use crate::ring::{Input, PeerHealth, RingConfig, RingCore};

/// Answers questions on an endpoint: the bridge to its sensors (which live in
/// `rollcall-actors`; the ring only carries the encoded question and the answers).
pub trait Evaluator: Send + Sync + 'static {
    /// This machine's answer to the encoded question `body`. Called before the question is
    /// passed on: read the question here, and leave the sensors' work to the future (which
    /// the member polls once the question went on).
    fn evaluate(&self, body: &[u8]) -> futures::future::BoxFuture<'static, NodeAnswer>;
}

/// A shareable [`Evaluator`].
#[derive(Clone)]
pub struct EvaluatorHandle(pub std::sync::Arc<dyn Evaluator>);

impl std::fmt::Debug for EvaluatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Evaluator")
    }
}

/// Settings of an endpoint's ring membership.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// Ring timing and shape.
    pub ring: RingConfig,
    /// The server's address.
    pub server: SocketAddr,
    /// The address peers dial (this node's).
    pub advertise: SocketAddr,
    /// Registration interval, picked uniformly in `[min, max]` each time.
    pub register_min: Duration,
    /// See `register_min`.
    pub register_max: Duration,
    /// Timeout of calls to the server.
    pub server_timeout: Duration,
    /// Host name reported at registration.
    pub hostname: String,
    /// Seed for the registration jitter.
    pub seed: u64,
    /// Answers questions (none: the endpoint answers with no row).
    pub evaluator: Option<EvaluatorHandle>,
    /// The server this endpoint pinned at enrolment: only its signed questions are read
    /// and passed on, and only it is registered with.
    pub trust: Arc<ServerTrust>,
    /// A compromised member: how it changes the answers it passes on (tests only).
    #[cfg(feature = "hostile")]
    pub tamper: Option<crate::relay::tamper::Tamper>,
}

impl MemberConfig {
    /// Defaults for a node at `advertise` registering with `server`, which `trust` pins:
    /// every 30–90 s.
    pub fn new(
        server: SocketAddr,
        advertise: SocketAddr,
        hostname: String,
        trust: Arc<ServerTrust>,
    ) -> MemberConfig {
        MemberConfig {
            ring: RingConfig::default(),
            server,
            advertise,
            register_min: Duration::from_secs(30),
            register_max: Duration::from_secs(90),
            server_timeout: Duration::from_secs(10),
            hostname,
            seed: 0,
            evaluator: None,
            trust,
            #[cfg(feature = "hostile")]
            tamper: None,
        }
    }
}

impl MemberConfig {
    /// Where the server is and which node it must be.
    fn server_ref(&self) -> (SocketAddr, Option<NodeId>) {
        (self.server, self.trust.server_id.clone())
    }
}

/// What a member reports about itself (tests and `rollcall endpoint` logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its ring, once registered (`None`: isolated or not yet registered).
    pub ring: Option<RingId>,
    /// Registrations answered so far.
    pub registrations: u64,
    /// Members in the server's last list of its ring (hellos included).
    pub ring_members: usize,
    /// The members it keeps, in ring order: its nearest predecessor and its candidates.
    pub view: Vec<MemberInfo>,
    /// Where questions go next.
    pub route_target: Option<NodeId>,
    /// The ends it leads.
    pub leads: LeaderSides,
    /// Whether its server link is up.
    pub server_link_up: bool,
    /// How it judges each candidate successor.
    pub health: Vec<(NodeId, PeerHealth)>,
    /// Questions it holds that are not answered yet.
    pub questions_pending: usize,
    /// Questions it keeps (answered ones too, until a minute past their expiry).
    pub questions_held: usize,
}

/// Messages of a [`RingMember`].
pub enum MemberMsg {
    /// A request from a peer.
    Remote(Incoming),
    /// Probe timer.
    Tick,
    /// Registration timer.
    Register,
    /// Register now, outside the timer (the server came back).
    RegisterNow,
    /// A registration's answer, and when its request went out.
    Registered(std::time::Instant, Result<RegistrationReply, CallError>),
    /// A probe's request went on the wire.
    ProbeStarted(NodeId),
    /// A probe's outcome, with the link it used.
    Probed {
        /// Who.
        id: NodeId,
        /// The address probed (a result for an address the member has since left is stale).
        addr: SocketAddr,
        /// Answered?
        ok: bool,
        /// The link, if one was made.
        link: Option<PeerHandle>,
    },
    /// Report status.
    Status(RpcReplyPort<MemberStatus>),
    /// Members another member told us of (its answer to our hello).
    Learned(Vec<MemberInfo>),
    /// Our hello to this member went unanswered.
    HelloFailed(NodeId),
    /// A question handed to this member was not acknowledged within the hop timeout.
    HopLate(NodeId),
    /// A suspect report was answered (or not).
    Reported(bool),
    /// This machine's own answer to a question is ready.
    Evaluated {
        /// The question.
        id: u64,
        /// The answer.
        answer: NodeAnswer,
    },
    /// The answers from after us came back (or the forward failed).
    Downstream {
        /// The question.
        id: u64,
        /// Which forward attempt.
        generation: u64,
        /// Whom it went to.
        to: NodeId,
        /// What came back.
        result: Result<Partial, CallError>,
    },
}

/// The keys of a member's maps come from authenticated peers (question ids are the server's
/// sequence numbers; neighbours' ids are their certificates' names), and the maps are looked
/// up on every hop: a fast hash will do.
type FastKeys = std::hash::BuildHasherDefault<rustc_hash::FxHasher>;

impl From<Incoming> for MemberMsg {
    fn from(i: Incoming) -> Self {
        MemberMsg::Remote(i)
    }
}

/// An endpoint registers a second time within this of its first answer (then every
/// `register_min..register_max`): a fleet starting at once gets lists that hold only the
/// machines registered before each one, and the second fills them in.
pub const FIRST_REREGISTRATION_WITHIN: Duration = Duration::from_secs(5);

/// The endpoint's ring actor.
#[derive(Debug, Clone, Copy)]
pub struct RingMember;

/// Its state.
pub struct MemberState {
    cfg: MemberConfig,
    /// Tags this machine's answers (from the server, at registration).
    answer_key: Option<rollcall_runtime::answer_tags::AnswerKey>,
    node: Node,
    core: RingCore,
    /// The links to ring neighbours (a few; looked up on every hop).
    links: HashMap<NodeId, PeerHandle, FastKeys>,
    server_link: Option<PeerHandle>,
    /// Watches the server link for a comeback (aborted with the link or the member).
    server_watch: Option<AbortOnDrop>,
    /// Leadership announcements go out one at a time, newest only: `announce_seq` numbers
    /// them and the lock is held across each call, so the server never hears an older
    /// announcement after a newer one (each call is its own stream and may overtake).
    announce_seq: Arc<std::sync::atomic::AtomicU64>,
    announce_lock: Arc<tokio::sync::Mutex<()>>,
    ring: Option<RingId>,
    registrations: u64,
    /// Registrations that failed in a row: retries back off (a server shedding load must
    /// not face a fleet retrying ever faster).
    reg_failures: u32,
    /// Suspect reports the server left unanswered in a row, and until when further ones
    /// are held back.
    report_failures: u32,
    reports_held_until: Option<std::time::Instant>,
    rng: SmallRng,
    me: MemberInfo,
    /// Each behind a pointer: a member keeps every question until a minute after it
    /// expires, and the map grows by copying its entries.
    questions: HashMap<u64, Shared, FastKeys>,
    /// The newest question taken, whose round may keep its finished result.
    kept_for: Option<u64>,
    /// Each probe's hop-timeout look, cancelled when the probe is answered first (an
    /// answered probe needs no second look).
    probe_timers: HashMap<NodeId, AbortOnDrop>,
}

use rollcall_runtime::backoff::doubled as backoff;

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Calls the server: over the persistent link when this member leads, else over a link made
/// for this one call.
async fn server_call<Q: Serialize, R: DeserializeOwned>(
    node: &Node,
    link: Option<PeerHandle>,
    (server, pinned): (SocketAddr, Option<NodeId>),
    timeout: Duration,
    req: &Q,
) -> Result<R, CallError> {
    // Whoever answers at the server's address must hold the server role, and be the server
    // pinned at enrolment: an endpoint's certificate there (or another server's) would
    // otherwise hand this member work as if from its server.
    if let Some(l) = link.filter(PeerHandle::is_connected) {
        l.require_peer(PeerRole::Server, pinned.as_ref())?;
        return l.call(REGISTRY, req, timeout).await;
    }
    let l = node.connect_once(server, timeout).await?;
    if let Err(e) = l.require_peer(PeerRole::Server, pinned.as_ref()) {
        l.close();
        return Err(e);
    }
    let r = l.call(REGISTRY, req, timeout).await;
    l.close();
    r
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Actor for RingMember {
    type Msg = MemberMsg;
    type State = MemberState;
    type Arguments = (Node, MemberConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<MemberMsg>,
        (node, cfg): Self::Arguments,
    ) -> Result<MemberState, ActorProcessingErr> {
        // Ring messages come from neighbours and from the server (asks, probes, hand-offs).
        node.router().register_actor(
            MEMBER,
            rollcall_runtime::Roles::ENDPOINT.or(rollcall_runtime::Roles::SERVER),
            myself.clone(),
        );
        let me = MemberInfo {
            id: node.identity().id.clone(),
            addr: cfg.advertise,
        };
        myself.send_message(MemberMsg::Register)?;
        myself.send_interval(cfg.ring.probe_interval, || MemberMsg::Tick);
        Ok(MemberState {
            core: RingCore::new(cfg.ring, me.clone(), now()),
            rng: SmallRng::seed_from_u64(cfg.seed),
            cfg,
            node,
            links: HashMap::default(),
            server_link: None,
            answer_key: None,
            server_watch: None,
            announce_seq: Arc::default(),
            announce_lock: Arc::default(),
            ring: None,
            registrations: 0,
            reg_failures: 0,
            report_failures: 0,
            reports_held_until: None,
            me,
            questions: HashMap::default(),
            kept_for: None,
            probe_timers: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MemberMsg>,
        msg: MemberMsg,
        st: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        // A question's messages at each hop need no waiting: taken at once. The rest go to
        // a boxed future: ractor keeps room for this future in each actor's loop for the
        // actor's whole life (on every endpoint), so it holds nothing but that box.
        match take_now(myself, msg, st)? {
            Some(work) => work.await,
            None => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MemberMsg>,
        st: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        st.node.router().unregister(MEMBER);
        for (_, l) in st.links.drain() {
            l.close();
        }
        if let Some(l) = st.server_link.take() {
            l.close();
        }
        Ok(())
    }
}

/// Work that waits, boxed (see [`RingMember`]'s `handle`).
type Waiting<'a> = futures::future::BoxFuture<'a, Result<(), ActorProcessingErr>>;

/// Does the work of a message that needs no waiting (a hop of a question); hands back the
/// rest's, boxed.
fn take_now(
    myself: ActorRef<MemberMsg>,
    msg: MemberMsg,
    st: &mut MemberState,
) -> Result<Option<Waiting<'_>>, ActorProcessingErr> {
    match msg {
        MemberMsg::Evaluated { id, answer } => st.evaluated(id, answer),
        MemberMsg::Downstream {
            id,
            generation,
            result: Ok(p),
            ..
        } => st.downstream(id, generation, p),
        MemberMsg::Remote(mut inc) => {
            let Some(req) = admit(&mut inc) else {
                return Ok(None);
            };
            match req {
                req @ (MemberRequest::Ask(_) | MemberRequest::Late(_)) => {
                    st.take_question(&myself, inc, req)?
                }
                req => return Ok(Some(Box::pin(remote(myself, inc, req, st)))),
            }
        }
        other => return Ok(Some(Box::pin(dispatch(myself, other, st)))),
    }
    Ok(None)
}

/// One message's work.
async fn dispatch(
    myself: ActorRef<MemberMsg>,
    msg: MemberMsg,
    st: &mut MemberState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        MemberMsg::Tick => {
            st.feed(&myself, Input::Tick).await;
            st.reroute_questions(&myself);
            st.prune_links();
        }
        MemberMsg::Register | MemberMsg::RegisterNow => {
            let timer = matches!(msg, MemberMsg::Register);
            let sent = now();
            st.feed(&myself, Input::RegistrationSent).await;
            let node = st.node.clone();
            let link = st.server_link.clone();
            let (server, t) = (st.cfg.server_ref(), st.cfg.server_timeout);
            let req = ServerRequest::Register(st.registration());
            let me = myself.clone();
            tokio::spawn(async move {
                let r = server_call(&node, link, server, t, &req).await;
                let _ = me.send_message(MemberMsg::Registered(sent, r));
            });
            let (lo, hi) = (
                st.cfg.register_min,
                st.cfg.register_max.max(st.cfg.register_min),
            );
            // Right after starting, register again soon: when a whole fleet starts at once,
            // the first answers hold only the machines registered before each one.
            let (lo, hi) = if st.registrations == 0 {
                (
                    lo.min(Duration::from_secs(1)),
                    hi.min(FIRST_REREGISTRATION_WITHIN),
                )
            } else {
                (lo, hi)
            };
            let next = backoff(
                st.rng.random_range(lo..=hi),
                st.reg_failures,
                st.cfg.register_max,
            );
            if timer {
                myself.send_after(next, || MemberMsg::Register);
            }
        }
        MemberMsg::Registered(sent, Ok(reply)) => {
            st.core.registration_answered(sent);
            st.registrations += 1;
            st.reg_failures = 0;
            st.ring = reply.ring.clone();
            if let Some(k) = rollcall_runtime::answer_tags::AnswerKey::new(&reply.answer_key) {
                st.answer_key = Some(k);
            }
            let isolated = reply.ring.is_none();
            for h in reply.handoffs {
                let from = PeerIdentity {
                    id: NodeId("server".into()),
                    role: PeerRole::Server,
                };
                if let Err(e) = st.node.deliver_local(&h.to, from, h.body) {
                    tracing::warn!(to = ?h.to, error = %e, "could not deliver missed work");
                }
            }
            let input = if reply.warming {
                Input::MembersFromWarmingServer {
                    members: reply.members,
                    isolated,
                }
            } else {
                Input::Members {
                    members: reply.members,
                    isolated,
                }
            };
            st.feed(&myself, input).await;
            let sides = st.core.leader();
            if sides.any() {
                // Re-announce on every registration: a restarted server learns its
                // leaders within one interval.
                Box::pin(st.announce(&myself, sides)).await;
            }
        }
        MemberMsg::Registered(_, Err(e)) => {
            st.reg_failures = st.reg_failures.saturating_add(1);
            // A leader must not stay unknown to a server that just came back (its ring
            // service may not have been up yet), and a member whose answer was lost must
            // not wait a whole interval for its ring's members: try again soon, backing
            // off while failures repeat so a server shedding load is not buried.
            let jitter = st.rng.random_range(0.5..=1.0);
            let wait = backoff(
                st.cfg.ring.retry_interval.mul_f64(jitter),
                st.reg_failures - 1,
                st.cfg.register_max,
            );
            if st.reg_failures == 1 {
                tracing::info!(error = %e, retry_in = ?wait, "registration failed; trying again");
            } else {
                tracing::warn!(error = %e, failures = st.reg_failures, retry_in = ?wait, "registration failed again");
            }
            myself.send_after(wait, || MemberMsg::RegisterNow);
        }
        MemberMsg::ProbeStarted(id) => st.feed(&myself, Input::ProbeStarted(id)).await,
        MemberMsg::Probed { id, addr, .. }
            if st.core.member(&id).is_some_and(|m| m.addr != addr) =>
        {
            // The member moved (it restarted elsewhere and said hello): a stale result.
        }
        MemberMsg::Probed { id, ok, link, .. } => {
            if ok {
                // Answered: the look at its hop timeout is not needed (dropping aborts it).
                st.probe_timers.remove(&id);
            }
            if let Some(l) = link
                && let Some(old) = st.links.insert(id.clone(), l.clone())
                && (old.addr() != l.addr() || !old.is_connected())
            {
                old.close();
            }
            st.feed(
                &myself,
                if ok {
                    Input::Ack(id)
                } else {
                    Input::ProbeFailed(id)
                },
            )
            .await;
        }
        MemberMsg::Remote(mut inc) => {
            if let Some(req) = admit(&mut inc) {
                remote(myself, inc, req, st).await?;
            }
        }
        MemberMsg::Evaluated { id, answer } => st.evaluated(id, answer),
        MemberMsg::Downstream {
            id,
            generation,
            to,
            result,
        } => match result {
            Ok(p) => st.downstream(id, generation, p),
            Err(e) => {
                if st
                    .questions
                    .get(&id)
                    .is_some_and(|q| lock(q).round.awaits(generation))
                {
                    // A failed hop: the successor is treated as unreachable, and the
                    // question goes to the next one.
                    tracing::info!(question = id, %to, error = %e, "forward failed; rerouting");
                    st.feed(&myself, Input::ForwardFailed(to)).await;
                    st.forward(&myself, id);
                }
            }
        },
        MemberMsg::Learned(view) => st.feed(&myself, Input::Learned(view)).await,
        MemberMsg::HelloFailed(id) => st.feed(&myself, Input::HelloFailed(id)).await,
        MemberMsg::HopLate(id) => {
            tracing::info!(successor = %id, "a question was not acknowledged within the hop timeout; routing past");
            st.feed(&myself, Input::HopLate(id)).await;
            st.reroute_questions(&myself);
        }
        MemberMsg::Reported(true) => {
            st.report_failures = 0;
            st.reports_held_until = None;
        }
        MemberMsg::Reported(false) => {
            st.report_failures = st.report_failures.saturating_add(1);
            // Doubling from the report interval up to sixteen of them: each report from a
            // member that does not hold the server link dials the server, and a server
            // slowed by load must not be handed a connection per member every second (the
            // cap was the retry interval, shorter than the report interval itself at LAN
            // timing; 60 endpoints in one process ran into the server's per-peer
            // connection limit that way).
            let hold = backoff(
                st.cfg.ring.report_interval,
                st.report_failures,
                st.cfg.ring.report_interval * 16,
            );
            st.reports_held_until = Some(now() + hold);
        }
        MemberMsg::Status(reply) => {
            let core = &st.core;
            let _ = reply.send(MemberStatus {
                ring: st.ring.clone(),
                registrations: st.registrations,
                ring_members: core.ring_members(),
                view: core.view().to_vec(),
                route_target: core.route_target().map(|m| m.id.clone()),
                leads: core.leader(),
                server_link_up: st
                    .server_link
                    .as_ref()
                    .is_some_and(PeerHandle::is_connected),
                health: core
                    .candidates()
                    .into_iter()
                    .map(|m| (m.id.clone(), core.health(&m.id)))
                    .collect(),
                questions_pending: st
                    .questions
                    .values()
                    .filter(|q| !lock(q).round.is_done())
                    .count(),
                questions_held: st.questions.len(),
            });
        }
    }
    Ok(())
}

/// A peer's request, decoded; refused (and `None`) if it is not one or the peer is neither an
/// endpoint nor the server.
fn admit(inc: &mut Incoming) -> Option<MemberRequest> {
    let Ok(req) = inc.decode::<MemberRequest>() else {
        inc.refuse();
        return None;
    };
    if inc.from.role != PeerRole::Endpoint && inc.from.role != PeerRole::Server {
        inc.refuse();
        return None;
    }
    Some(req)
}

/// Serves a peer's request.
async fn remote(
    myself: ActorRef<MemberMsg>,
    mut inc: Incoming,
    req: MemberRequest,
    st: &mut MemberState,
) -> Result<(), ActorProcessingErr> {
    match req {
        MemberRequest::Ping => {
            let from = inc.from.id.clone();
            inc.answer(&st.core.successors())?;
            if inc.from.role == PeerRole::Endpoint {
                st.feed(&myself, Input::ProbedBy(from)).await;
            }
        }
        MemberRequest::Probe => {
            let from = inc.from.id.clone();
            let endpoint = inc.from.role == PeerRole::Endpoint;
            inc.answer(&())?;
            // The server's direct probes of suspects say nothing of our
            // predecessors; only endpoints' probes count as theirs.
            if endpoint {
                st.feed(&myself, Input::ProbedBy(from)).await;
            }
        }
        MemberRequest::Hello(info) => {
            // A peer can only introduce itself.
            if info.id != inc.from.id {
                inc.refuse();
                return Ok(());
            }
            st.feed(&myself, Input::Hello(info)).await;
            inc.answer(&st.core.view())?;
        }
        req @ (MemberRequest::Ask(_) | MemberRequest::Late(_)) => {
            st.take_question(&myself, inc, req)?
        }
    }
    Ok(())
}

/// Asks a member for its status.
pub async fn status(member: &ActorRef<MemberMsg>) -> Option<MemberStatus> {
    match member
        .call(MemberMsg::Status, Some(Duration::from_secs(5)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(s)) => Some(s),
        _ => None,
    }
}

mod hop_deadlines;
mod relay;
mod ring_io;

use relay::{Shared, lock};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_per_failure_up_to_the_cap_and_never_below_the_base() {
        let s = Duration::from_secs;
        let waits: Vec<Duration> = (0..6).map(|f| backoff(s(5), f, s(60))).collect();
        assert_eq!(waits, [s(5), s(10), s(20), s(40), s(60), s(60)]);
        // A cap under the base (a short registration interval) leaves the base.
        assert_eq!(backoff(s(5), 3, s(1)), s(5));
        // Many failures do not overflow.
        assert_eq!(backoff(s(5), u32::MAX, s(90)), s(90));
    }
}
