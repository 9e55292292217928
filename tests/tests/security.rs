//! The trust model, attack by attack (`SECURITY.md` points at each test): every route
//! accepts only the certificate roles that may send to it; endpoints act only on what the
//! pinned server signed; the server places machines where it sees them and counts answers
//! only from where they could come; revoked identities are refused; endpoint certificates
//! are renewed for their own key only. Each refusal is counted.

use std::time::Duration;

use rollcall_cluster::membership::MembershipConfig;
use rollcall_cluster::proto::{
    MEMBER, MemberRequest, NodeAnswer, REGISTRY, RING_ADMIN, Registration, ServerRequest,
};
use rollcall_runtime::node::CallError;
use rollcall_runtime::signing::{ServerSigner, ServerTrust};
use rollcall_runtime::transport::RefuseCode;
use rollcall_runtime::transport::quic::QuicOptions;
use rollcall_runtime::{OperatorRole, PeerRole, TransportError};
use rollcall_tests::rings::RingCluster;
use rollcall_tests::{creds, quic_node};

fn forbidden<T>(r: &Result<T, CallError>) -> bool {
    matches!(
        r,
        Err(CallError::Transport(TransportError::Refused(
            RefuseCode::Forbidden
        )))
    )
}

/// A viewer (or any operator) cannot register a forged machine or hand the server a late
/// answer; an endpoint cannot use the operators' ring view; an operator cannot send ring
/// messages to a member. Each attempt is refused with its own code and counted, and the
/// ring it tried to join is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_the_roles_that_may_not_send_to_it_and_counts_them() {
    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let real = c.add("127.0.3.1").await;
    let server = c.server.local_addr();
    let before = c.server.wire_stats().snapshot().rejected_forbidden;

    for role in [
        OperatorRole::Viewer,
        OperatorRole::Operator,
        OperatorRole::Admin,
    ] {
        let (op, _) = quic_node(
            &creds(&c.ca, PeerRole::Operator(role)),
            "127.0.3.200",
            QuicOptions::default(),
        )
        .await;
        let link = op
            .connect_once(server, Duration::from_secs(10))
            .await
            .expect("operators reach the server");
        let forged = ServerRequest::Register(Registration {
            addr: "127.0.3.0:7000".parse().expect("addr"),
            hostname: "FORGED".into(),
            os: "linux".into(),
            version: "0".into(),
        });
        let r: Result<rollcall_cluster::proto::RegistrationReply, CallError> =
            link.call(REGISTRY, &forged, Duration::from_secs(5)).await;
        assert!(forbidden(&r), "{role}: {:?}", r.err());
        let answer = ServerRequest::Answer {
            id: 1,
            answer: NodeAnswer {
                rows: Some(vec![vec!["FORGED".into()]]),
                problems: vec![],
            },
        };
        let r: Result<(), CallError> = link.call(REGISTRY, &answer, Duration::from_secs(5)).await;
        assert!(forbidden(&r), "{role}: a late answer from an operator");
        link.close();
        op.shutdown();
    }

    // An endpoint may not look at the rings as operators do, nor call a member as a
    // member would unless it is one (it is: endpoints and the server may).
    let (ep, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.3.201",
        QuicOptions::default(),
    )
    .await;
    let link = ep
        .connect_once(server, Duration::from_secs(10))
        .await
        .expect("endpoints reach the server");
    let r: Result<rollcall_cluster::proto::RingsReport, CallError> = link
        .call(
            RING_ADMIN,
            &rollcall_cluster::proto::AdminRequest::Show { subnet: None },
            Duration::from_secs(5),
        )
        .await;
    assert!(forbidden(&r), "{:?}", r.err());
    link.close();
    ep.shutdown();

    // An operator may not send ring messages to an endpoint.
    let (op, _) = quic_node(
        &creds(&c.ca, PeerRole::Operator(OperatorRole::Admin)),
        "127.0.3.202",
        QuicOptions::default(),
    )
    .await;
    let member = c.endpoints[real].node.local_addr();
    let link = op
        .connect_once(member, Duration::from_secs(10))
        .await
        .expect("an operator reaches an endpoint");
    let r: Result<(), CallError> = link
        .call(MEMBER, &MemberRequest::Probe, Duration::from_secs(5))
        .await;
    assert!(forbidden(&r), "an operator probing a member");
    link.close();
    op.shutdown();
    let member_refused = c.endpoints[real]
        .node
        .wire_stats()
        .snapshot()
        .rejected_forbidden;
    assert_eq!(member_refused, 1);

    // Seven refusals at the server (two per operator role, one ring view), each counted.
    let after = c.server.wire_stats().snapshot().rejected_forbidden;
    assert_eq!(after - before, 7);
    // Nothing forged joined: the ring holds the real machine alone.
    let report = c.report().await;
    let hosts: Vec<String> = report
        .rings
        .iter()
        .flat_map(|r| r.members.iter().map(|m| m.hostname.to_string()))
        .collect();
    assert!(!hosts.iter().any(|h| h == "FORGED"), "{hosts:?}");
}

