//! `rollcall chaos` against a real cluster: the server relays each fault, signed, to the
//! chaos agents of the endpoint processes it targets; endpoints started without
//! `--allow-chaos` refuse; viewers are refused; every request is audited.

mod common;
use common::cluster::*;
use common::*;
use std::time::Duration;

const ALLOW: &str = "[chaos]\nallow = true\n";

/// `rollcall chaos` as `who` (the server flags come before the fault).
fn chaos(c: &Cluster, who: &str, args: &[&str]) -> std::process::Output {
    let dir = c.p(who);
    let mut all = vec!["chaos", "--server", &c.addr, "--cert-dir", &dir];
    all.extend_from_slice(args);
    run(&all)
}

#[test]
fn faults_reach_real_endpoint_processes_through_the_server() {
    let c = cluster();
    let _server = c.server();
    let _e1 = c.endpoint_with(1, ALLOW);
    let _e2 = c.endpoint_with(2, ALLOW);
    let e3 = c.endpoint_with(3, ALLOW);
    let _e4 = c.endpoint(4);
    c.wait_members(4);

    // A viewer may not: refused before anything is relayed, and audited.
    let v = chaos(&c, "vera", &["kill", "--all"]);
    assert!(!v.status.success());
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(err.contains("needs the admin role"), "{err}");

    // An endpoint started without --allow-chaos refuses; the command fails and says why.
    let refused = chaos(&c, "alice", &["pause", "--node", "127.0.4.4"]);
    assert_eq!(code(&refused), 1, "{}", stdout(&refused));
    let said = stdout(&refused);
    assert!(said.starts_with("applied on 0 of 1"), "{said}");
    assert!(said.contains("NOT APPLIED"), "{said}");
    assert!(said.contains("start it with --allow-chaos"), "{said}");

    // A grey machine: paused, it keeps its links and answers nothing; the others answer.
    let paused = chaos(&c, "alice", &["pause", "--node", "127.0.4.2"]);
    assert!(paused.status.success(), "{}", stdout(&paused));
    assert!(stdout(&paused).starts_with("applied on 1 of 1"));
    let asked = c.json(
        "olga",
        &[
            "ask",
            "Get Computer Name from all machines",
            "--wait-secs",
            "4",
            "--json",
        ],
    );
    assert_eq!(asked["answered"], 3, "{asked:#}");
    assert_eq!(asked["expected"], 4, "{asked:#}");
    let rings = c.json("vera", &["ring", "show", "--json"]);
    let e2_id = rings["rings"][0]["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| {
            m["addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.4.2:"))
        })
        .map(|m| m["id"].clone())
        .expect("endpoint 2 in the ring");
    assert_eq!(asked["not_answered"][0][0], e2_id, "{asked:#}\n{rings:#}");
    // More questions while it is paused than the server takes connections from one peer
    // (8): once resumed, it answers every one of them.
    let more: Vec<String> = (0..11)
        .map(|_| {
            let v = c.json(
                "olga",
                &[
                    "ask",
                    "Get Computer Name from all machines",
                    "--wait-secs",
                    "0",
                    "--json",
                ],
            );
            v["id"].as_u64().expect("id").to_string()
        })
        .collect();
    // Resumed (the agent hears it although the node is paused), it answers the open
    // questions late.
    let resumed = chaos(&c, "alice", &["resume", "--node", "127.0.4.2"]);
    assert!(resumed.status.success(), "{}", stdout(&resumed));
    let id = asked["id"].as_u64().expect("id").to_string();
    run_until(
        &[
            "results",
            &id,
            "--json",
            "--server",
            &c.addr,
            "--cert-dir",
            &c.p("vera"),
        ],
        1_000,
        |out| {
            serde_json::from_str::<serde_json::Value>(out)
                .is_ok_and(|v| v["answered"] == 4 && v["rows"][0]["count"] == 4)
        },
    );

    for id in &more {
        run_until(
            &[
                "results",
                id,
                "--json",
                "--server",
                &c.addr,
                "--cert-dir",
                &c.p("vera"),
            ],
            1_000,
            |out| {
                serde_json::from_str::<serde_json::Value>(out)
                    .is_ok_and(|v| v["answered"] == 4 && v["rows"][0]["count"] == 4)
            },
        );
    }

    // A kill: the process exits at once, with no goodbye.
    let killed = chaos(&c, "alice", &["kill", "--node", "127.0.4.3"]);
    assert!(killed.status.success(), "{}", stdout(&killed));
    assert!(
        stdout(&killed).contains("exiting now"),
        "{}",
        stdout(&killed)
    );
    assert_eq!(e3.exit_code_within(Duration::from_secs(10)), Some(137));

    // Every request is in the audit log with what each machine said.
    let audit = c.as_("alice", &["audit", "--json", "--last", "100"]);
    assert!(audit.status.success());
    let text = stdout(&audit);
    for want in [
        "chaos kill --all",
        "needs the admin role",
        "chaos pause --node 127.0.4.4",
        "applied on 0 of 1; not on 1",
        "takes no chaos commands",
        "chaos pause --node 127.0.4.2",
        "chaos resume --node 127.0.4.2",
        "chaos kill --node 127.0.4.3",
        "applied on 1 of 1",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    assert!(text.contains("\"chain_intact\":true"), "{text}");
}

