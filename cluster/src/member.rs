//! The endpoint's ring actor: registers with the server, drives its [`RingCore`], probes and
//! splices neighbours, reports suspects, and keeps a server link while it leads an end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rollcall_runtime::node::{CallError, Incoming, Node, PeerHandle};
use rollcall_runtime::{NodeId, PeerIdentity, PeerRole};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::proto::{
    LeaderSides, MEMBER, MemberInfo, MemberRequest, REGISTRY, Registration, RegistrationReply,
    RingId, ServerRequest,
};
use crate::ring::{Input, Output, PeerHealth, RingConfig, RingCore};

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
}

impl MemberConfig {
    /// Defaults for a node at `advertise` registering with `server`: every 30–90 s.
    pub fn new(server: SocketAddr, advertise: SocketAddr, hostname: String) -> MemberConfig {
        MemberConfig {
            ring: RingConfig::default(),
            server,
            advertise,
            register_min: Duration::from_secs(30),
            register_max: Duration::from_secs(90),
            server_timeout: Duration::from_secs(10),
            hostname,
            seed: 0,
        }
    }
}

/// What a member reports about itself (tests and `rollcall endpoint` logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its ring, once registered (`None`: isolated or not yet registered).
    pub ring: Option<RingId>,
    /// Registrations answered so far.
    pub registrations: u64,
    /// Members in ring order.
    pub view: Vec<MemberInfo>,
    /// Where questions go next.
    pub route_target: Option<NodeId>,
    /// The ends it leads.
    pub leads: LeaderSides,
    /// Whether its server link is up.
    pub server_link_up: bool,
    /// How it judges each candidate successor.
    pub health: Vec<(NodeId, PeerHealth)>,
}

/// Messages of a [`RingMember`].
pub enum MemberMsg {
    /// A request from a peer.
    Remote(Incoming),
    /// Probe timer.
    Tick,
    /// Registration timer.
    Register,
    /// A registration's answer.
    Registered(Result<RegistrationReply, CallError>),
    /// A probe's request went on the wire.
    ProbeStarted(NodeId),
    /// A probe's outcome, with the link it used.
    Probed {
        /// Who.
        id: NodeId,
        /// Answered?
        ok: bool,
        /// The link, if one was made.
        link: Option<PeerHandle>,
    },
    /// Report status.
    Status(RpcReplyPort<MemberStatus>),
}

impl From<Incoming> for MemberMsg {
    fn from(i: Incoming) -> Self {
        MemberMsg::Remote(i)
    }
}

/// The endpoint's ring actor.
#[derive(Debug, Clone, Copy)]
pub struct RingMember;

/// Its state.
pub struct MemberState {
    cfg: MemberConfig,
    node: Node,
    core: RingCore,
    links: HashMap<NodeId, PeerHandle>,
    server_link: Option<PeerHandle>,
    ring: Option<RingId>,
    registrations: u64,
    rng: SmallRng,
    me: MemberInfo,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Calls the server: over the persistent link when this member leads, else over a link made
/// for this one call.
async fn server_call<Q: Serialize, R: DeserializeOwned>(
    node: &Node,
    link: Option<PeerHandle>,
    server: SocketAddr,
    timeout: Duration,
    req: &Q,
) -> Result<R, CallError> {
    if let Some(l) = link.filter(PeerHandle::is_connected) {
        return l.call(REGISTRY, req, timeout).await;
    }
    let l = node.connect_once(server, timeout).await?;
    let r = l.call(REGISTRY, req, timeout).await;
    l.close();
    r
}

impl MemberState {
    fn registration(&self) -> Registration {
        Registration {
            addr: self.cfg.advertise,
            hostname: self.cfg.hostname.clone(),
            os: std::env::consts::OS.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    async fn feed(&mut self, myself: &ActorRef<MemberMsg>, input: Input) {
        self.core.handle(input, now());
        while let Some(out) = self.core.poll_output() {
            self.act(myself, out).await;
        }
    }

    async fn act(&mut self, myself: &ActorRef<MemberMsg>, out: Output) {
        let timeout = self.cfg.ring.dead_timeout;
        let dial = self.cfg.ring.dial_timeout;
        match out {
            Output::Probe(m) => {
                let node = self.node.clone();
                let link = self.links.get(&m.id).filter(|l| l.is_connected()).cloned();
                let me = myself.clone();
                tokio::spawn(async move {
                    let me2 = me.clone();
                    let attempt = async {
                        let me = me2;
                        let link = match link {
                            Some(l) => l,
                            None => node.connect_once(m.addr, dial).await?,
                        };
                        let _ = me.send_message(MemberMsg::ProbeStarted(m.id.clone()));
                        let r: Result<(), CallError> =
                            link.call(MEMBER, &MemberRequest::Probe, timeout).await;
                        Ok::<_, CallError>((r.is_ok(), link))
                    };
                    let msg = match tokio::time::timeout(dial + timeout, attempt).await {
                        Ok(Ok((ok, link))) => MemberMsg::Probed {
                            id: m.id,
                            ok,
                            link: Some(link),
                        },
                        _ => MemberMsg::Probed {
                            id: m.id,
                            ok: false,
                            link: None,
                        },
                    };
                    let _ = me.send_message(msg);
                });
            }
            Output::Hello(pred) => {
                let node = self.node.clone();
                let hello = MemberRequest::Hello(self.me.clone());
                tokio::spawn(async move {
                    if let Ok(l) = node.connect_once(pred.addr, dial).await {
                        let r: Result<(), CallError> = l.call(MEMBER, &hello, timeout).await;
                        if let Err(e) = r {
                            tracing::debug!(to = %pred.id, error = %e, "hello not answered");
                        }
                        l.close();
                    }
                });
            }
            Output::Report { suspect, reason } => {
                tracing::info!(%suspect, ?reason, "reporting suspect neighbour");
                let node = self.node.clone();
                let link = self.server_link.clone();
                let (server, t) = (self.cfg.server, self.cfg.server_timeout);
                tokio::spawn(async move {
                    let req = ServerRequest::Suspect { suspect, reason };
                    let r: Result<(), CallError> = server_call(&node, link, server, t, &req).await;
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "could not report a suspect to the server");
                    }
                });
            }
            Output::Drop(id) => {
                if let Some(l) = self.links.remove(&id) {
                    l.close();
                }
            }
            Output::Leader(sides) => self.lead(sides).await,
        }
    }

