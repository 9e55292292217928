//! Hostile peers with valid certificates cannot exhaust a node: what one peer can make a node
//! hold is bounded, each refusal is counted, and the node keeps serving its other peers.
//! Bounds are checked on the node's counters, not on the wall clock.

use std::time::Duration;

use rollcall_runtime::identity::{NODE_SERVER_NAME, PeerRole};
use rollcall_runtime::tls;
use rollcall_runtime::transport::limits::InboundLimits;
use rollcall_runtime::transport::quic::QuicOptions;
use rollcall_tests::*;

/// Attack 1: slow senders pin memory. Frames announced at nearly the frame limit and never
/// finished, on as many streams and connections as the attacker can open: the node holds at
/// most its budget of partial frames per connection and no more connections per peer than
/// allowed, refuses the rest (counted), drops what did not arrive in time, and answers an
/// honest peer throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_hold_no_more_than_the_budget_and_are_dropped_in_time() {
    let ca = ca();
    let limits = InboundLimits {
        frame_read_timeout: Duration::from_millis(1500),
        connection_read_budget: 256 * 1024,
        streams_per_connection: 16,
        connections_per_peer: 2,
        ..InboundLimits::default()
    };
    let (server, _) = quic_node(
        &creds(&ca, PeerRole::Server),
        "127.0.20.1",
        QuicOptions {
            limits,
            ..QuicOptions::default()
        },
    )
    .await;
    let stats = server.wire_stats().clone();
    server.router().register(
        "echo",
        rollcall_runtime::Roles::ANY,
        std::sync::Arc::new(rollcall_tests::Echo),
    );
    let (honest, _) = quic_node(
        &creds(&ca, PeerRole::Endpoint),
        "127.0.20.2",
        QuicOptions::default(),
    )
    .await;

    let bad = creds(&ca, PeerRole::Endpoint);
    let ep = quinn::Endpoint::client("127.0.20.3:0".parse().expect("addr")).expect("client");
    let mut conns = Vec::new();
    for _ in 0..3 {
        let cfg = tls::client_config(&bad, fast_timeouts()).expect("cfg");
        conns.push(
            ep.connect_with(cfg, server.local_addr(), NODE_SERVER_NAME)
                .expect("connect")
                .await
                .expect("handshake"),
        );
    }
    // The third connection is refused: the peer holds two already.
    let s = stats
        .wait_for(DEADLINE, |s| s.rejected_connections == 1)
        .await;
    assert_eq!((s.rejected_connections, s.connections_accepted), (1, 2));

    // On each accepted connection, 16 streams announce 900 KiB and send 100 KiB of it.
    let announced: u32 = 900 * 1024;
    let mut streams = Vec::new();
    for conn in &conns[..2] {
        for _ in 0..16 {
            let Ok(mut s) = conn.open_uni().await else {
                break;
            };
            let mut bytes = announced.to_be_bytes().to_vec();
            bytes.extend(std::iter::repeat_n(0u8, 100 * 1024));
            // Flow control may hold part of it back: that is the point.
            let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&bytes)).await;
            streams.push(s);
        }
    }
    // The budget refuses what is over it; what the node holds never passes it.
    let s = stats
        .wait_for(DEADLINE, |s| s.rejected_over_budget >= 1)
        .await;
    assert!(s.rejected_over_budget >= 1, "{s:?}");
    assert!(
        s.frame_bytes_reading <= 2 * limits.connection_read_budget as u64,
        "{} bytes held",
        s.frame_bytes_reading
    );
    // The honest peer is served meanwhile.
    let link = honest
        .connect_once(server.local_addr(), DEADLINE)
        .await
        .expect("an honest connection");
    let r: Result<(), _> = link.call("echo", &(), DEADLINE).await;
    assert!(r.is_ok(), "{r:?}");
    link.close();

    // The unfinished frames are dropped when their time is up, and their bytes let go.
    let s = stats
        .wait_for(DEADLINE, |s| {
            s.rejected_slow >= 1 && s.frame_bytes_reading == 0
        })
        .await;
    assert!(s.rejected_slow >= 1, "{s:?}");
    assert_eq!(s.frame_bytes_reading, 0, "{s:?}");
    drop(streams);
    for c in conns {
        c.close(0u32.into(), b"done");
    }
    server.shutdown();
    honest.shutdown();
}

