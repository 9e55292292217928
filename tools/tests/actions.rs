//! Actions end to end: a server, endpoints and operators as separate processes on loopback
//! (real QUIC, real files, real scripts).

mod common;

use std::path::Path;

use common::cluster::*;
use common::*;

#[test]
fn delete_file_and_scripts_on_real_endpoints_with_approval_audit_and_a_restart() {
    let c = cluster();
    let server = c.server();
    let _e1 = c.endpoint(1);
    let _e2 = c.endpoint(2);
    c.wait_members(2);
    for i in 1..=3 {
        std::fs::create_dir_all(c.path(&format!("root{i}"))).expect("root");
        std::fs::write(
            c.path(&format!("root{i}/dropper.bin")),
            format!("payload {i}"),
        )
        .expect("file");
    }

    // The machines that matched a question asked while endpoint 3 was not there.
    let asked = c.json(
        "olga",
        &[
            "ask",
            "Get Computer Name from all machines",
            "--ttl-secs",
            "2",
            "--json",
        ],
    );
    let question = asked["id"].as_u64().expect("question id");
    assert_eq!(asked["answered"], 2, "{asked:#}");
    // Closed before endpoint 3 comes (an open question is handed to machines that return).
    run_until(
        &[
            "results",
            &question.to_string(),
            "--json",
            "--server",
            &c.addr,
            "--cert-dir",
            &c.p("vera"),
        ],
        1_000,
        |out| out.contains("\"expires_in_ms\": 0"),
    );
    let _e3 = c.endpoint(3);
    c.wait_members(3);

    // A viewer cannot act; refused and audited.
    let v = c.as_(
        "vera",
        &["act", "run-script", "--all", "--script-file", "/dev/null"],
    );
    assert_eq!(code(&v), 2);
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("needs the operator role"),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );

    // delete-file needs approval: the operator's action waits; she cannot approve it (not an
    // admin); an admin approves it and it goes out.
    let target = c.p("root1/dropper.bin");
    let act = c.json(
        "olga",
        &[
            "act",
            "delete-file",
            &target,
            "--from-question",
            &question.to_string(),
            "--json",
        ],
    );
    assert_eq!(act["awaiting_approval"], true, "{act:#}");
    let id = act["id"].as_u64().expect("id").to_string();
    assert!(Path::new(&target).exists());
    let own = c.as_("olga", &["action", "approve", &id]);
    assert_eq!(code(&own), 2);
    let ok = c.as_("alice", &["action", "approve", &id]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r = c.status_until(&id, 200, |out| out.contains("\"done\":true"));
    // Endpoint 1 moved its file; endpoint 2 refused a path outside its roots; endpoint 3
    // was not among the question's machines.
    assert_eq!(r["targeted"], 2, "{r:#}");
    assert_eq!(r["completed"], 1, "{r:#}");
    assert_eq!(r["refused"], 1, "{r:#}");
    assert_eq!(r["approved_by"], "alice");
    let refused = r["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .find(|m| {
            m["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("refused"))
        })
        .expect("a refusal");
    assert!(
        refused["status"]
            .as_str()
            .is_some_and(|s| s.contains("outside the allowed roots")),
        "{refused}"
    );
    assert!(!Path::new(&target).exists());
    let kept: Vec<_> = std::fs::read_dir(c.path("ep1/quarantine"))
        .expect("quarantine folder")
        .flatten()
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(kept[0].path()).expect("kept"), b"payload 1");
    assert!(c.path("root2/dropper.bin").exists());
    assert!(c.path("root3/dropper.bin").exists());

    // An admin cannot approve their own action; another admin can deny it.
    let own = c.json(
        "alice",
        &[
            "act",
            "delete-file",
            &c.p("root2/dropper.bin"),
            "--all",
            "--json",
        ],
    );
    let own_id = own["id"].as_u64().expect("id").to_string();
    let self_ok = c.as_("alice", &["action", "approve", &own_id]);
    assert_eq!(code(&self_ok), 2);
    assert!(String::from_utf8_lossy(&self_ok.stderr).contains("another admin must approve it"));
    assert!(c.as_("bob", &["action", "deny", &own_id]).status.success());
    assert!(c.path("root2/dropper.bin").exists());

    // run-script: output and exit code come back from all three.
    let ran = c.run_script("echo hello from rollcall\n", &[]);
    assert_eq!(code(&ran), 0, "{}", String::from_utf8_lossy(&ran.stderr));
    let r: serde_json::Value = serde_json::from_slice(&ran.stdout).expect("json");
    assert_eq!(r["targeted"], 3, "{r:#}");
    assert_eq!(r["completed"], 3, "{r:#}");
    for m in r["machines"].as_array().expect("machines") {
        assert_eq!(m["output"], "hello from rollcall\n", "{m}");
    }
    let failed = c.run_script("echo broken >&2\nexit 7\n", &[]);
    assert_eq!(code(&failed), 1);
    let r: serde_json::Value = serde_json::from_slice(&failed.stdout).expect("json");
    assert_eq!(r["failed"], 3, "{r:#}");
    for m in r["machines"].as_array().expect("machines") {
        assert_eq!(m["status"], "failed: exit 7", "{m}");
        assert_eq!(m["output"], "broken\n", "{m}");
    }
    let failed_id = r["id"].as_u64().expect("id").to_string();
    // --failed lists the machines where it did not complete; the first run-script has none.
    let only_failed = c.json(
        "vera",
        &["action", "status", &failed_id, "--failed", "--json"],
    );
    assert_eq!(only_failed["machines_total"], 3, "{only_failed:#}");
    let ok_id = (r["id"].as_u64().expect("id") - 1).to_string();
    let none_failed = c.json("vera", &["action", "status", &ok_id, "--failed", "--json"]);
    assert_eq!(none_failed["machines_total"], 0, "{none_failed:#}");
    assert_eq!(none_failed["completed"], 3, "{none_failed:#}");

    // The audit log holds every act, approval, refusal and denial, and its chain holds.
    let audit = c.as_("alice", &["audit", "--json", "--last", "100"]);
    assert!(audit.status.success());
    let text = stdout(&audit);
    for want in [
        "act run-script",
        "needs the operator role",
        &format!("approve action {id}"),
        &format!("deny action {own_id}"),
        "another admin must approve it",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    assert!(text.contains("\"chain_intact\":true"), "{text}");

    // A restart of the server loses no action and runs none again.
    drop(server);
    let store = c.path("ca/server/server.redb");
    {
        let st = rollcall_actors::store::ServerStore::open(&store, 100).expect("store");
        let before = st.verify_audit().expect("read").expect("intact");
        assert!(before >= 6, "{before} entries");
        let mut e = st.audit(100).expect("entries")[2].clone();
        e.what = "ask \"nothing to see\"".into();
        st.overwrite_audit_entry(&e).expect("edit");
    }
    let _server = c.server();
    let verify = c.as_("alice", &["audit", "--verify"]);
    assert_eq!(code(&verify), 1, "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("audit chain BROKEN"),
        "{}",
        stdout(&verify)
    );
    let again = c.json("vera", &["action", "status", &failed_id, "--json"]);
    assert_eq!(again["failed"], 3, "{again:#}");
    let list = stdout(&c.as_("vera", &["action", "list"]));
    assert!(list.contains("denied by bob"), "{list}");
}

