//! The server's view of its rings, as a sans-IO state machine: registration, peering ranges,
//! suspicion with confirmations, eviction, leaders, and what a returning machine missed.
//!
//! Eviction follows SWIM with Lifeguard's refinement: a reported member becomes *suspect*, the
//! server probes it directly, and it is evicted only if it has not answered when the suspicion
//! timeout runs out. The timeout starts at `4·max(1, log10 N)` seconds and shrinks with each
//! further independent report, but never below `suspicion_min` (5 s by default): a machine that
//! answers within that time is never evicted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use rollcall_runtime::NodeId;

use crate::proto::{
    Handoff, Health, LeaderSides, MemberInfo, MemberReport, Registration, RingId, RingReport,
    SuspectReason,
};

/// Peering and eviction settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    /// IPv4 peering mask (prefix length).
    pub mask_v4: u8,
    /// IPv6 peering mask (prefix length).
    pub mask_v6: u8,
    /// Ranges that never peer (VPN pools): `(network, prefix length)`.
    pub isolated: Vec<(IpAddr, u8)>,
    /// Observed ranges whose machines are placed by the address they declare (a NAT the
    /// server sees them through). Everywhere else a machine is placed by the address the
    /// server observes for its registering connection: where it sits is not its own say.
    pub declared_address_ranges: Vec<(IpAddr, u8)>,
    /// A suspect is never evicted sooner than this after the first report.
    pub suspicion_min: Duration,
    /// Independent reports that bring the timeout down to `suspicion_min`.
    pub confirmations: u32,
    /// A member that has not registered for this long is offline.
    pub offline_after: Duration,
    /// An offline member is forgotten after this long (what the server keeps, and lists in
    /// every ring view, does not grow with machines long gone).
    pub offline_retention: Duration,
    /// The longest host name a registration may carry (what every ring view lists).
    pub max_hostname_bytes: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            mask_v4: 24,
            mask_v6: 64,
            isolated: Vec::new(),
            declared_address_ranges: Vec::new(),
            suspicion_min: Duration::from_secs(5),
            confirmations: 3,
            offline_after: Duration::from_secs(270),
            offline_retention: Duration::from_secs(7 * 24 * 3600),
            max_hostname_bytes: crate::proto::MAX_HOSTNAME_BYTES,
        }
    }
}

/// Parses `10.8.0.0/16` style ranges.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a range like 10.8.0.0/16"))?;
    let ip: IpAddr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("{s:?}: prefix longer than {max}"));
    }
    Ok((network(ip, len), len))
}

fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & mask).into())
        }
    }
}

impl MembershipConfig {
    /// Where a registering machine is placed and dialed: the address it `declared` if the
    /// server `observed` it (its connection's source, if any) in a declared-address range,
    /// otherwise the observed address with the declared port.
    pub fn placement(&self, declared: SocketAddr, observed: Option<SocketAddr>) -> SocketAddr {
        let Some(observed) = observed else {
            return declared;
        };
        let ip = observed.ip().to_canonical();
        let declared_ok = self
            .declared_address_ranges
            .iter()
            .any(|(net, len)| net.is_ipv4() == ip.is_ipv4() && network(ip, *len) == *net);
        if declared_ok {
            declared
        } else {
            SocketAddr::new(ip, declared.port())
        }
    }

    /// The ring an address peers in, or `None` in an isolated range.
    pub fn ring_of(&self, ip: IpAddr) -> Option<RingId> {
        if self
            .isolated
            .iter()
            .any(|(net, len)| net.is_ipv4() == ip.is_ipv4() && network(ip, *len) == *net)
        {
            return None;
        }
        let len = if ip.is_ipv4() {
            self.mask_v4
        } else {
            self.mask_v6
        };
        Some(RingId(format!("{}/{len}", network(ip, len))))
    }
}