/// Counts what reaches it and answers nothing.
struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl rollcall_runtime::node::Deliver for Counting {
    fn deliver(
        &self,
        incoming: rollcall_runtime::node::Incoming,
    ) -> Result<(), rollcall_runtime::node::DestinationGone> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        drop(incoming);
        Ok(())
    }
}

/// An endpoint's certificate answering at the server's address gets nothing: a member dials
/// it and refuses to register there (so it cannot hand the member script sensors or
/// questions), and the operators' CLI refuses to talk to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_posing_as_the_server_is_refused_by_members_and_by_the_cli() {
    use std::sync::Arc;

    let ca = rollcall_tests::ca();
    let trust = Arc::new(ServerTrust::new(
        None,
        ServerSigner::generate().expect("key").public_key(),
    ));
    let (fake, ep) = an_impostor_gets_nothing(&ca, PeerRole::Endpoint, "127.0.4", trust).await;

    let operator = creds(&ca, PeerRole::Operator(OperatorRole::Admin));
    let refused = rollcall::desk_client::DeskClient::with_creds(&operator, fake.local_addr()).await;
    let e = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        e.contains("holds the endpoint role") && e.contains("not the rollcall server"),
        "{e}"
    );
    ep.shutdown();
    fake.shutdown();
}

/// A join token made with a use limit and an expiry enrols that many endpoints and no more,
/// and a revoked one none, on a running server that reads the CA directory (attack 5: one
/// token gave any number of certificates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_enrols_as_many_endpoints_as_it_allows_and_none_once_revoked() {
    use rollcall_runtime::enrol::{self, CaEnroller, EnrolError};
    use rollcall_runtime::identity::{Ca, TokenPolicy};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tmp");
    let ca = Arc::new(Ca::init(&dir.path().join("ca"), "test").expect("init"));
    let once = ca
        .new_join_token_with(TokenPolicy {
            expires_unix_secs: None,
            uses_left: Some(1),
        })
        .expect("token");
    let open = ca.new_join_token().expect("token");
    let (server, _) = quic_node(
        &creds(&ca, PeerRole::Server),
        "127.0.5.1",
        QuicOptions {
            enrolment: Some(Arc::new(CaEnroller::from_ca_dir(
                ca.clone(),
                ServerSigner::generate().expect("key").public_key(),
            ))),
            ..Default::default()
        },
    )
    .await;
    let stats = server.wire_stats().clone();
    let bind = "127.0.5.9:0".parse().expect("addr");
    enrol::enrol(server.local_addr(), &once, "first", bind)
        .await
        .expect("the token's one use");
    match enrol::enrol(server.local_addr(), &once, "second", bind).await {
        Err(EnrolError::Refused(why)) => assert_eq!(why, "join token used up"),
        other => panic!("expected refusal, got {other:?}"),
    }
    enrol::enrol(server.local_addr(), &open, "third", bind)
        .await
        .expect("an unlimited token");
    assert!(ca.revoke_join_token(&open.secret[..8]).expect("revoke"));
    match enrol::enrol(server.local_addr(), &open, "fourth", bind).await {
        Err(EnrolError::Refused(why)) => assert_eq!(why, "unknown join token"),
        other => panic!("expected refusal, got {other:?}"),
    }
    let s = stats.snapshot();
    assert_eq!((s.enrolments, s.enrolments_refused), (2, 2));
    server.shutdown();
}

fn rejected<T>(r: &Result<T, CallError>) -> bool {
    matches!(
        r,
        Err(CallError::Transport(TransportError::Refused(
            RefuseCode::Rejected
        )))
    )
}

/// Answers `x` and counts how often it was asked to read its sensors.
struct Fixed(&'static str, std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl rollcall_cluster::member::Evaluator for Fixed {
    fn evaluate(&self, _body: &[u8]) -> futures::future::BoxFuture<'static, NodeAnswer> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let v = self.0;
        Box::pin(async move {
            NodeAnswer {
                rows: Some(vec![vec![v.into()]]),
                problems: Vec::new(),
            }
        })
    }
}

