//! `RingCore` case by case, with explicit `now`.

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
fn near_the_rings_end_its_last_member_is_a_contact_so_dead_successors_cannot_cut_it_off() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    // Eight members: the skips at 8 and 16 places fall past the end, so n08, the last,
    // takes their place (once).
    let mut c = ring(1, 8, t0);
    let cand: Vec<_> = c.candidates().iter().map(|m| m.id.0.clone()).collect();
    assert_eq!(cand, ["n02", "n03", "n04", "n05", "n08"]);
    drain(&mut c);
    // Its four successors die: the chain goes on to the ring's last member, which would
    // otherwise wait for the server to ask it alone after the chain came back.
    for (i, at) in [(2, 10), (3, 20), (4, 30), (5, 40)] {
        c.handle(Input::ForwardFailed(m(i).id), ms(at));
    }
    assert_eq!(c.route_target(), Some(&m(8)));
    assert!(!c.leader().backward);
    // A member whose successors reach the end has no extra contact.
    let near = ring(5, 8, t0);
    let cand: Vec<_> = near.candidates().iter().map(|m| m.id.0.clone()).collect();
    assert_eq!(cand, ["n06", "n07", "n08"]);
}

#[test]
fn a_split_past_a_successor_is_routed_past_in_one_hop_timeout_though_those_beyond_had_answered() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut c = ring(1, 8, t0);
    drain(&mut c);
    // Every candidate has answered on time once (an earlier episode probed them all).
    // (m(2)'s first probe is still out.)
    c.handle(Input::HopLate(m(2).id), ms(100));
    assert_eq!(
        probes(&sent(&mut c, ms(100))),
        [m(3).id, m(4).id, m(5).id, m(8).id]
    );
    for i in [2, 3, 4, 5, 8] {
        c.handle(Input::Ack(m(i).id), ms(110));
    }
    assert_eq!(c.route_target(), Some(&m(2)));
    assert!(
        c.candidates()
            .iter()
            .all(|m| c.health(&m.id) == PeerHealth::Ok)
    );
    // The ring splits just past us: m(2) does not take a question. Those beyond answered
    // before it failed, so they are not trusted either: all are probed at once...
    c.handle(Input::HopLate(m(2).id), ms(1000));
    assert_eq!(c.route_target(), Some(&m(3)));
    assert_eq!(
        probes(&sent(&mut c, ms(1000))),
        [m(2).id, m(3).id, m(4).id, m(5).id, m(8).id]
    );
    // ...and one hop timeout later every one is late: the chain ends here, at once, where
    // trusting each in turn cost a hop timeout per member.
    c.handle(Input::Tick, ms(1251));
    assert_eq!(c.route_target(), None);
    assert!(c.leader().backward);
    // One that answers on time after the failure is trusted again: probing stops there.
    c.handle(Input::Ack(m(3).id), ms(1260));
    assert_eq!(c.route_target(), Some(&m(3)));
    c.handle(Input::Tick, ms(1400));
    let next = probes(&sent(&mut c, ms(1400)));
    assert!(!next.contains(&m(4).id), "{next:?}");
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
    // ones after it, up to one known to answer, are probed at the same time (m(6) too: the
    // ring ends within reach, so its last member is a contact where a skip would be).
    assert_eq!(
        probes(&sent(&mut c, ms(251))),
        [m(3).id, m(4).id, m(5).id, m(6).id]
    );
    c.handle(Input::Ack(m(3).id), ms(260));
    c.handle(Input::Ack(m(4).id), ms(261));
    c.handle(Input::Ack(m(5).id), ms(262));
    c.handle(Input::Ack(m(6).id), ms(263));
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
    // The ones after it answered, but before m(2) failed: not known to answer now (a split
    // just past m(2) would cut them off too), so all are probed at once.
    assert_eq!(
        probes(&sent(&mut c, ms(651))),
        [m(3).id, m(4).id, m(5).id, m(6).id]
    );
    for (i, at) in [(4, 660), (5, 661), (6, 662)] {
        c.handle(Input::Ack(m(i).id), ms(at));
    }
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
        [m(2).id, m(3).id, m(4).id, m(5).id, m(6).id]
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

#[test]
fn a_warming_server_s_short_list_keeps_the_members_it_does_not_list_yet() {
    let t0 = Instant::now();
    // Member 3 of a ring of 8; the server restarted and so far heard only from 3 and 6.
    let short = || vec![m(3), m(6)];
    let mut warm = ring(3, 8, t0);
    assert_eq!(warm.route_target(), Some(&m(4)));
    warm.handle(
        Input::MembersFromWarmingServer {
            members: short(),
            isolated: false,
        },
        t0,
    );
    // Its successor is still its successor: it leads nothing it did not lead before.
    assert_eq!(warm.route_target(), Some(&m(4)));
    assert!(!warm.leader().backward);
    assert!(warm.view().contains(&m(2)), "its predecessor is kept");
    // From a server that has heard from everyone, the same list is the ring.
    let mut cold = ring(3, 8, t0);
    cold.handle(
        Input::Members {
            members: short(),
            isolated: false,
        },
        t0,
    );
    assert_eq!(cold.route_target(), Some(&m(6)));
    assert!(!cold.view().contains(&m(4)));
}
