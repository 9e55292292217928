//! One endpoint's view of its ring, as a sans-IO state machine.
//!
//! The ring is a chain ordered by address, then node id. A member probes its first routable
//! successor every probe interval. A probe not answered within the hop timeout makes that
//! successor *late*: the member routes past it at once, to the next successor in its list
//! (default four) or to a skip contact further along. A late successor that answers after all
//! is *slow*: still routed around, still probed (so it keeps hearing from its predecessor and
//! does not think itself a leader), and recovers with the next on-time answer. One that does
//! not answer within the dead timeout, or whose link fails, is *dead*: dropped, reported to
//! the server, and retried every retry interval so the chain heals after a partition.
//!
//! A member leads the forward end when nothing before it is in its view and nothing has probed
//! it (a predecessor that registered later is in no list it has had yet, but its probes say it
//! is there), or when it has heard no probe from any predecessor for the predecessor timeout; it leads the backward end when it
//! has no routable successor. A member in an isolated range leads both ends of a chain of one.
//!
//! The core never reads a clock and does no I/O: feed it [`Input`]s with `now`, and carry out
//! the [`Output`]s it queues.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};

/// Ids here come from the server and from authenticated peers: a fast hash will do (a
/// route is chosen, by id, for every question that passes).
type FastIds = std::hash::BuildHasherDefault<rustc_hash::FxHasher>;
use std::time::{Duration, Instant};

use rollcall_runtime::NodeId;

use crate::proto::{LeaderSides, MemberInfo, SuspectReason};

/// Ring timing and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Successors kept in order after this member.
    pub successors: usize,
    /// Skip contacts beyond the successor list (at 2×, 4×, … the list's length).
    pub skip_contacts: usize,
    /// How often the route target is probed.
    pub probe_interval: Duration,
    /// An answer later than this is late: route past the successor.
    pub hop_timeout: Duration,
    /// No answer by then (after the request was sent): the successor is dead.
    pub dead_timeout: Duration,
    /// How long dialing a successor may take (handshakes over slow links take a few round
    /// trips; dial time never counts against the hop).
    pub dial_timeout: Duration,
    /// No probe from any predecessor for this long: lead the forward end.
    pub pred_timeout: Duration,
    /// How often dead successors closer than the route target are tried again.
    pub retry_interval: Duration,
    /// How often a still-slow or still-unreachable successor is reported again (the server
    /// forgets slowness that nobody reports, so this must be below its hold time, about 5 s).
    pub report_interval: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            successors: 4,
            skip_contacts: 2,
            probe_interval: Duration::from_millis(500),
            hop_timeout: Duration::from_millis(500),
            dead_timeout: Duration::from_secs(2),
            dial_timeout: Duration::from_secs(5),
            pred_timeout: Duration::from_secs(3),
            retry_interval: Duration::from_secs(2),
            report_interval: Duration::from_secs(2),
        }
    }
}

/// Every ring timing the product uses, made in one place.
impl RingConfig {
    /// Timing from the two intervals an operator sets (`[ring]`): how often the route
    /// target is probed and how late a hop may be; the rest follows from them.
    pub fn from_intervals(probe_interval: Duration, hop_timeout: Duration) -> RingConfig {
        RingConfig {
            probe_interval,
            hop_timeout,
            dead_timeout: hop_timeout * 4,
            dial_timeout: (hop_timeout * 10).max(Duration::from_secs(3)),
            pred_timeout: (probe_interval + hop_timeout) * 4,
            retry_interval: hop_timeout * 4,
            report_interval: Duration::from_secs(2),
            ..RingConfig::default()
        }
    }

    /// A fleet of `endpoints` simulated in one process: probing every 2 s up to 10,000
    /// endpoints; beyond that the background intervals (probes, retries, repeated suspect
    /// reports) stretch in proportion, because one process runs every endpoint's background
    /// duties on the simulating machine's few cores, so the fleet's aggregate background
    /// load stays that of 10,000 endpoints, as a real fleet's does per machine. Question
    /// hops keep their timing.
    pub fn simulated(endpoints: usize) -> RingConfig {
        let k = (endpoints as f64 / 10_000.0).max(1.0);
        RingConfig {
            probe_interval: Duration::from_secs(2).mul_f64(k),
            hop_timeout: Duration::from_secs(1),
            dead_timeout: Duration::from_secs(4),
            dial_timeout: Duration::from_secs(10),
            pred_timeout: Duration::from_secs(10).mul_f64(k),
            retry_interval: Duration::from_secs(5).mul_f64(k),
            report_interval: Duration::from_secs(2).mul_f64(k),
            ..RingConfig::default()
        }
    }

