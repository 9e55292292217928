//! Invariant 5, shared by the simulated fleet's scenarios and a real server's: the server
//! holds connections only to leaders and registrations. Each sample notes the server's
//! connections to endpoints that do not lead their ring; one such connection that lasts
//! 2 s (not a registration, a probe or a chaos command, which close at once) fails it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rollcall_cluster::proto::RingsReport;
use rollcall_runtime::node::PeerInfo;
use rollcall_runtime::{NodeId, PeerRole};
use tokio::time::Instant;

use super::Check;

/// How long a connection to a non-leader may last.
const NON_LEADER_LIMIT: Duration = Duration::from_secs(2);

/// The server's connections to endpoints over a scenario, sampled.
#[derive(Debug, Default)]
pub(super) struct LeaderLinks {
    /// Connections to non-leaders open now, each since it was first seen.
    since: HashMap<NodeId, Instant>,
    /// The longest such connection, and to whom.
    longest: (Duration, Option<NodeId>),
    /// The most endpoint connections the server held at once.
    max_conns: usize,
    /// The most leader links the rings reported at once.
    max_leader_links: usize,
}

impl LeaderLinks {
    /// Notes the server's connections `conns` at `now`, given the rings `r`. A faulted
    /// machine (`excused`) may hold what it had open when the fault struck (a grey node's
    /// half-made registration): only the others' connections are judged.
    pub(super) fn sample(
        &mut self,
        r: &RingsReport,
        conns: Vec<PeerInfo>,
        excused: &HashSet<NodeId>,
        now: Instant,
    ) {
        let leaders: HashSet<&NodeId> = r
            .machines()
            .filter(|m| m.leads.any())
            .map(|m| &m.id)
            .collect();
        let conns: Vec<NodeId> = conns
            .into_iter()
            .filter(|p| p.peer.role == PeerRole::Endpoint)
            .map(|p| p.peer.id)
            .collect();
        self.max_conns = self.max_conns.max(conns.len());
        let links: usize = r.rings.iter().map(|x| x.leader_links).sum();
        self.max_leader_links = self.max_leader_links.max(links);
        let non_leaders: HashSet<&NodeId> = conns
            .iter()
            .filter(|c| !leaders.contains(c) && !excused.contains(*c))
            .collect();
        self.since.retain(|id, _| non_leaders.contains(id));
        for id in non_leaders {
            let since = *self.since.entry(id.clone()).or_insert(now);
            let held = now - since;
            if held > self.longest.0 {
                self.longest = (held, Some(id.clone()));
            }
        }
    }

    /// Forgets the connections open now (a server that restarted holds none of them).
    #[cfg(feature = "simulation")]
    pub(super) fn restarted(&mut self) {
        self.since.clear();
    }

    /// The invariant, as measured.
    pub(super) fn check(&self) -> Check {
        let (held, who) = &self.longest;
        Check {
            invariant: "server connections only to leaders and registrations".into(),
            pass: *held < NON_LEADER_LIMIT,
            measured: format!(
                "at most {} endpoint connections ({} leader links); longest to a non-leader {} ms{}",
                self.max_conns,
                self.max_leader_links,
                held.as_millis(),
                who.as_ref().map(|w| format!(" ({w})")).unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_cluster::proto::{Health, LeaderSides, MemberReport, RingId, RingReport};
    use rollcall_runtime::PeerIdentity;

    fn member(id: &str, forward: bool) -> MemberReport {
        MemberReport {
            id: NodeId::new(id),
            addr: "127.0.0.1:1".parse().expect("addr"),
            hostname: id.into(),
            health: Health::Ok,
            leads: LeaderSides {
                forward,
                backward: false,
            },
        }
    }

    fn conn(id: &str, role: PeerRole) -> PeerInfo {
        PeerInfo {
            peer: PeerIdentity {
                id: NodeId::new(id),
                role,
            },
            addr: "127.0.0.1:1".parse().expect("addr"),
        }
    }

    #[test]
    fn a_link_to_a_non_leader_that_lasts_two_seconds_fails_and_leaders_and_the_excused_do_not() {
        let rings = RingsReport {
            rings: vec![RingReport {
                ring: RingId("127.0.0.0/24".into()),
                members: vec![
                    member("lead", true),
                    member("mid", false),
                    member("grey", false),
                ],
                leader_links: 1,
                members_total: 0,
            }],
            isolated: vec![],
            isolated_total: 0,
            server_connections: 3,
            ring_connections: 1,
        };
        let excused: HashSet<NodeId> = [NodeId::new("grey")].into();
        let t0 = Instant::now();
        let mut l = LeaderLinks::default();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let all = || {
            vec![
                conn("lead", PeerRole::Endpoint),
                conn("grey", PeerRole::Endpoint),
                conn(
                    "alice",
                    PeerRole::Operator(rollcall_runtime::OperatorRole::Admin),
                ),
            ]
        };
        // The leader's link and a faulted machine's, held for 5 s: fine.
        for ms in [0, 2500, 5000] {
            l.sample(&rings, all(), &excused, at(ms));
        }
        let c = l.check();
        assert!(c.pass, "{c:?}");
        assert_eq!(
            c.measured,
            "at most 2 endpoint connections (1 leader links); longest to a non-leader 0 ms"
        );
        // A link to a member that does not lead, closed within the limit, then one that stays.
        let mut with_mid = all();
        with_mid.push(conn("mid", PeerRole::Endpoint));
        l.sample(&rings, with_mid.clone(), &excused, at(6000));
        l.sample(&rings, all(), &excused, at(7900));
        assert!(l.check().pass, "{:?}", l.check());
        l.sample(&rings, with_mid.clone(), &excused, at(8000));
        l.sample(&rings, with_mid, &excused, at(10_000));
        let c = l.check();
        assert!(!c.pass, "{c:?}");
        assert!(
            c.measured
                .ends_with("longest to a non-leader 2000 ms (mid)"),
            "{c:?}"
        );
    }
}