fn fixed(
    v: &'static str,
    reads: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Option<rollcall_cluster::member::EvaluatorHandle> {
    Some(rollcall_cluster::member::EvaluatorHandle(
        std::sync::Arc::new(Fixed(v, reads.clone())),
    ))
}

/// Attack 3: an endpoint asks a member a question of its own making (no signature, another
/// key's signature, a real one with its body changed, or one long expired), or one under the
/// next id to poison the operator's question: each is refused before the member reads its
/// sensors or passes it on, and counted; the operator's real question under that id is then
/// answered by every machine with its real answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_the_server_did_not_sign_is_refused_by_every_member_and_counted() {
    use rollcall_runtime::signing::{Purpose, Stamp};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let reads = Arc::new(AtomicUsize::new(0));
    let a = c.add_with("127.0.8.1", fixed("real", &reads)).await;
    let b = c.add_with("127.0.8.2", fixed("real", &reads)).await;
    rollcall_tests::eventually("a ring of two", Duration::from_secs(20), || {
        let r = c.rings.clone();
        async move {
            let rep = r.report(None).await;
            (rep.rings.len() == 1 && rep.rings[0].members.len() == 2).then_some(())
        }
    })
    .await;
    let (attacker, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.8.66",
        QuicOptions::default(),
    )
    .await;
    let link = attacker
        .connect_once(c.endpoints[a].node.local_addr(), Duration::from_secs(10))
        .await
        .expect("an endpoint reaches its neighbour");
    let other_key = ServerSigner::generate().expect("key");
    let real =
        rollcall_tests::signed_question(&c.signer, 99, b"real".to_vec(), Duration::from_secs(60));
    let stale = {
        let stamp = Stamp {
            issued_unix_ms: 1_000_000,
            expires_unix_ms: 1_060_000,
        };
        rollcall_cluster::proto::QuestionEnvelope {
            id: 1,
            body: b"old".to_vec(),
            ttl_ms: 60_000,
            stamp,
            signature: c.signer.sign(Purpose::Question, 1, stamp, b"old"),
        }
    };
    let attempts = [
        // No signature, under the id the operator's next question will take.
        rollcall_cluster::proto::QuestionEnvelope {
            signature: Vec::new(),
            ..rollcall_tests::signed_question(&c.signer, 1, b"x".to_vec(), Duration::from_secs(60))
        },
        // Signed by a key that is not the server's.
        rollcall_tests::signed_question(&other_key, 1, b"x".to_vec(), Duration::from_secs(60)),
        // A real question with its body changed.
        rollcall_cluster::proto::QuestionEnvelope {
            body: b"changed".to_vec(),
            ..real.clone()
        },
        // A real question with a longer life than the server gave it.
        rollcall_cluster::proto::QuestionEnvelope {
            stamp: Stamp {
                expires_unix_ms: real.stamp.expires_unix_ms + 3_600_000,
                ..real.stamp
            },
            ..real.clone()
        },
        // A real question, long expired.
        stale,
    ];
    for (i, env) in attempts.into_iter().enumerate() {
        let late = MemberRequest::Late(env.clone());
        let r: Result<rollcall_cluster::proto::Partial, CallError> = link
            .call(MEMBER, &MemberRequest::Ask(env), Duration::from_secs(5))
            .await;
        assert!(rejected(&r), "attempt {i} as a question: {r:?}");
        let r: Result<(), CallError> = link.call(MEMBER, &late, Duration::from_secs(5)).await;
        assert!(rejected(&r), "attempt {i} as a hand-off: {r:?}");
    }
    link.close();
    attacker.shutdown();
    assert_eq!(reads.load(Ordering::SeqCst), 0, "no sensor was read");
    let refused: u64 = c
        .endpoints
        .iter()
        .map(|e| e.node.wire_stats().snapshot().rejected_unsigned)
        .sum();
    assert_eq!(refused, 10, "each attempt refused and counted once");

    // The operator's question 1 comes back with the real answers of both machines.
    let id = c
        .rings
        .ask(
            "q".into(),
            vec!["v".into()],
            b"q".to_vec(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(id, 1);
    let p = rollcall_tests::eventually_or("both answers", Duration::from_secs(20), || {
        let r = c.rings.clone();
        async move {
            let p = r.progress(id).ok_or("no record")?;
            if p.answered == 2 {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        }
    })
    .await;
    let rows: Vec<(Vec<String>, u64)> = p.rows.iter().map(|r| (r.cells.clone(), r.count)).collect();
    assert_eq!(rows, [(vec!["real".to_string()], 2)]);
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    let _ = b;
}

/// A node with a fake ring member that lies in its answers and answers every ring message.
struct Liar {
    me: rollcall_runtime::NodeId,
    forged: Vec<rollcall_runtime::NodeId>,
    /// Its own answer key, from its registration: it tags its own answer truly.
    key: std::sync::Mutex<Option<rollcall_runtime::answer_tags::AnswerKey>>,
}

impl rollcall_runtime::node::Deliver for Liar {
    fn deliver(
        &self,
        mut incoming: rollcall_runtime::node::Incoming,
    ) -> Result<(), rollcall_runtime::node::DestinationGone> {
        use rollcall_cluster::proto::{EncodedAnswer, MemberInfo, Partial, TaggedAnswer};
        let Ok(req) = incoming.decode::<MemberRequest>() else {
            return Ok(());
        };
        let answer = |v: &str| {
            EncodedAnswer::new(&NodeAnswer {
                rows: Some(vec![vec![v.into()]]),
                problems: vec![],
            })
        };
        let _ = match req {
            MemberRequest::Ask(env) => {
                let own = answer("SELF");
                let tag = rollcall_runtime::sync::lock(&self.key)
                    .as_ref()
                    .map(|k| k.tag(env.id, own.as_bytes()))
                    .unwrap_or_default();
                let mut p = Partial::default();
                p.add(&self.me, &TaggedAnswer { answer: own, tag });
                // Answers for others it has no keys for: an empty tag.
                for id in &self.forged {
                    p.add(id, &answer("FORGED").into());
                }
                incoming.answer(&p)
            }
            MemberRequest::Probe => incoming.answer(&()),
            MemberRequest::Ping | MemberRequest::Hello(_) => {
                incoming.answer(&Vec::<MemberInfo>::new())
            }
            MemberRequest::Late(_) => incoming.answer(&()),
        };
        Ok(())
    }
}

/// Attack 1, with an endpoint's key (a viewer's is refused at the door: see above): the
/// attacker declares an address in another ring to lead it, and answers the server for
/// machines that do not exist and for a machine of another ring. It is placed where the
/// server sees it, and only its own answer counts; the real machines answer for themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_placed_where_the_server_sees_it_and_cannot_answer_for_machines_outside_its_chain()
 {
    use rollcall_cluster::proto::{Registration, RegistrationReply};
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let reads = Arc::new(AtomicUsize::new(0));
    c.add_with("127.0.9.2", fixed("real", &reads)).await;
    c.add_with("127.0.9.3", fixed("real", &reads)).await;
    let other = c.add_with("127.0.10.2", fixed("real", &reads)).await;
    let other_id = c.endpoints[other].node.identity().id.clone();

    let (liar, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.9.1",
        QuicOptions::default(),
    )
    .await;
    let liar_id = liar.identity().id.clone();
    let ghosts: Vec<rollcall_runtime::NodeId> = (0..3)
        .map(|i| rollcall_runtime::NodeId::new(format!("ghost{i}")))
        .collect();
    let liar_route = Arc::new(Liar {
        me: liar_id.clone(),
        forged: ghosts.iter().cloned().chain([other_id.clone()]).collect(),
        key: std::sync::Mutex::new(None),
    });
    liar.router().register(
        MEMBER,
        rollcall_runtime::Roles::ENDPOINT.or(rollcall_runtime::Roles::SERVER),
        liar_route.clone(),
    );
    let link = liar
        .connect_once(c.server.local_addr(), Duration::from_secs(10))
        .await
        .expect("the server");
    // It says it sits at the bottom of the other ring.
    let declared: std::net::SocketAddr = "127.0.10.1:7000".parse().expect("addr");
    let reply: RegistrationReply = link
        .call(
            REGISTRY,
            &ServerRequest::Register(Registration {
                addr: declared,
                hostname: "liar".into(),
                os: "linux".into(),
                version: "0".into(),
            }),
            Duration::from_secs(5),
        )
        .await
        .expect("registered");
    assert_eq!(
        reply.ring.map(|r| r.0),
        Some("127.0.9.0/24".to_string()),
        "placed in the ring of the address the server observed"
    );
    *rollcall_runtime::sync::lock(&liar_route.key) =
        rollcall_runtime::answer_tags::AnswerKey::new(&reply.answer_key);
    let report = rollcall_tests::eventually_or(
        "the liar first in its real ring",
        Duration::from_secs(20),
        || {
            let r = c.rings.clone();
            async move {
                let rep = r.report(None).await;
                let shape: Vec<(String, usize)> = rep
                    .rings
                    .iter()
                    .map(|r| (r.ring.0.clone(), r.members.len()))
                    .collect();
                if shape
                    == [
                        ("127.0.10.0/24".to_string(), 1),
                        ("127.0.9.0/24".to_string(), 3),
                    ]
                {
                    Ok(rep)
                } else {
                    Err(format!("{shape:?}"))
                }
            }
        },
    )
    .await;
    let ring9 = report
        .rings
        .iter()
        .find(|r| r.ring.0 == "127.0.9.0/24")
        .expect("ring");
    assert_eq!(ring9.members[0].id, liar_id);
    // Its observed address, with the port it declared.
    assert_eq!(
        ring9.members[0].addr,
        std::net::SocketAddr::new(liar.local_addr().ip(), 7000)
    );

    let before = c.server.wire_stats().snapshot().rejected_answers;
    let id = c
        .rings
        .ask(
            "q".into(),
            vec!["v".into()],
            b"q".to_vec(),
            Duration::from_secs(60),
        )
        .await;
    let p = rollcall_tests::eventually_or(
        "every real machine's answer",
        Duration::from_secs(20),
        || {
            let r = c.rings.clone();
            async move {
                let p = r.progress(id).ok_or("no record")?;
                let rows = rollcall_tests::first_cells(&p);
                if p.answered == 4
                    && rows.contains(&("real".to_string(), 3))
                    && p.problems.iter().any(|(_, w)| w.starts_with("changed"))
                {
                    Ok(p)
                } else {
                    Err(format!("{p:?}"))
                }
            }
        },
    )
    .await;
    let rows = rollcall_tests::first_cells(&p);
    assert_eq!(
        rows,
        [("real".to_string(), 3), ("SELF".to_string(), 1)],
        "the liar's own answer is its own; none it made up for others counts"
    );
    assert_eq!(p.expected, 4);
    let after = c.server.wire_stats().snapshot().rejected_answers;
    assert_eq!(
        after - before,
        4,
        "three ghosts and a machine of another ring"
    );
    // The member that brought them is named.
    assert!(
        p.problems.contains(&(
            liar_id.clone(),
            "changed the answers of machines after it in its chain".to_string()
        )),
        "{:?}",
        p.problems
    );
    link.close();
    liar.shutdown();
}

/// A late answer comes only from a machine the server placed, for itself: a stranger's
/// endpoint certificate gets it refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_from_a_machine_that_never_registered_is_refused_and_counted() {
    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    c.add_with("127.0.11.1", fixed("real", &reads)).await;
    let id = c
        .rings
        .ask(
            "q".into(),
            vec!["v".into()],
            b"q".to_vec(),
            Duration::from_secs(60),
        )
        .await;
    rollcall_tests::eventually("the one answer", Duration::from_secs(20), || {
        let r = c.rings.clone();
        async move { (r.answered(id) == Some(1)).then_some(()) }
    })
    .await;
    let (stranger, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.11.66",
        QuicOptions::default(),
    )
    .await;
    let link = stranger
        .connect_once(c.server.local_addr(), Duration::from_secs(10))
        .await
        .expect("the server");
    let r: Result<(), CallError> = link
        .call(
            REGISTRY,
            &ServerRequest::Answer {
                id,
                answer: NodeAnswer {
                    rows: Some(vec![vec!["FORGED".into()]]),
                    problems: vec![],
                },
            },
            Duration::from_secs(5),
        )
        .await;
    assert!(rejected(&r), "{r:?}");
    assert_eq!(c.server.wire_stats().snapshot().rejected_answers, 1);
    let p = c.rings.progress(id).expect("kept");
    assert_eq!((p.answered, p.expected), (1, 1));
    link.close();
    stranger.shutdown();
}

/// Attack 2, with a server's certificate of the same CA that is not the pinned server: a
/// member will not register there; and a sensor configuration (a "Pwn" script sensor)
/// signed by any key but the pinned one, or older than the one in use, is refused and
/// counted, while the server's own is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pinned_server_is_registered_with_and_only_its_signed_configuration_is_taken() {
    use rollcall_actors::desk::{SENSOR_CONFIG, SensorConfig, SensorEvaluator, SignedConfig};
    use rollcall_actors::sensors::ScriptSensor;
    use rollcall_actors::sensors::Sensors;
    use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
    use std::sync::Arc;

    let ca = rollcall_tests::ca();
    let real_server = creds(&ca, PeerRole::Server);
    let signer = ServerSigner::generate().expect("key");
    let trust = Arc::new(ServerTrust::new(
        Some(real_server.identity.id.clone()),
        signer.public_key(),
    ));
    let (fake, ep) =
        an_impostor_gets_nothing(&ca, PeerRole::Server, "127.0.12", trust.clone()).await;
    ep.shutdown();
    // An operator whose credentials are pinned to the real server will not talk to it either.
    let operator = creds(&ca, PeerRole::Operator(OperatorRole::Admin));
    let refused = rollcall::desk_client::DeskClient::with_creds_pinned(
        &operator,
        fake.local_addr(),
        Some(&real_server.identity.id),
    )
    .await;
    let e = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(e.contains("not the pinned"), "{e}");

    // The configuration route, on an endpoint with sensors.
    let (ep, _) = quic_node(
        &creds(&ca, PeerRole::Endpoint),
        "127.0.12.3",
        QuicOptions::default(),
    )
    .await;
    let evaluator = SensorEvaluator::new(Sensors::new(Arc::new(SimulatedHost::new(
        HostProfile::from_seed(1, None),
    ))));
    evaluator.accept_config_on(&ep, trust.clone());
    let pwn = |name: &str| SensorConfig {
        scripts: vec![ScriptSensor::new(name, "id -u")],
        baseline: vec![],
        revoked: vec![],
    };
    let link = fake
        .connect_once(ep.local_addr(), Duration::from_secs(10))
        .await
        .expect("the endpoint");
    let stats = ep.wire_stats().clone();
    let send = |cfg: SignedConfig| {
        let link = link.clone();
        async move { link.cast(SENSOR_CONFIG, &cfg).await.expect("sent") }
    };
    let names = || -> Vec<String> {
        evaluator
            .catalog()
            .into_iter()
            .map(|s| s.name.to_string())
            .filter(|n| n.starts_with("Pwn") || n.starts_with("Ok"))
            .collect()
    };
    // Signed by another key.
    send(SignedConfig::sign(&pwn("Pwn"), &ServerSigner::generate().expect("key")).expect("signed"))
        .await;
    stats
        .wait_for(Duration::from_secs(10), |s| s.rejected_unsigned == 1)
        .await;
    // Signed by the server, with the body swapped.
    let good = SignedConfig::sign(&pwn("Ok"), &signer).expect("signed");
    let swapped = SignedConfig {
        body: rollcall_runtime::wire::encode_body(&pwn("Pwn")).expect("encoded"),
        ..good.clone()
    };
    send(swapped).await;
    let s = stats
        .wait_for(Duration::from_secs(10), |s| s.rejected_unsigned == 2)
        .await;
    assert_eq!(s.rejected_unsigned, 2);
    assert!(names().is_empty(), "{:?}", names());
    // The server's own is taken; one older than it is not.
    let older = SignedConfig {
        stamp: rollcall_runtime::signing::Stamp {
            issued_unix_ms: good.stamp.issued_unix_ms - 1000,
            ..good.stamp
        },
        ..good.clone()
    };
    let older = SignedConfig {
        signature: signer.sign(
            rollcall_runtime::signing::Purpose::SensorConfig,
            0,
            older.stamp,
            &rollcall_runtime::wire::encode_body(&pwn("Pwn")).expect("encoded"),
        ),
        body: rollcall_runtime::wire::encode_body(&pwn("Pwn")).expect("encoded"),
        ..older
    };
    send(good).await;
    rollcall_tests::eventually(
        "the server's configuration taken",
        Duration::from_secs(10),
        || {
            let n = names();
            async move { (n == ["Ok"]).then_some(()) }
        },
    )
    .await;
    send(older).await;
    let s = stats
        .wait_for(Duration::from_secs(10), |s| s.rejected_unsigned == 3)
        .await;
    assert_eq!(s.rejected_unsigned, 3);
    assert_eq!(names(), ["Ok"]);
    link.close();
    ep.shutdown();
    fake.shutdown();
}

/// Revocation: the server refuses a revoked endpoint from its next message on, on a
/// connection already open too (counted, with its own refusal code); an endpoint refuses it
/// once the server's signed configuration lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_endpoint_is_refused_by_the_server_at_once_and_by_endpoints_through_the_signed_configuration()
 {
    use rollcall_actors::desk::{SENSOR_CONFIG, SensorConfig, SensorEvaluator, SignedConfig};
    use rollcall_actors::sensors::Sensors;
    use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
    use rollcall_cluster::proto::{Registration, RegistrationReply};
    use std::sync::Arc;

    let c = RingCluster::start(MembershipConfig::default()).await;
    let (bad, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.13.1",
        QuicOptions::default(),
    )
    .await;
    let bad_id = bad.identity().id.clone();
    let link = bad
        .connect_once(c.server.local_addr(), Duration::from_secs(10))
        .await
        .expect("the server");
    let register = ServerRequest::Register(Registration {
        addr: bad.local_addr(),
        hostname: "bad".into(),
        os: "linux".into(),
        version: "0".into(),
    });
    let r: Result<RegistrationReply, CallError> =
        link.call(REGISTRY, &register, Duration::from_secs(5)).await;
    assert!(r.is_ok(), "registered before revocation: {:?}", r.err());
    c.server.revocations().set([bad_id.clone()]);
    let r: Result<RegistrationReply, CallError> =
        link.call(REGISTRY, &register, Duration::from_secs(5)).await;
    assert!(
        matches!(
            r,
            Err(CallError::Transport(TransportError::Refused(
                RefuseCode::Revoked
            )))
        ),
        "{:?}",
        r.err()
    );
    assert_eq!(c.server.wire_stats().snapshot().rejected_revoked, 1);

    // An endpoint learns the list from the signed configuration.
    let (ep, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.13.2",
        QuicOptions::default(),
    )
    .await;
    let evaluator = SensorEvaluator::new(Sensors::new(Arc::new(SimulatedHost::new(
        HostProfile::from_seed(1, None),
    ))));
    evaluator.accept_config_on(&ep, c.trust.clone());
    let to_ep = bad
        .connect_once(ep.local_addr(), Duration::from_secs(10))
        .await
        .expect("the endpoint");
    ep.router().register(
        "echo",
        rollcall_runtime::Roles::ANY,
        Arc::new(rollcall_tests::Echo),
    );
    let status = |l: rollcall_runtime::node::PeerHandle| async move {
        let r: Result<(), CallError> = l.call("echo", &(), Duration::from_secs(5)).await;
        r
    };
    let before = status(to_ep.clone()).await;
    assert!(before.is_ok(), "not revoked yet: {before:?}");
    let cfg = SensorConfig {
        scripts: vec![],
        baseline: vec![],
        revoked: vec![bad_id.to_string()],
    };
    let server_link = c
        .server
        .connect_once(ep.local_addr(), Duration::from_secs(10))
        .await
        .expect("the endpoint");
    server_link
        .cast(
            SENSOR_CONFIG,
            &SignedConfig::sign(&cfg, &c.signer).expect("signed"),
        )
        .await
        .expect("sent");
    rollcall_tests::eventually(
        "the endpoint refuses the revoked one",
        Duration::from_secs(10),
        || {
            let l = to_ep.clone();
            async move {
                matches!(
                    status(l).await,
                    Err(CallError::Transport(TransportError::Refused(
                        RefuseCode::Revoked
                    )))
                )
                .then_some(())
            }
        },
    )
    .await;
    assert_eq!(ep.wire_stats().snapshot().rejected_revoked, 1);
    link.close();
    bad.shutdown();
    ep.shutdown();
}

/// Endpoint certificates are short-lived and renewed over the link: a certificate with a
/// third of its life left is renewed by the pinned server for the same key (same id, a new
/// 30-day certificate, stored and presented from the next connection on); a fresh one is
/// left alone; a request for another key is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_certificate_is_renewed_over_its_link_for_its_own_key_only() {
    use rollcall_runtime::identity::{Credentials, Validity};
    use rollcall_runtime::renewal::{self, CaRenewal, RENEW, RenewReply, RenewRequest};

    let ca = rollcall_tests::ca();
    let server_creds = creds(&ca, PeerRole::Server);
    let (server, _) = quic_node(&server_creds, "127.0.14.1", QuicOptions::default()).await;
    CaRenewal::install(&server, ca.clone());
    let short = ca
        .issue(
            PeerRole::Endpoint,
            None,
            Validity {
                not_before_secs: -3600,
                not_after_secs: 600,
            },
        )
        .expect("creds");
    let (ep, transport) = quic_node(&short, "127.0.14.2", QuicOptions::default()).await;
    let state = tempfile::tempdir().expect("tmp");
    let now = (rollcall_runtime::signing::unix_ms() / 1000) as i64;
    assert!(renewal::due(&short.cert, now).expect("parse"));
    let target = (server.local_addr(), Some(&server_creds.identity.id));
    let renewed = renewal::renew_if_due(&ep, &transport, state.path(), target, short.clone(), now)
        .await
        .expect("renewed");
    assert_eq!(renewed.identity, short.identity);
    assert_ne!(renewed.cert, short.cert);
    let (_, until) = renewal::validity(&renewed.cert).expect("parse");
    let days = (until - now) as f64 / 86_400.0;
    assert!((29.9..=30.1).contains(&days), "{days} days");
    assert_eq!(
        Credentials::load(state.path()).expect("stored").cert,
        renewed.cert
    );
    assert_eq!(server.wire_stats().snapshot().renewals, 1);
    // A fresh certificate is not renewed again.
    let again = renewal::renew_if_due(&ep, &transport, state.path(), target, renewed.clone(), now)
        .await
        .expect("nothing to do");
    assert_eq!(again.cert, renewed.cert);
    assert_eq!(server.wire_stats().snapshot().renewals, 1);
    // New connections carry the renewed certificate: the server still sees the same node.
    let link = ep
        .connect_once(server.local_addr(), Duration::from_secs(10))
        .await
        .expect("a new connection");
    assert_eq!(
        link.peer().map(|p| p.id),
        Some(server_creds.identity.id.clone())
    );
    // A request for another key (to take over another identity) is refused and counted.
    let other = rollcall_runtime::identity::new_certificate_request("other")
        .expect("csr")
        .1;
    let r: Result<RenewReply, CallError> = link
        .call(RENEW, &RenewRequest { csr: other }, Duration::from_secs(5))
        .await;
    match r {
        Ok(RenewReply::Refused(why)) => {
            assert_eq!(why, "the request is not for this endpoint's key")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(server.wire_stats().snapshot().renewals_refused, 1);
    link.close();
    ep.shutdown();
    server.shutdown();
}

/// A node at `{net}.1` holding a `role` certificate of `ca` and answering at the registry,
/// and an endpoint at `{net}.2` that takes it for its server while pinning `trust`: the
/// member dials it twice and sends it nothing. Returns both nodes.
async fn an_impostor_gets_nothing(
    ca: &rollcall_runtime::identity::Ca,
    role: PeerRole,
    net: &str,
    trust: std::sync::Arc<ServerTrust>,
) -> (rollcall_runtime::Node, rollcall_runtime::Node) {
    use rollcall::compose::{self, Answering, EndpointPlan};
    use rollcall_cluster::ring::RingConfig;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (fake, _) = quic_node(
        &creds(ca, role),
        &format!("{net}.1"),
        QuicOptions::default(),
    )
    .await;
    let asked = Arc::new(AtomicUsize::new(0));
    fake.router().register(
        REGISTRY,
        rollcall_runtime::Roles::ANY,
        Arc::new(Counting(asked.clone())),
    );
    let (ep, _) = quic_node(
        &creds(ca, PeerRole::Endpoint),
        &format!("{net}.2"),
        QuicOptions::default(),
    )
    .await;
    let member = compose::start_endpoint(
        &ep,
        EndpointPlan {
            server: fake.local_addr(),
            advertise: ep.local_addr(),
            hostname: "victim".into(),
            ring: RingConfig::loopback_tests(),
            register_min: Duration::from_millis(200),
            register_max: Duration::from_millis(400),
            server_timeout: Duration::from_secs(2),
            seed: 1,
            answering: Answering::Nothing,
            trust,
        },
    )
    .await
    .expect("member");
    rollcall_tests::eventually_or("two dials of the impostor", Duration::from_secs(20), || {
        let n = fake.wire_stats().snapshot().connections_accepted;
        async move {
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} connections"))
            }
        }
    })
    .await;
    assert_eq!(asked.load(Ordering::SeqCst), 0, "nothing was sent to it");
    let status = rollcall_cluster::member::status(&member)
        .await
        .expect("status");
    assert_eq!(status.registrations, 0);
    assert_eq!(status.ring, None);
    (fake, ep)
}