#[derive(Debug, Clone)]
enum State {
    Ok,
    Slow {
        last_report: Instant,
    },
    Suspect {
        since: Instant,
        reporters: BTreeSet<NodeId>,
        reason: SuspectReason,
    },
    Offline {
        since: Instant,
    },
}

#[derive(Debug, Clone)]
struct Member {
    info: MemberInfo,
    /// Inline up to 24 bytes: reports and questions' expected lists copy it per member.
    hostname: CompactString,
    last_seen: Instant,
    state: State,
    leads: LeaderSides,
}

impl Member {
    fn health(&self) -> Health {
        match self.state {
            State::Ok => Health::Ok,
            State::Slow { .. } => Health::Slow,
            State::Suspect { .. } => Health::Suspect,
            State::Offline { .. } => Health::Offline,
        }
    }

    fn report(&self) -> MemberReport {
        MemberReport {
            id: self.info.id.clone(),
            addr: self.info.addr,
            hostname: self.hostname.clone(),
            health: self.health(),
            leads: self.leads,
        }
    }
}

/// What a registration changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The member's ring, `None` in an isolated range.
    pub ring: Option<RingId>,
    /// Live members of that ring in ring order (just the member itself when isolated).
    pub members: Vec<MemberInfo>,
    /// `Some(None)`: first registration; `Some(Some(t))`: back after being offline since `t`;
    /// `None`: a routine re-registration.
    pub returning: Option<Option<Instant>>,
}

/// An order to probe a suspect directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOrder {
    /// Who.
    pub member: MemberInfo,
}

/// Where missed work comes from when a member returns (the question and action stores will
/// implement it).
pub trait Backlog: Send + Sync + 'static {
    /// Everything unexpired that `node` (in `ring`) has not seen since `since` (`None`: ever).
    fn missed(&self, node: &NodeId, ring: Option<&RingId>, since: Option<Instant>) -> Vec<Handoff>;
}

impl MembershipConfig {
    /// Lifeguard's suspicion timeout for a ring of `n` with `confirmations` reporters.
    pub fn suspicion_timeout(&self, n: usize, confirmations: u32) -> Duration {
        let min = self.suspicion_min.as_secs_f64();
        let max = (4.0 * (n.max(1) as f64).log10().max(1.0)).max(min);
        let k = f64::from(self.confirmations.max(1));
        let c = f64::from(confirmations.saturating_sub(1));
        let t = max - (max - min) * (c + 1.0).ln() / (k + 1.0).ln();
        Duration::from_secs_f64(t.max(min))
    }
}

/// The server's rings (those of one shard).
#[derive(Debug)]
pub struct Membership {
    cfg: MembershipConfig,
    rings: BTreeMap<RingId, BTreeMap<NodeId, Member>>,
    isolated: BTreeMap<NodeId, Member>,
    ring_of_node: HashMap<NodeId, Option<RingId>>,
    /// Members that may be suspect or slow: looked at on every tick. (Everyone else only
    /// needs a look for silence, which [`FULL_WALK_EVERY`] is precise enough for: a shard
    /// of 100,000 members walked four times a second was a fifth of an idle server's work.)
    watched: BTreeSet<NodeId>,
    /// Members that announced leading an end.
    leading: BTreeSet<NodeId>,
    /// When the next walk over every member is due.
    next_full_walk: Option<Instant>,
}

/// How often a tick walks every member, for those silent past `offline_after`.
const FULL_WALK_EVERY: Duration = Duration::from_secs(1);

fn sorted(members: &BTreeMap<NodeId, Member>) -> Vec<&Member> {
    let mut v: Vec<&Member> = members.values().collect();
    v.sort_by(|a, b| (a.info.addr.ip(), &a.info.id).cmp(&(b.info.addr.ip(), &b.info.id)));
    v
}

