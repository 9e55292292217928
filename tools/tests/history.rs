//! Endpoint history end to end: endpoint processes record the machine's process table, and a
//! question finds a process by its hash after it has exited.

mod common;

use common::cluster::*;
use common::*;

/// A copy of `cat` with bytes of its own at the end (an ELF runs the same with a tail), so
/// that its SHA-256 is this test's alone.
fn unique_executable(dir: &std::path::Path, tag: &str) -> (std::path::PathBuf, String) {
    use sha2::Digest;
    let cat = ["/usr/bin/cat", "/bin/cat"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("cat");
    let mut bytes = std::fs::read(cat).expect("read cat");
    // Tests of one binary run side by side, each with its own tag.
    bytes
        .extend_from_slice(format!("rollcall history e2e {} {tag}", std::process::id()).as_bytes());
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
    let (exe, sha) = unique_executable(c.dir.path(), "exited");
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

/// POSTs `body` to the alert listener at `url` with `token` (if any), trusting the
/// cluster's CA: (status, body).
fn post_alert(ca_pem: &[u8], url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let ca = ureq::tls::Certificate::from_pem(ca_pem).expect("ca pem");
    let agent = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    ca,
                ])))
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut req = agent.post(url).header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send(body).expect("the listener answers");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

#[test]
fn an_alert_opens_a_case_with_the_right_machines_and_a_wrong_token_is_refused_and_counted() {
    let mut c = cluster();
    c.endpoint_config = "[history]\ninterval_ms = 200\n".into();
    let token = "alert-token-0123456789";
    let mut server_cfg = std::fs::read_to_string(c.path("server.toml")).expect("cfg");
    server_cfg.push_str(&format!(
        "[alerts]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\"\nrespond_with = \"quarantine\"\n"
    ));
    std::fs::write(c.path("server.toml"), server_cfg).expect("cfg");
    let server = c.start_server();
    let url = server
        .line_starting("alerts listening on ")
        .trim_start_matches("alerts listening on ")
        .to_string();
    server.line_starting("server ");
    let _e: Vec<Running> = (1..=2).map(|i| c.endpoint(i)).collect();
    c.wait_members(2);
    let (exe, sha) = unique_executable(c.dir.path(), "alert");
    let mut child = std::process::Command::new(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Both endpoints have seen it run.
    run_until(
        &[
            "ask",
            &format!("Get Computer Name from all machines with Process Hash Last Seen[{sha}] >= 0"),
            "--json",
            "--server",
            &c.addr,
            "--cert-dir",
            &c.p("olga"),
        ],
        200,
        |out| {
            serde_json::from_str::<serde_json::Value>(out)
                .is_ok_and(|v| v["answered"] == 2 && v["matched"] == 2)
        },
    );
    let ca_pem = std::fs::read(c.path("ca/ca.pem")).expect("ca.pem");
    let alert = format!(
        r#"{{"product":"edr","id":"A-7","title":"probe seen","indicators":[{{"type":"sha256","value":"{sha}"}},{{"type":"md5","value":"d41d8cd98f00b204e9800998ecf8427e"}}]}}"#
    );
    // No token, a wrong one: refused, counted, no case.
    assert_eq!(post_alert(&ca_pem, &url, None, &alert).0, 401);
    assert_eq!(
        post_alert(&ca_pem, &url, Some("alert-token-0123456780"), &alert).0,
        401
    );
    // Not an alert: refused, counted.
    let (status, body) = post_alert(&ca_pem, &url, Some(token), r#"{"product":"edr"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("missing field"), "{body}");
    // The alert: a case, searched at once.
    let (status, body) = post_alert(&ca_pem, &url, Some(token), &alert);
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["case"]
        .as_u64()
        .expect("case id");
    let case = run_until(
        &[
            "case",
            "show",
            &id.to_string(),
            "--json",
            "--server",
            &c.addr,
            "--cert-dir",
            &c.p("vera"),
        ],
        400,
        |out| out.contains("\"state\":\"Done\""),
    );
    let case: serde_json::Value = serde_json::from_str(&case).expect("json");
    assert_eq!(case["opened_by"], "alert:edr", "{case:#}");
    assert_eq!(case["source"], "alert A-7 from edr: probe seen", "{case:#}");
    let findings = case["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 2, "{case:#}");
    assert_eq!(
        case["skipped"].as_array().map(Vec::len),
        Some(1),
        "{case:#}"
    );
    for f in findings {
        assert_eq!(f["indicator"], format!("sha256:{sha}"));
        assert!(
            f["sighting"]
                .as_str()
                .is_some_and(|s| s.contains("(still running)")),
            "{f}"
        );
    }
    // The configured response: a quarantine of both machines, waiting for an admin.
    let action = case["response_action"].as_u64().expect("a response action");
    let status = c.json("vera", &["action", "status", &action.to_string(), "--json"]);
    assert_eq!(status["phase"], "awaiting approval", "{status:#}");
    let deny = c.as_("alice", &["action", "deny", &action.to_string()]);
    assert_eq!(code(&deny), 0, "{}", String::from_utf8_lossy(&deny.stderr));
    let list = c.json("vera", &["case", "list", "--json"]);
    assert_eq!(
        list["alerts"],
        serde_json::json!({"accepted": 1, "refused_token": 2, "refused_malformed": 1}),
        "{list:#}"
    );
    drop(child.stdin.take());
    child.wait().expect("exits");
}