    /// LAN timing of the fault scenarios: probe every 200 ms, hop timeout 200 ms, dead
    /// after 1.5 s. (A successor that acked a hop and is then cut off is found only by the
    /// next periodic probe: at 400 ms, that plus the hop timeout and the server's gap walk
    /// came to about the promptness bound, and a split applied mid-question missed it now
    /// and then.)
    pub fn lan() -> RingConfig {
        RingConfig {
            probe_interval: Duration::from_millis(200),
            hop_timeout: Duration::from_millis(200),
            dead_timeout: Duration::from_millis(1500),
            dial_timeout: Duration::from_secs(2),
            pred_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_secs(1),
            report_interval: Duration::from_secs(1),
            ..RingConfig::default()
        }
    }

    /// Loopback test suites, where tens of debug-built endpoints share two cores: probe
    /// every 200 ms, hop timeout 400 ms, dead after 1 s, predecessor timeout 1 s.
    pub fn loopback_tests() -> RingConfig {
        RingConfig {
            probe_interval: Duration::from_millis(200),
            hop_timeout: Duration::from_millis(400),
            dead_timeout: Duration::from_millis(1000),
            dial_timeout: Duration::from_millis(3000),
            pred_timeout: Duration::from_millis(1000),
            retry_interval: Duration::from_millis(1000),
            report_interval: Duration::from_millis(2000),
            ..RingConfig::default()
        }
    }
}

/// How this member judges a successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerHealth {
    /// Not probed yet: routable.
    Unknown,
    /// Answered within the hop timeout.
    Ok,
    /// A probe is past the hop timeout: routed around until it answers.
    Late,
    /// Answered, but late: routed around, still probed.
    Slow,
    /// Unreachable: routed around, retried now and then.
    Dead,
}

