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
        std::sync::Arc::new(Echo),
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

/// Answers every call with `()`.
struct Echo;

impl rollcall_runtime::node::Deliver for Echo {
    fn deliver(
        &self,
        mut incoming: rollcall_runtime::node::Incoming,
    ) -> Result<(), rollcall_runtime::node::DestinationGone> {
        let _ = incoming.answer(&());
        Ok(())
    }
}
