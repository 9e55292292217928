//! The trust model, attack by attack: every route accepts only the certificate roles that
//! may send to it, and the node refuses (and counts) everything else before the route's
//! actor sees it. (Started with the routes' roles; signatures, revocation and placement by
//! observed address follow.)

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
    use rollcall::compose::{self, Answering, EndpointPlan};
    use rollcall_cluster::ring::RingConfig;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let ca = rollcall_tests::ca();
    let (fake, _) = quic_node(
        &creds(&ca, PeerRole::Endpoint),
        "127.0.4.1",
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
        &creds(&ca, PeerRole::Endpoint),
        "127.0.4.2",
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
            trust: Arc::new(ServerTrust::new(
                None,
                ServerSigner::generate().expect("key").public_key(),
            )),
        },
    )
    .await
    .expect("member");
    // Two registration attempts reached the impostor's address; neither sent it anything.
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
    assert_eq!(asked.load(Ordering::SeqCst), 0, "nothing was asked of it");
    let status = rollcall_cluster::member::status(&member)
        .await
        .expect("status");
    assert_eq!(status.registrations, 0);
    assert_eq!(status.ring, None);

    let operator = creds(&ca, PeerRole::Operator(OperatorRole::Admin));
    let refused = rollcall::desk_client::DeskClient::with_creds(&operator, fake.local_addr()).await;
    let e = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        e.contains("holds the endpoint role") && e.contains("not a rollcall server"),
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