impl PeerHealth {
    fn routable(self) -> bool {
        matches!(self, PeerHealth::Unknown | PeerHealth::Ok)
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed.
    Tick,
    /// A question handed to `id` was not acknowledged within the hop timeout (the
    /// acknowledgement comes on the question's own stream): route past it now, not after the
    /// next probe round, and probe it until it answers in time again.
    HopLate(NodeId),
    /// The server's member list (from a registration), or `isolated` when the endpoint is in
    /// a range that never peers.
    Members {
        /// Members in any order.
        members: Vec<MemberInfo>,
        /// No peering at all.
        isolated: bool,
    },
    /// The member list of a server that restarted moments ago and has not heard from every
    /// member yet: members it does not list are kept (unless this member's own probes
    /// found them dead), new ones added. A fleet returning to a restarted server keeps its
    /// rings, and its leaders, instead of shrinking every view to who registered first.
    MembersFromWarmingServer {
        /// Members in any order.
        members: Vec<MemberInfo>,
        /// No peering at all.
        isolated: bool,
    },
    /// The probe to `id` is on the wire (any dial is done): its hop timer starts now.
    ProbeStarted(NodeId),
    /// A probe to `id` was answered.
    Ack(NodeId),
    /// A probe to `id` failed (no answer by the dead timeout, or no link).
    ProbeFailed(NodeId),
    /// A probe arrived from `id`.
    ProbedBy(NodeId),
    /// A question forwarded to `id` failed: it is unreachable, whatever the probes say.
    ForwardFailed(NodeId),
    /// A member announced itself (a joiner the server's list may not show yet).
    Hello(MemberInfo),
    /// Our hello to `id` went unanswered: greet it again at the next tick (until then it
    /// may not know we follow it, and a first member would go on leading both ends).
    HelloFailed(NodeId),
    /// Members another member knows (its answer to our hello): those between it and us
    /// are closer predecessors than the server's list showed.
    Learned(Vec<MemberInfo>),
    /// A registration request went out now: member lists answering it reflect the server's
    /// view as of about now, so hellos from before it are in them.
    RegistrationSent,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Probe this member: dial it if needed (within the dial timeout), report
    /// [`Input::ProbeStarted`] when the request is sent, then [`Input::Ack`] or
    /// [`Input::ProbeFailed`] (no answer within the dead timeout, or no link).
    Probe(MemberInfo),
    /// Introduce ourselves to this member (our nearest predecessor).
    Hello(MemberInfo),
    /// Tell the server this member is suspect.
    Report {
        /// Who.
        suspect: NodeId,
        /// Why.
        reason: SuspectReason,
    },
    /// Close the link to this member.
    Drop(NodeId),
    /// The ends this member leads changed.
    Leader(LeaderSides),
}

#[derive(Debug, Clone)]
struct PeerState {
    health: PeerHealth,
    /// When this slow or dead spell was last reported to the server.
    reported: Option<Instant>,
    /// A probe attempt (dial, then request) is under way since then.
    attempt: Option<Instant>,
    /// When the probe request went on the wire: the hop timer.
    probe_sent: Option<Instant>,
    last_try: Option<Instant>,
    /// When it last answered a probe on time.
    answered: Option<Instant>,
    /// When it last stopped being routable (went late or dead).
    failed: Option<Instant>,
}

/// One endpoint's ring state.
#[derive(Debug)]
pub struct RingCore {
    cfg: RingConfig,
    me: MemberInfo,
    view: Vec<MemberInfo>,
    /// Members in the server's last list.
    ring_members: usize,
    /// This member's index in `view` (kept with the view: every message needs it).
    pos: usize,
    /// The route target's index in `view` (see [`RingCore::route_target`]).
    route: Option<usize>,
    peers: HashMap<NodeId, PeerState, FastIds>,
    isolated: bool,
    started: Instant,
    last_pred_probe: Option<Instant>,
    leader: LeaderSides,
    hello_sent_to: Option<NodeId>,
    /// Members that said hello, and when: kept across member lists computed before the hello.
    hellos: HashMap<NodeId, (MemberInfo, Instant), FastIds>,
    registration_sent: Option<Instant>,
    out: VecDeque<Output>,
}

fn order(a: &MemberInfo, b: &MemberInfo) -> Ordering {
    (a.addr.ip(), &a.id).cmp(&(b.addr.ip(), &b.id))
}

impl RingCore {
    /// A member that knows only itself, at `now`.
    pub fn new(cfg: RingConfig, me: MemberInfo, now: Instant) -> RingCore {
        RingCore {
            cfg,
            view: vec![me.clone()],
            ring_members: 1,
            pos: 0,
            route: None,
            me,
            peers: HashMap::default(),
            isolated: false,
            started: now,
            last_pred_probe: None,
            leader: LeaderSides::default(),
            hello_sent_to: None,
            hellos: HashMap::default(),
            registration_sent: None,
            out: VecDeque::new(),
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Tick => self.tick(now),
            Input::HopLate(id) => {
                if self.member(&id).is_none() {
                    return;
                }
                let p = self.peer(&id);
                if p.health.routable() {
                    p.health = PeerHealth::Late;
                    p.failed = Some(now);
                    // Late members are probed at every tick until one answers in time (or
                    // late: then it is slow); this tick starts that.
                    self.tick(now);
                }
            }
            Input::Members { members, isolated } => self.set_members(members, isolated, now),
            Input::MembersFromWarmingServer {
                mut members,
                isolated,
            } => {
                if !isolated {
                    for m in &self.view {
                        let listed = members.iter().any(|x| x.id == m.id);
                        let dead = self
                            .peers
                            .get(&m.id)
                            .is_some_and(|p| p.health == PeerHealth::Dead);
                        if !listed && !dead {
                            members.push(m.clone());
                        }
                    }
                }
                self.set_members(members, isolated, now)
            }
            Input::ProbeStarted(id) => {
                let p = self.peer(&id);
                if p.attempt.is_some() {
                    p.probe_sent = Some(now);
                }
            }
            Input::Ack(id) => self.on_ack(&id, now),
            Input::ProbeFailed(id) => {
                // Only a failure of the attempt under way counts (see `on_ack`).
                if self.peers.get(&id).is_some_and(|p| p.attempt.is_some()) {
                    self.on_failed(&id, now);
                }
            }
            Input::ForwardFailed(id) => self.on_failed(&id, now),
            Input::ProbedBy(id) => {
                // Only members before us probe us; one our view does not list yet (it
                // registered after our last registration) counts too.
                let me = self.my_position();
                let just_before = me > 0 && self.view.get(me - 1).is_some_and(|m| m.id == id);
                if just_before || self.position(&id).is_none_or(|p| p < me) {
                    self.last_pred_probe = Some(now);
                }
            }
            Input::RegistrationSent => self.registration_sent = Some(now),
            Input::HelloFailed(id) => {
                if self.hello_sent_to.as_ref() == Some(&id) {
                    self.hello_sent_to = None;
                }
            }
            Input::Learned(members) => {
                // Every probe's answer lands here: no allocation unless someone is new, and
                // a member already in place is found by binary search (the view is sorted).
                // Members past the end of a full window would be trimmed at once: skipped.
                let full = self.view.len() > self.pos + self.reach();
                let mut added = Vec::new();
                for m in members {
                    let known = self.view.binary_search_by(|v| order(v, &m)).is_ok()
                        || self.view.iter().any(|v| v.id == m.id);
                    let beyond = full
                        && self
                            .view
                            .last()
                            .is_some_and(|l| order(&m, l) == Ordering::Greater);
                    if m.id != self.me.id && !known && !beyond {
                        added.push(m.id.clone());
                        self.view.push(m);
                    }
                }
                if !added.is_empty() {
                    self.view.sort_by(order);
                    self.reindex();
                    // Kept across the server's older lists: those still in the window.
                    for id in added {
                        if let Some(m) = self.view.iter().find(|v| v.id == id) {
                            self.hellos.insert(id, (m.clone(), now));
                        }
                    }
                    self.say_hello();
                }
            }
            Input::Hello(m) => {
                if m.id == self.me.id {
                    return;
                }
                let moved = self.view.iter().any(|v| v.id == m.id && v.addr != m.addr);
                self.hellos.insert(m.id.clone(), (m.clone(), now));
                // New, or back at a new address: (re)place it in order.
                self.view.retain(|v| v.id != m.id);
                self.view.push(m.clone());
                self.view.sort_by(order);
                self.reindex();
                if let Some(p) = self.peers.get_mut(&m.id) {
                    if moved {
                        // Restarted elsewhere: forget it and any attempt at the old address
                        // (whose result the driver drops as stale), and probe it anew.
                        p.attempt = None;
                        p.probe_sent = None;
                        p.reported = None;
                        p.health = PeerHealth::Unknown;
                    } else if p.health == PeerHealth::Dead {
                        // It is alive after all: try it at the next tick.
                        p.last_try = None;
                    }
                }
            }
        }
        self.route = self.find_route();
        self.flush_reports(now);
        self.update_leadership(now);
    }