    /// Opens or closes the server link as leadership changes, and announces it.
    async fn lead(&mut self, sides: LeaderSides) {
        tracing::info!(
            forward = sides.forward,
            backward = sides.backward,
            "leadership changed"
        );
        if !sides.any() {
            if let Some(l) = self.server_link.take() {
                l.close();
            }
            return;
        }
        self.announce(sides).await;
    }

    async fn announce(&mut self, sides: LeaderSides) {
        let (server, t) = (self.cfg.server, self.cfg.server_timeout);
        if self.server_link.is_none() {
            // A redialing link: it survives server restarts. `connect` only starts the link
            // actor; it does not wait for the connection.
            match self.node.connect(server).await {
                Ok(l) => self.server_link = Some(l),
                Err(e) => tracing::warn!(error = %e, "could not start the server link"),
            }
        }
        let Some(link) = self.server_link.clone() else {
            return;
        };
        tokio::spawn(async move {
            if link.wait_connected(t).await.is_ok() {
                let r: Result<(), CallError> =
                    link.call(REGISTRY, &ServerRequest::Leader(sides), t).await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "could not announce leadership");
                }
            }
        });
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
        node.router().register_actor(MEMBER, myself.clone());
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
            links: HashMap::new(),
            server_link: None,
            ring: None,
            registrations: 0,
            me,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MemberMsg>,
        msg: MemberMsg,
        st: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MemberMsg::Tick => st.feed(&myself, Input::Tick).await,
            MemberMsg::Register => {
                let node = st.node.clone();
                let link = st.server_link.clone();
                let (server, t) = (st.cfg.server, st.cfg.server_timeout);
                let req = ServerRequest::Register(st.registration());
                let me = myself.clone();
                tokio::spawn(async move {
                    let r = server_call(&node, link, server, t, &req).await;
                    let _ = me.send_message(MemberMsg::Registered(r));
                });
                let (lo, hi) = (
                    st.cfg.register_min,
                    st.cfg.register_max.max(st.cfg.register_min),
                );
                let next = st.rng.random_range(lo..=hi);
                myself.send_after(next, || MemberMsg::Register);
            }
            MemberMsg::Registered(Ok(reply)) => {
                st.registrations += 1;
                st.ring = reply.ring.clone();
                let isolated = reply.ring.is_none();
                for h in reply.handoffs {
                    let from = PeerIdentity {
                        id: NodeId("server".into()),
                        role: PeerRole::Server,
                    };
                    if let Err(e) = st.node.deliver_local(&h.to, from, h.body) {
                        tracing::warn!(to = %h.to, error = %e, "could not deliver missed work");
                    }
                }
                st.feed(
                    &myself,
                    Input::Members {
                        members: reply.members,
                        isolated,
                    },
                )
                .await;
                let sides = st.core.leader();
                if sides.any() {
                    // Re-announce on every registration: a restarted server learns its
                    // leaders within one interval.
                    st.announce(sides).await;
                }
            }
            MemberMsg::Registered(Err(e)) => {
                tracing::warn!(error = %e, "registration failed; will retry at the next interval");
            }
            MemberMsg::ProbeStarted(id) => st.feed(&myself, Input::ProbeStarted(id)).await,
            MemberMsg::Probed { id, ok, link } => {
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
                let req: MemberRequest = match inc.decode() {
                    Ok(r) => r,
                    Err(_) => {
                        inc.refuse();
                        return Ok(());
                    }
                };
                if inc.from.role != PeerRole::Endpoint && inc.from.role != PeerRole::Server {
                    inc.refuse();
                    return Ok(());
                }
                match req {
                    MemberRequest::Probe => {
                        let from = inc.from.id.clone();
                        inc.answer(&())?;
                        st.feed(&myself, Input::ProbedBy(from)).await;
                    }
                    MemberRequest::Hello(info) => {
                        // A peer can only introduce itself.
                        if info.id != inc.from.id {
                            inc.refuse();
                            return Ok(());
                        }
                        inc.answer(&())?;
                        st.feed(&myself, Input::Hello(info)).await;
                    }
                }
            }
            MemberMsg::Status(reply) => {
                let core = &st.core;
                let _ = reply.send(MemberStatus {
                    ring: st.ring.clone(),
                    registrations: st.registrations,
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
                });
            }
        }
        Ok(())
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