#[test]
fn an_offline_endpoint_runs_an_action_on_return_exactly_once() {
    let c = cluster();
    let _server = c.server();
    // Three, so that endpoint 1 has another successor to route to and reports endpoint 2
    // when it goes.
    let _e1 = c.endpoint(1);
    let e2 = c.endpoint(2);
    let _e3 = c.endpoint(3);
    c.wait_members(3);
    let log = c.path("runs.log");
    let count = format!("echo run >> {}\n", log.to_string_lossy());
    let act = |expire: &str| -> serde_json::Value {
        let out = c.run_script(&count, &["--expire-secs", expire]);
        serde_json::from_slice(&out.stdout).expect("json")
    };
    drop(e2);
    c.wait_members(2);

    let r = act("120");
    assert_eq!(r["completed"], 2, "{r:#}");
    let id = r["id"].as_u64().expect("id").to_string();
    let runs = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(runs(), 2);

    // Back: it receives the action it missed and runs it once.
    let e2 = c.endpoint(2);
    c.status_until(&id, 300, |out| out.contains("\"completed\":3"));
    assert_eq!(runs(), 3);
    // Restarted: it finds the action in its journal, and does not run it again.
    drop(e2);
    let e2_again = c.endpoint(2);
    c.wait_members(3);
    let s = c.json(
        "olga",
        &[
            "ask",
            &format!("Get Action Status[{id}] from all machines"),
            "--json",
        ],
    );
    assert_eq!(s["answered"], 3, "{s:#}");
    assert_eq!(s["rows"][0]["cells"][0], "completed", "{s:#}");
    assert_eq!(s["rows"][0]["count"], 3, "{s:#}");
    assert_eq!(runs(), 3);

    // An action that expired before a machine came back: it does not run there.
    drop(e2_again);
    c.wait_members(2);
    let short = act("2");
    assert_eq!(short["completed"], 2, "{short:#}");
    assert_eq!(runs(), 5);
    // Past its expiry (the server says so), the machine comes back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = c.json(
            "vera",
            &["action", "status", &short["id"].to_string(), "--json"],
        );
        if r["expires_in_ms"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r:#}");
    }
    let _e2 = c.endpoint(2);
    c.wait_members(3);
    let s = c.json(
        "olga",
        &[
            "ask",
            &format!("Get Action Status[{}] from all machines", short["id"]),
            "--json",
        ],
    );
    assert_eq!(s["answered"], 3, "{s:#}");
    assert_eq!(runs(), 5, "the expired action ran on return");
}

