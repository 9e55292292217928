//! Real QUIC on loopback with mutual TLS: casts and calls, refusals, roles, enrolment.

use std::sync::Arc;
use std::time::Duration;

use rollcall_runtime::enrol::{self, CaEnroller, EnrolError};
use rollcall_runtime::identity::{
    JoinToken, NodeId, OperatorRole, PeerIdentity, PeerRole, Validity,
};
use rollcall_runtime::node::{CallError, NodeStatus, STATUS_ACTOR, StatusRequest};
use rollcall_runtime::signing::ServerSigner;
use rollcall_runtime::transport::quic::{CLOSE_REFUSED, QuicOptions};
use rollcall_runtime::transport::{RefuseCode, TransportError};
use rollcall_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_a_cast_and_a_call() {
    let ca = ca();
    let server_creds = creds(&ca, PeerRole::Server);
    let ep_creds = creds(&ca, PeerRole::Endpoint);
    let (server, _) = quic_node(&server_creds, "127.0.0.1", QuicOptions::default()).await;
    let mut recorded = start_probe(&server).await;
    let (endpoint, _) = quic_node(&ep_creds, "127.0.0.2", QuicOptions::default()).await;

    let link = endpoint
        .connect(server.local_addr())
        .await
        .expect("connect");
    let peer = link.wait_connected(DEADLINE).await.expect("connected");
    assert_eq!(peer, server_creds.identity);

    let reply: ProbeReply = link
        .call(PROBE, &Probe::Echo("hello".into()), DEADLINE)
        .await
        .expect("call");
    assert_eq!(reply, ProbeReply::Echo("hello".into()));

    link.cast(PROBE, &Probe::Record(42)).await.expect("cast");
    let got = tokio::time::timeout(DEADLINE, recorded.recv())
        .await
        .expect("cast arrives");
    assert_eq!(got, Some((ep_creds.identity.clone(), 42)));

    // The server can use the same connection the other way.
    let back = server
        .wait_peer(&ep_creds.identity.id, DEADLINE)
        .await
        .expect("server sees the endpoint");
    let mut ep_recorded = start_probe(&endpoint).await;
    back.cast(PROBE, &Probe::Record(7))
        .await
        .expect("cast back");
    let got = tokio::time::timeout(DEADLINE, ep_recorded.recv())
        .await
        .expect("cast back arrives");
    assert_eq!(got, Some((server_creds.identity.clone(), 7)));

    let stats = server.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.rejected_total(), 0);
    assert_eq!(stats.envelopes_received, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = ca();
    let other = rollcall_tests::ca();
    let (server, _) = quic_node(
        &creds(&ca, PeerRole::Server),
        "127.0.0.1",
        QuicOptions::default(),
    )
    .await;
    let (intruder, _) = quic_node(
        &creds(&other, PeerRole::Endpoint),
        "127.0.0.3",
        QuicOptions::default(),
    )
    .await;

    let link = intruder
        .connect(server.local_addr())
        .await
        .expect("spawn link");
    let stats = server
        .wire_stats()
        .wait_for(DEADLINE, |s| s.handshakes_refused >= 1)
        .await;
    assert_eq!(stats.handshakes_refused, 1, "{stats:?}");
    assert_eq!(stats.connections_accepted, 0);
    // Whatever the dialer believes about its handshake, it never gets a working call through.
    let r: Result<ProbeReply, _> = link
        .call(PROBE, &Probe::Echo("x".into()), Duration::from_secs(2))
        .await;
    assert!(r.is_err(), "{r:?}");
    assert!(server.connected_peers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let ca = ca();
    let (server, _) = quic_node(
        &creds(&ca, PeerRole::Server),
        "127.0.0.1",
        QuicOptions::default(),
    )
    .await;
    let expired = ca
        .issue(
            PeerRole::Operator(OperatorRole::Admin),
            Some("old-admin"),
            Validity {
                not_before_secs: -7200,
                not_after_secs: -3600,
            },
        )
        .expect("issue");
    let (client, _) = quic_node(&expired, "127.0.0.4", QuicOptions::default()).await;
    let _link = client
        .connect(server.local_addr())
        .await
        .expect("spawn link");
    let stats = server
        .wire_stats()
        .wait_for(DEADLINE, |s| s.handshakes_refused >= 1)
        .await;
    assert_eq!(
        (stats.handshakes_refused, stats.connections_accepted),
        (1, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_certificate_gets_enrolment_only() {
    let ca = ca();
    let server_creds = creds(&ca, PeerRole::Server);
    // A server that takes enrolments lets certificate-less clients finish the handshake...
    let key = ServerSigner::generate().expect("key").public_key();
    let enroller = Arc::new(CaEnroller::new(ca.clone(), vec![], key));
    let (enrolling, _) = quic_node(
        &server_creds,
        "127.0.0.5",
        QuicOptions {
            enrolment: Some(enroller),
            ..Default::default()
        },
    )
    .await;
    // ...but on the node protocol they are closed at once and counted.
    let mut cfg = rustls::ClientConfig::builder_with_provider(rollcall_runtime::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates({
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert().clone()).expect("root");
            roots
        })
        .with_no_client_auth();
    cfg.alpn_protocols = vec![rollcall_runtime::tls::ALPN_NODE.to_vec()];
    let qcfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).expect("quic cfg"),
    ));
    let ep = quinn::Endpoint::client("127.0.0.6:0".parse().expect("addr")).expect("client");
    let conn = ep
        .connect_with(
            qcfg,
            enrolling.local_addr(),
            rollcall_runtime::identity::NODE_SERVER_NAME,
        )
        .expect("connect")
        .await
        .expect("handshake completes without a certificate");
    let closed = tokio::time::timeout(DEADLINE, conn.closed())
        .await
        .expect("closed by server");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(CLOSE_REFUSED));
            assert_eq!(&c.reason[..], b"no client certificate");
        }
        other => panic!("unexpected close: {other:?}"),
    }
    let stats = enrolling
        .wire_stats()
        .wait_for(DEADLINE, |s| s.handshakes_refused >= 1)
        .await;
    assert_eq!(
        (stats.handshakes_refused, stats.connections_accepted),
        (1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_role_is_read_back_and_enforced() {
    let ca = ca();
    let server_creds = creds(&ca, PeerRole::Server);
    let (server, _) = quic_node(&server_creds, "127.0.0.1", QuicOptions::default()).await;
    for role in [
        OperatorRole::Viewer,
        OperatorRole::Operator,
        OperatorRole::Admin,
    ] {
        let op = ca
            .issue(PeerRole::Operator(role), Some("alice"), Validity::default())
            .expect("issue operator");
        let (cli, _) = quic_node(&op, "127.0.0.7", QuicOptions::default()).await;
        let link = cli.connect(server.local_addr()).await.expect("connect");
        link.wait_connected(DEADLINE).await.expect("connected");
        let status: NodeStatus = link
            .call(STATUS_ACTOR, &StatusRequest, DEADLINE)
            .await
            .expect("status");
        assert_eq!(
            status.asked_by,
            PeerIdentity {
                id: NodeId("alice".into()),
                role: PeerRole::Operator(role)
            }
        );
        assert_eq!(status.identity, server_creds.identity);
        cli.shutdown();
    }
    // An endpoint is not an operator: the status actor refuses it.
    let (ep, _) = quic_node(
        &creds(&ca, PeerRole::Endpoint),
        "127.0.0.8",
        QuicOptions::default(),
    )
    .await;
    let link = ep.connect(server.local_addr()).await.expect("connect");
    link.wait_connected(DEADLINE).await.expect("connected");
    let r: Result<NodeStatus, _> = link.call(STATUS_ACTOR, &StatusRequest, DEADLINE).await;
    assert_eq!(
        r,
        Err(CallError::Transport(TransportError::Refused(
            RefuseCode::Rejected
        )))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_issues_a_working_certificate_and_refuses_bad_tokens() {
    let ca = ca();
    let server_creds = creds(&ca, PeerRole::Server);
    let good = JoinToken {
        secret: "a1".repeat(16),
        ca_fingerprint: ca.fingerprint(),
    };
    let signer = ServerSigner::generate().expect("key");
    let enroller = Arc::new(CaEnroller::new(
        ca.clone(),
        vec![good.secret.clone()],
        signer.public_key(),
    ));
    let (server, _) = quic_node(
        &server_creds,
        "127.0.0.1",
        QuicOptions {
            enrolment: Some(enroller),
            ..Default::default()
        },
    )
    .await;
    let bind = "127.0.0.9:0".parse().expect("addr");

    let stats = server.wire_stats().clone();
    let enrolled = enrol::enrol(server.local_addr(), &good, "host-9", bind)
        .await
        .expect("enrol");
    let creds = enrolled.creds;
    assert_eq!(creds.identity.role, PeerRole::Endpoint);
    // The endpoint pinned this server and its signing key.
    assert_eq!(
        enrolled.trust.server_id.as_ref(),
        Some(&server_creds.identity.id)
    );
    assert_eq!(enrolled.trust.key, signer.public_key());
    assert_eq!(stats.snapshot().enrolments, 1);
    // The new certificate works for the node protocol.
    let (ep, _) = quic_node(&creds, "127.0.0.9", QuicOptions::default()).await;
    let link = ep.connect(server.local_addr()).await.expect("connect");
    assert_eq!(
        link.wait_connected(DEADLINE).await.expect("connected"),
        server_creds.identity
    );
    let seen = server
        .wait_peer(&creds.identity.id, DEADLINE)
        .await
        .expect("server sees it");
    assert_eq!(seen.peer(), Some(creds.identity.clone()));
    assert_eq!(server.stats().connections_accepted, 1);

    // A wrong secret is refused and counted.
    let bad = JoinToken {
        secret: "b2".repeat(16),
        ..good.clone()
    };
    match enrol::enrol(server.local_addr(), &bad, "host-x", bind).await {
        Err(EnrolError::Refused(why)) => assert_eq!(why, "unknown join token"),
        other => panic!("expected refusal, got {other:?}"),
    }
    assert_eq!(stats.snapshot().enrolments_refused, 1);
    assert_eq!(stats.snapshot().enrolments, 1);

    // A token pinned to another CA never sends its secret: the server fails verification.
    let foreign = JoinToken {
        ca_fingerprint: rollcall_tests::ca().fingerprint(),
        ..good
    };
    match enrol::enrol(server.local_addr(), &foreign, "host-y", bind).await {
        Err(EnrolError::Connect { reason, .. }) => {
            assert!(reason.contains("does not match the join token"), "{reason}")
        }
        other => panic!("expected a verification failure, got {other:?}"),
    }
    assert_eq!(stats.snapshot().enrolments, 1);
}

/// Requests and casts read to their end: nothing is dropped unread, so no STOP_SENDING goes
/// out. (Each one cost a packet each way and a wake-up on both sides: on an idle ring, where
/// a probe every second is all the traffic, they were a third of the datagrams.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_casts_leave_no_stream_to_stop() {
    use rollcall_runtime::identity::NodeSecret;
    use rollcall_runtime::transport::Transport;
    use rollcall_runtime::transport::quic::QuicTransport;

    let ca = ca();
    let bind = |ip: &str, role| {
        QuicTransport::bind(
            format!("{ip}:0").parse().expect("addr"),
            &creds(&ca, role),
            &NodeSecret::generate(),
            QuicOptions::default(),
        )
        .expect("bind")
    };
    let (a, b) = (
        bind("127.0.0.1", PeerRole::Endpoint),
        bind("127.0.0.2", PeerRole::Endpoint),
    );
    let answerer = b.clone();
    const N: usize = 20;
    let answers = tokio::spawn(async move {
        let conn = answerer.accept().await.expect("accepted");
        let mut casts = 0;
        for _ in 0..2 * N {
            let mut s = conn.accept_stream().await.expect("a stream");
            let frame = s.read_frame(1024).await.expect("a frame");
            if s.expects_reply() {
                let framed = rollcall_runtime::wire::frame(&frame, 1024).expect("framed");
                s.reply(framed).await.expect("reply");
            } else {
                casts += 1;
            }
        }
        (conn, casts)
    });
    let conn = a.connect(b.local_addr()).await.expect("connect");
    for i in 0..N {
        let frame = |s: String| rollcall_runtime::wire::frame(s.as_bytes(), 1024).expect("framed");
        let reply =
            tokio::time::timeout(DEADLINE, conn.request(frame(format!("request {i}")), 1024))
                .await
                .expect("in time")
                .expect("reply");
        assert_eq!(&reply[..], format!("request {i}").as_bytes());
        conn.send_cast(frame(format!("cast {i}")))
            .await
            .expect("cast");
    }
    let (theirs, casts) = tokio::time::timeout(DEADLINE, answers)
        .await
        .expect("in time")
        .expect("answerer");
    assert_eq!(casts, N);
    let (mine, theirs) = (
        conn.packets().expect("counted"),
        theirs.packets().expect("counted"),
    );
    assert_eq!((mine.stop_sending_sent, theirs.stop_sending_sent), (0, 0));
}