    /// The registration about to be answered went out at `sent`: the member list that
    /// follows reflects the server's view as of then (several may be out at once when one
    /// is retried; each answer keeps the hellos its own request predates).
    pub fn registration_answered(&mut self, sent: Instant) {
        self.registration_sent = Some(sent);
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The members this one uses, in ring order, itself included: its nearest predecessor
    /// and its candidates (the rest of the ring is not kept).
    pub fn view(&self) -> &[MemberInfo] {
        &self.view
    }

    /// Members in the server's last list (hellos included), this one too.
    pub fn ring_members(&self) -> usize {
        self.ring_members
    }

    /// The successor questions go to now: the first routable candidate, or, when every
    /// candidate is slow (more likely this member's own network is), the first slow one.
    /// Found when the state last changed (every question asks; few inputs change it).
    pub fn route_target(&self) -> Option<&MemberInfo> {
        self.route.and_then(|i| self.view.get(i))
    }

    /// [`RingCore::route_target`]'s index in the view, worked out anew.
    fn find_route(&self) -> Option<usize> {
        let health = |i: &usize| self.health(&self.view[*i].id);
        self.candidate_indices()
            .find(|i| health(i).routable())
            .or_else(|| {
                self.candidate_indices()
                    .find(|i| health(i) == PeerHealth::Slow)
            })
    }

    /// The members after this one, up to the successor list's length.
    pub fn successors(&self) -> &[MemberInfo] {
        let me = self.my_position();
        let after = &self.view[(me + 1).min(self.view.len())..];
        &after[..after.len().min(self.cfg.successors)]
    }

    /// The successor list followed by the skip contacts.
    pub fn candidates(&self) -> Vec<&MemberInfo> {
        self.candidate_iter().collect()
    }

    /// [`RingCore::candidates`] without allocating.
    fn candidate_iter(&self) -> impl Iterator<Item = &MemberInfo> + '_ {
        self.candidate_indices().map(|i| &self.view[i])
    }

