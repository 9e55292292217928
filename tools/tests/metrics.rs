//! The metrics listener of real `rollcall server` and `rollcall endpoint` processes: each
//! scrape parses as Prometheus (OpenMetrics) text line by line; the question counters move
//! by exactly one question and two answers when a question is asked; the garbage counter by
//! exactly one when a bad frame is sent; `/healthz` and `/readyz` answer; `rollcall status`
//! shows the same figures.

mod common;
use common::cluster::*;
use common::*;
use std::collections::HashMap;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// GET `url`: (status, body).
fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let mut r = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().expect("body"))
}

/// Scrapes `addr` and parses every line: each is a HELP, TYPE or UNIT comment, a sample,
/// or the closing `# EOF`; returns each sample's value by `name{labels}` as written.
fn scrape(addr: &str) -> HashMap<String, f64> {
    let (status, text) = get(&format!("http://{addr}/metrics"));
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        match prometheus_parse::LineInfo::parse(line) {
            prometheus_parse::LineInfo::Sample {
                metric_name,
                labels,
                value,
                ..
            } => {
                let v: f64 = value
                    .parse()
                    .unwrap_or_else(|e| panic!("{line}: bad value: {e}"));
                let key = match labels {
                    Some(l) => format!("{metric_name}{{{l}}}"),
                    None => metric_name.to_string(),
                };
                assert!(samples.insert(key, v).is_none(), "{line} twice");
            }
            prometheus_parse::LineInfo::Doc { .. } | prometheus_parse::LineInfo::Type { .. } => {}
            other => panic!("not Prometheus exposition: {line:?} ({other:?})"),
        }
    }
    // And the whole text as a scraper's parser reads it: the same value for every counter.
    let parsed =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse");
    for p in parsed
        .samples
        .iter()
        .filter(|p| p.metric.ends_with("_total"))
    {
        let v = match p.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{}: {other:?}", p.metric),
        };
        let key = if p.labels.is_empty() {
            p.metric.clone()
        } else {
            format!("{}{{{}}}", p.metric, p.labels)
        };
        assert_eq!(samples.get(&key), Some(&v), "{key}");
    }
    samples
}

fn value(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("{key} not scraped; have {:?}", s.keys()))
}

/// A garbage frame on a real QUIC connection to the server, with the viewer's certificate;
/// the connection stays open until a scrape of `metrics` shows `garbage` above `before`
/// (within the deadline), so the frame is read whole before the connection closes. The
/// last scrape.
fn send_garbage(c: &Cluster, metrics: &str, garbage: &str, before: f64) -> HashMap<String, f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let creds = rollcall_runtime::identity::Credentials::load(&c.path("vera")).expect("creds");
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
        let cfg = rollcall_runtime::tls::client_config(&creds, Default::default()).expect("tls");
        let conn = ep
            .connect_with(
                cfg,
                c.addr.parse().expect("server"),
                rollcall_runtime::identity::NODE_SERVER_NAME,
            )
            .expect("connect")
            .await
            .expect("handshake");
        let junk = b"\xc1\xc1\xc1 definitely not msgpack";
        let mut frame = (junk.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(junk);
        let mut s = conn.open_uni().await.expect("uni");
        s.write_all(&frame).await.expect("write");
        s.finish().expect("finish");
        let deadline = std::time::Instant::now() + DEADLINE;
        let last = loop {
            let (m, g) = (metrics.to_string(), garbage.to_string());
            let scraped = tokio::task::spawn_blocking(move || {
                let s = scrape(&m);
                let v = value(&s, &g);
                (s, v)
            })
            .await
            .expect("scrape");
            if scraped.1 > before || std::time::Instant::now() > deadline {
                break scraped.0;
            }
        };
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
        last
    })
}

