//! Questions on real QUIC over loopback: 3 rings × 20 endpoints with simulated hosts. Merged
//! counts equal the profiles' ground truth; killed endpoints are listed as not answered and
//! nobody is counted twice; machines offline at ask time answer after they return.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rollcall_actors::desk::{DeskReply, DeskRequest, QuestionDesk, SensorEvaluator};
use rollcall_actors::sensors::Sensors;
use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
use rollcall_cluster::member::EvaluatorHandle;
use rollcall_cluster::membership::MembershipConfig;
use rollcall_cluster::proto::{MEMBER, MemberRequest, NodeAnswer, Partial};
use rollcall_cluster::questions::Progress;
use rollcall_runtime::{NodeId, OperatorRole, PeerRole};
use rollcall_tests::eventually_or;
use rollcall_tests::rings::{RingCluster, formed, shape};

const QUESTION: &str = r#"Get Operating System and OS Version from all machines with Installed Applications contains "openssl""#;

/// What the profiles say the answer is: row → count, over the given endpoints.
fn ground_truth(profiles: &[(NodeId, HostProfile)], skip: &[NodeId]) -> BTreeMap<Vec<String>, u64> {
    let mut t = BTreeMap::new();
    for (id, p) in profiles {
        if skip.contains(id) {
            continue;
        }
        if p.packages.iter().any(|(n, _)| n.contains("openssl")) {
            *t.entry(vec![p.os.clone(), p.os_version.clone()])
                .or_default() += 1;
        }
    }
    t
}

fn rows(p: &Progress) -> BTreeMap<Vec<String>, u64> {
    p.rows.iter().map(|r| (r.cells.clone(), r.count)).collect()
}

