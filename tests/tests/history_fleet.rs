//! History and cases on a simulated fleet (in-memory network, paused time): history
//! questions and indicator searches find exactly the machines whose seeded history holds
//! them, and a case's response action targets those machines.

use std::collections::BTreeSet;
use std::time::Duration;

use rollcall::fleet::Fleet;
use rollcall_actors::action::Executor;
use rollcall_actors::case::{Case, CaseState, OpenCase};
use rollcall_actors::history::sim::{self, MINER_POOL, exe_sha256, miner_sha256, runs};
use rollcall_actors::ioc;
use rollcall_tests::eventually_or;
use rollcall_tests::fleet::{action_done, formed};

/// Host names whose simulated history holds a run that `pick` takes.
fn truth(fleet: &Fleet, pick: impl Fn(&sim::SimRun) -> bool) -> BTreeSet<String> {
    fleet
        .endpoints
        .iter()
        .filter(|e| runs(&e.host.profile()).iter().any(&pick))
        .map(|e| e.host.profile().hostname.clone())
        .collect()
}

async fn answered(fleet: &Fleet, text: &str, n: usize) -> rollcall_cluster::questions::Progress {
    let q = fleet.ask(text, Duration::from_secs(60)).await.expect("ask");
    eventually_or("everyone answered", Duration::from_secs(30), || {
        let got = fleet.rings().answered(q).unwrap_or(0);
        async move {
            if got == n {
                Ok(())
            } else {
                Err(format!("{got} of {n}"))
            }
        }
    })
    .await;
    fleet.progress(q).expect("progress")
}

async fn searched(fleet: &Fleet, req: OpenCase) -> Case {
    let opened = fleet
        .desk()
        .open_case(req, "olga")
        .await
        .expect("case opened");
    eventually_or("the case searched", Duration::from_secs(90), || {
        let c = fleet.desk().cases().get(opened.id).expect("case");
        async move {
            if c.state == CaseState::Done {
                Ok(())
            } else {
                Err(format!("{:?}", c.state))
            }
        }
    })
    .await;
    fleet.desk().cases().get(opened.id).expect("case")
}

#[tokio::test(start_paused = true)]
async fn history_questions_and_cases_find_exactly_the_machines_whose_history_holds_them() {
    let n = 300;
    let mut fleet = formed(n, 50, 21).await;
    let curl = exe_sha256("/usr/bin/curl", "Ubuntu", "24.04");

    // A history question: the machines that ran Ubuntu 24.04's curl in the last 30 days.
    let p = answered(
        &fleet,
        &format!(
            "Get Computer Name from all machines with Process Hash Last Seen[{curl}] < 30 days"
        ),
        n,
    )
    .await;
    // (Machines read the wall clock: one whose last run lies within a minute of the window's
    // edge may fall either side.)
    let now = rollcall_runtime::signing::unix_ms();
    let within = |margin: i64| {
        truth(&fleet, |r| {
            *r.sha256 == *curl && (now.saturating_sub(r.last_ms) as i64) < 30 * 86_400_000 + margin
        })
    };
    let (surely, maybe) = (within(-60_000), within(60_000));
    let got: BTreeSet<String> = p.rows.iter().map(|r| r.cells[0].clone()).collect();
    assert!(!surely.is_empty(), "no machine ran curl in 30 days");
    assert!(surely.is_subset(&got) && got.is_subset(&maybe), "{got:?}");
    assert_eq!(p.matched as usize, got.len());

    // The same hash and the miner's pool, as a STIX bundle and as a CSV: the same case.
    let bundle = format!(
        r#"{{"type":"bundle","id":"bundle--1","objects":[
        {{"type":"indicator","id":"indicator--a","pattern":"[file:hashes.'SHA-256' = '{curl}']","pattern_type":"stix"}},
        {{"type":"indicator","id":"indicator--b","pattern":"[ipv4-addr:value = '{}'] OR [file:hashes.'SHA-256' = '{}']","pattern_type":"stix"}},
        {{"type":"indicator","id":"indicator--c","pattern":"[url:value = 'http://pool.example/']","pattern_type":"stix"}}]}}"#,
        MINER_POOL.0,
        miner_sha256()
    );
    let csv = format!(
        "type,value\nsha256,{curl}\nip,{}\nsha256,{}\nurl,http://pool.example/\n",
        MINER_POOL.0,
        miner_sha256()
    );
    let ran_curl = truth(&fleet, |r| *r.sha256 == *curl);
    let ran_miner = truth(&fleet, |r| &*r.sha256 == miner_sha256());
    assert!(!ran_miner.is_empty() && ran_miner.len() < ran_curl.len());
    let mut cases = Vec::new();
    for (source, text) in [("feed.json", bundle), ("feed.csv", csv)] {
        let imported = ioc::import(text.as_bytes()).expect("imported");
        assert_eq!(imported.indicators.len(), 3, "{source}");
        assert_eq!(imported.skipped.len(), 1, "{source}");
        let case = searched(
            &fleet,
            OpenCase {
                source: source.into(),
                indicators: imported.indicators,
                skipped: imported.skipped,
                respond: None,
            },
        )
        .await;
        assert_eq!((case.answered, case.expected), (n, n), "{source}");
        let found = |label: &str| -> BTreeSet<String> {
            case.findings
                .iter()
                .filter(|f| f.indicator == label)
                .map(|f| f.hostname.clone())
                .collect()
        };
        assert_eq!(found(&format!("sha256:{curl}")), ran_curl, "{source}");
        assert_eq!(
            found(&format!("sha256:{}", miner_sha256())),
            ran_miner,
            "{source}"
        );
        assert_eq!(
            found(&format!("ip:{}", MINER_POOL.0)),
            ran_miner,
            "{source}"
        );
        // Each finding says when.
        for f in &case.findings {
            assert!(f.sighting.starts_with("first "), "{f:?}");
        }
        cases.push(case.findings);
    }
    assert_eq!(cases[0], cases[1], "the bundle and the CSV found the same");

    // With a response: quarantine the machines that ran curl, once an admin approves.
    let case = searched(
        &fleet,
        OpenCase {
            source: "curl".into(),
            indicators: vec![ioc::Indicator::Sha256(curl.clone())],
            skipped: Vec::new(),
            respond: Some("quarantine".into()),
        },
    )
    .await;
    let id = case.response_action.expect("a response action");
    let r = fleet.action(id).expect("report");
    assert!(r.awaiting_approval, "{r:?}");
    fleet.approve(id).await.expect("approve");
    action_done(&fleet, id, Duration::from_secs(60)).await;
    let r = fleet.action(id).expect("report");
    assert_eq!(r.targeted as usize, ran_curl.len(), "{r:?}");
    assert_eq!(r.count("completed") as usize, ran_curl.len(), "{r:?}");
    let quarantined: BTreeSet<String> = fleet
        .endpoints
        .iter()
        .filter(|e| e.executor.quarantined())
        .map(|e| e.host.profile().hostname.clone())
        .collect();
    assert_eq!(quarantined, ran_curl);
    fleet.shutdown().await;
}
