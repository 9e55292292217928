//! The same message-exchange suite, run over the in-memory transport and over real QUIC.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rollcall_runtime::identity::PeerRole;
use rollcall_runtime::node::{CallError, LinkEvent, Node};
use rollcall_runtime::supervisor::SupervisorMsg;
use rollcall_runtime::transport::mem::MemNetwork;
use rollcall_runtime::transport::quic::QuicOptions;
use rollcall_runtime::transport::{RefuseCode, TransportError};
use rollcall_runtime::wire::WireError;
use rollcall_runtime::{NodeId, PeerIdentity};
use rollcall_tests::*;

/// `a` dials `b`; both run a probe. Everything here must hold on every transport.
async fn exchange_suite(a: Node, b: Node) {
    let mut b_recorded = start_probe(&b).await;
    let mut a_recorded = start_probe(&a).await;
    let link = a.connect(b.local_addr()).await.expect("connect");
    assert_eq!(
        link.wait_connected(DEADLINE).await.expect("connected"),
        *b.identity()
    );

    // Call and cast.
    let r: ProbeReply = link
        .call(PROBE, &Probe::Echo("ping".into()), DEADLINE)
        .await
        .expect("call");
    assert_eq!(r, ProbeReply::Echo("ping".into()));
    let r: ProbeReply = link
        .call(PROBE, &Probe::WhoAmI, DEADLINE)
        .await
        .expect("whoami");
    assert_eq!(r, ProbeReply::Caller(a.identity().clone()));
    for n in 0..50 {
        link.cast(PROBE, &Probe::Record(n)).await.expect("cast");
    }
    let mut got = Vec::new();
    for _ in 0..50 {
        let (from, n) = tokio::time::timeout(DEADLINE, b_recorded.recv())
            .await
            .expect("cast arrives")
            .expect("open");
        assert_eq!(from, *a.identity());
        got.push(n);
    }
    got.sort();
    assert_eq!(got, (0..50).collect::<Vec<_>>());

    // Many calls in flight at once, each answered with its own value.
    let calls = (0..200u32).map(|n| {
        let link = link.clone();
        async move {
            link.call::<_, ProbeReply>(PROBE, &Probe::Record(n), DEADLINE)
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    for (n, a) in answers.into_iter().enumerate() {
        assert_eq!(a.expect("answered"), ProbeReply::Recorded(n as u32));
    }
    for _ in 0..200 {
        tokio::time::timeout(DEADLINE, b_recorded.recv())
            .await
            .expect("recorded")
            .expect("open");
    }

    // The other direction, over the same connection.
    let back = b
        .wait_peer(&a.identity().id, DEADLINE)
        .await
        .expect("b sees a");
    back.cast(PROBE, &Probe::Record(99))
        .await
        .expect("cast back");
    let (from, n) = tokio::time::timeout(DEADLINE, a_recorded.recv())
        .await
        .expect("arrives")
        .expect("open");
    assert_eq!((from, n), (b.identity().clone(), 99));

    // Errors the caller can tell apart.
    let r: Result<ProbeReply, _> = link.call("nobody", &Probe::WhoAmI, DEADLINE).await;
    assert_eq!(
        r,
        Err(CallError::Transport(TransportError::Refused(
            RefuseCode::UnknownDestination
        )))
    );
    let r: Result<ProbeReply, _> = link.call(PROBE, &Probe::Drop, DEADLINE).await;
    assert_eq!(
        r,
        Err(CallError::Transport(TransportError::Refused(
            RefuseCode::NoAnswer
        )))
    );
    // An answer that fails to encode is refused as unanswered, not left to time out.
    let r: Result<ProbeReply, _> = link.call(PROBE, &Probe::Unencodable, DEADLINE).await;
    assert_eq!(
        r,
        Err(CallError::Transport(TransportError::Refused(
            RefuseCode::NoAnswer
        )))
    );
    let short = Duration::from_millis(300);
    let r: Result<ProbeReply, _> = link.call(PROBE, &Probe::Hold, short).await;
    assert_eq!(r, Err(CallError::Timeout(short)));

    // Acknowledged calls: the acknowledgement comes ahead of an answer that never does...
    let (tx, acked) = tokio::sync::oneshot::channel();
    let r: Result<ProbeReply, _> = link.call_acked(PROBE, &Probe::AckThenHold, short, tx).await;
    assert_eq!(r, Err(CallError::Timeout(short)));
    assert_eq!(acked.await, Ok(()), "the acknowledgement arrived");
    // ...and ahead of one that does;
    let (tx, acked) = tokio::sync::oneshot::channel();
    let r: ProbeReply = link
        .call_acked(PROBE, &Probe::AckThenEcho("taken".into()), DEADLINE, tx)
        .await
        .expect("acked call");
    assert_eq!(r, ProbeReply::Echo("taken".into()));
    assert_eq!(acked.await, Ok(()));
    // a plain call to an actor that acknowledges gets just the answer;
    let r: ProbeReply = link
        .call(PROBE, &Probe::AckThenEcho("plain".into()), DEADLINE)
        .await
        .expect("plain call, acknowledged");
    assert_eq!(r, ProbeReply::Echo("plain".into()));
    // and an actor that answers without acknowledging leaves the caller's signal unfired.
    let (tx, acked) = tokio::sync::oneshot::channel();
    let r: ProbeReply = link
        .call_acked(PROBE, &Probe::Echo("direct".into()), DEADLINE, tx)
        .await
        .expect("unacknowledged call");
    assert_eq!(r, ProbeReply::Echo("direct".into()));
    assert!(acked.await.is_err(), "no acknowledgement was given");

    // Calls whose outcome is handed to a callback: called exactly once, with the answer, and
    // the acknowledgement flag set ahead of it...
    let then = |to: &str, probe: Probe| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let acked = Arc::new(AtomicBool::new(false));
        link.call_then(
            to,
            &probe,
            acked.clone(),
            move |r: Result<ProbeReply, CallError>| {
                // (A held call is called back, refused, when its node stops.)
                let _ = tx.send(r);
            },
        )
        .expect("started");
        (acked, rx)
    };
    let outcome = |rx: tokio::sync::oneshot::Receiver<Result<ProbeReply, CallError>>| async {
        tokio::time::timeout(DEADLINE, rx)
            .await
            .expect("the callback came in time")
            .expect("the callback was called")
    };
    let (acked, rx) = then(PROBE, Probe::AckThenEcho("called back".into()));
    assert_eq!(
        outcome(rx).await,
        Ok(ProbeReply::Echo("called back".into()))
    );
    assert!(acked.load(Ordering::Acquire));
    // ...left unset by an answer without one;
    let (acked, rx) = then(PROBE, Probe::Echo("unacknowledged".into()));
    assert_eq!(
        outcome(rx).await,
        Ok(ProbeReply::Echo("unacknowledged".into()))
    );
    assert!(!acked.load(Ordering::Acquire));
    // set by a call that is taken and held, whose callback waits;
    let (acked, mut held) = then(PROBE, Probe::AckThenHold);
    eventually("the held call's acknowledgement", DEADLINE, || {
        let set = acked.load(Ordering::Acquire).then_some(());
        async move { set }
    })
    .await;
    assert!(held.try_recv().is_err(), "a held call is not called back");
    // a call dropped unanswered, or to nobody, is called back with the refusal.
    let (_, rx) = then(PROBE, Probe::Drop);
    assert_eq!(
        outcome(rx).await,
        Err(CallError::Transport(TransportError::Refused(
            RefuseCode::NoAnswer
        )))
    );
    let (_, rx) = then("nobody", Probe::WhoAmI);
    assert_eq!(
        outcome(rx).await,
        Err(CallError::Transport(TransportError::Refused(
            RefuseCode::UnknownDestination
        )))
    );
    let huge = "x".repeat(2 << 20);
    let r: Result<ProbeReply, _> = link.call(PROBE, &Probe::Echo(huge), DEADLINE).await;
    assert!(
        matches!(r, Err(CallError::Wire(WireError::Oversized { .. }))),
        "{r:?}"
    );
    let near_limit = "y".repeat(1000 * 1000);
    let r: ProbeReply = link
        .call(PROBE, &Probe::Echo(near_limit.clone()), DEADLINE)
        .await
        .expect("big call");
    assert_eq!(r, ProbeReply::Echo(near_limit));

    // Nothing above was a bad frame on the receiving side except the unknown destination.
    let s = b.stats();
    assert_eq!(s.rejected_unknown_destination, 2, "{s:?}");
    assert_eq!(s.rejected_total(), 2, "{s:?}");
    a.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_over_memory() {
    let ca = ca();
    let net = MemNetwork::new(1, Duration::from_secs(1));
    net.set_default_latency(Duration::from_millis(1));
    let a = mem_node(
        &net,
        "127.10.0.1:7000",
        creds(&ca, PeerRole::Endpoint).identity,
    )
    .await;
    let b = mem_node(
        &net,
        "127.10.0.2:7000",
        creds(&ca, PeerRole::Server).identity,
    )
    .await;
    exchange_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_over_quic() {
    let ca = ca();
    let (a, _) = quic_node(
        &creds(&ca, PeerRole::Endpoint),
        "127.0.0.1",
        QuicOptions::default(),
    )
    .await;
    let (b, _) = quic_node(
        &creds(&ca, PeerRole::Server),
        "127.0.0.2",
        QuicOptions::default(),
    )
    .await;
    exchange_suite(a, b).await;
}

async fn actors_under(node: &Node) -> usize {
    match node
        .supervisor()
        .await
        .expect("supervisor")
        .call(SupervisorMsg::Children, Some(DEADLINE))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(children)) => children.len(),
        other => panic!("the supervisor did not list its children: {other:?}"),
    }
}

fn endpoint(id: &str) -> PeerIdentity {
    PeerIdentity {
        id: NodeId(id.into()),
        role: PeerRole::Endpoint,
    }
}

/// A connection that ends its link (dialed once, or accepted) is served by a task: neither
/// end starts an actor for it, both list it while it lives, a subscriber sees it come and go,
/// and closing it takes it off both lists.
#[tokio::test(start_paused = true)]
async fn a_single_connection_link_runs_without_an_actor_and_is_forgotten_when_closed() {
    let net = MemNetwork::new(5, Duration::from_secs(1));
    let (a_id, b_id) = (endpoint("a"), endpoint("b"));
    let a = mem_node(&net, "127.0.0.1:1", a_id.clone()).await;
    let b = mem_node(&net, "127.0.0.2:1", b_id.clone()).await;
    let _probe = start_probe(&b).await;
    let mut b_events = b.link_events();

    let link = a
        .connect_once(b.local_addr(), DEADLINE)
        .await
        .expect("dial");
    let r: ProbeReply = link
        .call(PROBE, &Probe::Echo("once".into()), DEADLINE)
        .await
        .expect("answered");
    assert_eq!(r, ProbeReply::Echo("once".into()));
    assert_eq!(
        a.connected_peers()
            .iter()
            .map(|p| &p.peer)
            .collect::<Vec<_>>(),
        [&b_id]
    );
    assert_eq!(
        b.connected_peers()
            .iter()
            .map(|p| &p.peer)
            .collect::<Vec<_>>(),
        [&a_id]
    );
    assert_eq!(actors_under(&a).await, 0, "the dialing end runs no actor");
    assert_eq!(actors_under(&b).await, 0, "the accepting end runs no actor");

    link.close();
    eventually("both ends forget the link", DEADLINE, || {
        let gone = a.connected_peers().is_empty() && b.connected_peers().is_empty();
        async move { gone.then_some(()) }
    })
    .await;
    let up = b_events.recv().await.expect("up event");
    assert!(
        matches!(&up, LinkEvent::Up { peer, .. } if *peer == a_id),
        "{up:?}"
    );
    let down = b_events.recv().await.expect("down event");
    assert!(
        matches!(&down, LinkEvent::Down { peer: Some(peer), .. } if *peer == a_id),
        "{down:?}"
    );
}

/// A redialing link runs under the node's supervisor, started for it; once the last such
/// link is closed the supervisor stops (an endpoint that led for a while does not keep one),
/// and the next redialing link starts another.
#[tokio::test(start_paused = true)]
async fn the_node_supervisor_lives_only_while_it_has_links_to_keep() {
    let net = MemNetwork::new(5, Duration::from_secs(1));
    let a = mem_node(&net, "127.0.0.1:1", endpoint("a")).await;
    let b = mem_node(&net, "127.0.0.2:1", endpoint("b")).await;
    let _probe = start_probe(&b).await;

    for round in 0..2 {
        let one = a.connect(b.local_addr()).await.expect("link");
        let two = a.connect(b.local_addr()).await.expect("link");
        one.wait_connected(DEADLINE).await.expect("connected");
        two.wait_connected(DEADLINE).await.expect("connected");
        let sup = a.supervisor().await.expect("supervisor");
        assert_eq!(
            actors_under(&a).await,
            2,
            "round {round}: one actor per link"
        );
        one.close();
        eventually("the first link's actor ends", DEADLINE, || {
            let sup = sup.clone();
            async move {
                match sup.call(SupervisorMsg::Children, Some(DEADLINE)).await {
                    Ok(ractor::rpc::CallResult::Success(c)) if c.len() == 1 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
        assert_eq!(
            sup.get_status(),
            ractor::ActorStatus::Running,
            "round {round}: a link is left to keep"
        );
        two.close();
        tokio::time::timeout(DEADLINE, sup.get_cell().wait(None))
            .await
            .expect("the supervisor stops with its last link")
            .expect("stopped");
    }
}

/// A peer that connected again (a restarted machine, at its new address) is the one calls
/// go to, while its silent old connection is still listed: the old one would hold every
/// call until it idled out.
#[tokio::test(start_paused = true)]
async fn calls_to_a_peer_go_over_its_newest_connection_not_one_it_silently_lost() {
    let net = MemNetwork::new(5, Duration::from_secs(30));
    let b_id = endpoint("b");
    let a = mem_node(&net, "127.0.0.1:1", endpoint("a")).await;
    let old_b = mem_node(&net, "127.0.0.2:1", b_id.clone()).await;
    let new_b = mem_node(&net, "127.0.0.3:1", b_id.clone()).await;
    let _old_probe = start_probe(&old_b).await;
    let _new_probe = start_probe(&new_b).await;

    let old_link = old_b
        .connect_once(a.local_addr(), DEADLINE)
        .await
        .expect("dial from the old address");
    lists_connections(&a, 1).await;
    // The old machine goes away without a word: its connection stays listed at `a`.
    net.crash("127.0.0.2".parse().expect("ip"));
    let new_link = new_b
        .connect_once(a.local_addr(), DEADLINE)
        .await
        .expect("dial from the new address");
    lists_connections(&a, 2).await;

    let to_b = a.peer(&b_id.id).expect("a link to b");
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        to_b.call::<_, ProbeReply>(PROBE, &Probe::WhoAmI, Duration::from_secs(2)),
    )
    .await
    .expect("answered within 2 s")
    .expect("answered");
    assert_eq!(r, ProbeReply::Caller(a.identity().clone()));
    assert_eq!(to_b.addr(), new_b.local_addr(), "over the new connection");
    drop((old_link, new_link));
}

/// Waits until `node` lists `n` connections.
async fn lists_connections(node: &Node, n: usize) {
    eventually("the node lists the connections", DEADLINE, || {
        let listed = node.connected_peers().len() == n;
        async move { listed.then_some(()) }
    })
    .await;
}