/// LAN timing, as the simulated fault scenarios and the process suite use.
const LAN: &str = "[ring]\nprobe_interval_ms = 400\nhop_timeout_ms = 200\n";

/// `rollcall chaos --scenario NAME --json` as alice (an admin): its exit code and the one
/// JSON object it printed.
fn scenario(c: &Cluster, name: &str) -> (i32, serde_json::Value) {
    let out = chaos(c, "alice", &["--scenario", name, "--seed", "3", "--json"]);
    let text = stdout(&out);
    let v = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{name}: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code(&out), v)
}

#[test]
fn scenarios_run_against_a_real_cluster_kill_real_processes_and_check_the_invariants() {
    let c = cluster();
    let mut cfg = std::fs::read_to_string(c.path("server.toml")).expect("server config");
    cfg.push_str(LAN);
    std::fs::write(c.path("server.toml"), cfg).expect("server config");
    let _server = c.server();
    let extra = format!("{ALLOW}{LAN}");
    let eps: Vec<Running> = (1..=5).map(|i| c.endpoint_with(i, &extra)).collect();
    c.wait_members(5);

    // A grey machine in the ring, mid-question: every invariant the server checks holds.
    let (code_grey, grey) = scenario(&c, "grey-neighbour");
    let checks = grey["checks"].as_array().expect("checks");
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|k| k["pass"] != true).collect();
    assert!(failed.is_empty(), "{grey:#}");
    assert_eq!(code_grey, 0, "{grey:#}");
    assert_eq!(checks.len(), 7, "{grey:#}");
    // The server's own links: the ring's two leaders', and nothing to a non-leader that
    // lasted 2 s (the chaos commands' links close after each command).
    let links = checks
        .iter()
        .find(|k| k["invariant"] == "server connections only to leaders and registrations")
        .and_then(|k| k["measured"].as_str())
        .unwrap_or_else(|| panic!("no connection check in {grey:#}"));
    assert!(links.contains("(2 leader links)"), "{links}");
    assert_eq!(grey["scenario"], "GreyNeighbour");
    assert_eq!(grey["endpoints"], 5);
    // The in-flight question, three through the fault and one after healing.
    assert_eq!(grey["questions"], 5, "{grey:#}");

    // A member killed mid-question: the real process exits, and the rest hold.
    let (code_kill, kill) = scenario(&c, "neighbour-killed");
    assert_eq!(code_kill, 0, "{kill:#}");
    let fault = kill["fault"].as_str().expect("fault");
    let victim = (1..=5u8)
        .position(|i| fault.contains(&format!("(127.0.4.{i}:")))
        .unwrap_or_else(|| panic!("no endpoint named in {fault:?}"));
    assert_eq!(
        eps[victim].exit_code_within(Duration::from_secs(10)),
        Some(137),
        "{fault}"
    );
    assert!(
        kill["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .all(|k| k["pass"] == true),
        "{kill:#}"
    );
    let lost = &kill["checks"][0]["measured"];
    assert!(
        lost.as_str().is_some_and(
            |m| m.starts_with("4 of 4 live endpoints answered all 6 questions (1 killed)")
        ),
        "{lost}"
    );

    // What only a simulated fleet can do is skipped with its reason, not failed.
    let (code_skip, skipped) = scenario(&c, "server-restart");
    assert_eq!(code_skip, 0, "{skipped:#}");
    assert!(
        skipped["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("does not run against a real cluster")),
        "{skipped:#}"
    );

    // A viewer may not run one.
    let v = chaos(&c, "vera", &["--scenario", "grey-neighbour"]);
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stderr).contains("needs the admin role"));

    // Each run's end is in the audit log with its outcome.
    let audit = stdout(&c.as_("alice", &["audit", "--json", "--last", "100"]));
    for want in [
        "chaos --scenario grey-neighbour (run 1) ended",
        "chaos --scenario neighbour-killed (run 2) ended",
        "7 of 7 invariants held",
        "skipped: scenario server-restart does not run against a real cluster",
    ] {
        assert!(audit.contains(want), "{want} not in\n{audit}");
    }
}