/// Attack 3: huge host names. A registration whose texts pass the limits' bounds is refused
/// and counted; the ring view and every question's progress stay within their frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_with_a_huge_host_name_is_refused_and_counted() {
    use rollcall_cluster::membership::MembershipConfig;
    use rollcall_cluster::proto::{REGISTRY, Registration, RegistrationReply, ServerRequest};
    use rollcall_runtime::node::CallError;
    use rollcall_tests::rings::RingCluster;

    let mut c = RingCluster::start(MembershipConfig::default()).await;
    c.add("127.0.21.1").await;
    let (attacker, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.21.2",
        QuicOptions::default(),
    )
    .await;
    let link = attacker
        .connect_once(c.server.local_addr(), DEADLINE)
        .await
        .expect("the server");
    let reg = |hostname: String, os: String| {
        ServerRequest::Register(Registration {
            addr: attacker.local_addr(),
            hostname,
            os,
            version: "1".into(),
        })
    };
    for (hostname, os) in [
        ("h".repeat(600 * 1024), "linux".to_string()),
        ("h".repeat(254), "linux".to_string()),
        ("ok".to_string(), "o".repeat(65)),
    ] {
        let r: Result<RegistrationReply, CallError> =
            link.call(REGISTRY, &reg(hostname, os), DEADLINE).await;
        assert!(r.is_err(), "refused");
    }
    assert_eq!(c.server.wire_stats().snapshot().rejected_protocol, 3);
    // At the limits, it is taken.
    let r: Result<RegistrationReply, CallError> = link
        .call(REGISTRY, &reg("h".repeat(253), "o".repeat(64)), DEADLINE)
        .await;
    assert!(r.is_ok(), "{r:?}");
    let report = c.report().await;
    let longest = report
        .rings
        .iter()
        .flat_map(|r| r.members.iter().map(|m| m.hostname.len()))
        .max();
    assert_eq!(longest, Some(253));
    link.close();
    attacker.shutdown();
}