/// One tick's judgement of member `m` of a ring of `n`: evicts it (true) if its suspicion
/// timeout ran out or it was silent past `offline_after`; clears old slowness.
fn judge(cfg: &MembershipConfig, n: usize, m: &mut Member, now: Instant) -> bool {
    let silent = now.saturating_duration_since(m.last_seen) >= cfg.offline_after;
    let evict = match &m.state {
        // Silence evicts a suspect too: a first report that came just before the silence
        // ran out must not keep a dead machine listed for another suspicion timeout.
        State::Suspect {
            since, reporters, ..
        } => {
            silent
                || now.saturating_duration_since(*since)
                    >= cfg.suspicion_timeout(n, reporters.len() as u32)
        }
        State::Offline { .. } => false,
        _ => silent,
    };
    if evict {
        m.state = State::Offline { since: now };
        m.leads = LeaderSides::default();
    } else if let State::Slow { last_report } = m.state
        && now.saturating_duration_since(last_report) >= cfg.suspicion_timeout(n, 1)
    {
        m.state = State::Ok;
    }
    evict
}

impl Membership {
    /// No rings yet.
    pub fn new(cfg: MembershipConfig) -> Membership {
        Membership {
            cfg,
            rings: BTreeMap::new(),
            isolated: BTreeMap::new(),
            ring_of_node: HashMap::new(),
            watched: BTreeSet::new(),
            leading: BTreeSet::new(),
            next_full_walk: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &MembershipConfig {
        &self.cfg
    }

    fn members_mut(&mut self, ring: &Option<RingId>) -> &mut BTreeMap<NodeId, Member> {
        match ring {
            Some(r) => self.rings.entry(r.clone()).or_default(),
            None => &mut self.isolated,
        }
    }

    fn find_mut(&mut self, id: &NodeId) -> Option<&mut Member> {
        let ring = self.ring_of_node.get(id)?.clone();
        self.members_mut(&ring).get_mut(id)
    }

    /// Records a registration from `id` at `now`.
    pub fn register(&mut self, id: &NodeId, reg: &Registration, now: Instant) -> Registered {
        let ring = self.cfg.ring_of(reg.addr.ip());
        // A machine that moved to another range leaves its old ring.
        if let Some(old) = self.ring_of_node.get(id).cloned()
            && old != ring
        {
            self.members_mut(&old).remove(id);
            self.leading.remove(id);
        }
        self.ring_of_node.insert(id.clone(), ring.clone());
        let members = self.members_mut(&ring);
        let returning = match members.get_mut(id) {
            Some(m) => {
                m.info.addr = reg.addr;
                m.hostname = reg.hostname.as_str().into();
                m.last_seen = now;
                match m.state {
                    State::Offline { since } => {
                        m.state = State::Ok;
                        Some(Some(since))
                    }
                    // Registering proves it is alive.
                    State::Suspect { .. } => {
                        m.state = State::Ok;
                        None
                    }
                    _ => None,
                }
            }
            None => {
                members.insert(
                    id.clone(),
                    Member {
                        info: MemberInfo {
                            id: id.clone(),
                            addr: reg.addr,
                        },
                        hostname: reg.hostname.as_str().into(),
                        last_seen: now,
                        state: State::Ok,
                        leads: LeaderSides::default(),
                    },
                );
                Some(None)
            }
        };
        let members = match &ring {
            Some(r) => self.live_members(r),
            None => vec![MemberInfo {
                id: id.clone(),
                addr: reg.addr,
            }],
        };
        Registered {
            ring,
            members,
            returning,
        }
    }

    /// Live (not offline) members of `ring` in ring order.
    pub fn live_members(&self, ring: &RingId) -> Vec<MemberInfo> {
        self.rings
            .get(ring)
            .map(|ms| {
                sorted(ms)
                    .into_iter()
                    .filter(|m| !matches!(m.state, State::Offline { .. }))
                    .map(|m| m.info.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `reporter` suspects `suspect`. Returns an order to probe it directly when this is the
    /// first report of a new suspicion.
    pub fn suspect(
        &mut self,
        reporter: &NodeId,
        suspect: &NodeId,
        reason: SuspectReason,
        now: Instant,
    ) -> Option<ProbeOrder> {
        if reporter == suspect || self.ring_of_node.get(reporter) != self.ring_of_node.get(suspect)
        {
            return None;
        }
        let m = self.find_mut(suspect)?;
        match (&mut m.state, reason) {
            (State::Offline { .. }, _) => None,
            (State::Suspect { reporters, .. }, _) => {
                reporters.insert(reporter.clone());
                None
            }
            // Slowness is not a liveness question: it answers, just late. Mark it (neighbours
            // route around it) and keep it marked while reports keep coming.
            (State::Ok | State::Slow { .. }, SuspectReason::Slow) => {
                m.state = State::Slow { last_report: now };
                self.watched.insert(suspect.clone());
                None
            }
            (State::Ok | State::Slow { .. }, SuspectReason::Unreachable) => {
                m.state = State::Suspect {
                    since: now,
                    reporters: BTreeSet::from([reporter.clone()]),
                    reason,
                };
                let member = m.info.clone();
                self.watched.insert(suspect.clone());
                Some(ProbeOrder { member })
            }
        }
    }

    /// The server's direct probe of `id` was answered (or not).
    pub fn probe_result(&mut self, id: &NodeId, answered: bool, now: Instant) {
        let Some(m) = self.find_mut(id) else { return };
        if let State::Suspect { reason, .. } = m.state
            && answered
        {
            m.last_seen = now;
            m.state = match reason {
                SuspectReason::Slow => State::Slow { last_report: now },
                SuspectReason::Unreachable => State::Ok,
            };
        }
    }

    /// The suspicion timeout for a ring of `n` with `confirmations` independent reports.
    pub fn suspicion_timeout(&self, n: usize, confirmations: u32) -> Duration {
        self.cfg.suspicion_timeout(n, confirmations)
    }

    /// Advances time: evicts suspects whose timeout ran out and members silent too long;
    /// clears old slowness. Returns who was evicted.
    pub fn tick(&mut self, now: Instant) -> Vec<(RingId, NodeId)> {
        // Suspects and slow members are looked at on every tick; everyone, for silence, at
        // most once per FULL_WALK_EVERY. No allocation unless one is evicted.
        let mut evicted = Vec::new();
        if self.next_full_walk.is_none_or(|t| now >= t) {
            self.forget_long_offline(now);
        }
        let cfg = &self.cfg;
        if self.next_full_walk.is_none_or(|t| now >= t) {
            self.next_full_walk = Some(now + FULL_WALK_EVERY);
            self.watched.clear();
            for (ring, ms) in self.rings.iter_mut() {
                let n = ms.len();
                for (id, m) in ms.iter_mut() {
                    if judge(cfg, n, m, now) {
                        self.leading.remove(id);
                        evicted.push((ring.clone(), id.clone()));
                    } else if matches!(m.state, State::Suspect { .. } | State::Slow { .. }) {
                        self.watched.insert(id.clone());
                    }
                }
            }
            return evicted;
        }
        let watched = std::mem::take(&mut self.watched);
        for id in watched {
            let Some(Some(ring)) = self.ring_of_node.get(&id) else {
                continue;
            };
            let Some(ms) = self.rings.get_mut(ring) else {
                continue;
            };
            let n = ms.len();
            let Some(m) = ms.get_mut(&id) else { continue };
            if judge(cfg, n, m, now) {
                self.leading.remove(&id);
                evicted.push((ring.clone(), id));
            } else if matches!(m.state, State::Suspect { .. } | State::Slow { .. }) {
                self.watched.insert(id);
            }
        }
        evicted
    }

    /// Forgets members offline for longer than the retention.
    fn forget_long_offline(&mut self, now: Instant) {
        let keep = self.cfg.offline_retention;
        let gone = |m: &Member| matches!(m.state, State::Offline { since } if now.saturating_duration_since(since) >= keep);
        let mut forgotten = Vec::new();
        for ms in self
            .rings
            .values_mut()
            .chain(std::iter::once(&mut self.isolated))
        {
            ms.retain(|id, m| {
                let g = gone(m);
                if g {
                    forgotten.push(id.clone());
                }
                !g
            });
        }
        self.rings.retain(|_, ms| !ms.is_empty());
        for id in forgotten {
            self.ring_of_node.remove(&id);
            self.leading.remove(&id);
        }
    }

    /// `id` announced the ends it leads on its server link.
    pub fn set_leader(&mut self, id: &NodeId, sides: LeaderSides) {
        if let Some(m) = self.find_mut(id) {
            m.leads = sides;
            if sides.any() {
                self.leading.insert(id.clone());
            } else {
                self.leading.remove(id);
            }
        }
    }

    /// Members that announced leading an end.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.leading.iter().cloned().collect()
    }

    /// `id`'s server link went down.
    pub fn link_down(&mut self, id: &NodeId) {
        if let Some(m) = self.find_mut(id) {
            m.leads = LeaderSides::default();
        }
        self.leading.remove(id);
    }

    /// Whether this shard knows `id`.
    pub fn knows(&self, id: &NodeId) -> bool {
        self.ring_of_node.contains_key(id)
    }

    /// Reports of this shard's rings (all, or those `filter` names or contains), and its
    /// isolated members.
    pub fn report(&self, filter: Option<&str>) -> (Vec<RingReport>, Vec<MemberReport>) {
        let wanted = |r: &RingId| match filter {
            None => true,
            Some(f) => {
                f == r.0
                    || f.parse::<IpAddr>()
                        .ok()
                        .and_then(|ip| self.cfg.ring_of(ip))
                        .is_some_and(|x| &x == r)
            }
        };
        let rings = self
            .rings
            .iter()
            .filter(|(r, _)| wanted(r))
            .map(|(r, ms)| {
                let members: Vec<MemberReport> =
                    sorted(ms).into_iter().map(Member::report).collect();
                let leader_links = members.iter().filter(|m| m.leads.any()).count();
                RingReport {
                    ring: r.clone(),
                    members,
                    leader_links,
                    members_total: 0,
                }
            })
            .collect();
        let isolated = if filter.is_none() {
            self.isolated.values().map(Member::report).collect()
        } else {
            Vec::new()
        };
        (rings, isolated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(ip: &str) -> Registration {
        Registration {
            addr: format!("{ip}:7000").parse().expect("addr"),
            hostname: ip.into(),
            os: "linux".into(),
            version: "test".into(),
        }
    }

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    #[test]
    fn peering_ranges_follow_the_mask_and_isolated_ranges_never_peer() {
        let cfg = MembershipConfig {
            isolated: vec![parse_cidr("10.8.0.0/16").expect("cidr")],
            ..Default::default()
        };
        let ring = |s: &str| cfg.ring_of(s.parse().expect("ip")).map(|r| r.0);
        assert_eq!(ring("127.0.1.7").as_deref(), Some("127.0.1.0/24"));
        assert_eq!(ring("127.0.2.7").as_deref(), Some("127.0.2.0/24"));
        assert_eq!(ring("10.8.44.1"), None);
        assert_eq!(ring("fd00::1:2").as_deref(), Some("fd00::/64"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nonsense").is_err());
    }

    #[test]
    fn registration_returns_the_ring_in_order_and_flags_first_and_returning_visits() {
        let t0 = Instant::now();
        let mut m = Membership::new(MembershipConfig::default());
        assert_eq!(
            m.register(&id("c"), &reg("127.0.1.3"), t0).returning,
            Some(None)
        );
        m.register(&id("a"), &reg("127.0.1.1"), t0);
        m.register(&id("x"), &reg("127.0.2.1"), t0);
        let r = m.register(&id("b"), &reg("127.0.1.2"), t0);
        assert_eq!(r.ring, Some(RingId("127.0.1.0/24".into())));
        let order: Vec<_> = r.members.iter().map(|m| m.id.0.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(m.register(&id("b"), &reg("127.0.1.2"), t0).returning, None);
        // Silent past offline_after: offline, dropped from lists, and flagged when back.
        let later = t0 + Duration::from_secs(271);
        m.register(&id("a"), &reg("127.0.1.1"), later);
        m.register(&id("c"), &reg("127.0.1.3"), later);
        let evicted = m.tick(later);
        assert_eq!(evicted.len(), 2, "{evicted:?}"); // b, and x in the other ring
        let live: Vec<_> = m
            .live_members(&RingId("127.0.1.0/24".into()))
            .into_iter()
            .map(|m| m.id.0)
            .collect();
        assert_eq!(live, ["a", "c"]);
        let back = m.register(&id("b"), &reg("127.0.1.2"), later + Duration::from_secs(1));
        assert_eq!(back.returning, Some(Some(later)));
        assert_eq!(back.members.len(), 3);
    }

    #[test]
    fn a_suspect_that_answers_is_never_evicted_and_one_that_does_not_is_evicted_on_time() {
        let t0 = Instant::now();
        let mut m = Membership::new(MembershipConfig::default());
        for (n, ip) in [("a", "127.0.1.1"), ("b", "127.0.1.2"), ("c", "127.0.1.3")] {
            m.register(&id(n), &reg(ip), t0);
        }
        // One report: probe ordered once; a second reporter only confirms.
        let order = m.suspect(&id("a"), &id("b"), SuspectReason::Unreachable, t0);
        assert_eq!(order.map(|o| o.member.id), Some(id("b")));
        assert_eq!(
            m.suspect(&id("c"), &id("b"), SuspectReason::Unreachable, t0),
            None
        );
        // b answers 4.9 s later: cleared, never evicted.
        m.probe_result(&id("b"), true, t0 + Duration::from_millis(4900));
        assert!(m.tick(t0 + Duration::from_secs(60)).is_empty());
        let health = |m: &Membership, who: &str| {
            m.report(None).0[0]
                .members
                .iter()
                .find(|r| r.id.0 == who)
                .map(|r| r.health)
        };
        assert_eq!(health(&m, "b"), Some(Health::Ok));
        // c is suspected and does not answer: evicted when the timeout runs out, not before.
        let t1 = t0 + Duration::from_secs(60);
        m.register(&id("a"), &reg("127.0.1.1"), t1);
        m.register(&id("b"), &reg("127.0.1.2"), t1);
        m.suspect(&id("b"), &id("c"), SuspectReason::Unreachable, t1);
        m.probe_result(&id("c"), false, t1 + Duration::from_secs(5));
        let timeout = m.suspicion_timeout(3, 1);
        assert_eq!(timeout, Duration::from_secs(5));
        assert!(m.tick(t1 + timeout - Duration::from_millis(1)).is_empty());
        assert_eq!(
            m.tick(t1 + timeout),
            vec![(RingId("127.0.1.0/24".into()), id("c"))]
        );
        assert_eq!(health(&m, "c"), Some(Health::Offline));
    }

    #[test]
    fn a_member_silent_past_offline_after_is_evicted_though_just_suspected() {
        let t0 = Instant::now();
        let cfg = MembershipConfig {
            offline_after: Duration::from_secs(30),
            ..MembershipConfig::default()
        };
        let mut m = Membership::new(cfg);
        for (n, ip) in [("a", "127.0.1.1"), ("b", "127.0.1.2"), ("c", "127.0.1.3")] {
            m.register(&id(n), &reg(ip), t0);
        }
        // a keeps registering; c last registered at t0 and is first reported 29 s later.
        let t1 = t0 + Duration::from_secs(29);
        m.register(&id("a"), &reg("127.0.1.1"), t1);
        m.register(&id("b"), &reg("127.0.1.2"), t1);
        m.suspect(&id("a"), &id("c"), SuspectReason::Unreachable, t1);
        m.probe_result(&id("c"), false, t1 + Duration::from_millis(400));
        assert!(m.tick(t0 + Duration::from_millis(29_999)).is_empty());
        // Silent for 30 s: evicted now, not when the suspicion timeout (5 s from the report)
        // runs out.
        assert_eq!(
            m.tick(t0 + Duration::from_secs(30)),
            vec![(RingId("127.0.1.0/24".into()), id("c"))]
        );
    }

    #[test]
    fn the_suspicion_timeout_shrinks_with_confirmations_but_not_below_the_floor() {
        let m = Membership::new(MembershipConfig::default());
        // 1000 members: 4·log10(1000) = 12 s with one report.
        assert_eq!(m.suspicion_timeout(1000, 1), Duration::from_secs(12));
        let two = m.suspicion_timeout(1000, 2);
        let three = m.suspicion_timeout(1000, 3);
        assert!(
            two < Duration::from_secs(12) && three < two,
            "{two:?} {three:?}"
        );
        assert_eq!(m.suspicion_timeout(1000, 4), Duration::from_secs(5));
        assert_eq!(m.suspicion_timeout(1000, 40), Duration::from_secs(5));
    }

    #[test]
    fn a_slow_member_stays_listed_and_recovers() {
        let t0 = Instant::now();
        let mut m = Membership::new(MembershipConfig::default());
        m.register(&id("a"), &reg("127.0.1.1"), t0);
        m.register(&id("b"), &reg("127.0.1.2"), t0);
        // No direct probe for slowness: marked at once, and again with each report.
        assert_eq!(m.suspect(&id("a"), &id("b"), SuspectReason::Slow, t0), None);
        assert_eq!(m.report(None).0[0].members[1].health, Health::Slow);
        m.register(&id("b"), &reg("127.0.1.2"), t0 + Duration::from_secs(1));
        assert!(m.tick(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(m.report(None).0[0].members[1].health, Health::Slow);
        m.suspect(
            &id("a"),
            &id("b"),
            SuspectReason::Slow,
            t0 + Duration::from_secs(4),
        );
        assert!(m.tick(t0 + Duration::from_secs(6)).is_empty());
        assert_eq!(m.report(None).0[0].members[1].health, Health::Slow);
        assert_eq!(m.live_members(&RingId("127.0.1.0/24".into())).len(), 2);
        // Nobody reports it for the hold time: it recovers.
        m.register(&id("a"), &reg("127.0.1.1"), t0 + Duration::from_secs(10));
        m.register(&id("b"), &reg("127.0.1.2"), t0 + Duration::from_secs(10));
        assert!(m.tick(t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(m.report(None).0[0].members[1].health, Health::Ok);
    }

    #[test]
    fn a_member_offline_past_the_retention_is_forgotten_and_one_that_returns_is_not() {
        let t0 = Instant::now();
        let cfg = MembershipConfig {
            offline_after: Duration::from_secs(30),
            offline_retention: Duration::from_secs(3600),
            ..Default::default()
        };
        let health = |m: &Membership, who: &str| {
            m.report(None)
                .0
                .iter()
                .flat_map(|r| r.members.iter())
                .find(|r| r.id.0 == who)
                .map(|r| r.health)
        };
        let mut m = Membership::new(cfg);
        for (n, ip) in [("a", "127.0.1.1"), ("b", "127.0.1.2"), ("c", "127.0.2.1")] {
            m.register(&id(n), &reg(ip), t0);
        }
        // b and c fall silent; a keeps registering.
        let t1 = t0 + Duration::from_secs(31);
        m.register(&id("a"), &reg("127.0.1.1"), t1);
        m.tick(t1);
        assert_eq!(health(&m, "b"), Some(Health::Offline));
        // c comes back within the retention, b does not.
        let t2 = t1 + Duration::from_secs(1800);
        m.register(&id("a"), &reg("127.0.1.1"), t2);
        m.register(&id("c"), &reg("127.0.2.1"), t2);
        m.tick(t2);
        let t3 = t1 + Duration::from_secs(3600);
        m.register(&id("a"), &reg("127.0.1.1"), t3);
        m.register(&id("c"), &reg("127.0.2.1"), t3);
        m.tick(t3);
        assert_eq!(health(&m, "b"), None, "forgotten");
        assert!(!m.knows(&id("b")));
        assert_eq!(health(&m, "a"), Some(Health::Ok));
        assert_eq!(health(&m, "c"), Some(Health::Ok));
        let (rings, _) = m.report(None);
        let listed: usize = rings.iter().map(|r| r.members.len()).sum();
        assert_eq!(listed, 2);
        // Forgotten, it may still register again, as a new machine.
        let r = m.register(&id("b"), &reg("127.0.1.2"), t3);
        assert_eq!(r.returning, Some(None), "a first registration");
        assert_eq!(health(&m, "b"), Some(Health::Ok));
    }

    #[test]
    fn suspects_are_judged_every_tick_and_silence_at_most_once_a_second() {
        let t0 = Instant::now();
        let cfg = MembershipConfig {
            offline_after: Duration::from_secs(30),
            ..Default::default()
        };
        let mut m = Membership::new(cfg);
        for (n, ip) in [("a", "127.0.1.1"), ("b", "127.0.1.2"), ("c", "127.0.1.3")] {
            m.register(&id(n), &reg(ip), t0);
        }
        m.set_leader(
            &id("a"),
            LeaderSides {
                forward: true,
                backward: false,
            },
        );
        m.set_leader(
            &id("c"),
            LeaderSides {
                forward: false,
                backward: true,
            },
        );
        assert_eq!(m.leaders(), vec![id("a"), id("c")]);
        // A full walk now; the next one is due a second later.
        assert!(m.tick(t0).is_empty());
        // c suspected, unanswered: kept 1 ms before its timeout (that tick is a full walk),
        // evicted at the timeout exactly by the very next tick, which looks only at suspects,
        // and no longer a leader.
        m.suspect(&id("b"), &id("c"), SuspectReason::Unreachable, t0);
        let timeout = m.suspicion_timeout(3, 1);
        let t1 = t0 + timeout;
        // The others keep registering.
        m.register(&id("a"), &reg("127.0.1.1"), t1);
        m.register(&id("b"), &reg("127.0.1.2"), t1);
        assert!(m.tick(t1 - Duration::from_millis(1)).is_empty());
        assert_eq!(m.tick(t1), vec![(RingId("127.0.1.0/24".into()), id("c"))]);
        assert_eq!(m.leaders(), vec![id("a")]);
        // b falls silent after t1: not offline on a tick within a second of the last full
        // walk, offline at the next full walk.
        let silent = t1 + Duration::from_secs(30);
        assert!(m.tick(silent - Duration::from_millis(500)).is_empty());
        m.register(&id("a"), &reg("127.0.1.1"), silent);
        let next_walk = silent + Duration::from_millis(500);
        assert!(m.tick(silent).is_empty(), "not a full walk yet");
        assert_eq!(
            m.tick(next_walk),
            vec![(RingId("127.0.1.0/24".into()), id("b"))]
        );
        m.link_down(&id("a"));
        assert!(m.leaders().is_empty());
    }

    #[test]
    fn reports_from_another_ring_or_about_oneself_are_ignored() {
        let t0 = Instant::now();
        let mut m = Membership::new(MembershipConfig::default());
        m.register(&id("a"), &reg("127.0.1.1"), t0);
        m.register(&id("z"), &reg("127.0.2.1"), t0);
        assert_eq!(
            m.suspect(&id("z"), &id("a"), SuspectReason::Unreachable, t0),
            None
        );
        assert_eq!(
            m.suspect(&id("a"), &id("a"), SuspectReason::Unreachable, t0),
            None
        );
        assert_eq!(m.report(None).0[0].members[0].health, Health::Ok);
    }
}