async fn ask(desk: &QuestionDesk, text: &str) -> u64 {
    match desk
        .serve(
            DeskRequest::Ask {
                text: text.into(),
                ttl_ms: Some(60_000),
            },
            &rollcall_tests::as_operator(PeerRole::Operator(OperatorRole::Operator)),
        )
        .await
    {
        DeskReply::Asked { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

async fn progress(desk: &QuestionDesk, id: u64) -> Progress {
    match desk
        .serve(
            DeskRequest::Progress { id, rows_from: 0 },
            &rollcall_tests::as_operator(PeerRole::Operator(OperatorRole::Viewer)),
        )
        .await
    {
        DeskReply::Progress(p) => p,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_travel_the_rings_merge_once_per_machine_and_reach_returning_machines() {
    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let mut profiles = Vec::new();
    for subnet in 1..=3u8 {
        for host in 1..=20u8 {
            let ip = format!("127.0.{subnet}.{host}");
            let seed = u64::from(subnet) * 100 + u64::from(host);
            let profile = HostProfile::from_seed(seed, ip.parse().ok());
            // Each sensor read takes 300 ms (the question reads three), so a question stays in
            // flight long enough to kill machines under it.
            let sensors = Sensors::new(Arc::new(SimulatedHost::new(profile.clone())))
                .with_read_delay(Duration::from_millis(300));
            let eval = SensorEvaluator::new(sensors);
            let i = c.add_with(&ip, Some(EvaluatorHandle(Arc::new(eval)))).await;
            profiles.push((c.endpoints[i].node.identity().id.clone(), profile));
        }
    }
    let desk = QuestionDesk::new(c.rings.clone(), None);
    eventually_or(
        "three well-formed rings",
        Duration::from_secs(30),
        || async {
            let r = c.report().await;
            if formed(&r, 3, 20) && r.ring_connections == 6 {
                Ok(())
            } else {
                Err(shape(&r))
            }
        },
    )
    .await;

    // 1. Everyone answers; the merged counts are the profiles' ground truth.
    let q1 = ask(&desk, QUESTION).await;
    let p1 = eventually_or("60 of 60 answers", Duration::from_secs(20), || async {
        let p = progress(&desk, q1).await;
        if p.answered == 60 && p.fanned_out {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    assert_eq!((p1.answered, p1.expected), (60, 60));
    assert_eq!(rows(&p1), ground_truth(&profiles, &[]));
    assert_eq!(
        p1.matched,
        ground_truth(&profiles, &[]).values().sum::<u64>()
    );
    assert!(
        p1.not_answered.is_empty() && p1.problems.is_empty(),
        "{p1:?}"
    );
    assert_eq!(p1.columns, ["Operating System", "OS Version"]);

    // 1b. A multi-valued sensor: one row per application, each machine counted once in each
    //     application's row, merged along the rings like any answer.
    let qa = ask(&desk, "Get Installed Applications from all machines").await;
    let pa = eventually_or("60 of 60 answers", Duration::from_secs(20), || async {
        let p = progress(&desk, qa).await;
        if p.answered == 60 && p.fanned_out {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    let mut per_app: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (_, p) in &profiles {
        for (name, _) in &p.packages {
            *per_app.entry(vec![name.clone()]).or_default() += 1;
        }
    }
    assert_eq!(rows(&pa), per_app);
    assert_eq!(pa.matched, 60);

    // 2. Kill three machines while a question is in flight: every live answer arrives, nobody
    //    is counted twice, the dead are listed as not answered.
    let victims: Vec<usize> = vec![4, 20 + 10, 40 + 15];
    let victim_ids: Vec<NodeId> = victims
        .iter()
        .map(|&i| c.endpoints[i].node.identity().id.clone())
        .collect();
    let q2 = ask(&desk, QUESTION).await;
    // Once the question has reached them (their sensors take 600 ms), kill them.
    eventually_or(
        "the question reaching the victims",
        Duration::from_secs(5),
        || async {
            for &v in &victims {
                if c.status(v).await.questions_pending == 0 {
                    return Err(format!("endpoint {v} has not got it yet"));
                }
            }
            Ok(())
        },
    )
    .await;
    for &v in &victims {
        c.kill(v);
    }
    let p2 = eventually_or(
        "57 answers and the fan-out done",
        Duration::from_secs(30),
        || async {
            let p = progress(&desk, q2).await;
            if p.answered == 57 && p.fanned_out {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        },
    )
    .await;
    assert_eq!(rows(&p2), ground_truth(&profiles, &victim_ids));
    let mut missing: Vec<NodeId> = p2.not_answered.iter().map(|(id, _)| id.clone()).collect();
    missing.sort();
    let mut want = victim_ids.clone();
    want.sort();
    assert_eq!(missing, want);
    assert_eq!(p2.expected, 60);

    // 3. Asked while they are down; they come back before it expires and answer late.
    let q3 = ask(&desk, QUESTION).await;
    eventually_or(
        "the fan-out of the third question",
        Duration::from_secs(30),
        || async {
            let p = progress(&desk, q3).await;
            if p.fanned_out {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        },
    )
    .await;
    assert_eq!(progress(&desk, q3).await.answered, 57);
    for &v in &victims {
        c.restart(v).await;
    }
    let p3 = eventually_or(
        "the returning machines' late answers",
        Duration::from_secs(20),
        || async {
            let p = progress(&desk, q3).await;
            if p.answered == 60 {
                Ok(p)
            } else {
                Err(format!("{p:?}"))
            }
        },
    )
    .await;
    assert_eq!(rows(&p3), ground_truth(&profiles, &[]));
    assert!(p3.not_answered.is_empty(), "{p3:?}");
}

/// Every machine answers `x`; counts how often it was asked to read its sensors.
struct Counting(Arc<std::sync::atomic::AtomicUsize>);

impl rollcall_cluster::member::Evaluator for Counting {
    fn evaluate(&self, _body: &[u8]) -> futures::future::BoxFuture<'static, NodeAnswer> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {
            NodeAnswer {
                rows: Some(vec![vec!["x".into()]]),
                problems: Vec::new(),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_asked_again_after_answering_answers_from_its_kept_answer_without_reading_its_sensors_again()
 {
    let mut c = RingCluster::start(MembershipConfig::default()).await;
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let i = c
        .add_with(
            "127.0.9.1",
            Some(EvaluatorHandle(Arc::new(Counting(reads.clone())))),
        )
        .await;
    c.registered(i).await;
    let me = c.endpoints[i].node.identity().id.clone();
    let link = c
        .server
        .connect_once(c.endpoints[i].node.local_addr(), Duration::from_secs(10))
        .await
        .expect("a link to the member");
    let x = NodeAnswer {
        rows: Some(vec![vec!["x".into()]]),
        problems: Vec::new(),
    };
    for id in [7, 8] {
        let env =
            rollcall_tests::signed_question(&c.signer, id, Vec::new(), Duration::from_secs(60));
        // The first round reads the sensors; later rounds (a predecessor that rerouted asks
        // again) answer from what the member kept.
        for round in 1..=3 {
            let p: Partial = link
                .call(
                    MEMBER,
                    &MemberRequest::Ask(env.clone()),
                    Duration::from_secs(10),
                )
                .await
                .expect("an answer");
            let entries: Vec<(String, NodeAnswer)> = p
                .entries()
                .map(|(who, a)| (who.to_string(), decode_answer(a)))
                .collect();
            assert_eq!(
                entries,
                [(me.0.to_string(), x.clone())],
                "question {id}, round {round}"
            );
        }
    }
    assert_eq!(
        reads.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "sensors read once per question"
    );
}

fn decode_answer(bytes: &[u8]) -> NodeAnswer {
    rollcall_runtime::wire::decode_body(bytes).expect("an encoded answer")
}