/// Attack 5: long searches. A search text over the bound is refused with a clear error; a
/// burst of searches is ranked a few at a time, off the async runtime, and every one is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_searches_are_refused_and_a_burst_is_answered_in_turn() {
    use rollcall_actors::desk::{DeskReply, DeskRequest, MAX_SEARCH_BYTES, QuestionDesk};
    use rollcall_cluster::membership::MembershipConfig;
    use rollcall_runtime::OperatorRole;
    use rollcall_tests::rings::RingCluster;
    use std::sync::Arc;

    let c = RingCluster::start(MembershipConfig::default()).await;
    let desk = Arc::new(QuestionDesk::new(c.rings.clone(), None));
    let viewer = rollcall_tests::as_operator(PeerRole::Operator(OperatorRole::Viewer));
    let long = DeskRequest::Search {
        text: "chrome ".repeat(MAX_SEARCH_BYTES / 7 + 1),
    };
    match desk.serve(long, &viewer).await {
        DeskReply::Error(e) => assert!(e.contains("at most 4096"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let burst: Vec<_> = (0..24)
        .map(|_| {
            let desk = desk.clone();
            let viewer = viewer.clone();
            tokio::spawn(async move {
                desk.serve(
                    DeskRequest::Search {
                        text: "machines running chrome older than 120".into(),
                    },
                    &viewer,
                )
                .await
            })
        })
        .collect();
    for b in burst {
        match b.await.expect("joined") {
            DeskReply::Suggestions(s) => assert!(!s.is_empty()),
            other => panic!("expected suggestions, got {other:?}"),
        }
    }
}

/// Attack 6: enrolment floods. Connections that open an enrolment and say nothing are held
/// a few at a time from one address (the rest refused and counted); an enrolment from
/// elsewhere goes through meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_flood_from_one_address_is_bounded_and_others_still_enrol() {
    use rollcall_runtime::enrol::{self, CaEnroller};
    use rollcall_runtime::identity::JoinToken;
    use rollcall_runtime::signing::ServerSigner;
    use std::sync::Arc;

    let ca = ca();
    let token = JoinToken {
        secret: "ab".repeat(16),
        ca_fingerprint: ca.fingerprint(),
    };
    let (server, _) = quic_node(
        &creds(&ca, PeerRole::Server),
        "127.0.22.1",
        QuicOptions {
            enrolment: Some(Arc::new(CaEnroller::new(
                ca.clone(),
                vec![token.secret.clone()],
                ServerSigner::generate().expect("key").public_key(),
            ))),
            ..QuicOptions::default()
        },
    )
    .await;
    let stats = server.wire_stats().clone();
    let ep = quinn::Endpoint::client("127.0.22.66:0".parse().expect("addr")).expect("client");
    let mut held = Vec::new();
    for _ in 0..10 {
        let cfg = tls::enrol_client_config(&ca.fingerprint(), fast_timeouts()).expect("cfg");
        if let Ok(c) = ep
            .connect_with(cfg, server.local_addr(), NODE_SERVER_NAME)
            .expect("connect")
            .await
        {
            held.push(c);
        }
    }
    let s = stats
        .wait_for(DEADLINE, |s| s.enrolments_refused == 6)
        .await;
    assert_eq!(s.enrolments_refused, 6, "{s:?}");
    let enrolled = enrol::enrol(
        server.local_addr(),
        &token,
        "elsewhere",
        "127.0.22.9:0".parse().expect("addr"),
    )
    .await
    .expect("an enrolment from another address");
    assert_eq!(enrolled.creds.identity.role, PeerRole::Endpoint);
    for c in held {
        c.close(0u32.into(), b"done");
    }
    server.shutdown();
}

/// Answers with its address's parity.
struct Parity(&'static str);

impl rollcall_cluster::member::Evaluator for Parity {
    fn evaluate(
        &self,
        _body: &[u8],
    ) -> futures::future::BoxFuture<'static, rollcall_cluster::proto::NodeAnswer> {
        let v = self.0;
        Box::pin(async move {
            rollcall_cluster::proto::NodeAnswer {
                rows: Some(vec![vec![v.into()]]),
                problems: Vec::new(),
            }
        })
    }
}

/// A compromised member in the middle of a chain of 20 that changes its successors' answers
/// (to "answered, no match", to a row of its own, or with made-up machines added): none of
/// the changed answers is counted, every machine's true answer is, and the member is named
/// in the question's problems; on real QUIC, three rings of 20, one compromised member each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_member_in_a_chain_of_twenty_is_caught_and_named_and_the_true_answers_counted()
 {
    use rollcall_cluster::member::EvaluatorHandle;
    use rollcall_cluster::membership::MembershipConfig;
    use rollcall_cluster::relay::tamper::Tamper;
    use rollcall_tests::rings::{RingCluster, formed, shape};
    use std::sync::Arc;

    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let mut culprits = Vec::new();
    for (ring, tamper) in [
        (31, Tamper::NoMatch),
        (32, Tamper::Alter),
        (33, Tamper::Invent),
    ] {
        for host in 1..=20u8 {
            let ip = format!("127.0.{ring}.{host}");
            let v = if host % 2 == 0 { "even" } else { "odd" };
            let ev = Some(EvaluatorHandle(Arc::new(Parity(v))));
            if host == 8 {
                let i = c.add_compromised(&ip, ev, tamper).await;
                culprits.push(c.endpoints[i].node.identity().id.clone());
            } else {
                c.add_with(&ip, ev).await;
            }
        }
    }
    eventually_or("three rings of 20", Duration::from_secs(60), || async {
        let r = c.report().await;
        if formed(&r, 3, 20) {
            Ok(())
        } else {
            Err(shape(&r))
        }
    })
    .await;
    let before = c.server.wire_stats().snapshot().rejected_answers;
    let id = c
        .rings
        .ask(
            "q".into(),
            vec!["parity".into()],
            b"q".to_vec(),
            Duration::from_secs(120),
        )
        .await;
    let p = eventually_or(
        "every machine's true answer",
        Duration::from_secs(60),
        || {
            let r = c.rings.clone();
            async move {
                let p = r.progress(id).ok_or("no record")?;
                let named = p
                    .problems
                    .iter()
                    .filter(|(_, w)| w.starts_with("changed the answers"))
                    .count();
                if p.answered == 60 && named == 3 {
                    Ok(p)
                } else {
                    Err(format!(
                        "{} answered, {named} named: {:?}",
                        p.answered, p.problems
                    ))
                }
            }
        },
    )
    .await;
    let rows = rollcall_tests::first_cells(&p);
    assert_eq!(
        rows,
        [("even".to_string(), 30), ("odd".to_string(), 30)],
        "the true answers, and nothing a compromised member made up"
    );
    assert_eq!(p.matched, 60);
    let mut named: Vec<_> = p
        .problems
        .iter()
        .filter(|(_, w)| w.starts_with("changed the answers"))
        .map(|(n, _)| n.clone())
        .collect();
    named.sort();
    culprits.sort();
    assert_eq!(
        named, culprits,
        "each compromised member named, no one else"
    );
    let after = c.server.wire_stats().snapshot().rejected_answers;
    assert!(
        after > before,
        "the changed answers were refused and counted"
    );
}

/// Attack 2's other half: a question asked to stay open (and so be held by every member)
/// longer than the server's policy allows is refused, with the bound in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_asked_to_stay_open_beyond_the_policy_is_refused() {
    use rollcall_actors::desk::{DeskReply, DeskRequest, QuestionDesk};
    use rollcall_cluster::membership::MembershipConfig;
    use rollcall_runtime::OperatorRole;
    use rollcall_tests::rings::RingCluster;

    let c = RingCluster::start(MembershipConfig::default()).await;
    let desk = QuestionDesk::new(c.rings.clone(), None);
    let operator = &rollcall_tests::as_operator(PeerRole::Operator(OperatorRole::Operator));
    for ttl_ms in [0, 24 * 3600 * 1000 + 1, 1_000_000_000_000] {
        let r = desk
            .serve(
                DeskRequest::Ask {
                    text: "Get Computer Name from all machines".into(),
                    ttl_ms: Some(ttl_ms),
                },
                operator,
            )
            .await;
        match r {
            DeskReply::Error(e) => assert!(e.contains("between 1 ms and 24 h"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(c.rings.questions().is_empty(), "nothing was asked");
}

/// The same on the in-memory fleet in paused time: two rings of 20; one member of the first
/// ring, compromised, rewrites the answers of the machines after it. The rows counted are
/// the profiles' own, every machine answers once, and that member alone is named.
#[tokio::test(start_paused = true)]
async fn a_compromised_member_is_caught_on_the_in_memory_fleet_in_paused_time() {
    use rollcall::fleet::{Fleet, FleetConfig, SIM_QUESTION, SimTransport};
    use rollcall_cluster::relay::tamper::Tamper;
    use std::sync::Arc;

    rollcall_runtime::telemetry::init("off");
    let mut fleet = Fleet::start(FleetConfig::chaos(40, 20, SimTransport::Mem, 11), |_| {})
        .await
        .expect("fleet");
    assert!(
        fleet
            .wait_formed(Duration::from_secs(120), Duration::from_millis(200))
            .await
            .is_some(),
        "two rings of 20"
    );
    // The eighth member in ring order of the first ring.
    let report = fleet.report().await;
    let bad = fleet
        .index_of(&report.rings[0].members[7].id)
        .expect("a fleet endpoint");
    fleet.adjust_members(Arc::new(move |i, mc| {
        if i == bad {
            mc.tamper = Some(Tamper::Alter);
        }
    }));
    fleet.restart(bad).await.expect("restarted compromised");
    assert!(
        fleet
            .wait_formed(Duration::from_secs(120), Duration::from_millis(200))
            .await
            .is_some(),
        "formed again"
    );
    let bad_id = fleet.endpoints[bad].id.clone();
    let id = fleet
        .ask(SIM_QUESTION, Duration::from_secs(600))
        .await
        .expect("asked");
    let p = eventually_or(
        "every true answer and the member named",
        Duration::from_secs(300),
        || {
            let p = fleet.progress(id);
            async move {
                let p = p.ok_or("no record")?;
                let named: Vec<_> = p
                    .problems
                    .iter()
                    .filter(|(_, w)| w.starts_with("changed the answers"))
                    .map(|(n, _)| n.clone())
                    .collect();
                if p.answered == 40 && !named.is_empty() {
                    Ok((p, named))
                } else {
                    Err(format!(
                        "{} answered, named {named:?}: {:?}",
                        p.answered, p.problems
                    ))
                }
            }
        },
    )
    .await;
    let (p, named) = p;
    assert_eq!(named, [bad_id], "the compromised member, no one else");
    let truth = fleet.ground_truth(fleet.endpoints.iter().map(|e| &e.id));
    let counted: std::collections::BTreeMap<Vec<String>, u64> =
        p.rows.iter().map(|r| (r.cells.clone(), r.count)).collect();
    assert_eq!(counted, truth, "the profiles' own rows");
    fleet.shutdown().await;
}

/// Attack 2: a flood of asks from one endpoint. It cannot make up questions (they must be
/// signed), and replaying one the server signed, however often and with whatever time to
/// live it writes, leaves a member holding that one question once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_question_flood_leaves_a_member_holding_one_question() {
    use rollcall_cluster::member::EvaluatorHandle;
    use rollcall_cluster::membership::MembershipConfig;
    use rollcall_cluster::proto::{MEMBER, MemberRequest, Partial};
    use rollcall_runtime::node::CallError;
    use rollcall_tests::rings::RingCluster;
    use std::sync::Arc;

    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let i = c
        .add_with("127.0.24.1", Some(EvaluatorHandle(Arc::new(Parity("odd")))))
        .await;
    c.registered(i).await;
    let (attacker, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.24.66",
        QuicOptions::default(),
    )
    .await;
    let link = attacker
        .connect_once(c.endpoints[i].node.local_addr(), DEADLINE)
        .await
        .expect("the member");
    let signed = signed_question(&c.signer, 5, b"q".to_vec(), Duration::from_secs(60));
    for n in 0..120u64 {
        let env = rollcall_cluster::proto::QuestionEnvelope {
            ttl_ms: 1_000_000_000_000,
            ..signed.clone()
        };
        let req = if n % 2 == 0 {
            MemberRequest::Ask(env)
        } else {
            MemberRequest::Late(env)
        };
        if n % 2 == 0 {
            let r: Result<Partial, CallError> = link.call(MEMBER, &req, DEADLINE).await;
            assert!(r.is_ok(), "{r:?}");
        } else {
            let r: Result<(), CallError> = link.call(MEMBER, &req, DEADLINE).await;
            assert!(r.is_ok(), "{r:?}");
        }
    }
    let status = c.status(i).await;
    assert_eq!(status.questions_held, 1, "{status:?}");
    link.close();
    attacker.shutdown();
}

/// The question list fits one reply however long the questions: each text is cut in the list
/// (a question may be 256 KiB), whole in its own results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_question_list_fits_one_reply_however_long_the_questions() {
    use rollcall_actors::desk::{DeskReply, DeskRequest, QuestionDesk};
    use rollcall_cluster::membership::MembershipConfig;
    use rollcall_runtime::OperatorRole;
    use rollcall_tests::rings::RingCluster;

    let c = RingCluster::start(MembershipConfig::default()).await;
    let desk = QuestionDesk::new(c.rings.clone(), None);
    let operator = &rollcall_tests::as_operator(PeerRole::Operator(OperatorRole::Operator));
    let long = format!(
        "Get Computer Name from all machines with Computer Name = \"{}\"",
        "a".repeat(200 * 1024)
    );
    for _ in 0..8 {
        match desk
            .serve(
                DeskRequest::Ask {
                    text: long.clone(),
                    ttl_ms: Some(60_000),
                },
                operator,
            )
            .await
        {
            DeskReply::Asked { .. } => {}
            other => panic!("expected a question, got {other:?}"),
        }
    }
    let reply = desk.serve(DeskRequest::List, operator).await;
    let bytes = rollcall_runtime::wire::encode_body(&reply).expect("encodes");
    assert!(bytes.len() < 16 * 1024, "{} bytes", bytes.len());
    match reply {
        DeskReply::List(list) => {
            assert_eq!(list.len(), 8);
            assert!(
                list.iter()
                    .all(|q| q.text.ends_with('…') && q.text.chars().count() == 301)
            );
        }
        other => panic!("expected the list, got {other:?}"),
    }
}
