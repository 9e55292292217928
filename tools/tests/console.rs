//! The browser console end to end: a served simulated fleet, `rollcall console` processes
//! for an operator, an admin and a viewer, and headless Chromium driving the pages. Each
//! page's screenshot (1280×800) is written under docs/console/.

mod common;

use std::path::PathBuf;

use common::browser::{Driver, Session};
use common::*;
use serde_json::{Value, json};

/// A `rollcall console` process and the URL it printed.
struct Console {
    _proc: Running,
    url: String,
    base: String,
    token: String,
}

fn console(server: &str, cert_dir: &str) -> Console {
    let proc = Running::start(&[
        "console",
        "--server",
        server,
        "--cert-dir",
        cert_dir,
        "--listen",
        "127.0.0.1:0",
    ]);
    let url = proc
        .line_starting("console at ")
        .trim_start_matches("console at ")
        .trim()
        .to_string();
    let (base, token) = url.split_once("/?token=").expect("URL with a token");
    Console {
        base: base.to_string(),
        token: token.to_string(),
        url,
        _proc: proc,
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.header("x-rollcall-token", t);
    }
    let mut r = req.call().expect("console answers");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console")
}

/// The rows of a grid as the CLI's JSON gives them: (cells, count).
fn rows_of(progress: &Value) -> Vec<(Vec<String>, u64)> {
    progress["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let cells = r["cells"]
                .as_array()
                .expect("cells")
                .iter()
                .map(|c| c.as_str().expect("cell").to_string())
                .collect();
            (cells, r["count"].as_u64().expect("count"))
        })
        .collect()
}

fn sorted(mut v: Vec<(Vec<String>, u64)>) -> Vec<(Vec<String>, u64)> {
    v.sort();
    v
}

const ENDPOINTS: usize = 60;

/// `rollcall sim --serve` with `endpoints` in rings of `ring` and `timing`, its credentials
/// under `dir/ops` (admin; `operator/` and `viewer/` beside them). Returns the process and
/// the credentials folder.
fn served_sim(
    dir: &tempfile::TempDir,
    endpoints: usize,
    ring: u16,
    timing: &str,
) -> (Running, String) {
    let ops = dir.path().join("ops");
    let ops_s = ops.to_str().expect("path").to_string();
    let sim = Running::start(&[
        "sim",
        "--endpoints",
        &endpoints.to_string(),
        "--ring-size",
        &ring.to_string(),
        "--questions",
        "1",
        "--timing",
        timing,
        "--serve",
        "127.0.0.1:0",
        "--cert-dir",
        &ops_s,
    ]);
    (sim, ops_s)
}