    /// Indices in `view` of the candidates, in order. A skip contact that would fall past
    /// the end of the view (the ring ends within this member's reach) is the view's last
    /// member instead: near the ring's end, its last member is a contact of everyone within
    /// reach, so a run of members down just before it cannot cut it off from the chain.
    fn candidate_indices(&self) -> impl Iterator<Item = usize> + use<> {
        let first = self.pos + 1;
        let len = self.view.len();
        let n = self.cfg.successors;
        let skip = move |k: u32| (first + ((n * 2) << k) - 1).min(len.saturating_sub(1));
        let skips = (0..self.cfg.skip_contacts as u32)
            .filter(move |_| n > 0)
            // Clamped skips repeat: each place once, past the successor list.
            .filter(move |&k| skip(k) >= first + n && (k == 0 || skip(k) > skip(k - 1)))
            .map(skip);
        (first..first + n).chain(skips).filter(move |&i| i < len)
    }

    /// How this member judges `id`.
    pub fn health(&self, id: &NodeId) -> PeerHealth {
        self.peers
            .get(id)
            .map(|p| p.health)
            .unwrap_or(PeerHealth::Unknown)
    }

    /// Whether a probe of `id` is under way (dialing, or its request unanswered).
    pub fn probing(&self, id: &NodeId) -> bool {
        self.peers.get(id).is_some_and(|p| p.attempt.is_some())
    }

    /// The ends this member leads.
    pub fn leader(&self) -> LeaderSides {
        self.leader
    }

    /// A member of the view by id. Probes and questions go to candidates (successors and
    /// skips), so those are looked at first; the whole view only after.
    pub fn member(&self, id: &NodeId) -> Option<&MemberInfo> {
        self.candidate_iter()
            .find(|m| &m.id == id)
            .or_else(|| self.view.iter().find(|m| &m.id == id))
    }

    fn position(&self, id: &NodeId) -> Option<usize> {
        self.view.iter().position(|m| &m.id == id)
    }

    fn my_position(&self) -> usize {
        self.pos
    }

    /// How far after this member its furthest candidate can be.
    fn reach(&self) -> usize {
        match (self.cfg.successors, self.cfg.skip_contacts) {
            (0, _) => 0,
            (n, 0) => n,
            (n, k) => n.max((n * 2) << (k - 1)),
        }
    }

    /// Recomputes this member's index after the view changed, and keeps only the part of
    /// the view this member uses: its nearest predecessor (greeted; and the view's first
    /// member leads) and its candidates, up to the furthest skip contact. A ring of a few
    /// hundred members costs each of them a few dozen entries, not the whole list; the
    /// server's next list brings back whoever moves into range.
    fn reindex(&mut self) {
        self.pos = self.position(&self.me.id).unwrap_or(0);
        let keep_to = (self.pos + 1 + self.reach()).min(self.view.len());
        let keep_from = self.pos.saturating_sub(1);
        if keep_to < self.view.len() || keep_from > 0 {
            self.view.truncate(keep_to);
            self.view.drain(..keep_from);
            self.pos -= keep_from;
        }
        // Hellos push onto a view built to size: without this, one joiner doubles it.
        if self.view.capacity() > self.view.len() + self.view.len() / 4 + 4 {
            self.view.shrink_to_fit();
        }
    }

