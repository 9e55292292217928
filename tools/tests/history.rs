//! Endpoint history end to end: endpoint processes record the machine's process table, and a
//! question finds a process by its hash after it has exited.

mod common;

use common::cluster::*;
use common::*;

/// A copy of `cat` with bytes of its own at the end (an ELF runs the same with a tail), so
/// that its SHA-256 is this test's alone.
fn unique_executable(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    use sha2::Digest;
    let cat = ["/usr/bin/cat", "/bin/cat"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("cat");
    let mut bytes = std::fs::read(cat).expect("read cat");
    bytes.extend_from_slice(format!("rollcall history e2e {}", std::process::id()).as_bytes());
    let path = dir.join("probe-tool");
    std::fs::write(&path, &bytes).expect("write");
    let mut perm = std::fs::metadata(&path).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).expect("chmod");
    (path, hex::encode(sha2::Sha256::digest(&bytes)))
}

#[test]
fn a_process_that_ran_and_exited_is_found_by_its_hash_with_first_and_last_seen() {
    let mut c = cluster();
    c.endpoint_config = "[history]\ninterval_ms = 200\n".into();
    let _server = c.server();
    let _e: Vec<Running> = (1..=2).map(|i| c.endpoint(i)).collect();
    c.wait_members(2);
    let (exe, sha) = unique_executable(c.dir.path());
    let exe = exe.to_string_lossy().into_owned();
    let question = format!(
        "Get Process Hash History[{sha}] from all machines with Process Hash Last Seen[{sha}] < 1 hour"
    );
    let ask = |done: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let out = run_until(
            &[
                "ask",
                &question,
                "--json",
                "--server",
                &c.addr,
                "--cert-dir",
                &c.p("olga"),
            ],
            200,
            |out| serde_json::from_str::<serde_json::Value>(out).is_ok_and(|v| done(&v)),
        );
        serde_json::from_str(&out).expect("json")
    };
    // Before it runs, no machine has it.
    let none = ask(&|v| v["answered"] == 2);
    assert_eq!(none["rows"].as_array().map(Vec::len), Some(0), "{none:#}");

    let mut child = std::process::Command::new(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Both endpoints run on this one machine: each recorded it (each line its own, as
    // each sampled at its own moments).
    let all_rows = |v: &serde_json::Value, want: &dyn Fn(&str) -> bool| {
        let rows = v["rows"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == 2
            && rows
                .iter()
                .all(|r| r["cells"][0].as_str().is_some_and(want))
    };
    ask(&|v| all_rows(v, &|c| c.contains("(still running)")));

    drop(child.stdin.take());
    child.wait().expect("exits");
    // After it is gone: found, with its first and last sightings, one run, its path.
    let gone = ask(&|v| all_rows(v, &|c| !c.contains("still running")));
    for row in gone["rows"].as_array().expect("rows") {
        let line = row["cells"][0].as_str().expect("line");
        assert!(line.starts_with("first 20"), "{line}");
        assert!(line.contains(", last 20"), "{line}");
        assert!(line.ends_with(&format!(", 1 run, {exe}")), "{line}");
    }

    // The hash as an indicator, in a STIX bundle and in a CSV: both endpoints found.
    let bundle = format!(
        r#"{{"type":"bundle","id":"bundle--1","objects":[{{"type":"indicator","id":"indicator--1","pattern":"[file:hashes.'SHA-256' = '{sha}']","pattern_type":"stix"}},{{"type":"indicator","id":"indicator--2","pattern":"[process:name = 'x']","pattern_type":"stix"}}]}}"#
    );
    std::fs::write(c.path("feed.json"), bundle).expect("bundle");
    std::fs::write(c.path("feed.csv"), format!("type,value\nsha256,{sha}\n")).expect("csv");
    for feed in ["feed.json", "feed.csv"] {
        let case = c.json("olga", &["ioc", "import", &c.p(feed), "--json"]);
        assert_eq!(case["state"], "Done", "{case:#}");
        assert_eq!(
            (case["answered"].as_u64(), case["expected"].as_u64()),
            (Some(2), Some(2))
        );
        let findings = case["findings"].as_array().expect("findings");
        assert_eq!(findings.len(), 2, "{case:#}");
        for f in findings {
            assert_eq!(f["indicator"], format!("sha256:{sha}"), "{f}");
            assert!(
                f["sighting"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!(", 1 run, {exe}"))),
                "{f}"
            );
        }
        let skipped = case["skipped"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(skipped, usize::from(feed == "feed.json"), "{case:#}");
    }
    // A malformed bundle: a clear error, exit 2, and no case opened.
    std::fs::write(
        c.path("bad.json"),
        r#"{"type":"bundle","objects":[{"type":"indicator","id":"indicator--9","pattern":"[ipv4-addr:value = 'nope']","pattern_type":"stix"}]}"#,
    )
    .expect("bad");
    let out = c.as_("olga", &["ioc", "import", &c.p("bad.json")]);
    assert_eq!(code(&out), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("indicator--9: \"nope\" is not an IP address")
            && err.contains("nothing imported"),
        "{err}"
    );
    let list = c.json("vera", &["case", "list", "--json"]);
    assert_eq!(list["cases"].as_array().map(Vec::len), Some(2), "{list:#}");
    // A viewer may look but not search.
    let out = c.as_("vera", &["ioc", "import", &c.p("feed.csv")]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
}
