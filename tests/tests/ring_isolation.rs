//! Peering limits and rejoin on real QUIC: an isolated range never peers; an endpoint that
//! can reach none of its peers works as a chain of one with its own server link; a returning
//! endpoint is spliced back and handed what it missed. (A file of its own so
//! it does not share the two cores with the 60-endpoint suite.)

use std::time::Duration;

use rollcall_cluster::membership::{MembershipConfig, parse_cidr};
use rollcall_cluster::proto::{Health, LeaderSides};
use rollcall_tests::rings::{RingCluster, shape};
use rollcall_tests::{eventually_or, holds_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_range_never_peers_and_a_firewalled_endpoint_leads_its_own_chain() {
    let membership = MembershipConfig {
        isolated: vec![parse_cidr("127.0.6.0/24").expect("cidr")],
        suspicion_min: Duration::from_secs(1),
        ..Default::default()
    };
    let mut c = RingCluster::start(membership).await;
    for host in 1..=4 {
        c.add(&format!("127.0.5.{host}")).await;
    }
    let walled = 1; // 127.0.5.2
    for host in [1, 3, 4] {
        c.endpoints[walled]
            .faults
            .block(format!("127.0.5.{host}").parse().expect("ip"));
    }
    let vpn: Vec<usize> = vec![c.add("127.0.6.1").await, c.add("127.0.6.2").await];

    let both = LeaderSides {
        forward: true,
        backward: true,
    };
    let walled_id = c.endpoints[walled].node.identity().id.clone();
    eventually_or(
        "the firewalled endpoint leading its own chain",
        Duration::from_secs(20),
        || async {
            let r = c.report().await;
            let ring = r
                .rings
                .iter()
                .find(|x| x.ring.0 == "127.0.5.0/24")
                .ok_or_else(|| shape(&r))?;
            let leads: Vec<LeaderSides> = ring.members.iter().map(|m| m.leads).collect();
            let expect = vec![
                LeaderSides {
                    forward: true,
                    backward: false,
                },
                both,
                LeaderSides::default(),
                LeaderSides {
                    forward: false,
                    backward: true,
                },
            ];
            let s = c.status(walled).await;
            if leads == expect
                && s.server_link_up
                && r.isolated.len() == 2
                && r.isolated.iter().all(|m| m.leads == both)
            {
                Ok(())
            } else {
                Err(format!("{}isolated: {:?}", shape(&r), r.isolated))
            }
        },
    )
    .await;
    for &i in &vpn {
        let s = c.status(i).await;
        assert_eq!(s.ring, None);
        assert_eq!(s.view.len(), 1);
        assert_eq!(s.route_target, None);
        assert_eq!(s.leads, both);
    }
    // Its neighbours route around it, and the server, which can reach it, never evicts it.
    let third = c.endpoints[2].node.identity().id.clone();
    eventually_or(
        "127.0.5.1 routing to 127.0.5.3",
        Duration::from_secs(10),
        || async {
            let s = c.status(0).await;
            if s.route_target.as_ref() == Some(&third) {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    holds_for(
        "the firewalled endpoint staying a live member",
        Duration::from_secs(3),
        || async {
            let r = c.report().await;
            r.rings[0]
                .members
                .iter()
                .find(|m| m.id == walled_id)
                .is_some_and(|m| m.health != Health::Offline)
        },
    )
    .await;
}

/// Hands every endpoint that registers for the first time, or returns after being offline,
/// one piece of work for its probe actor, and records who asked and since when.
#[derive(Default)]
struct RecordingBacklog {
    asked: std::sync::Mutex<Vec<(rollcall_runtime::NodeId, bool)>>,
}

impl rollcall_cluster::membership::Backlog for RecordingBacklog {
    fn missed(
        &self,
        node: &rollcall_runtime::NodeId,
        _ring: Option<&rollcall_cluster::proto::RingId>,
        since: Option<std::time::Instant>,
    ) -> Vec<rollcall_cluster::proto::Handoff> {
        if let Ok(mut a) = self.asked.lock() {
            a.push((node.clone(), since.is_some()));
        }
        let n = if since.is_some() { 2 } else { 1 };
        vec![rollcall_cluster::proto::Handoff {
            to: rollcall_tests::PROBE.into(),
            body: rollcall_runtime::wire::encode_body(&rollcall_tests::Probe::Record(n))
                .expect("body"),
        }]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_endpoint_is_spliced_back_and_handed_what_it_missed() {
    let backlog = std::sync::Arc::new(RecordingBacklog::default());
    let membership = MembershipConfig {
        offline_after: Duration::from_secs(3),
        ..Default::default()
    };
    let mut c = RingCluster::start_with(membership, Some(backlog.clone())).await;
    for host in 1..=3 {
        c.add(&format!("127.0.7.{host}")).await;
    }
    // First registration: everything unexpired (since = never).
    for i in 0..3 {
        let got =
            tokio::time::timeout(Duration::from_secs(10), c.endpoints[i].recorded.recv()).await;
        let (from, n) = got.expect("handed work on joining").expect("open");
        assert_eq!((from.role, n), (rollcall_runtime::PeerRole::Server, 1));
    }
    let middle = c.endpoints[1].node.identity().id.clone();
    // It goes away long enough to be offline, and comes back.
    c.kill(1);
    eventually_or(
        "the middle endpoint offline",
        Duration::from_secs(15),
        || async {
            let r = c.report().await;
            let m = r.rings[0].members.iter().find(|m| m.id == middle).cloned();
            match m {
                Some(m) if m.health == Health::Offline => Ok(()),
                _ => Err(shape(&r)),
            }
        },
    )
    .await;
    c.restart(1).await;
    let got = tokio::time::timeout(Duration::from_secs(10), c.endpoints[1].recorded.recv()).await;
    assert_eq!(got.expect("handed what it missed").expect("open").1, 2);
    // Spliced back: in its place, healthy, and its predecessor routes to it again.
    eventually_or(
        "the returning endpoint back in its place",
        Duration::from_secs(10),
        || async {
            let r = c.report().await;
            let ids: Vec<_> = r.rings[0]
                .members
                .iter()
                .map(|m| (m.id.clone(), m.health))
                .collect();
            let first = c.status(0).await;
            if ids.get(1) == Some(&(middle.clone(), Health::Ok))
                && first.route_target.as_ref() == Some(&middle)
            {
                Ok(())
            } else {
                Err(format!(
                    "{}first routes to {:?}",
                    shape(&r),
                    first.route_target
                ))
            }
        },
    )
    .await;
    // Asked once per endpoint on joining, and once more for the return; never for routine
    // re-registrations.
    let asked = backlog.asked.lock().expect("lock").clone();
    assert_eq!(
        asked.iter().filter(|(_, returning)| !returning).count(),
        3,
        "{asked:?}"
    );
    assert_eq!(
        asked
            .iter()
            .filter(|(_, returning)| *returning)
            .cloned()
            .collect::<Vec<_>>(),
        vec![(middle, true)]
    );
}

/// A leader that stops leading says so on its server link before closing it: the server
/// would otherwise count it as a leader for as long as any other connection between them
/// lives (here, one the server dialed itself, as its probes and questions do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_leading_is_no_leader_to_the_server_while_another_connection_lives() {
    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let x = c.add("127.0.8.10").await;
    let x_id = c.endpoints[x].node.identity().id.clone();
    let leads = |r: &rollcall_cluster::proto::RingsReport| -> Option<LeaderSides> {
        r.rings
            .iter()
            .flat_map(|ring| ring.members.iter())
            .find(|m| m.id == x_id)
            .map(|m| m.leads)
    };
    eventually_or(
        "the lone member leads both ends",
        Duration::from_secs(20),
        || async {
            let r = c.report().await;
            match leads(&r) {
                Some(l) if l.forward && l.backward => Ok(()),
                _ => Err(shape(&r)),
            }
        },
    )
    .await;
    // Another connection between the two, the server's own.
    let other = c
        .server
        .connect_once(c.endpoints[x].node.local_addr(), Duration::from_secs(10))
        .await
        .expect("the server dials the member");
    // Members before and after it: it is in the middle and leads nothing.
    c.add("127.0.8.5").await;
    c.add("127.0.8.20").await;
    eventually_or(
        "the middle member leads nothing in the server's view, the others one end each",
        Duration::from_secs(30),
        || async {
            let r = c.report().await;
            let ends = r
                .rings
                .iter()
                .flat_map(|ring| ring.members.iter())
                .map(|m| usize::from(m.leads.forward) + usize::from(m.leads.backward))
                .sum::<usize>();
            if leads(&r) == Some(LeaderSides::default()) && ends == 2 {
                Ok(())
            } else {
                Err(shape(&r))
            }
        },
    )
    .await;
    assert!(
        other.is_connected(),
        "the server's own connection lived throughout"
    );
    other.close();
}
