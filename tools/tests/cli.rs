//! The `rollcall` binary end to end: the demo, and a server, an endpoint and an operator as
//! separate processes on loopback.

mod common;

use std::path::Path;

use common::*;
#[test]
fn demo_enrols_endpoints_and_shows_their_rings() {
    let out = run(&["demo", "--endpoints", "5", "--subnets", "2", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let both: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let report = &both["rings"];
    let rings = report["rings"].as_array().expect("rings");
    // The question reached all five simulated machines and their rows add up.
    let answer = &both["answer"];
    assert_eq!(answer["answered"], 5, "{answer:#}");
    assert_eq!(answer["expected"], 5);
    assert_eq!(
        answer["columns"],
        serde_json::json!(["Operating System", "OS Version"])
    );
    let counted: u64 = answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(counted, 5);
    let ids: Vec<&str> = rings
        .iter()
        .map(|r| r["ring"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["127.0.1.0/24", "127.0.2.0/24"]);
    let hosts = |r: &serde_json::Value| -> Vec<String> {
        r["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                m["addr"]
                    .as_str()
                    .expect("addr")
                    .split(':')
                    .next()
                    .expect("ip")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(hosts(&rings[0]), ["127.0.1.1", "127.0.1.2", "127.0.1.3"]);
    assert_eq!(hosts(&rings[1]), ["127.0.2.1", "127.0.2.2"]);
    for r in rings {
        let members = r["members"].as_array().expect("members");
        assert!(members.iter().all(|m| m["health"] == "Ok"), "{r:#}");
        assert_eq!(members[0]["leads"]["forward"], true);
        assert_eq!(members[members.len() - 1]["leads"]["backward"], true);
        assert_eq!(r["leader_links"], 2);
    }
    assert_eq!(report["ring_connections"], 4);
}

#[test]
fn server_endpoint_and_operator_as_separate_processes() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
    let init = run(&["ca", "init", "--dir", &p("ca")]);
    assert!(init.status.success());
    let token = token_from(&init);
    // The signing key is made with the CA, private to its owner, and printed (public half).
    let signing_key = stdout(&init)
        .lines()
        .find_map(|l| l.strip_prefix("signing key: "))
        .expect("signing key line")
        .to_string();
    assert_eq!(signing_key.len(), 64);
    for f in ["server-signing.key", "answer-mac.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Path::new(&p("ca")).join(f))
            .expect("made at init")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is private");
    }
    // Refuses to overwrite.
    let again = run(&["ca", "init", "--dir", &p("ca")]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let op = run(&[
        "ca",
        "issue-operator",
        "--dir",
        &p("ca"),
        "--name",
        "vera",
        "--role",
        "viewer",
        "--out",
        &p("vera"),
    ]);
    assert!(
        op.status.success(),
        "{}",
        String::from_utf8_lossy(&op.stderr)
    );

    let server = Running::start(&["server", "--ca-dir", &p("ca"), "--listen", "127.0.0.1:0"]);
    let line = server.line_starting("server ");
    let addr = line.rsplit(' ').next().expect("addr").to_string();

    // A wrong token is refused with a clear message.
    let bad_token = format!(
        "rc1.{}.{}",
        "0".repeat(32),
        token.rsplit('.').next().expect("fp")
    );
    let bad = run(&[
        "endpoint",
        "--server",
        &addr,
        "--join-token",
        &bad_token,
        "--state-dir",
        &p("bad"),
        "--listen",
        "127.0.2.9:0",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("the server refused enrolment: unknown join token"),
        "{err}"
    );
    assert!(!Path::new(&p("bad")).join("node.pem").exists());

    let endpoint = Running::start(&[
        "endpoint",
        "--server",
        &addr,
        "--join-token",
        &token,
        "--state-dir",
        &p("ep"),
        "--listen",
        "127.0.2.1:0",
        "--register-min-ms",
        "200",
        "--register-max-ms",
        "400",
    ]);
    let id_line = endpoint.line_starting("endpoint ");
    let id = id_line.split(' ').nth(1).expect("id").to_string();
    assert_eq!(
        endpoint.line_starting("registered in ring "),
        "registered in ring 127.0.2.0/24 with 1 members"
    );
    assert!(Path::new(&p("ep")).join("node.pem").exists());
    // The endpoint pinned the server and its signing key at enrolment.
    let pin = std::fs::read_to_string(Path::new(&p("ep")).join("server.trust")).expect("pinned");
    assert!(pin.contains(&signing_key), "{pin}");

    let status = run(&[
        "status",
        "--server",
        &addr,
        "--cert-dir",
        &p("vera"),
        "--json",
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let peers = v["peers"].as_array().expect("peers");
    assert!(
        peers
            .iter()
            .any(|p| p["peer"]["id"] == id.as_str() && p["peer"]["role"] == "Endpoint"),
        "{v:#}"
    );
    assert_eq!(v["asked_by"]["role"]["Operator"], "Viewer");
    assert_eq!(v["stats"]["enrolments"], 1);
    assert_eq!(v["stats"]["enrolments_refused"], 1);

    // `ring show`: a ring of one, which leads both of its ends over one server link.
    let mut shown = serde_json::Value::Null;
    for _ in 0..100 {
        let out = run(&[
            "ring",
            "show",
            "--server",
            &addr,
            "--cert-dir",
            &p("vera"),
            "--subnet",
            "127.0.2.1",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        shown = serde_json::from_slice(&out.stdout).expect("json");
        if shown["ring_connections"] == 1 {
            break;
        }
    }
    assert_eq!(shown["rings"][0]["ring"], "127.0.2.0/24", "{shown:#}");
    assert_eq!(shown["rings"][0]["members"][0]["id"], id.as_str());
    assert_eq!(
        shown["rings"][0]["members"][0]["leads"],
        serde_json::json!({"forward": true, "backward": true})
    );
    assert_eq!(shown["ring_connections"], 1);
    let table = stdout(&run(&[
        "ring",
        "show",
        "--server",
        &addr,
        "--cert-dir",
        &p("vera"),
    ]));
    assert!(
        table.contains("ring 127.0.2.0/24: 1 members, 1 leader links"),
        "{table}"
    );
    assert!(table.contains("forward+backward"), "{table}");

    // Questions: an operator asks; the endpoint answers with this machine's real sensors.
    let olga = run(&[
        "ca",
        "issue-operator",
        "--dir",
        &p("ca"),
        "--name",
        "olga",
        "--role",
        "operator",
        "--out",
        &p("olga"),
    ]);
    assert!(olga.status.success());
    // Issued beside a running server's state: pinned to that server.
    assert!(
        stdout(&olga).contains("pinned to server "),
        "{}",
        stdout(&olga)
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string();
    let asked = run(&[
        "ask",
        "Get Computer Name from all machines",
        "--server",
        &addr,
        "--cert-dir",
        &p("olga"),
        "--wait-secs",
        "20",
    ]);
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let table = stdout(&asked);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("Computer Name")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&hostname) && l.trim_end().ends_with(" 1")),
        "{table}"
    );
    assert!(table.contains("answered 1 of 1"), "{table}");
    let progress = String::from_utf8_lossy(&asked.stderr).into_owned();
    assert!(
        progress.contains("question 1: Get Computer Name from all machines"),
        "{progress}"
    );
    // The results again, as CSV, and in the list.
    let csv = stdout(&run(&[
        "results",
        "1",
        "--server",
        &addr,
        "--cert-dir",
        &p("vera"),
        "--csv",
    ]));
    assert_eq!(csv, format!("Computer Name,Count\n{hostname},1\n"));
    let list = stdout(&run(&[
        "questions",
        "--server",
        &addr,
        "--cert-dir",
        &p("vera"),
    ]));
    assert!(
        list.contains("1/1  Get Computer Name from all machines"),
        "{list}"
    );
    // A viewer may not ask; a broken question says where and what it meant.
    let denied = run(&[
        "ask",
        "Get Computer Name",
        "--server",
        &addr,
        "--cert-dir",
        &p("vera"),
    ]);
    assert_eq!(denied.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&denied.stderr)
            .contains("this needs the operator role; you are operator/viewer")
    );
    let broken = run(&[
        "ask",
        "Get Computr Name",
        "--server",
        &addr,
        "--cert-dir",
        &p("olga"),
    ]);
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains(
            "error: at column 5: unknown sensor \"Computr Name\" (did you mean \"Computer Name\"?)"
        ),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );

    // Restarted with the same state directory, the endpoint needs no token and keeps its id.
    drop(endpoint);
    let again = Running::start(&[
        "endpoint",
        "--server",
        &addr,
        "--state-dir",
        &p("ep"),
        "--listen",
        "127.0.2.1:0",
    ]);
    let line = again.line_starting("endpoint ");
    assert_eq!(line.split(' ').nth(1), Some(id.as_str()));
    again.line_starting("registered in ring 127.0.2.0/24");

    // The audit log: the operator's question and the viewer's refused one, chained.
    let adm = run(&[
        "ca",
        "issue-operator",
        "--dir",
        &p("ca"),
        "--name",
        "ada",
        "--role",
        "admin",
        "--out",
        &p("ada"),
    ]);
    assert!(adm.status.success());
    let audit = run(&["audit", "--server", &addr, "--cert-dir", &p("ada")]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let log = stdout(&audit);
    assert!(
        log.lines().any(|l| l.contains("olga (operator/operator)")
            && l.contains("ask \\\"Get Computer Name from all machines\\\"")
            && l.contains("asked as question 1 of 1 machines")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("vera (operator/viewer)")
            && l.contains("refused: this needs the operator role")),
        "{log}"
    );
    assert!(log.contains("audit chain intact: 3 entries"), "{log}");
    // A viewer may not read it.
    let denied = run(&["audit", "--server", &addr, "--cert-dir", &p("vera")]);
    assert_eq!(denied.status.code(), Some(2));

    // Revoking an operator: the running server refuses them from the next request on.
    let revoked = run(&["ca", "revoke", "--dir", &p("ca"), "olga"]);
    assert!(revoked.status.success());
    assert_eq!(stdout(&revoked), "revoked olga\n");
    assert_eq!(
        stdout(&run(&["ca", "revoked", "--dir", &p("ca")])),
        "olga\n"
    );
    let mut refused = String::new();
    for _ in 0..100 {
        let out = run(&["questions", "--server", &addr, "--cert-dir", &p("olga")]);
        if !out.status.success() {
            refused = String::from_utf8_lossy(&out.stderr).into_owned();
            break;
        }
    }
    assert!(refused.contains("this certificate is revoked"), "{refused}");
    let status = run(&[
        "status",
        "--server",
        &addr,
        "--cert-dir",
        &p("vera"),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(v["stats"]["rejected_revoked"], 1, "{v:#}");
    let table = stdout(&run(&[
        "status",
        "--server",
        &addr,
        "--cert-dir",
        &p("vera"),
    ]));
    // The figures the metrics listener serves: the revoked peer's refusal under its cause
    // (counters that never moved are left out).
    let figure = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_string)
    };
    assert_eq!(
        figure("rollcall_frames_rejected{cause=revoked}").as_deref(),
        Some("1"),
        "{table}"
    );
    assert_eq!(
        figure("rollcall_frames_rejected{cause=forbidden}"),
        None,
        "{table}"
    );
    assert_eq!(
        figure("rollcall_machines{health=ok}").as_deref(),
        Some("1"),
        "{table}"
    );
    drop(server);
}

#[test]
fn help_explains_every_command() {
    let out = run(&["--help"]);
    let text = stdout(&out);
    for cmd in [
        "ca",
        "server",
        "endpoint",
        "status",
        "ring",
        "ask",
        "results",
        "questions",
        "demo",
        "sim",
        "chaos",
        "bench",
    ] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = run(&["ca", "issue-operator", "--help"]);
    assert!(stdout(&out).contains("viewer (read results and status)"));
}

#[test]
fn script_sensors_patches_saved_questions_search_and_results_that_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
    let token = token_from(&run(&["ca", "init", "--dir", &p("ca")]));
    for (name, role) in [("ada", "admin"), ("olga", "operator"), ("vera", "viewer")] {
        assert!(
            run(&[
                "ca",
                "issue-operator",
                "--dir",
                &p("ca"),
                "--name",
                name,
                "--role",
                role,
                "--out",
                &p(name)
            ])
            .status
            .success()
        );
    }
    let server = Running::start(&[
        "server",
        "--ca-dir",
        &p("ca"),
        "--listen",
        "127.0.0.1:0",
        "--results-kept",
        "50",
    ]);
    let addr = server
        .line_starting("server ")
        .rsplit(' ')
        .next()
        .expect("addr")
        .to_string();
    let ep = Running::start(&[
        "endpoint",
        "--server",
        &addr,
        "--join-token",
        &token,
        "--state-dir",
        &p("ep"),
        "--listen",
        "127.0.3.1:0",
        "--register-min-ms",
        "200",
        "--register-max-ms",
        "300",
    ]);
    ep.line_starting("registered in ring ");
    let op = |who: &str| {
        vec![
            "--server".to_string(),
            addr.clone(),
            "--cert-dir".to_string(),
            p(who),
        ]
    };
    let with = |base: &[&str], who: &str| -> Vec<String> {
        base.iter().map(|s| s.to_string()).chain(op(who)).collect()
    };
    let run_as = |base: &[&str], who: &str| {
        let args = with(base, who);
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // A script sensor: only an admin may add it; the endpoint gets it at its next registration.
    std::fs::write(p("greet.sh"), "echo hello from rollcall\n").expect("script");
    let denied = run_as(
        &["sensor", "add", "Greeting", "--script-file", &p("greet.sh")],
        "olga",
    );
    assert_eq!(denied.status.code(), Some(2));
    let added = run_as(
        &["sensor", "add", "Greeting", "--script-file", &p("greet.sh")],
        "ada",
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(
        stdout(&run_as(&["sensor", "list"], "vera"))
            .lines()
            .any(|l| l.starts_with("Greeting ") && l.contains("text or number"))
    );
    let greet = with(
        &[
            "ask",
            "Get Greeting from all machines",
            "--csv",
            "--wait-secs",
            "10",
        ],
        "olga",
    );
    run_until(
        &greet.iter().map(String::as_str).collect::<Vec<_>>(),
        20,
        |out| out == "Greeting,Count\nhello from rollcall,1\n",
    );

    // A patch baseline above what is installed shows up in Missing Patches.
    std::fs::write(p("baseline.txt"), "# package  minimum\nbash 999\n").expect("baseline");
    assert!(
        run_as(&["patches", "--file", &p("baseline.txt")], "ada")
            .status
            .success()
    );
    let missing = with(
        &[
            "ask",
            "Get Missing Patches from all machines",
            "--csv",
            "--wait-secs",
            "10",
        ],
        "olga",
    );
    let out = run_until(
        &missing.iter().map(String::as_str).collect::<Vec<_>>(),
        20,
        |out| out.contains(" < 999,1"),
    );
    assert!(
        out.lines().nth(1).is_some_and(|l| l.starts_with("bash ")),
        "{out}"
    );

    // Saved questions: save with a schedule, list, run; the schedule reissues it.
    let saved = run_as(
        &[
            "saved",
            "add",
            "who",
            "Get Computer Name from all machines",
            "--every-secs",
            "1",
        ],
        "olga",
    );
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    assert_eq!(
        stdout(&run_as(&["saved", "list"], "vera")),
        "who (every 1 s): Get Computer Name from all machines\n"
    );
    let ran = run_as(&["saved", "run", "who", "--csv"], "olga");
    assert!(ran.status.success());
    assert!(stdout(&ran).starts_with("Computer Name,Count\n"));
    let list = with(&["questions"], "vera");
    run_until(
        &list.iter().map(String::as_str).collect::<Vec<_>>(),
        100,
        |out| out.matches("Get Computer Name from all machines").count() >= 3,
    );

    // The search box.
    let found = stdout(&run_as(&["search", "machines with chrome"], "vera"));
    assert_eq!(
        found.lines().next(),
        Some(
            r#" 1. Get Computer Name from all machines with Installed Applications contains "chrome""#
        )
    );

    // Results and settings survive a server restart.
    drop(ep);
    drop(server);
    let server = Running::start(&["server", "--ca-dir", &p("ca"), "--listen", "127.0.0.1:0"]);
    let addr2 = server
        .line_starting("server ")
        .rsplit(' ')
        .next()
        .expect("addr")
        .to_string();
    let again = |base: &[&str]| {
        let args: Vec<String> = base
            .iter()
            .map(|s| s.to_string())
            .chain([
                "--server".to_string(),
                addr2.clone(),
                "--cert-dir".to_string(),
                p("vera"),
            ])
            .collect();
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let listed = stdout(&again(&["questions"]));
    let greeting_id = listed
        .lines()
        .filter(|l| l.ends_with("Get Greeting from all machines"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or_else(|| panic!("no Greeting question kept: {listed}"));
    let first = again(&["results", &greeting_id.to_string(), "--csv"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(stdout(&first), "Greeting,Count\nhello from rollcall,1\n");
    assert!(stdout(&again(&["saved", "list"])).starts_with("who (every 1 s)"));
    assert!(
        stdout(&again(&["sensor", "list"]))
            .lines()
            .any(|l| l.starts_with("Greeting ") && l.contains("text or number"))
    );
}

/// `rollcall sim` on both transports: every endpoint answers every question exactly once and
/// the merged counts are the host profiles' ground truth.
#[test]
fn sim_answers_match_the_profiles_on_both_transports() {
    use rollcall_actors::sensors::sim::HostProfile;
    let seed = 7u64;
    // In memory, rings longer than the depth to which a chain's way back is finished by
    // nested calls, so the rest goes by message; over QUIC, shorter ones.
    for (transport, n, ring_size) in [("mem", 120u64, 40u64), ("quic", 60, 20)] {
        let mut truth: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for i in 0..n {
            let p = HostProfile::from_seed(seed.wrapping_mul(1_000_003).wrapping_add(i), None);
            *truth.entry((p.os, p.os_version)).or_default() += 1;
        }
        let out = run(&[
            "sim",
            "--endpoints",
            &n.to_string(),
            "--ring-size",
            &ring_size.to_string(),
            "--transport",
            transport,
            "--seed",
            &seed.to_string(),
            "--questions",
            "2",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(r["all_answered"], true, "{transport}: {r:#}");
        assert_eq!(r["answered"], serde_json::json!([n, n]), "{transport}");
        assert_eq!(r["formed"], true, "{transport}: {r:#}");
        assert_eq!(r["rings"], 3, "{transport}");
        let rows: std::collections::BTreeMap<(String, String), u64> = r["last_rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| {
                let (os, ver, count) = (
                    row[0].as_str().expect("os"),
                    row[1].as_str().expect("ver"),
                    row[2].as_u64().expect("count"),
                );
                ((os.to_string(), ver.to_string()), count)
            })
            .collect();
        assert_eq!(rows, truth, "{transport}");
        // Rings: only leaders talk to the server, so it receives a handful of envelopes per
        // question, not one per endpoint.
        assert!(
            r["server_msgs_in_per_question"].as_f64().expect("msgs") < 30.0,
            "{transport}: {r:#}"
        );
    }
}

#[test]
fn chaos_against_a_served_sim_runs_a_scenario_and_applies_faults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ops = dir.path().join("ops");
    let ops = ops.to_str().expect("path");
    let sim = Running::start(&[
        "sim",
        "--endpoints",
        "24",
        "--ring-size",
        "8",
        "--questions",
        "1",
        "--serve",
        "127.0.0.1:0",
        "--cert-dir",
        ops,
    ]);
    let addr = sim.serving_address();

    // `rollcall chaos` against this sim.
    let chaos = |args: &[&str]| {
        let mut all = vec!["chaos", "--server", addr.as_str(), "--cert-dir", ops];
        all.extend_from_slice(args);
        run(&all)
    };

    let out = chaos(&["--scenario", "neighbour-killed", "--fault-secs", "2"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("scenario neighbour-killed (seed 1), 24 endpoints"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("  pass    ")).count(),
        8,
        "eight invariants, each held:\n{text}"
    );
    // The action goes out as the fault strikes: the killed machine may have run it first
    // (24) or not (23); every live one ran it, and none twice.
    assert!(
        [23, 24].iter().any(|n| text.contains(&format!(
            "no action ran twice on any machine                    pass    {n} of 24 machines ran action 1 once, none twice"
        ))),
        "{text}"
    );
    assert!(text.contains("all invariants held"), "{text}");

    let out = chaos(&["kill", "--node", "e0000003"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("applied to 1 endpoint(s)"), "{text}");
    assert!(text.contains("e0000003  127.1.0.4"), "{text}");

    let out = chaos(&["pause", "--node", "nobody"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no endpoint matches --node nobody"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = chaos(&["--scenario", "no-such"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no scenario \"no-such\""));
}

/// The question language against a served sim, as an operator meets it: inputs that used to
/// crash the server or fail on every endpoint are refused at ask time with their column and
/// the server keeps serving; a thousand host names in one `or` list are answered; a
/// multi-valued sensor is counted per value (issue: questions that are never silently wrong).
#[test]
fn hostile_and_long_questions_are_refused_or_answered_and_values_are_counted_one_by_one() {
    use rollcall_actors::sensors::sim::HostProfile;
    let dir = tempfile::tempdir().expect("tempdir");
    let ops = dir.path().join("ops");
    let ops = ops.to_str().expect("path");
    let (n, seed) = (40u64, 3u64);
    let sim = Running::start(&[
        "sim",
        "--endpoints",
        &n.to_string(),
        "--ring-size",
        "10",
        "--seed",
        &seed.to_string(),
        "--questions",
        "1",
        "--serve",
        "127.0.0.1:0",
        "--cert-dir",
        ops,
    ]);
    let addr = sim.serving_address();
    let as_ops = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", addr.as_str(), "--cert-dir", ops]);
        run(&all)
    };
    let profiles: Vec<HostProfile> = (0..n)
        .map(|i| HostProfile::from_seed(seed.wrapping_mul(1_000_003).wrapping_add(i), None))
        .collect();

    // 1. Each of these took the server down; now each is refused before anything is sent.
    let prefix = "Get Computer Name from all machines with ";
    let hostile = [
        format!("{prefix}{}", "(".repeat(2000)),
        format!("{prefix}{}Uptime > 5{}", "(".repeat(1750), ")".repeat(1750)),
        format!("{prefix}{}Uptime > 5", "not ".repeat(4000)),
    ];
    for text in &hostile {
        let out = as_ops(&["ask", text]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("nest more than 32 deep"), "{err}");
        assert!(err.contains("at column "), "{err}");
        // The error shows where, not the whole input.
        assert!(err.len() < 1_000, "{} bytes of error", err.len());
        let saved = as_ops(&["saved", "add", "deep", text]);
        assert_eq!(saved.status.code(), Some(2));
    }

    // 2. A thousand host names, ten of them real: answered by everyone, ten matched.
    let mut names: Vec<String> = (0..1020).map(|i| format!("absent-{i:05}")).collect();
    names.extend(profiles.iter().take(10).map(|p| p.hostname.clone()));
    let condition = names
        .iter()
        .map(|h| format!("Computer Name = \"{h}\""))
        .collect::<Vec<_>>()
        .join(" or ");
    let out = as_ops(&["ask", &format!("{prefix}{condition}"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(p["answered"], n, "{p:#}");
    assert_eq!(p["matched"], 10, "{p:#}");
    assert_eq!(p["problems"], serde_json::json!([]), "{p:#}");

    // 3. One row per application, each machine counted once per application it has.
    let out = as_ops(&[
        "ask",
        "Get Installed Applications from all machines",
        "--json",
    ]);
    assert!(out.status.success());
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let got: std::collections::BTreeMap<String, u64> = p["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["cells"][0].as_str().expect("cell").to_string(),
                r["count"].as_u64().expect("count"),
            )
        })
        .collect();
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    for prof in &profiles {
        for (name, _) in &prof.packages {
            *want.entry(name.clone()).or_default() += 1;
        }
    }
    assert_eq!(got, want);
    assert_eq!(p["matched"], n);
    // A cell copied into a filter finds exactly the machines it counted.
    let (app, count) = want
        .iter()
        .find(|(_, c)| **c < n)
        .expect("an app some lack");
    let out = as_ops(&[
        "ask",
        &format!("Get Computer Name from all machines with Installed Applications = \"{app}\""),
        "--json",
    ]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(p["matched"].as_u64(), Some(*count), "{app}");
    // "!=" is the complement of "=".
    let out = as_ops(&[
        "ask",
        &format!("Get Computer Name from all machines with Installed Applications != \"{app}\""),
        "--json",
    ]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(p["matched"].as_u64(), Some(n - count), "{app}");

    // 4. Sizes in the table are readable; the server is still the same process.
    let out = as_ops(&["ask", "Get Memory from all machines with Memory >= 4 GiB"]);
    let table = stdout(&out);
    assert!(out.status.success(), "{table}");
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains(" GiB")),
        "{table}"
    );
    assert!(table.contains(&format!("answered {n} of {n}")), "{table}");
}

/// `--log-format json`: every log line a shipper reads is one JSON object with the time,
/// the level and the message.
#[test]
fn json_logs_are_one_object_per_line() {
    let out = rollcall()
        .args(["--log-format", "json", "demo", "--endpoints", "3"])
        .env("RUST_LOG", "info")
        .output()
        .expect("demo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 3, "{err}");
    for l in &lines {
        assert!(
            l["timestamp"].as_str().is_some_and(|t| t.starts_with("20")),
            "{l}"
        );
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .contains(&l["level"].as_str().unwrap_or("")),
            "{l}"
        );
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "endpoint enrolled"),
        "{err}"
    );
}