#[test]
fn the_console_asks_shows_rings_and_acts_with_roles_enforced_by_the_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let (sim, ops_s) = served_sim(&dir, ENDPOINTS, 20, "lan");
    let server = sim.serving_address();
    let operator = console(&server, &format!("{ops_s}/operator"));
    let admin = console(&server, &ops_s);
    let viewer = console(&server, &format!("{ops_s}/viewer"));

    // Without its launch token (or with another console's), every request is refused.
    for path in ["/", "/api/me", "/api/rings", "/api/questions/1/stream"] {
        let url = format!("{}{path}", operator.base);
        assert_eq!(get(&url, None).0, 401, "{path} without a token");
        assert_eq!(get(&url, Some(&viewer.token)).0, 401, "{path}, wrong token");
        let wrong = format!("{url}?token={}", admin.token);
        assert_eq!(get(&wrong, None).0, 401, "{path}, another console's token");
    }
    let (status, me) = get(&format!("{}/api/me", operator.base), Some(&operator.token));
    assert_eq!(status, 200, "{me}");
    let me: Value = serde_json::from_str(&me).expect("JSON");
    assert_eq!(me["role"], "operator");
    assert_eq!(me["name"], "sim-operator");

    let driver = match Driver::start() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED the browser part: {why}");
            return;
        }
    };

    // A favourite, run once: the home page greets the operator with it and its last result.
    let as_operator = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        let dir = format!("{ops_s}/operator");
        all.extend(["--server", server.as_str(), "--cert-dir", dir.as_str()]);
        let out = run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    as_operator(&[
        "saved",
        "add",
        "Operating systems",
        "Get Operating System from all machines",
    ]);
    as_operator(&["saved", "run", "Operating systems"]);

    // Home: type a few words, pick the first suggestion, watch the grid fill.
    let op = driver.session("operator");
    op.goto(&operator.url);
    op.wait_for(
        "the search box",
        "return document.querySelector('#search');",
    );
    let favourite = op.wait_for(
        "the favourite with its last result",
        "const f = document.querySelector('#favourites .favourite'); return f && f.textContent.includes('last run: answered') && f.textContent;",
    );
    assert!(
        favourite
            .as_str()
            .expect("text")
            .contains("Operating systems"),
        "{favourite}"
    );
    op.type_into("#search", "machines with chrome");
    let first = op.wait_for(
        "suggestions",
        "const b = document.querySelector('#suggestions .suggestion button'); return b && b.textContent;",
    );
    let question = first.as_str().expect("suggestion").to_string();
    assert!(question.contains("chrome"), "{question}");
    let (w, h) = op.screenshot(&shots().join("home.png"));
    assert_eq!((w, h), (1280, 800), "screenshots are 1280×800");
    op.click("#suggestions .suggestion button");
    let n = ENDPOINTS;
    op.wait_for(
        "every machine to answer",
        &format!("return document.querySelector('#progress')?.textContent.startsWith('answered {n} of {n}');"),
    );
    let grid = op.exec(
        "return [...document.querySelectorAll('#grid tr.row')].map(tr => ({ cells: [...tr.querySelectorAll('td.cell')].map(td => td.textContent), count: Number(tr.querySelector('td.count').textContent) }));",
        json!([]),
    );
    let grid = rows_of(&json!({ "rows": grid }));
    let id: u64 = op
        .exec("return location.hash.split('/')[2];", json!([]))
        .as_str()
        .expect("question id")
        .parse()
        .expect("id");

    // The CLI asks the same question and gets the same counts.
    let cli = run(&[
        "ask",
        &question,
        "--server",
        &server,
        "--cert-dir",
        &format!("{ops_s}/operator"),
        "--json",
    ]);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli: Value = serde_json::from_str(&stdout(&cli)).expect("ask --json");
    assert_eq!(cli["answered"], n as u64);
    let cli_rows = rows_of(&cli);
    assert!(!cli_rows.is_empty(), "some simulated machines have chrome");
    assert_eq!(sorted(grid.clone()), sorted(cli_rows.clone()), "grid = CLI");

    // A row expands to the machines that gave it.
    op.click("#grid tr.row");
    let machines = op.wait_for(
        "the first row's machines",
        "const l = document.querySelectorAll('#grid tr.expansion li.machine'); return l.length && [...l].map(li => li.textContent);",
    );
    let first_row = &op.exec(
        "return [...document.querySelectorAll('#grid tr.row')[0].querySelectorAll('td.cell')].map(td => td.textContent);",
        json!([]),
    );
    let expected = grid
        .iter()
        .find(|(cells, _)| json!(cells) == *first_row)
        .expect("first row")
        .1;
    assert_eq!(
        machines.as_array().expect("machines").len() as u64,
        expected,
        "the row's count of machines is listed"
    );
    op.screenshot(&shots().join("question.png"));
    // They are exactly the machines the CLI's per-machine export gives for that row.
    let jsonl = dir.path().join("events.jsonl");
    let out = run(&[
        "export",
        &id.to_string(),
        "--to",
        &format!("jsonl:{}", jsonl.display()),
        "--server",
        &server,
        "--cert-dir",
        &format!("{ops_s}/operator"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut from_cli: Vec<String> = std::fs::read_to_string(&jsonl)
        .expect("events")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("event"))
        .filter(|e| {
            let cells: Vec<Value> = e["columns"]
                .as_object()
                .expect("columns")
                .values()
                .cloned()
                .collect();
            json!(cells) == *first_row
        })
        .map(|e| e["host"].as_str().expect("host").to_string())
        .collect();
    from_cli.sort();
    let mut listed: Vec<String> = machines
        .as_array()
        .expect("machines")
        .iter()
        .map(|m| m.as_str().expect("host").to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, from_cli, "the row's machines");

    // The grid's CSV export: a header, then one line per row with its count and share.
    let (status, csv) = get(
        &format!("{}/api/questions/{id}/export.csv", operator.base),
        Some(&operator.token),
    );
    assert_eq!(status, 200);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("Computer Name,Count,Share"));
    let mut from_csv: Vec<(Vec<String>, u64)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (vec![f[0].to_string()], f[1].parse().expect("count"))
        })
        .collect();
    from_csv.sort();
    assert_eq!(from_csv, sorted(grid.clone()));

    // Rings: every ring, each with its two leaders (forward and backward ends).
    op.goto(&format!("{}#/rings", operator.url));
    let rings = op.wait_for(
        "three rings",
        "const r = document.querySelectorAll('#rings .ring[data-ring]'); return r.length === 3 && [...r].map(x => [...x.querySelectorAll('td.leads')].map(td => td.textContent).filter(t => t));",
    );
    for leads in rings.as_array().expect("rings") {
        let mut l: Vec<&str> = leads
            .as_array()
            .expect("leads")
            .iter()
            .map(|v| v.as_str().expect("text"))
            .collect();
        l.sort();
        assert_eq!(l, ["backward", "forward"], "two leaders per ring: {rings}");
    }
    assert_eq!(op.count("#rings svg.ring-picture .leader-dot"), 6);
    op.screenshot(&shots().join("rings.png"));

    // Actions: select two rows, deploy an uninstall (it needs approval), an admin approves
    // it in another browser, the statuses reach completed.
    op.goto(&format!("{}#/q/{id}", operator.url));
    op.wait_for(
        "the grid again",
        "return document.querySelectorAll('#grid tr.row').length >= 2;",
    );
    op.click("#grid tr.row:nth-of-type(1) input.select");
    op.click("#grid tr.row:nth-of-type(2) input.select");
    op.click("#deploy-selected");
    op.wait_for(
        "the deploy form",
        "return document.querySelectorAll('#package option').length > 0 && document.querySelector('input[name=target][value=selected]');",
    );
    op.exec(
        "document.querySelector('#package').value = 'uninstall';",
        json!([]),
    );
    op.type_into("#params", "google-chrome-stable");
    op.click("#deploy-submit");
    let result = op.wait_for(
        "the action issued",
        "const r = document.querySelector('#deploy-result'); return r && r.dataset.id && [r.dataset.id, r.textContent];",
    );
    let action: u64 = result[0].as_str().expect("id").parse().expect("id");
    assert!(
        result[1]
            .as_str()
            .expect("text")
            .contains("awaiting approval"),
        "{result}"
    );

    let ad = driver.session("admin");
    ad.goto(&format!("{}#/actions", admin.url));
    ad.wait_for(
        "the approval queue",
        &format!(
            "return document.querySelector('.approval[data-id=\"{action}\"] button.approve');"
        ),
    );
    ad.screenshot(&shots().join("approval.png"));
    ad.click(&format!(".approval[data-id=\"{action}\"] button.approve"));
    let done = format!(
        "const r = document.querySelector('tr.action[data-id=\"{action}\"]'); return r && r.querySelector('td.done') && [r.querySelector('td.targeted').textContent, r.querySelector('td.completed').textContent, r.querySelector('td.failed').textContent];"
    );
    let counts = ad.wait_for("the action to complete (admin's page)", &done);
    assert_eq!(counts, json!(["2", "2", "0"]), "both machines completed");
    let counts = op.wait_for("the action to complete (operator's page)", &done);
    assert_eq!(counts, json!(["2", "2", "0"]));
    // A click on the action lists its machines with their statuses.
    ad.click(&format!("tr.action[data-id=\"{action}\"]"));
    let statuses = ad.wait_for(
        "the action's machines",
        "const l = [...document.querySelectorAll('li.action-machine')]; return l.length && l.map(li => li.dataset.status);",
    );
    let statuses = statuses.as_array().expect("statuses");
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| s.as_str().expect("status").starts_with("completed")),
        "{statuses:?}"
    );
    ad.screenshot(&shots().join("actions.png"));

    // The two machines no longer have chrome: the same question now finds two fewer.
    let again = run(&[
        "ask",
        &question,
        "--server",
        &server,
        "--cert-dir",
        &format!("{ops_s}/operator"),
        "--json",
    ]);
    let again: Value = serde_json::from_str(&stdout(&again)).expect("ask --json");
    assert_eq!(
        again["matched"].as_u64().expect("matched"),
        cli["matched"].as_u64().expect("matched") - 2
    );

    // The audit log, filtered to the approval.
    ad.goto(&format!("{}#/audit", admin.url));
    ad.wait_for(
        "the audit log",
        "return document.querySelectorAll('#audit tr.entry').length > 0;",
    );
    ad.type_into("#audit-filter", "approve");
    let entries = ad.wait_for(
        "the filtered audit log",
        "const e = [...document.querySelectorAll('#audit tr.entry')]; return e.length && e.every(tr => tr.textContent.toLowerCase().includes('approve')) && e.length;",
    );
    assert!(entries.as_u64().expect("n") >= 1);
    ad.screenshot(&shots().join("audit.png"));

    // A viewer's page offers no deploy form or approval buttons, and a deploy request
    // forged from that page is refused by the server.
    let vw = driver.session("viewer");
    vw.goto(&format!("{}#/actions", viewer.url));
    vw.wait_for(
        "the viewer's actions page",
        &format!("return document.querySelector('tr.action[data-id=\"{action}\"]');"),
    );
    assert_eq!(vw.count("#deploy"), 0, "no deploy form for a viewer");
    assert_eq!(vw.count("button.approve"), 0);
    let forged = forge_deploy(&vw);
    assert_eq!(
        forged,
        json!([403, "this needs the operator role; you are operator/viewer"])
    );
    drop(sim);
}

