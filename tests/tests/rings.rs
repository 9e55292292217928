//! Rings on real QUIC over loopback: three subnets of twenty endpoints, each endpoint on its
//! own 127.0.N.x address; silent kills, leader loss, restart; isolation and firewalls.

use std::time::{Duration, Instant};

use rollcall_cluster::membership::MembershipConfig;
use rollcall_cluster::proto::{Health, LeaderSides, RingsReport};
use rollcall_tests::eventually;
use rollcall_tests::eventually_or;
use rollcall_tests::rings::{REGISTER_MAX, RingCluster, formed, shape};

fn ring<'a>(r: &'a RingsReport, id: &str) -> &'a rollcall_cluster::proto::RingReport {
    r.rings
        .iter()
        .find(|x| x.ring.0 == id)
        .unwrap_or_else(|| panic!("no ring {id} in {r:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_subnets_form_three_rings_and_heal_around_failures() {
    let mut c = RingCluster::start(MembershipConfig::default()).await;
    for subnet in 1..=3 {
        for host in 1..=20 {
            c.add(&format!("127.0.{subnet}.{host}")).await;
        }
    }

    // Three rings of 20, two leaders each, and the server holds exactly their 6 links.
    let formed = eventually_or(
        "three well-formed rings",
        Duration::from_secs(30),
        || async {
            let r = c.report().await;
            if formed(&r, 3, 20) && r.ring_connections == 6 {
                Ok(r)
            } else {
                Err(shape(&r))
            }
        },
    )
    .await;
    assert!(formed.server_connections >= 6, "{formed:#?}");
    for r in &formed.rings {
        assert!(
            r.members
                .windows(2)
                .all(|w| w[0].addr.ip() < w[1].addr.ip()),
            "ordered by address"
        );
    }
    // Every member routes to the next one.
    eventually(
        "every member routing to its successor",
        Duration::from_secs(10),
        || async {
            for r in &formed.rings {
                for pair in r.members.windows(2) {
                    let s = c.status(c.index_of(&pair[0].id)).await;
                    if s.route_target.as_ref() != Some(&pair[1].id) {
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await;

    // Kill a mid-ring endpoint silently: its predecessor links past it within 1 s.
    let r1 = ring(&formed, "127.0.1.0/24").clone();
    let (pred, victim, succ) = (
        c.index_of(&r1.members[9].id),
        c.index_of(&r1.members[10].id),
        &r1.members[11].id,
    );
    let t0 = Instant::now();
    c.kill(victim);
    eventually(
        "predecessor routing past the dead member",
        Duration::from_secs(5),
        || async { (c.status(pred).await.route_target.as_ref() == Some(succ)).then_some(()) },
    )
    .await;
    let relinked = t0.elapsed();
    assert!(
        relinked <= Duration::from_secs(1),
        "linked past it after {relinked:?}"
    );
    // `ring show` marks it.
    let victim_id = r1.members[10].id.clone();
    eventually_or(
        "the server marking the dead member",
        Duration::from_secs(5),
        || async {
            let r = c.report().await;
            let m = ring(&r, "127.0.1.0/24")
                .members
                .iter()
                .find(|m| m.id == victim_id)
                .cloned();
            match m {
                Some(m) if matches!(m.health, Health::Suspect | Health::Offline) => Ok(()),
                _ => Err(format!(
                    "{}predecessor: {:?}",
                    shape(&r),
                    c.status(pred).await
                )),
            }
        },
    )
    .await;
    // Its successor still hears from a predecessor: no new leader in the middle.
    assert_eq!(
        c.status(c.index_of(succ)).await.leads,
        LeaderSides::default()
    );

    // Kill the forward leader of another ring: the next member leads and links to the
    // server within 2 s.
    let r2 = ring(&formed, "127.0.2.0/24").clone();
    let (leader, next) = (c.index_of(&r2.members[0].id), c.index_of(&r2.members[1].id));
    let t1 = Instant::now();
    c.kill(leader);
    eventually(
        "a new forward leader linked to the server",
        Duration::from_secs(5),
        || async {
            let s = c.status(next).await;
            (s.leads.forward && s.server_link_up).then_some(())
        },
    )
    .await;
    let new_leader = t1.elapsed();
    assert!(
        new_leader <= Duration::from_secs(2),
        "new leader after {new_leader:?}"
    );
    let next_id = r2.members[1].id.clone();
    eventually(
        "the server seeing the new leader",
        Duration::from_secs(5),
        || async {
            let r = c.report().await;
            ring(&r, "127.0.2.0/24")
                .members
                .iter()
                .any(|m| m.id == next_id && m.leads.forward)
                .then_some(())
        },
    )
    .await;

    // Restart the mid-ring endpoint: back in its place within one registration interval.
    let t2 = Instant::now();
    c.restart(victim).await;
    let pred_id = r1.members[9].id.clone();
    eventually_or(
        "the restarted member back in its place",
        Duration::from_secs(10),
        || async {
            let r = c.report().await;
            let members = &ring(&r, "127.0.1.0/24").members;
            let pred = c.status(c.index_of(&pred_id)).await;
            let seen = format!(
                "victim in report: {:?}; predecessor routes to {:?}, health {:?}",
                members.iter().position(|m| m.id == victim_id).map(|i| (
                    i,
                    members[i].health,
                    members[i].addr
                )),
                pred.route_target,
                pred.health
            );
            let Some(back) = members
                .iter()
                .position(|m| m.id == victim_id && m.health == Health::Ok)
            else {
                return Err(seen);
            };
            let routed = pred.route_target == Some(victim_id.clone());
            if routed && members[back - 1].id == pred_id {
                Ok(())
            } else {
                Err(seen)
            }
        },
    )
    .await;
    let rejoined = t2.elapsed();
    assert!(rejoined <= REGISTER_MAX, "back after {rejoined:?}");
    let s = c.status(victim).await;
    assert_eq!(s.route_target.as_ref(), Some(succ));
    assert_eq!(s.leads, LeaderSides::default());
    eprintln!(
        "measured: relinked past a dead member in {relinked:?}; new leader in {new_leader:?}; rejoined in {rejoined:?}"
    );
}
