//! Attacks on actions over real QUIC: an attacker holding an endpoint's key sends every
//! member of a ring a forged action, a real one with a parameter changed, and a real one
//! replayed after its expiry. Every endpoint refuses each, counts it, and runs nothing; a
//! real action the server sends afterwards runs once on each.

use std::sync::Arc;
use std::time::Duration;

use rollcall_actors::action::journal::MemJournal;
use rollcall_actors::action::runner::ActionRunner;
use rollcall_actors::action::sim::SimExecutor;
use rollcall_actors::action::{ActionSpec, Executor, Package, SignedAction};
use rollcall_actors::desk::SensorEvaluator;
use rollcall_actors::sensors::Sensors;
use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
use rollcall_cluster::member::EvaluatorHandle;
use rollcall_cluster::membership::MembershipConfig;
use rollcall_cluster::proto::{MEMBER, MemberRequest, Partial, QuestionEnvelope};
use rollcall_runtime::node::CallError;
use rollcall_runtime::signing::{Purpose, ServerSigner, Stamp, unix_ms};
use rollcall_runtime::transport::quic::QuicOptions;
use rollcall_runtime::{PeerRole, WireStats};
use rollcall_tests::rings::RingCluster;
use rollcall_tests::{creds, quic_node};

struct Acting {
    exec: Arc<SimExecutor>,
    stats: Arc<WireStats>,
}

fn spec(id: u64) -> ActionSpec {
    ActionSpec::new(
        id,
        Package::builtin("quarantine").expect("built-in"),
        "olga",
    )
}

/// `action` in a question envelope, both signed by `signer` with `stamp`.
fn envelope(
    signer: &ServerSigner,
    qid: u64,
    action: &SignedAction,
    stamp: Stamp,
) -> QuestionEnvelope {
    let body = action.to_question_body().expect("body");
    QuestionEnvelope {
        id: qid,
        signature: signer.sign(Purpose::Question, qid, stamp, &body),
        body,
        ttl_ms: 60_000,
        stamp,
    }
}

#[tokio::test]
async fn forged_altered_and_replayed_actions_are_refused_by_every_endpoint() {
    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let mut acting = Vec::new();
    for i in 1..=3u8 {
        let host = Arc::new(SimulatedHost::new(HostProfile::from_seed(
            u64::from(i),
            None,
        )));
        let exec = Arc::new(SimExecutor::new(host.clone()));
        let stats = Arc::new(WireStats::default());
        let runner = ActionRunner::new(
            format!("e{i}"),
            c.trust.clone(),
            Arc::new(MemJournal::default()),
            exec.clone(),
            stats.clone(),
        );
        let eval = SensorEvaluator::with_actions(Sensors::new(host), runner);
        c.add_with(
            &format!("127.0.9.{i}"),
            Some(EvaluatorHandle(Arc::new(eval))),
        )
        .await;
        acting.push(Acting { exec, stats });
    }
    rollcall_tests::eventually("a ring of three", Duration::from_secs(20), || {
        let r = c.rings.clone();
        async move {
            let rep = r.report(None).await;
            (rep.rings.len() == 1 && rep.rings[0].members.len() == 3).then_some(())
        }
    })
    .await;
    let (attacker, _) = quic_node(
        &creds(&c.ca, PeerRole::Endpoint),
        "127.0.9.66",
        QuicOptions::default(),
    )
    .await;

    let stamp = Stamp::now_for(Duration::from_secs(60));
    let mallory = ServerSigner::generate().expect("key");
    // Forged: the action and its envelope signed by a key that is not the server's.
    let forged = envelope(
        &mallory,
        900,
        &SignedAction::sign(&spec(900), stamp, &mallory).expect("sign"),
        stamp,
    );
    // Altered: a real action (the server signed it) with its package changed in flight.
    let real = SignedAction::sign(&spec(901), stamp, &c.signer).expect("sign");
    let mut changed = spec(901);
    changed.package = Package::builtin("release").expect("built-in");
    let altered_action = SignedAction {
        body: rollcall_runtime::wire::encode_body(&changed).expect("encode"),
        ..real.clone()
    };
    let mut altered = envelope(&c.signer, 901, &real, stamp);
    altered.body = altered_action.to_question_body().expect("body");
    // Replayed: a real action and envelope that expired a minute ago (the envelope is
    // within the members' clock-skew allowance; the action allows none).
    let old = Stamp {
        issued_unix_ms: unix_ms() - 180_000,
        expires_unix_ms: unix_ms() - 60_000,
    };
    let replayed = envelope(
        &c.signer,
        902,
        &SignedAction::sign(&spec(902), old, &c.signer).expect("sign"),
        old,
    );

    for ep in &c.endpoints {
        let link = attacker
            .connect_once(ep.node.local_addr(), Duration::from_secs(10))
            .await
            .expect("reach the endpoint");
        for env in [&forged, &altered] {
            let r: Result<Partial, CallError> = link
                .call(
                    MEMBER,
                    &MemberRequest::Ask(env.clone()),
                    Duration::from_secs(5),
                )
                .await;
            assert!(r.is_err(), "refused before it is read: {r:?}");
        }
        let _: Result<Partial, CallError> = link
            .call(
                MEMBER,
                &MemberRequest::Ask(replayed.clone()),
                Duration::from_secs(10),
            )
            .await;
        link.close();
    }
    rollcall_tests::eventually(
        "every endpoint refused the replay",
        Duration::from_secs(20),
        || {
            let n: u64 = acting
                .iter()
                .map(|a| a.stats.snapshot().actions_refused)
                .sum();
            async move { (n == 3).then_some(()) }
        },
    )
    .await;
    for (i, a) in acting.iter().enumerate() {
        assert_eq!(a.exec.runs(), 0, "endpoint {i} ran something");
        assert!(!a.exec.quarantined());
        assert_eq!(a.stats.snapshot().actions_refused, 1, "endpoint {i}");
        assert_eq!(
            c.endpoints[i]
                .node
                .wire_stats()
                .snapshot()
                .rejected_unsigned,
            2,
            "endpoint {i}: the forged and the altered envelope"
        );
    }
    attacker.shutdown();

    // The server's own action, sent the way every action goes, runs once on each.
    let action = SignedAction::sign(
        &spec(903),
        Stamp::now_for(Duration::from_secs(60)),
        &c.signer,
    )
    .expect("sign");
    let id = c
        .rings
        .ask(
            "action 903".into(),
            vec!["Action Status".into(), "Action Output".into()],
            action.to_question_body().expect("body"),
            Duration::from_secs(60),
        )
        .await;
    rollcall_tests::eventually(
        "three machines quarantined",
        Duration::from_secs(20),
        || {
            let n = c.rings.answered(id).unwrap_or(0);
            async move { (n == 3).then_some(()) }
        },
    )
    .await;
    let rows = rollcall_tests::first_cells(&c.rings.progress(id).expect("progress"));
    assert_eq!(rows, vec![("completed".to_string(), 3)]);
    for a in &acting {
        assert_eq!(a.exec.runs_of(903), 1);
        assert!(a.exec.quarantined());
    }
}