/// A package with files, end to end: an admin adds it with `--file` (chunks uploaded, a
/// second add uploads nothing), an operator acts on every machine, each endpoint fetches the
/// chunks (its ring's leader from the server, the others from neighbours), verifies them and
/// runs the command in a folder holding the files; `package status` shows one copy left the
/// server for the ring.
#[test]
fn a_package_with_files_reaches_real_endpoints_and_runs_beside_its_files() {
    let c = cluster();
    let _server = c.server();
    let _e: Vec<Running> = (1..=3).map(|i| c.endpoint(i)).collect();
    c.wait_members(3);
    let bin: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 16) as u8)
        .collect();
    std::fs::write(c.path("fix.bin"), &bin).expect("file");
    std::fs::write(c.path("fix.conf"), "level = 3\n").expect("file");
    let add = |expect_upload: &str| {
        let out = c.as_(
            "alice",
            &[
                "package",
                "add",
                "fix",
                "--file",
                &c.p("fix.bin"),
                "--file",
                &c.p("fix.conf"),
                "--command",
                "wc -c < fix.bin; cat fix.conf",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert!(err.contains(expect_upload), "{err}");
        assert!(
            stdout(&out).contains("registered with 2 files (300010 bytes, 6 chunks)"),
            "{}",
            stdout(&out)
        );
    };
    add("uploading 6 the server lacks");
    add("uploading 0 the server lacks");
    // A viewer cannot upload.
    let v = c.as_(
        "vera",
        &[
            "package",
            "add",
            "x",
            "--file",
            &c.p("fix.conf"),
            "--command",
            "true",
        ],
    );
    assert_eq!(code(&v), 2, "{}", String::from_utf8_lossy(&v.stderr));

    let act = c.json("olga", &["act", "fix", "--all", "--json"]);
    let id = act["id"].as_u64().expect("id").to_string();
    let r = c.status_until(&id, 400, |out| out.contains("\"done\":true"));
    assert_eq!(r["targeted"], 3, "{r:#}");
    assert_eq!(r["completed"], 3, "{r:#}");
    for m in r["machines"].as_array().expect("machines") {
        assert_eq!(m["output"], "300000\nlevel = 3\n", "{m}");
    }
    for i in 1..=3 {
        let dir = c.path(&format!("ep{i}/work/action-{id}"));
        assert_eq!(std::fs::read(dir.join("fix.bin")).expect("written"), bin);
    }
    let status = c.json("vera", &["package", "status", "fix", "--json"]);
    // One ring: the server sent each chunk once, to its leader.
    assert_eq!(status["bytes"], 300_010, "{status:#}");
    assert_eq!(status["egress"]["bytes"], 300_010, "{status:#}");
    assert_eq!(status["egress"]["repeats"], 0, "{status:#}");
    assert_eq!(
        status["egress"]["by_machine"].as_array().map(Vec::len),
        Some(1),
        "{status:#}"
    );
    // Per ring, from what the machines said: three complete, one copy from the server and
    // two from neighbours (each chunk counted once per machine).
    let rings = status["rings"].as_array().expect("rings");
    assert_eq!(rings.len(), 1, "{status:#}");
    let g = &rings[0];
    assert_eq!(g["machines"], 3, "{status:#}");
    assert_eq!(g["complete"], 3, "{status:#}");
    assert_eq!(g["from_server"], 300_010, "{status:#}");
    assert_eq!(g["from_peers"], 2 * 300_010, "{status:#}");
    assert_eq!(g["egress"], 300_010, "{status:#}");
    let text = c.as_("vera", &["package", "status", "fix"]);
    let text = String::from_utf8_lossy(&text.stdout);
    let row = text
        .lines()
        .find(|l| l.contains(g["ring"].as_str().expect("ring")))
        .unwrap_or_else(|| panic!("no ring row in {text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[cells.len() - 5..],
        ["3", "3", "600020", "300010", "300010"],
        "{text}"
    );
}