    fn peer(&mut self, id: &NodeId) -> &mut PeerState {
        self.peers.entry(id.clone()).or_insert(PeerState {
            health: PeerHealth::Unknown,
            reported: None,
            attempt: None,
            probe_sent: None,
            last_try: None,
            answered: None,
            failed: None,
        })
    }

    fn set_members(&mut self, mut members: Vec<MemberInfo>, isolated: bool, now: Instant) {
        self.isolated = isolated;
        if isolated {
            members.clear();
        }
        if !members.iter().any(|m| m.id == self.me.id) {
            members.push(self.me.clone());
        }
        // A list computed before a hello arrived does not show that joiner yet: keep it.
        let since = self.registration_sent;
        self.hellos
            .retain(|_, (_, at)| since.is_none_or(|s| *at >= s));
        if self.hellos.is_empty() {
            // Most of the time: the table's room goes too.
            self.hellos.shrink_to_fit();
        }
        if !isolated {
            for (m, _) in self.hellos.values() {
                if !members.iter().any(|x| x.id == m.id) {
                    members.push(m.clone());
                }
            }
        }
        members.sort_by(order);
        members.dedup_by(|a, b| a.id == b.id);
        self.ring_members = members.len();
        // Judged against the whole list: a member that leaves the window and comes back
        // (a joiner pushed it out) keeps its health.
        self.peers
            .retain(|id, _| members.iter().any(|m| &m.id == id));
        let old = std::mem::replace(&mut self.view, members);
        self.reindex();
        // A member back at a new address: an attempt at the old one will never be judged
        // (its result is dropped as stale), so forget it and probe the new address.
        for m in &self.view {
            let moved = old.iter().any(|v| v.id == m.id && v.addr != m.addr);
            if moved && let Some(p) = self.peers.get_mut(&m.id) {
                p.attempt = None;
                p.probe_sent = None;
            }
        }
        self.say_hello();
        self.tick(now);
    }

    /// Introduces this member to its nearest predecessor, once per predecessor, so a joiner
    /// is spliced in before the predecessor's next registration.
    fn say_hello(&mut self) {
        let me = self.my_position();
        if me == 0 {
            return;
        }
        let pred = self.view[me - 1].clone();
        if self.hello_sent_to.as_ref() != Some(&pred.id) {
            self.hello_sent_to = Some(pred.id.clone());
            self.out.push_back(Output::Hello(pred));
        }
    }

    fn on_ack(&mut self, id: &NodeId, now: Instant) {
        let hop = self.cfg.hop_timeout;
        let p = self.peer(id);
        if p.attempt.is_none() {
            // The answer to an attempt we have since forgotten (the member said hello and
            // was probed anew): it says nothing about the new one.
            return;
        }
        let rtt = p.probe_sent.map(|t| now.saturating_duration_since(t));
        p.probe_sent = None;
        p.attempt = None;
        let was_routable = p.health.routable();
        p.health = match rtt {
            Some(rtt) if rtt > hop => PeerHealth::Slow,
            _ => PeerHealth::Ok,
        };
        if p.health == PeerHealth::Ok {
            p.reported = None;
            p.answered = Some(now);
        } else if was_routable {
            p.failed = Some(now);
        }
    }

    fn on_failed(&mut self, id: &NodeId, now: Instant) {
        let p = self.peer(id);
        p.probe_sent = None;
        p.attempt = None;
        p.last_try = Some(now);
        if p.health.routable() {
            p.failed = Some(now);
        }
        if p.health != PeerHealth::Dead {
            p.health = PeerHealth::Dead;
            p.reported = None;
            self.out.push_back(Output::Drop(id.clone()));
        }
    }

