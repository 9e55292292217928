//! Bad input on a real QUIC connection with a valid certificate: each kind of bad frame is
//! refused on its own stream with its own counter and a log line; the connection, the node
//! and its other peers keep working.

use std::sync::Arc;

use rollcall_runtime::identity::{NODE_SERVER_NAME, PeerRole};
use rollcall_runtime::transport::RefuseCode;
use rollcall_runtime::transport::quic::QuicOptions;
use rollcall_runtime::wire::{self, Envelope, EnvelopeKind, WIRE_VERSION};
use rollcall_runtime::{WireStatsSnapshot, tls};
use rollcall_tests::*;

fn envelope(from: &str, to: &str, kind: EnvelopeKind, body: Vec<u8>) -> Vec<u8> {
    rmp_serde_encode(&Envelope {
        version: WIRE_VERSION,
        from: from.into(),
        to: to.into(),
        kind,
        body,
    })
}

fn rmp_serde_encode(env: &Envelope) -> Vec<u8> {
    let f = wire::encode_frame(env, usize::MAX).expect("encode");
    f[4..].to_vec()
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

async fn send_uni(conn: &quinn::Connection, bytes: &[u8]) {
    let mut s = conn.open_uni().await.expect("open uni");
    s.write_all(bytes).await.expect("write");
    s.finish().expect("finish");
}

/// Sends a request and returns the refusal code, or the reply payload.
async fn send_bi(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, RefuseCode> {
    let (mut s, mut r) = conn.open_bi().await.expect("open bi");
    // The server may stop the stream before we finish writing; that is a refusal too.
    let _ = s.write_all(bytes).await;
    let _ = s.finish();
    match r.read_to_end(1 << 20).await {
        Ok(v) => Ok(v),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            Err(RefuseCode::from_u64(code.into_inner()))
        }
        Err(e) => panic!("unexpected read error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_frame_is_refused_counted_and_harmless() {
    let ca = ca();
    let (server, _) = quic_node(
        &creds(&ca, PeerRole::Server),
        "127.0.0.1",
        QuicOptions::default(),
    )
    .await;
    let _recorded = start_probe(&server).await;
    let stats = server.wire_stats().clone();

    // An honest peer, connected before the attack.
    let (honest, _) = quic_node(
        &creds(&ca, PeerRole::Endpoint),
        "127.0.0.2",
        QuicOptions::default(),
    )
    .await;
    let honest_link = honest.connect(server.local_addr()).await.expect("connect");
    honest_link
        .wait_connected(DEADLINE)
        .await
        .expect("connected");

    // The attacker holds a valid certificate and speaks raw QUIC.
    let bad = creds(&ca, PeerRole::Endpoint);
    let me = bad.identity.id.0.to_string();
    let ep = quinn::Endpoint::client("127.0.0.3:0".parse().expect("addr")).expect("client");
    let cfg = tls::client_config(&bad, fast_timeouts()).expect("cfg");
    let conn = ep
        .connect_with(cfg, server.local_addr(), NODE_SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");

    let expect = |want: WireStatsSnapshot| {
        let stats = stats.clone();
        async move {
            let got = stats
                .wait_for(DEADLINE, |s| s.rejected_total() >= want.rejected_total())
                .await;
            assert_eq!(
                (
                    got.rejected_garbage,
                    got.rejected_oversized,
                    got.rejected_version,
                    got.rejected_spoofed,
                    got.rejected_unknown_destination,
                    got.rejected_truncated,
                    got.rejected_protocol
                ),
                (
                    want.rejected_garbage,
                    want.rejected_oversized,
                    want.rejected_version,
                    want.rejected_spoofed,
                    want.rejected_unknown_destination,
                    want.rejected_truncated,
                    want.rejected_protocol
                ),
                "{got:?}"
            );
        }
    };
    let mut want = WireStatsSnapshot::default();

    // 1. Garbage bytes in a well-formed frame.
    send_uni(&conn, &framed(b"\xc1\xc1\xc1 definitely not msgpack")).await;
    want.rejected_garbage += 1;
    expect(want).await;

    // 2. Random bytes with no framing at all: the "length" is enormous.
    send_uni(&conn, b"GET / HTTP/1.1\r\n\r\n").await;
    want.rejected_oversized += 1;
    expect(want).await;

    // 3. A frame announcing more than the limit.
    assert_eq!(
        send_bi(&conn, &[0x00, 0x10, 0x00, 0x01, 1, 2, 3]).await,
        Err(RefuseCode::Rejected)
    );
    want.rejected_oversized += 1;
    expect(want).await;

    // 4. An envelope of a wire version we do not speak.
    let future = rmp_serde_encode(&Envelope {
        version: 99,
        from: me.clone(),
        to: PROBE.into(),
        kind: EnvelopeKind::Cast,
        body: vec![],
    });
    send_uni(&conn, &framed(&future)).await;
    want.rejected_version += 1;
    expect(want).await;

    // 5. A sender that is not who the certificate says.
    let spoof = envelope("someone-else", PROBE, EnvelopeKind::Call(1), vec![]);
    assert_eq!(
        send_bi(&conn, &framed(&spoof)).await,
        Err(RefuseCode::Rejected)
    );
    want.rejected_spoofed += 1;
    expect(want).await;

    // 6. A destination that does not exist.
    let nowhere = envelope(&me, "no.such.actor", EnvelopeKind::Call(2), vec![]);
    assert_eq!(
        send_bi(&conn, &framed(&nowhere)).await,
        Err(RefuseCode::UnknownDestination)
    );
    want.rejected_unknown_destination += 1;
    expect(want).await;

    // 7. A frame cut short.
    let mut cut = framed(&envelope(&me, PROBE, EnvelopeKind::Cast, vec![]));
    cut.truncate(cut.len() - 3);
    send_uni(&conn, &cut).await;
    want.rejected_truncated += 1;
    expect(want).await;

    // 8. A reply nobody asked for.
    let reply = envelope(&me, PROBE, EnvelopeKind::Reply(9), vec![]);
    send_uni(&conn, &framed(&reply)).await;
    want.rejected_protocol += 1;
    expect(want).await;

    // 9. A valid envelope whose body is not the actor's message: the actor counts and refuses.
    let junk_body = envelope(&me, PROBE, EnvelopeKind::Call(3), b"\xc1".to_vec());
    assert_eq!(
        send_bi(&conn, &framed(&junk_body)).await,
        Err(RefuseCode::Rejected)
    );
    want.rejected_garbage += 1;
    expect(want).await;

    // The attacker's own connection still works for a good request...
    let good = envelope(
        &me,
        PROBE,
        EnvelopeKind::Call(4),
        wire::encode_body(&Probe::Echo("ok".into())).expect("body"),
    );
    let reply = send_bi(&conn, &framed(&good))
        .await
        .expect("good request answered");
    let env = wire::decode_envelope(&reply[4..]).expect("reply envelope");
    assert_eq!(env.kind, EnvelopeKind::Reply(4));
    assert_eq!(
        wire::decode_body::<ProbeReply>(&env.body).expect("body"),
        ProbeReply::Echo("ok".into())
    );

    // ...and so does everyone else's.
    let r: ProbeReply = honest_link
        .call(PROBE, &Probe::Echo("still here".into()), DEADLINE)
        .await
        .expect("honest call");
    assert_eq!(r, ProbeReply::Echo("still here".into()));
    assert_eq!(server.stats().connections_accepted, 2);
    assert_eq!(server.connected_peers().len(), 2);
    let _ = Arc::clone(&stats);
}