/// A deploy request sent from the viewer's page with its token, as a script in that page
/// could: (status, error).
fn forge_deploy(s: &Session) -> Value {
    s.wait_for(
        "the forged request's answer",
        r#"if (!window.__forged) {
  window.__forged = 'pending';
  const token = new URLSearchParams(location.search).get('token');
  fetch('/api/actions', { method: 'POST', headers: { 'x-rollcall-token': token, 'content-type': 'application/json' },
    body: JSON.stringify({ package: 'quarantine', all: true }) })
    .then(r => r.json().then(j => { window.__forged = [r.status, j.error]; document.body.dataset.forged = '1'; }));
}
return Array.isArray(window.__forged) && window.__forged;"#,
    )
}

/// Endpoints in the big-fleet grid test: `ROLLCALL_CONSOLE_FLEET` (100000 for the figures
/// in bench/RESULTS.md), 2,000 by default.
fn big_fleet() -> usize {
    std::env::var("ROLLCALL_CONSOLE_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn a_big_fleets_grid_gets_coalesced_updates_and_draws_a_bounded_number_of_rows() {
    let n = big_fleet();
    let dir = tempfile::tempdir().expect("tmp");
    // Large-fleet timing (registration and probes paced for one process of them).
    let (sim, ops_s) = served_sim(&dir, n, 100, "scale");
    // A fleet of 100,000 takes a minute or two to come up on 2 cores.
    let patience = std::time::Duration::from_secs(60 + n as u64 / 1000);
    let server = sim.serving_address_within(patience);
    let operator = console(&server, &format!("{ops_s}/operator"));
    let driver = match Driver::start() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let s = driver.session("big");
    s.set_wait(patience);
    s.goto(&operator.url);
    s.wait_for(
        "the search box",
        "return document.querySelector('#search');",
    );
    // One row per machine: the largest grid a question can make.
    s.type_into("#search", "Get Computer Name from all machines\n");
    let opened = std::time::Instant::now();
    s.wait_for(
        "every machine to answer",
        &format!("return document.querySelector('#progress')?.textContent.startsWith('answered {n} of {n}');"),
    );
    let took = opened.elapsed();
    let updates: u64 = s
        .exec(
            "return document.querySelector('#progress').dataset.updates;",
            json!([]),
        )
        .as_str()
        .expect("updates")
        .parse()
        .expect("number");
    // At most one update per 250 ms poll (and the first at once), however many answers.
    let bound = 2 + (took.as_millis() / 250) as u64;
    assert!(
        updates <= bound,
        "{updates} updates in {took:?} (at most {bound})"
    );
    let note = s
        .exec(
            "return document.querySelector('#row-note').textContent;",
            json!([]),
        )
        .as_str()
        .expect("note")
        .to_string();
    assert_eq!(s.count("#grid tr.row"), 500.min(n), "{note}");
    if n > 500 {
        assert_eq!(
            note,
            format!("showing 500 of {n} rows: filter or sort to see others")
        );
    }
    // Sorting and filtering a whole fleet's rows stays within one frame's work or so; the
    // figures are printed for bench/RESULTS.md, not asserted.
    let sort_ms = s
        .exec(
            "const t = performance.now(); document.querySelector('#grid th[data-col=count]').click(); return performance.now() - t;",
            json!([]),
        )
        .as_f64()
        .expect("ms");
    let filter_ms = s
        .exec(
            "const f = document.querySelector('#row-filter'); f.value = '999'; const t = performance.now(); f.dispatchEvent(new Event('input')); return performance.now() - t;",
            json!([]),
        )
        .as_f64()
        .expect("ms");
    let filtered = s.count("#grid tr.row");
    assert!(filtered > 0 && filtered <= 500, "{filtered} rows match 999");
    println!(
        "console grid, {n} endpoints: answered {n} of {n} on the page {took:?} after asking; {updates} updates; sort {sort_ms:.1} ms, filter {filter_ms:.1} ms"
    );
    drop(sim);
}