    /// Reports slow and dead successors, but only once some other candidate has answered on
    /// time: a member that finds every successor slow or unreachable is more likely the one
    /// at fault (Lifeguard's local health), and accusing its neighbours would be wrong.
    /// A slow or dead spell is reported again every report interval while it lasts (the
    /// server forgets slowness nobody reports, and rechecks a member that is still
    /// unreachable).
    fn flush_reports(&mut self, now: Instant) {
        // Nearly always nothing to report: skip the work without allocating.
        if !self
            .peers
            .values()
            .any(|p| matches!(p.health, PeerHealth::Slow | PeerHealth::Dead))
        {
            return;
        }
        let ids: Vec<NodeId> = self.candidate_iter().map(|m| m.id.clone()).collect();
        if !ids.iter().any(|id| self.health(id) == PeerHealth::Ok) {
            return;
        }
        for id in ids {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            let reason = match p.health {
                PeerHealth::Slow => SuspectReason::Slow,
                PeerHealth::Dead => SuspectReason::Unreachable,
                _ => continue,
            };
            let due = p
                .reported
                .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.report_interval);
            if due {
                p.reported = Some(now);
                self.out.push_back(Output::Report {
                    suspect: id,
                    reason,
                });
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.isolated {
            return;
        }
        // A hello that failed is tried again, once a tick (a no-op once it was answered).
        self.say_hello();
        let hop = self.cfg.hop_timeout;
        // Attempts outstanding past the hop timeout, dial included: route past them now.
        // (Only the request's own round trip decides whether a member is slow.)
        for p in self.peers.values_mut() {
            if let Some(started) = p.attempt
                && now.saturating_duration_since(started) > hop
                && p.health.routable()
            {
                p.health = PeerHealth::Late;
                p.failed = Some(now);
            }
        }
        // Probe the route target, every non-routable candidate closer than it (slow ones each
        // tick, dead ones each retry interval), and nothing beyond it. But once a closer one
        // failed, a route target that has not answered since is not trusted: the ones after
        // it are probed at the same time, up to one that answered after the failure, so a
        // whole unreachable arc is routed past in one hop timeout, not one per member. (A
        // member that answered before a split, and is across it now, is not known to answer:
        // trusting it cost a hop timeout per such member, in turn.)
        // A member that answered is probed again after the probe interval, a slow one after
        // the hop timeout, a dead one after the retry interval: ticks come more often than
        // that (one follows each probe's hop timeout), and must not add probes.
        let retry = self.cfg.retry_interval;
        let interval = self.cfg.probe_interval;
        // The latest failure among the candidates looked at so far.
        let mut failed_before: Option<Instant> = None;
        // A failure with no time on record counts as old as this member.
        let started = self.started;
        for i in self.candidate_indices() {
            let id = self.view[i].id.clone();
            let p = self.peer(&id);
            let routable = p.health.routable();
            let trusted = failed_before
                .is_none_or(|f| p.health == PeerHealth::Ok && p.answered.is_some_and(|a| a >= f));
            if !routable {
                failed_before = failed_before.max(Some(p.failed.unwrap_or(started)));
            }
            let since = |d: Duration| {
                p.last_try
                    .is_none_or(|t| now.saturating_duration_since(t) >= d)
            };
            let due = match p.health {
                PeerHealth::Dead => since(retry),
                PeerHealth::Ok => since(interval),
                PeerHealth::Slow => since(hop),
                PeerHealth::Unknown | PeerHealth::Late => true,
            };
            if p.attempt.is_none() && due {
                p.attempt = Some(now);
                p.last_try = Some(now);
                let m = self.view[i].clone();
                self.out.push_back(Output::Probe(m));
            }
            if routable && trusted {
                break;
            }
        }
    }

    fn update_leadership(&mut self, now: Instant) {
        let sides = if self.isolated {
            LeaderSides {
                forward: true,
                backward: true,
            }
        } else {
            // First in its view, and no predecessor has probed it: one that registered after
            // it is in no list it has had yet (it learns of it at its next registration), but
            // its probes say it is there.
            let first = self.my_position() == 0 && self.last_pred_probe.is_none();
            let heard = self.last_pred_probe.unwrap_or(self.started);
            LeaderSides {
                forward: first || now.saturating_duration_since(heard) > self.cfg.pred_timeout,
                backward: self.route_target().is_none(),
            }
        };
        if sides != self.leader {
            self.leader = sides;
            self.out.push_back(Output::Leader(sides));
        }
    }
}

#[cfg(test)]
mod tests;