#[test]
fn scrapes_parse_and_counters_move_with_questions_and_bad_frames() {
    let c = cluster();
    let (sm, em) = (free_tcp_port(), free_tcp_port());
    let server_cfg = std::fs::read_to_string(c.path("server.toml")).expect("server.toml");
    std::fs::write(
        c.path("server.toml"),
        format!("{server_cfg}[metrics]\nlisten = \"127.0.0.1:{sm}\"\n"),
    )
    .expect("server.toml");
    let _server = c.server();
    let server = format!("127.0.0.1:{sm}");
    let endpoint = format!("127.0.0.1:{em}");
    let _e1 = c.endpoint_with(1, &format!("[metrics]\nlisten = \"{endpoint}\"\n"));
    let _e2 = c.endpoint(2);
    c.wait_members(2);

    for addr in [&server, &endpoint] {
        assert_eq!(get(&format!("http://{addr}/healthz")), (200, "ok\n".into()));
        assert_eq!(
            get(&format!("http://{addr}/readyz")),
            (200, "ready\n".into())
        );
    }
    let (code, _) = get(&format!("http://{server}/nothing"));
    assert_eq!(code, 404);

    let before = scrape(&server);
    assert_eq!(value(&before, "rollcall_questions_asked_total"), 0.0);
    assert_eq!(value(&before, "rollcall_answers_total"), 0.0);
    assert_eq!(value(&before, "rollcall_rings"), 1.0);
    assert_eq!(value(&before, "rollcall_machines{health=\"ok\"}"), 2.0);
    assert_eq!(value(&before, "rollcall_ring_leaders"), 2.0);
    assert!(value(&before, "process_resident_memory_bytes") > 1e6);

    let asked = c.json(
        "olga",
        &[
            "ask",
            "Get Computer Name from all machines",
            "--wait-secs",
            "20",
            "--json",
        ],
    );
    assert_eq!(
        (asked["answered"].as_u64(), asked["expected"].as_u64()),
        (Some(2), Some(2))
    );
    let after = scrape(&server);
    assert_eq!(value(&after, "rollcall_questions_asked_total"), 1.0);
    assert_eq!(value(&after, "rollcall_answers_total"), 2.0);
    assert_eq!(
        value(&after, "rollcall_question_seconds_to_all_answered_count"),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "rollcall_question_seconds_to_all_answered_bucket{le=\"+Inf\"}"
        ),
        1.0
    );
    assert!(
        value(&after, "rollcall_envelopes_received_total")
            > value(&before, "rollcall_envelopes_received_total")
    );

    // A bad frame: counted once under its cause, and nothing else is refused.
    let garbage = "rollcall_frames_rejected_total{cause=\"garbage\"}";
    let bad = send_garbage(&c, &server, garbage, value(&after, garbage));
    assert_eq!(value(&bad, garbage), value(&after, garbage) + 1.0);
    assert_eq!(
        value(&bad, "rollcall_frames_rejected_total{cause=\"spoofed\"}"),
        0.0
    );

    // The endpoint: in its ring of two, leading at least one end, no chunk traffic yet.
    let e = scrape(&endpoint);
    assert_eq!(value(&e, "rollcall_in_ring"), 1.0);
    assert_eq!(value(&e, "rollcall_ring_members"), 2.0);
    // Of a ring of two, each member leads one end.
    assert_eq!(
        value(&e, "rollcall_leads{end=\"forward\"}")
            + value(&e, "rollcall_leads{end=\"backward\"}"),
        1.0
    );
    assert_eq!(value(&e, "rollcall_chunk_bytes_from_peers_total"), 0.0);
    assert!(value(&e, "rollcall_registrations_total") >= 1.0);

    // `rollcall status` shows the same figures.
    let st = c.json("vera", &["status", "--json"]);
    let figures = st["figures"].as_array().expect("figures");
    let asked_fig = figures
        .iter()
        .find(|f| f["name"] == "rollcall_questions_asked")
        .expect("questions asked in status");
    assert_eq!(asked_fig["value"], 1.0);
    let text = stdout(&c.as_("vera", &["status"]));
    assert!(
        text.lines()
            .any(|l| l.starts_with("rollcall_answers ") && l.trim_end().ends_with(" 2")),
        "{text}"
    );
}

/// A served simulated fleet shows its server's figures at the front: the same names, for
/// every simulated machine.
#[test]
fn a_served_sim_shows_its_fleet_s_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ops = dir.path().join("ops");
    let ops = ops.to_str().expect("path");
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
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
        "--metrics-listen",
        &metrics,
    ]);
    let line = sim.line_starting("metrics on ");
    assert_eq!(line, format!("metrics on http://{metrics}/metrics"));
    sim.serving_address();
    assert_eq!(
        get(&format!("http://{metrics}/readyz")),
        (200, "ready\n".into())
    );
    let s = scrape(&metrics);
    assert_eq!(value(&s, "rollcall_rings"), 3.0);
    assert_eq!(value(&s, "rollcall_machines{health=\"ok\"}"), 24.0);
    assert_eq!(value(&s, "rollcall_ring_leaders"), 6.0);
    assert_eq!(value(&s, "rollcall_questions_asked_total"), 1.0);
    assert_eq!(value(&s, "rollcall_answers_total"), 24.0);
    assert_eq!(
        value(&s, "rollcall_question_seconds_to_all_answered_count"),
        1.0
    );
}
