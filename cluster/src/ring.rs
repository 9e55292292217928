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
                    // Late members are probed at every tick until one answers in time (or
                    // late: then it is slow); this tick starts that.
                    self.tick(now);
                }
            }
            Input::Members { members, isolated } => self.set_members(members, isolated, now),
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

    /// Indices in `view` of the candidates, in order.
    fn candidate_indices(&self) -> impl Iterator<Item = usize> + use<> {
        let first = self.pos + 1;
        let len = self.view.len();
        let n = self.cfg.successors;
        let skips = (0..self.cfg.skip_contacts as u32)
            .filter(move |_| n > 0)
            .map(move |k| first + ((n * 2) << k) - 1);
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
        p.health = match rtt {
            Some(rtt) if rtt > hop => PeerHealth::Slow,
            _ => PeerHealth::Ok,
        };
        if p.health == PeerHealth::Ok {
            p.reported = None;
        }
    }

    fn on_failed(&mut self, id: &NodeId, now: Instant) {
        let p = self.peer(id);
        p.probe_sent = None;
        p.attempt = None;
        p.last_try = Some(now);
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
            }
        }
        // Probe the route target, every non-routable candidate closer than it (slow ones each
        // tick, dead ones each retry interval), and nothing beyond it. But once a closer one
        // failed, a route target never probed yet is not trusted: the ones after it are
        // probed at the same time, up to one known to answer, so a whole unreachable arc is
        // routed past in one hop timeout, not one per member.
        // A member that answered is probed again after the probe interval, a slow one after
        // the hop timeout, a dead one after the retry interval: ticks come more often than
        // that (one follows each probe's hop timeout), and must not add probes.
        let retry = self.cfg.retry_interval;
        let interval = self.cfg.probe_interval;
        let mut failed_before = false;
        for i in self.candidate_indices() {
            let id = self.view[i].id.clone();
            let p = self.peer(&id);
            let routable = p.health.routable();
            let trusted = p.health == PeerHealth::Ok || !failed_before;
            failed_before |= !routable;
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
mod tests {
    use super::*;

    fn m(i: u8) -> MemberInfo {
        MemberInfo {
            id: NodeId(format!("n{i:02}").into()),
            addr: format!("127.0.1.{i}:7000").parse().expect("addr"),
        }
    }

    fn cfg() -> RingConfig {
        RingConfig {
            successors: 4,
            skip_contacts: 2,
            probe_interval: Duration::from_millis(100),
            hop_timeout: Duration::from_millis(250),
            dead_timeout: Duration::from_millis(1000),
            dial_timeout: Duration::from_millis(3000),
            pred_timeout: Duration::from_millis(1000),
            retry_interval: Duration::from_millis(1000),
            report_interval: Duration::from_millis(2000),
        }
    }

    fn drain(c: &mut RingCore) -> Vec<Output> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    fn probes(out: &[Output]) -> Vec<NodeId> {
        out.iter()
            .filter_map(|o| match o {
                Output::Probe(m) => Some(m.id.clone()),
                _ => None,
            })
            .collect()
    }

    fn ring(me: u8, n: u8, t0: Instant) -> RingCore {
        let mut c = RingCore::new(cfg(), m(me), t0);
        c.handle(
            Input::Members {
                members: (1..=n).rev().map(m).collect(),
                isolated: false,
            },
            t0,
        );
        c
    }

    /// Drains the outputs and reports every probe as sent at `now` (an already-linked peer).
    fn sent(c: &mut RingCore, now: Instant) -> Vec<Output> {
        let out = drain(c);
        for id in probes(&out) {
            c.handle(Input::ProbeStarted(id), now);
        }
        out
    }

    #[test]
    fn view_is_ordered_by_address_then_id_with_successors_and_skips() {
        let t0 = Instant::now();
        let mut c = RingCore::new(cfg(), m(3), t0);
        let mut twin = m(3);
        twin.id = NodeId("a-first".into()); // same address, smaller id: before us
        let mut members: Vec<_> = (1..=40).rev().map(m).collect();
        members.push(twin.clone());
        c.handle(
            Input::Members {
                members,
                isolated: false,
            },
            t0,
        );
        // It keeps its nearest predecessor, itself and what its furthest skip reaches; it
        // knows how many the ring has.
        let ids: Vec<_> = c.view().iter().map(|m| m.id.0.clone()).collect();
        let mut want = vec!["a-first".to_string()];
        want.extend((3..=19).map(|i| format!("n{i:02}")));
        assert_eq!(ids, want);
        assert_eq!(c.ring_members(), 41);
        let cand: Vec<_> = c.candidates().iter().map(|m| m.id.0.clone()).collect();
        // Four successors, then skips at 8 and 16 places after us.
        assert_eq!(cand, ["n04", "n05", "n06", "n07", "n11", "n19"]);
        assert_eq!(c.route_target().map(|m| m.id.0.as_str()), Some("n04"));
    }

    #[test]
    fn a_member_keeps_only_its_predecessor_and_candidates_as_the_ring_changes() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let ids =
            |c: &RingCore| -> Vec<String> { c.view().iter().map(|m| m.id.0.to_string()).collect() };
        let names = |r: std::ops::RangeInclusive<u8>| -> Vec<String> {
            r.map(|i| format!("n{i:02}")).collect()
        };
        let mut c = ring(30, 60, t0);
        assert_eq!(ids(&c), names(29..=46));
        assert_eq!(c.ring_members(), 60);
        // A joiner right after us is spliced in; the furthest member falls out of reach.
        let mut joiner = m(31);
        joiner.id = NodeId("a-joiner".into());
        c.handle(Input::Hello(joiner.clone()), ms(10));
        let mut want = names(29..=30);
        want.push("a-joiner".into());
        want.extend(names(31..=45));
        assert_eq!(ids(&c), want);
        assert_eq!(c.route_target(), Some(&joiner));
        // One beyond reach is not kept.
        let mut far = m(50);
        far.id = NodeId("a-far".into());
        c.handle(Input::Hello(far), ms(20));
        assert_eq!(ids(&c), want);
        // The server's next list: the member before us left, so the one before it is our
        // predecessor now; the joiner is in the list.
        c.handle(Input::RegistrationSent, ms(1000));
        let mut members: Vec<_> = (1..=60).filter(|&i| i != 29).map(m).collect();
        members.push(joiner);
        c.handle(
            Input::Members {
                members,
                isolated: false,
            },
            ms(1010),
        );
        let mut want = names(28..=28);
        want.extend(names(30..=30));
        want.push("a-joiner".into());
        want.extend(names(31..=45));
        assert_eq!(ids(&c), want);
        assert_eq!(c.ring_members(), 60);
        // The first member has nothing before it: it leads the forward end.
        let first = ring(1, 60, t0);
        assert_eq!(ids(&first), names(1..=17));
        assert!(first.leader().forward);
        // The last keeps its predecessor only.
        let last = ring(60, 60, t0);
        assert_eq!(ids(&last), names(59..=60));
        assert!(last.leader().backward);
    }

    #[test]
    fn extra_ticks_do_not_add_probes_to_a_healthy_successor() {
        // Each probe is followed by a tick at its hop timeout; ticks in between (or many of
        // them) must not probe a successor that answered within the probe interval.
        let t0 = Instant::now();
        let mut c = ring(2, 8, t0);
        let first = sent(&mut c, t0);
        assert_eq!(probes(&first), [NodeId("n03".into())]);
        let t1 = t0 + Duration::from_millis(10);
        c.handle(Input::Ack(NodeId("n03".into())), t1);
        let interval = cfg().probe_interval;
        let mut extra = 0;
        for k in 1..50u32 {
            let t = t0 + interval * k / 50;
            c.handle(Input::Tick, t);
            extra += probes(&sent(&mut c, t)).len();
        }
        assert_eq!(extra, 0, "ticks within the probe interval sent probes");
        let due = t0 + interval;
        c.handle(Input::Tick, due);
        assert_eq!(probes(&sent(&mut c, due)), [NodeId("n03".into())]);
    }

    #[test]
    fn leaders_are_the_ends_and_a_middle_member_waits_for_its_predecessor() {
        let t0 = Instant::now();
        let mut first = ring(1, 5, t0);
        assert_eq!(
            first.leader(),
            LeaderSides {
                forward: true,
                backward: false
            }
        );
        let mut last = ring(5, 5, t0);
        assert_eq!(
            last.leader(),
            LeaderSides {
                forward: false,
                backward: true
            }
        );
        let mut mid = ring(3, 5, t0);
        assert_eq!(mid.leader(), LeaderSides::default());
        // Hearing from a predecessor keeps it a plain member past the timeout...
        mid.handle(Input::ProbedBy(m(2).id), t0 + Duration::from_millis(900));
        mid.handle(Input::Tick, t0 + Duration::from_millis(1800));
        assert_eq!(mid.leader(), LeaderSides::default());
        // ...and silence from every predecessor for the timeout makes it the forward leader.
        mid.handle(Input::Tick, t0 + Duration::from_millis(1901));
        assert_eq!(
            mid.leader(),
            LeaderSides {
                forward: true,
                backward: false
            }
        );
        // A probe from after us does not count as a predecessor's.
        let mut mid2 = ring(3, 5, t0);
        mid2.handle(Input::ProbedBy(m(4).id), t0 + Duration::from_millis(500));
        mid2.handle(Input::Tick, t0 + Duration::from_millis(1001));
        assert!(mid2.leader().forward);
        drain(&mut first);
        drain(&mut last);
    }

    #[test]
    fn a_late_hop_is_skipped_at_the_hop_timeout_and_a_slow_member_kept_probed() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = ring(1, 6, t0);
        // A dial that outlasts the hop timeout routes past the member for now...
        assert_eq!(probes(&drain(&mut c)), [m(2).id]);
        c.handle(Input::Tick, ms(200));
        assert_eq!(c.health(&m(2).id), PeerHealth::Unknown);
        c.handle(Input::Tick, ms(251));
        assert_eq!(c.health(&m(2).id), PeerHealth::Late);
        assert_eq!(c.route_target(), Some(&m(3)));
        // m(3) was never probed and a closer one just failed: it is not trusted yet, so the
        // ones after it, up to one known to answer, are probed at the same time.
        assert_eq!(probes(&sent(&mut c, ms(251))), [m(3).id, m(4).id, m(5).id]);
        c.handle(Input::Ack(m(3).id), ms(260));
        c.handle(Input::Ack(m(4).id), ms(261));
        c.handle(Input::Ack(m(5).id), ms(262));
        // ...but only the request's own round trip judges it: on time, so it is back.
        c.handle(Input::ProbeStarted(m(2).id), ms(300));
        c.handle(Input::Ack(m(2).id), ms(340));
        assert_eq!(c.health(&m(2).id), PeerHealth::Ok);
        assert_eq!(c.route_target(), Some(&m(2)));
        assert_eq!(drain(&mut c), []);
        // Now a request not answered within the hop timeout: route past it at once.
        c.handle(Input::Tick, ms(400));
        assert_eq!(probes(&sent(&mut c, ms(400))), [m(2).id]);
        c.handle(Input::Tick, ms(651));
        assert_eq!(c.health(&m(2).id), PeerHealth::Late);
        assert_eq!(c.route_target(), Some(&m(3)));
        assert_eq!(probes(&sent(&mut c, ms(651))), [m(3).id]);
        // It answers after all: slow, still routed around, and reported (another successor
        // answers on time, so the fault is not ours).
        c.handle(Input::Ack(m(2).id), ms(700));
        assert_eq!(c.health(&m(2).id), PeerHealth::Slow);
        assert_eq!(
            drain(&mut c),
            [Output::Report {
                suspect: m(2).id,
                reason: SuspectReason::Slow
            }]
        );
        c.handle(Input::Ack(m(3).id), ms(701));
        // Next tick probes both the slow one (so it keeps hearing from us) and the target.
        c.handle(Input::Tick, ms(800));
        assert_eq!(probes(&sent(&mut c, ms(800))), [m(2).id, m(3).id]);
        // An on-time answer brings it back.
        c.handle(Input::Ack(m(2).id), ms(900));
        assert_eq!(c.health(&m(2).id), PeerHealth::Ok);
        assert_eq!(c.route_target(), Some(&m(2)));
    }

    #[test]
    fn an_unacknowledged_hop_is_routed_past_at_once_and_probed_until_on_time() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = ring(1, 6, t0);
        assert_eq!(probes(&sent(&mut c, t0)), [m(2).id]);
        c.handle(Input::Ack(m(2).id), ms(10));
        assert_eq!(c.route_target(), Some(&m(2)));
        // A question handed to m(2) is not acknowledged within the hop timeout: route past
        // it now, without waiting for a tick, and probe it (and the ones after it, never
        // probed yet, so not trusted after a closer one failed).
        c.handle(Input::HopLate(m(2).id), ms(300));
        assert_eq!(c.health(&m(2).id), PeerHealth::Late);
        assert_eq!(c.route_target(), Some(&m(3)));
        assert_eq!(
            probes(&sent(&mut c, ms(300))),
            [m(2).id, m(3).id, m(4).id, m(5).id]
        );
        // Said twice (two questions waited on it): nothing more is sent.
        c.handle(Input::HopLate(m(2).id), ms(301));
        assert_eq!(drain(&mut c), []);
        for i in 3..=5 {
            c.handle(Input::Ack(m(i).id), ms(310));
        }
        // Its probe is answered in time: it is the target again.
        c.handle(Input::Ack(m(2).id), ms(320));
        assert_eq!(c.health(&m(2).id), PeerHealth::Ok);
        assert_eq!(c.route_target(), Some(&m(2)));
        // A member the view does not hold (it left) changes nothing.
        c.handle(Input::HopLate(m(9).id), ms(330));
        assert_eq!(drain(&mut c), []);
        assert_eq!(c.route_target(), Some(&m(2)));
    }

    #[test]
    fn a_dead_successor_is_dropped_reported_and_retried() {
        let t0 = Instant::now();
        let mut c = ring(1, 3, t0);
        drain(&mut c);
        c.handle(Input::ProbeFailed(m(2).id), t0 + Duration::from_millis(300));
        assert_eq!(drain(&mut c), [Output::Drop(m(2).id)]);
        assert_eq!(c.route_target(), Some(&m(3)));
        // Retried only after the retry interval.
        c.handle(Input::Tick, t0 + Duration::from_millis(400));
        assert_eq!(
            probes(&sent(&mut c, t0 + Duration::from_millis(400))),
            [m(3).id]
        );
        // Reported once the next successor answers on time.
        c.handle(Input::Ack(m(3).id), t0 + Duration::from_millis(410));
        assert_eq!(
            drain(&mut c),
            [Output::Report {
                suspect: m(2).id,
                reason: SuspectReason::Unreachable
            }]
        );
        c.handle(Input::Tick, t0 + Duration::from_millis(1300));
        assert_eq!(probes(&drain(&mut c)), [m(2).id, m(3).id]);
        // Back after a heal: it answers and is the target again.
        c.handle(Input::Ack(m(2).id), t0 + Duration::from_millis(1310));
        assert_eq!(c.route_target(), Some(&m(2)));
    }

    #[test]
    fn a_member_that_finds_every_successor_slow_blames_itself() {
        let t0 = Instant::now();
        let mut c = ring(1, 3, t0);
        let mut t = t0;
        for _ in 0..6 {
            for id in probes(&drain(&mut c)) {
                c.handle(Input::ProbeStarted(id.clone()), t);
                c.handle(Input::Ack(id), t + Duration::from_millis(400));
            }
            t += Duration::from_millis(500);
            c.handle(Input::Tick, t);
        }
        assert_eq!(c.health(&m(2).id), PeerHealth::Slow);
        assert_eq!(c.health(&m(3).id), PeerHealth::Slow);
        // It still routes (through the first slow one), leads nothing but its own first
        // place, and accuses nobody.
        assert_eq!(c.route_target(), Some(&m(2)));
        assert_eq!(
            c.leader(),
            LeaderSides {
                forward: true,
                backward: false
            }
        );
        assert!(
            !drain(&mut c)
                .iter()
                .any(|o| matches!(o, Output::Report { .. }))
        );
    }

    #[test]
    fn with_every_successor_gone_the_member_leads_the_backward_end() {
        let t0 = Instant::now();
        let mut c = ring(1, 3, t0);
        drain(&mut c);
        c.handle(Input::ProbeFailed(m(2).id), t0);
        // m3 was not being probed: a probe failure for it is stale and ignored...
        c.handle(Input::ProbeFailed(m(3).id), t0);
        assert_eq!(c.route_target(), Some(&m(3)));
        // ...but a failed question forward is not.
        c.handle(Input::ForwardFailed(m(3).id), t0);
        assert_eq!(c.route_target(), None);
        assert_eq!(
            c.leader(),
            LeaderSides {
                forward: true,
                backward: true
            }
        );
        assert!(drain(&mut c).contains(&Output::Leader(LeaderSides {
            forward: true,
            backward: true
        })));
    }

    #[test]
    fn an_isolated_member_is_a_chain_of_one_and_probes_nobody() {
        let t0 = Instant::now();
        let mut c = RingCore::new(cfg(), m(1), t0);
        c.handle(
            Input::Members {
                members: vec![m(1), m(2)],
                isolated: true,
            },
            t0,
        );
        c.handle(Input::Tick, t0 + Duration::from_secs(5));
        assert_eq!(c.view(), [m(1)]);
        assert_eq!(
            drain(&mut c),
            [Output::Leader(LeaderSides {
                forward: true,
                backward: true
            })]
        );
    }

    #[test]
    fn a_hello_survives_an_older_registrations_answer_while_a_newer_one_is_out() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = RingCore::new(cfg(), m(1), t0);
        c.handle(Input::RegistrationSent, ms(0));
        c.handle(Input::Hello(m(2)), ms(10));
        // A retry goes out before the first answer comes back...
        c.handle(Input::RegistrationSent, ms(20));
        // ...and the first answer, computed before the hello, lists nobody else.
        c.registration_answered(ms(0));
        c.handle(
            Input::Members {
                members: vec![m(1)],
                isolated: false,
            },
            ms(30),
        );
        assert_eq!(c.view(), [m(1), m(2)]);
        assert!(!c.leader().backward);
        // The retry's answer, sent after the hello, is the server's truth.
        c.registration_answered(ms(20));
        c.handle(
            Input::Members {
                members: vec![m(1)],
                isolated: false,
            },
            ms(40),
        );
        assert_eq!(c.view(), [m(1)]);
    }

    #[test]
    fn a_hello_survives_a_member_list_computed_before_it() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut c = RingCore::new(cfg(), m(1), t0);
        c.handle(Input::RegistrationSent, ms(0));
        // Member 2 joins and greets us before our registration's answer (which predates it)
        // arrives.
        c.handle(Input::Hello(m(2)), ms(10));
        c.handle(
            Input::Members {
                members: vec![m(1)],
                isolated: false,
            },
            ms(20),
        );
        assert_eq!(c.route_target(), Some(&m(2)));
        assert!(!c.leader().backward);
        // Greeting our predecessor teaches us of a member between us: we greet it in turn.
        let mut j = RingCore::new(cfg(), m(3), t0);
        j.handle(
            Input::Members {
                members: vec![m(1), m(3)],
                isolated: false,
            },
            ms(0),
        );
        assert!(drain(&mut j).contains(&Output::Hello(m(1))));
        j.handle(Input::Learned(vec![m(1), m(2), m(3)]), ms(5));
        assert_eq!(drain(&mut j), [Output::Hello(m(2))]);
        // Only the nearest predecessor is kept of those before it.
        assert_eq!(j.view(), [m(2), m(3)]);
        // A later registration's list is the server's truth again.
        c.handle(Input::RegistrationSent, ms(1000));
        c.handle(
            Input::Members {
                members: vec![m(1)],
                isolated: false,
            },
            ms(1010),
        );
        assert_eq!(c.view(), [m(1)]);
    }

    #[test]
    fn a_member_probed_by_one_its_list_lacks_does_not_lead_the_forward_end() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Its list starts with itself: those before it registered after it did.
        let mut c = ring(5, 9, t0);
        c.handle(
            Input::Members {
                members: (5..=9).map(m).collect(),
                isolated: false,
            },
            ms(0),
        );
        assert!(c.leader().forward);
        // Member 4, which it has never heard of, probes it: someone is before it.
        c.handle(Input::ProbedBy(m(4).id), ms(100));
        assert!(!c.leader().forward);
        c.handle(Input::ProbedBy(m(4).id), ms(900));
        c.handle(Input::Tick, ms(1800));
        assert!(!c.leader().forward, "probed within the predecessor timeout");
        // The probes stop (member 4 left): after the predecessor timeout it leads again.
        c.handle(Input::Tick, ms(1901));
        assert!(c.leader().forward);
    }

    #[test]
    fn a_rejoining_member_is_spliced_back_in_its_place() {
        let t0 = Instant::now();
        // Member 2 was evicted: the list has 1, 3, 4.
        let mut c = RingCore::new(cfg(), m(1), t0);
        c.handle(
            Input::Members {
                members: vec![m(1), m(3), m(4)],
                isolated: false,
            },
            t0,
        );
        assert_eq!(c.route_target(), Some(&m(3)));
        drain(&mut c);
        // It comes back and says hello before the next registration.
        c.handle(Input::Hello(m(2)), t0 + Duration::from_millis(50));
        assert_eq!(c.route_target(), Some(&m(2)));
        c.handle(Input::Tick, t0 + Duration::from_millis(100));
        assert!(probes(&drain(&mut c)).contains(&m(2).id));
        // The joiner greets its nearest predecessor once.
        let mut j = RingCore::new(cfg(), m(2), t0);
        j.handle(
            Input::Members {
                members: vec![m(1), m(2), m(3)],
                isolated: false,
            },
            t0,
        );
        let out = drain(&mut j);
        assert_eq!(
            out.iter().filter(|o| matches!(o, Output::Hello(_))).count(),
            1
        );
        assert!(out.contains(&Output::Hello(m(1))));
        j.handle(
            Input::Members {
                members: vec![m(1), m(2), m(3)],
                isolated: false,
            },
            t0,
        );
        assert!(!drain(&mut j).iter().any(|o| matches!(o, Output::Hello(_))));
        // Ticks do not greet again while the hello stands...
        j.handle(Input::Tick, t0 + Duration::from_millis(10));
        assert!(!drain(&mut j).iter().any(|o| matches!(o, Output::Hello(_))));
        // ...but one that went unanswered is sent again at the next tick, and only then.
        j.handle(Input::HelloFailed(m(1).id), t0 + Duration::from_millis(20));
        assert!(!drain(&mut j).iter().any(|o| matches!(o, Output::Hello(_))));
        j.handle(Input::Tick, t0 + Duration::from_millis(30));
        let again = drain(&mut j);
        assert_eq!(
            again
                .iter()
                .filter(|o| matches!(o, Output::Hello(_)))
                .collect::<Vec<_>>(),
            [&Output::Hello(m(1))]
        );
        // A failure reported for someone we no longer greet changes nothing.
        j.handle(Input::HelloFailed(m(3).id), t0 + Duration::from_millis(40));
        j.handle(Input::Tick, t0 + Duration::from_millis(50));
        assert!(!drain(&mut j).iter().any(|o| matches!(o, Output::Hello(_))));
    }
}
