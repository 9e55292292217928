//! `rollcall sim`: a server and N endpoints in one process — the production actors, with
//! simulated hosts as sensors — on the in-memory transport or real QUIC over loopback; and
//! `rollcall bench scale`, which runs a fixed matrix of sims and writes the results table.

use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::fleet::{Fleet, FleetConfig};
pub use crate::fleet::{SIM_QUESTION, SimTransport, Topology, endpoint_ip};

/// `rollcall sim` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// How many endpoints.
    #[arg(long, default_value_t = 1000)]
    pub endpoints: usize,
    /// Endpoints per subnet, i.e. per ring (at most 254).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=254))]
    pub ring_size: u16,
    /// The transport.
    #[arg(long, value_enum, default_value_t = SimTransport::Mem)]
    pub transport: SimTransport,
    /// Rings, or the hub-and-spoke baseline.
    #[arg(long, value_enum, default_value_t = Topology::Ring)]
    pub topology: Topology,
    /// One-way latency of every in-memory link, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub hop_latency_ms: u64,
    /// Seed of the simulated host profiles.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many questions to ask, one after another.
    #[arg(long, default_value_t = 5)]
    pub questions: usize,
    /// Then how many actions, one after another: each finds the machines with a package,
    /// uninstalls it there (approved by a second admin) and asks again (none should have
    /// it).
    #[arg(long, default_value_t = 0)]
    pub actions: usize,
    /// Then the morning storm: add a package of this many megabytes (random bytes, so no
    /// two chunks alike), target every machine, and measure until each has the file
    /// verified and ran its command.
    #[arg(long, value_name = "MB")]
    pub package_mb: Option<f64>,
    /// With --package-mb: every host's uplink and downlink rate, in Mbit/s.
    #[arg(long, default_value_t = 1000.0, value_name = "MBPS")]
    pub host_mbps: f64,
    /// With --package-mb: the server's link rate, in Mbit/s.
    #[arg(long, default_value_t = 100.0, value_name = "MBPS")]
    pub server_mbps: f64,
    /// Then this many rounds of three questions, 1.5 s apart, each first in turn: the live
    /// question, a live one with a filter (`… with Installed Applications contains
    /// "redis-server"`) and a history one (`… with Process Hash Last Seen[MINER] < 90
    /// days`, the simulated miner's hash), each timed to 100% of answers; the history
    /// question's matches are checked against the simulated histories.
    #[arg(long, default_value_t = 0)]
    pub history_questions: usize,
    /// Run on virtual time (one thread, tokio's clock paused and advanced whenever every
    /// endpoint waits): what is measured is the protocol over the simulated links, not this
    /// machine's cores. In-memory transport only; not with --serve.
    #[arg(long, conflicts_with = "serve")]
    pub virtual_time: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// After measuring, keep the fleet running and serve operators (the question desk, ring
    /// admin and chaos commands) over QUIC at this address, e.g. 127.0.0.1:4800, until
    /// Ctrl-C. Admin credentials for `rollcall chaos`, `ask` and `ring show` are written to
    /// `--cert-dir`.
    #[arg(long, value_name = "ADDR", requires = "cert_dir")]
    pub serve: Option<std::net::SocketAddr>,
    /// Where `--serve` writes the admin operator's credentials (and an operator's and a
    /// viewer's in its `operator` and `viewer` folders, to try the roles).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<std::path::PathBuf>,
    /// With `--serve`: serve the fleet server's metrics (OpenMetrics text), /healthz and
    /// /readyz over plain HTTP at this address, as `rollcall server --metrics-listen` does.
    #[arg(long, value_name = "ADDR", requires = "serve")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Ring timing: `scale` probes every 2 s and registers every 30–90 s, both stretched in proportion beyond 10,000 endpoints so one process's background load stays that of 10,000 (large fleets);
    /// `lan` probes every 400 ms, routes past a silent hop after 200 ms and registers every
    /// 5–10 s (fault scenarios). Default: `lan` with `--serve`, else `scale`.
    #[arg(long, value_enum)]
    pub timing: Option<Timing>,
}

/// Ring timing presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Timing {
    /// Slow probing and registration, for very large fleets.
    Scale,
    /// LAN-like timing, for fault scenarios.
    Lan,
}

/// What a sim measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimReport {
    /// Endpoints.
    pub endpoints: usize,
    /// Ring size.
    pub ring_size: u16,
    /// Transport.
    pub transport: SimTransport,
    /// Topology.
    pub topology: Topology,
    /// Seconds to start every endpoint.
    pub start_secs: f64,
    /// Seconds from the first start until every endpoint was registered and every chain had
    /// its leaders linked.
    pub registered_secs: f64,
    /// Rings formed.
    pub rings: usize,
    /// Every ring formed before the formation deadline (else questions went to the rings
    /// as they stood, and `gaps` says what was missing).
    pub formed: bool,
    /// What was still missing when questions began.
    pub gaps: crate::fleet::FormationGaps,
    /// Time to 100% of answers, per question, in milliseconds.
    pub answer_ms: Vec<f64>,
    /// Median of `answer_ms`.
    pub p50_ms: f64,
    /// 99th percentile of `answer_ms`.
    pub p99_ms: f64,
    /// Envelopes the server received per question (mean).
    pub server_msgs_in_per_question: f64,
    /// Envelopes the server sent per question (mean).
    pub server_msgs_out_per_question: f64,
    /// Bytes the server received and sent per question (mean).
    pub server_bytes_per_question: f64,
    /// Connections the server held at the end.
    pub server_connections: usize,
    /// Resident memory added per endpoint, in KiB.
    pub rss_kib_per_endpoint: f64,
    /// Every endpoint answered every question exactly once.
    pub all_answered: bool,
    /// How many endpoints had answered each question when the wait for it ended (all of
    /// them, or fewer when its two-minute wait ran out).
    #[serde(default)]
    pub answered: Vec<usize>,
    /// The merged rows of the last question: (operating system, version, count).
    pub last_rows: Vec<(String, String, u64)>,
    /// The actions, one after another.
    #[serde(default)]
    pub actions: Vec<ActionRun>,
    /// Median time from an action going out until every targeted machine was done, ms.
    #[serde(default)]
    pub action_p50_ms: f64,
    /// 99th percentile of the same.
    #[serde(default)]
    pub action_p99_ms: f64,
    /// Envelopes the server received and sent per action (mean; its status rounds
    /// included).
    #[serde(default)]
    pub server_msgs_per_action: f64,
    /// The package phase, if asked for.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageRun>,
    /// The history phase, if asked for.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryRun>,
}

/// History questions against live ones, alternated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRun {
    /// Time to 100% of answers of each live question, ms.
    pub history_live_ms: Vec<f64>,
    /// The same for each history question.
    pub history_ms: Vec<f64>,
    /// The same for a live question with a filter (`… with Installed Applications contains
    /// "redis-server"`): every machine evaluates a filter, as for the history question.
    pub history_live_filtered_ms: Vec<f64>,
    /// Its median and 99th percentile.
    pub history_live_filtered_p50_ms: f64,
    /// See `history_live_filtered_p50_ms`.
    pub history_live_filtered_p99_ms: f64,
    /// Medians and 99th percentiles.
    pub history_live_p50_ms: f64,
    /// See `history_live_p50_ms`.
    pub history_p50_ms: f64,
    /// See `history_live_p50_ms`.
    pub history_live_p99_ms: f64,
    /// See `history_live_p50_ms`.
    pub history_p99_ms: f64,
    /// Machines the history question matched (the last one).
    pub history_matched: u64,
    /// Machines whose simulated history holds the miner.
    pub history_truth: u64,
}

/// The morning storm: one package to every machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageRun {
    /// Its size.
    pub package_bytes: u64,
    /// Rings it went to.
    pub package_rings: usize,
    /// Chunk bytes that left the server.
    pub package_server_egress_bytes: u64,
    /// Egress over size × rings.
    pub package_egress_ratio: f64,
    /// Machines the server sent chunks to (each ring's leaders, and their successors if a
    /// leader changed).
    pub package_server_machines: usize,
    /// Chunks the server sent again to a machine it had sent them to.
    pub package_server_repeats: u64,
    /// Machines with the whole file verified that ran the command.
    pub package_complete: usize,
    /// Median time from the action going out until a machine had run it, ms.
    pub package_p50_ms: f64,
    /// 99th percentile of the same.
    pub package_p99_ms: f64,
    /// Slowest machine.
    pub package_max_ms: f64,
    /// The lower bound for the simulated rates: max(R·S / server rate, S / host rate) +
    /// M · 64 KiB / host rate.
    pub package_bound_ms: f64,
    /// p99 over the bound.
    pub package_p99_over_bound: f64,
    /// Link rates, Mbit/s.
    pub host_mbps: f64,
    /// See `host_mbps`.
    pub server_mbps: f64,
}

/// One measured action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRun {
    /// The package uninstalled.
    pub package: String,
    /// Machines that had it (targeted).
    pub targeted: u64,
    /// Machines where the uninstall completed.
    pub completed: u64,
    /// Milliseconds from the approval until every targeted machine was done.
    pub done_ms: f64,
    /// Milliseconds from the approval until its delivery had reached every ring.
    #[serde(default)]
    pub delivered_ms: f64,
    /// Envelopes the server received and sent meanwhile.
    pub server_msgs: u64,
    /// Machines that still had the package when asked again.
    pub matched_after: u64,
}

/// Packages the sim's actions uninstall, in turn.
const ACTION_PACKAGES: &[&str] = &[
    "vim",
    "openssh-server",
    "nginx",
    "google-chrome-stable",
    "postgresql",
    "redis-server",
    "curl",
    "python3",
];

async fn measure_actions(a: &SimArgs, fleet: &Fleet) -> Result<Vec<ActionRun>> {
    use rollcall_actors::action::server::ActRequest;
    let mut runs = Vec::new();
    for k in 0..a.actions {
        let package = ACTION_PACKAGES[k % ACTION_PACKAGES.len()];
        let filter = format!("Installed Applications is \"{package}\"");
        let id = fleet
            .act(ActRequest::where_("uninstall", &[package], filter.clone()))
            .await?;
        let before = fleet.server().stats();
        let t = Instant::now();
        fleet.approve(id).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut delivered_ms = 0.0;
        loop {
            // Looked at before "done", which reads the answers of a round that has ended.
            if delivered_ms == 0.0
                && let Some(q) = fleet.desk().actions().delivery(id)
                && fleet.rings().is_open(q).is_some_and(|(fanned, _)| fanned)
            {
                delivered_ms = t.elapsed().as_secs_f64() * 1000.0;
            }
            if fleet.desk().actions().is_done(id) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done_ms = t.elapsed().as_secs_f64() * 1000.0;
        let report = fleet.action(id).context("action vanished")?;
        let after = fleet.server().stats();
        let again = fleet
            .ask(
                &format!("Get Computer Name from all machines with {filter}"),
                Duration::from_secs(600),
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while fleet.rings().answered(again).unwrap_or(0) < a.endpoints && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let matched_after = fleet.progress(again).map_or(u64::MAX, |p| p.matched);
        runs.push(ActionRun {
            package: package.into(),
            targeted: report.targeted,
            completed: report.count("completed"),
            done_ms,
            delivered_ms,
            server_msgs: (after.envelopes_received - before.envelopes_received)
                + (after.envelopes_sent - before.envelopes_sent),
            matched_after,
        });
    }
    Ok(runs)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// How long a sim waits for every ring to form before it asks anyway.
const FORMATION_DEADLINE: Duration = Duration::from_secs(600);

/// Runs one sim and stops its fleet.
pub async fn run(a: &SimArgs) -> Result<SimReport> {
    let (mut fleet, started) = start(a).await?;
    let report = measure(a, &fleet, started).await;
    fleet.shutdown().await;
    report
}

/// Serves operators at `addr` in front of `fleet` until `stop` resolves: the question desk,
/// ring admin and chaos commands, over QUIC with mutual TLS. Writes an admin operator's
/// credentials to `cert_dir`, and an operator's and a viewer's to its `operator` and
/// `viewer` folders.
pub async fn serve(
    mut fleet: Fleet,
    addr: std::net::SocketAddr,
    cert_dir: &std::path::Path,
    metrics: Option<std::net::SocketAddr>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use rollcall_runtime::identity::{Ca, NodeSecret, PeerRole, Validity};
    use rollcall_runtime::node::{Node, NodeOptions};
    use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};
    let ca = match fleet.ca() {
        Some(ca) => ca.clone(),
        None => std::sync::Arc::new(Ca::generate("rollcall sim CA")?),
    };
    let front_creds = ca.issue(PeerRole::Server, Some("sim-front"), Validity::default())?;
    let admin = ca.issue(
        PeerRole::Operator(rollcall_runtime::OperatorRole::Admin),
        Some("sim-admin"),
        Validity::default(),
    )?;
    admin
        .save(cert_dir)
        .with_context(|| format!("writing credentials to {}", cert_dir.display()))?;
    // An operator's and a viewer's beside it, to try what each role may do (the console).
    for (sub, role) in [
        ("operator", rollcall_runtime::OperatorRole::Operator),
        ("viewer", rollcall_runtime::OperatorRole::Viewer),
    ] {
        let dir = cert_dir.join(sub);
        ca.issue(
            PeerRole::Operator(role),
            Some(&format!("sim-{sub}")),
            Validity::default(),
        )?
        .save(&dir)
        .with_context(|| format!("writing credentials to {}", dir.display()))?;
    }
    let t = QuicTransport::bind(
        addr,
        &front_creds,
        &NodeSecret::generate(),
        QuicOptions::default(),
    )
    .with_context(|| format!("listening on {addr}"))?;
    // Scenarios run for minutes: let operators' calls wait for them.
    let front = Node::start(
        t,
        NodeOptions {
            serve_timeout: Duration::from_secs(3600),
            ..NodeOptions::default()
        },
    )
    .await?;
    let listen = front.local_addr();
    fleet.add_front(front.clone());
    let fleet = std::sync::Arc::new(tokio::sync::Mutex::new(fleet));
    crate::chaos::ChaosControl::new(fleet.clone()).install(&front);
    if let Some(m) = metrics {
        let m = crate::metrics::MetricsListener::serve(m).await?;
        m.attach(
            &front,
            std::sync::Arc::new(|| Box::pin(async { Ok::<(), String>(()) })),
        );
        println!("metrics on http://{}/metrics", m.addr());
    }
    println!("serving operators at {listen}");
    eprintln!(
        "admin credentials in {dir} (an operator's in {dir}/operator, a viewer's in {dir}/viewer)\n  e.g. rollcall chaos --server {listen} --cert-dir {dir} --scenario neighbour-killed\n       rollcall ring show --server {listen} --cert-dir {dir}\nCtrl-C stops.",
        dir = cert_dir.display()
    );
    stop.await;
    front.shutdown_and_wait(Duration::from_millis(500)).await;
    fleet.lock().await.shutdown().await;
    Ok(())
}

/// When and at what memory a sim's fleet started.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    at: Instant,
    rss_kib: u64,
    start_secs: f64,
}

/// Starts the fleet a sim describes, with a progress line on stderr unless `--json`.
pub async fn start(a: &SimArgs) -> Result<(Fleet, Started)> {
    let (at, rss_kib) = (Instant::now(), rss_kib());
    if a.endpoints == 0 {
        bail!("--endpoints must be at least 1");
    }
    let timing = a.timing.unwrap_or(if a.serve.is_some() {
        Timing::Lan
    } else {
        Timing::Scale
    });
    let mut cfg = match timing {
        Timing::Scale => FleetConfig::sim(a.endpoints, a.ring_size, a.transport, a.seed),
        Timing::Lan => FleetConfig::chaos(a.endpoints, a.ring_size, a.transport, a.seed),
    };
    cfg.topology = a.topology;
    cfg.hop_latency = Duration::from_millis(a.hop_latency_ms);
    // A served fleet, where an operator's questions and chaos meet packages at once: in real
    // time, package work yields the cores to questions. (Not on virtual time, where a second
    // runtime would run on the wall clock; not for the measuring runs, whose figures are the
    // transfer's and the questions' own, each alone.)
    if !a.virtual_time && a.serve.is_some() {
        cfg.patch.background = crate::background::handle();
    }
    let progress_every = (a.endpoints / 20).max(1);
    let quiet = a.json;
    let fleet = Fleet::start(cfg, |n| {
        if !quiet && (n % progress_every == 0 || n == a.endpoints) {
            eprint!("\rstarting endpoints: {n} of {}", a.endpoints);
        }
    })
    .await?;
    if !quiet {
        eprintln!();
    }
    let start_secs = at.elapsed().as_secs_f64();
    Ok((
        fleet,
        Started {
            at,
            rss_kib,
            start_secs,
        },
    ))
}

/// Waits for the fleet to register and link, then asks the sim's questions and measures.
pub async fn measure(a: &SimArgs, fleet: &Fleet, started: Started) -> Result<SimReport> {
    let (t0, rss_before, start_secs) = (started.at, started.rss_kib, started.start_secs);
    let mut said = Instant::now();
    let (report, formed) = loop {
        // A server buried in work (hundreds of thousands of endpoints on two cores) can take
        // minutes to report: say so instead of going quiet.
        let r = match tokio::time::timeout(Duration::from_secs(10), fleet.report()).await {
            Ok(r) => r,
            Err(_) => {
                if !a.json {
                    eprintln!(
                        "forming ({:.0} s): the server is too busy to report within 10 s",
                        t0.elapsed().as_secs_f64()
                    );
                }
                if t0.elapsed() > FORMATION_DEADLINE {
                    if !a.json {
                        eprintln!("not formed after {FORMATION_DEADLINE:?}; asking anyway");
                    }
                    break (fleet.report().await, false);
                }
                continue;
            }
        };
        if fleet.one_chain_each(&r) {
            break (r, true);
        }
        if t0.elapsed() > FORMATION_DEADLINE {
            if !a.json {
                eprintln!("not formed after {FORMATION_DEADLINE:?}; asking anyway");
            }
            break (r, false);
        }
        if !a.json && said.elapsed() >= Duration::from_secs(10) {
            said = Instant::now();
            eprintln!(
                "forming ({:.0} s): {}",
                t0.elapsed().as_secs_f64(),
                fleet.formation_gaps(&r)
            );
        }
        // A full report walks every member in the server's shards: at 100,000 endpoints,
        // polling it often would slow the registrations it waits for.
        let every = Duration::from_micros(10 * a.endpoints as u64);
        tokio::time::sleep(every.max(Duration::from_millis(200))).await;
    };
    let registered_secs = t0.elapsed().as_secs_f64();
    let gaps = fleet.formation_gaps(&report);
    let rss_after = rss_kib();
    // Every endpoint registers a second time within a few seconds of its first: questions
    // asked while the last of those arrive would count them among the server's messages
    // per question. Wait them out (registration is paced, so the last endpoints' first
    // registrations come about when the last endpoint started).
    if formed {
        let burst_over = t0
            + Duration::from_secs_f64(start_secs)
            + rollcall_cluster::member::FIRST_REREGISTRATION_WITHIN
            + Duration::from_secs(1);
        tokio::time::sleep_until(burst_over).await;
    }

    // Questions, one after another.
    let mut answer_ms = Vec::new();
    let (mut msgs_in, mut msgs_out, mut bytes) = (0u64, 0u64, 0u64);
    let mut all_answered = true;
    let mut answered = Vec::new();
    let mut last_rows = Vec::new();
    for _ in 0..a.questions {
        let before = fleet.server().stats();
        let t = Instant::now();
        let id = fleet.ask(SIM_QUESTION, Duration::from_secs(600)).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let n = fleet.rings().answered(id).context("question vanished")?;
            if n >= a.endpoints || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        answer_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let p = fleet.progress(id).context("question vanished")?;
        let after = fleet.server().stats();
        msgs_in += after.envelopes_received - before.envelopes_received;
        msgs_out += after.envelopes_sent - before.envelopes_sent;
        bytes +=
            (after.bytes_received - before.bytes_received) + (after.bytes_sent - before.bytes_sent);
        let counted: u64 = p.rows.iter().map(|r| r.count).sum();
        all_answered &= p.answered == a.endpoints && counted == a.endpoints as u64;
        answered.push(p.answered);
        last_rows = p
            .rows
            .iter()
            .map(|r| (r.cells[0].clone(), r.cells[1].clone(), r.count))
            .collect();
    }
    let history = if a.history_questions > 0 {
        Some(measure_history(a, fleet).await?)
    } else {
        None
    };
    let actions = measure_actions(a, fleet).await?;
    let package = match a.package_mb {
        Some(mb) => Some(measure_package(a, fleet, mb, report.rings.len()).await?),
        None => None,
    };
    let mut done: Vec<f64> = actions.iter().map(|r| r.done_ms).collect();
    done.sort_by(f64::total_cmp);
    let server_msgs_per_action =
        actions.iter().map(|r| r.server_msgs as f64).sum::<f64>() / actions.len().max(1) as f64;
    let mut sorted = answer_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let q = a.questions.max(1) as f64;
    let server_connections = fleet.server().connected_peers().len();
    Ok(SimReport {
        endpoints: a.endpoints,
        ring_size: a.ring_size,
        transport: a.transport,
        topology: a.topology,
        start_secs,
        registered_secs,
        rings: report.rings.len(),
        formed,
        gaps,
        p50_ms: percentile(&sorted, 50.0),
        p99_ms: percentile(&sorted, 99.0),
        answer_ms,
        server_msgs_in_per_question: msgs_in as f64 / q,
        server_msgs_out_per_question: msgs_out as f64 / q,
        server_bytes_per_question: bytes as f64 / q,
        server_connections,
        rss_kib_per_endpoint: rss_after.saturating_sub(rss_before) as f64 / a.endpoints as f64,
        all_answered,
        answered,
        last_rows,
        action_p50_ms: percentile(&done, 50.0),
        action_p99_ms: percentile(&done, 99.0),
        server_msgs_per_action,
        actions,
        package,
        history,
    })
}

/// Asks `text` and waits for every endpoint's answer (at most two minutes): the time, and
/// where it stood.
async fn timed(
    fleet: &Fleet,
    text: &str,
    n: usize,
) -> Result<(f64, rollcall_cluster::questions::Progress)> {
    let t = Instant::now();
    let id = fleet.ask(text, Duration::from_secs(600)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = fleet.rings().answered(id).context("question vanished")?;
        if got >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    Ok((ms, fleet.progress(id).context("question vanished")?))
}

/// History questions against live ones, alternated, and the history question's matches
/// against the simulated histories.
async fn measure_history(a: &SimArgs, fleet: &Fleet) -> Result<HistoryRun> {
    use rollcall_actors::history::sim::{miner_sha256, runs};
    let history_q = format!(
        "Get Operating System and OS Version from all machines with Process Hash Last Seen[{}] < 90 days",
        miner_sha256()
    );
    let truth = fleet
        .endpoints
        .iter()
        .filter(|e| {
            runs(&e.host.profile())
                .iter()
                .any(|r| &*r.sha256 == miner_sha256())
        })
        .count() as u64;
    let (mut live_ms, mut history_ms, mut matched) = (Vec::new(), Vec::new(), 0);
    // Alternated, each first in turn, with the fleet left to settle between questions
    // (the server's once-a-second bookkeeping of the question before — results saved,
    // values learned for the search box — is not charged to the next).
    let settle = Duration::from_millis(1500);
    let filtered_q = "Get Operating System and OS Version from all machines with Installed Applications contains \"redis-server\"";
    let mut filtered_ms = Vec::new();
    for i in 0..a.history_questions {
        let mut order = [0, 1, 2];
        order.rotate_left(i % 3);
        for which in order {
            tokio::time::sleep(settle).await;
            match which {
                0 => {
                    let (ms, p) = timed(fleet, &history_q, a.endpoints).await?;
                    history_ms.push(ms);
                    matched = p.matched;
                }
                1 => live_ms.push(timed(fleet, SIM_QUESTION, a.endpoints).await?.0),
                _ => filtered_ms.push(timed(fleet, filtered_q, a.endpoints).await?.0),
            }
        }
    }
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (l, h, f) = (sorted(&live_ms), sorted(&history_ms), sorted(&filtered_ms));
    Ok(HistoryRun {
        history_live_p50_ms: percentile(&l, 50.0),
        history_p50_ms: percentile(&h, 50.0),
        history_live_p99_ms: percentile(&l, 99.0),
        history_p99_ms: percentile(&h, 99.0),
        history_live_ms: live_ms,
        history_ms,
        history_live_filtered_p50_ms: percentile(&f, 50.0),
        history_live_filtered_p99_ms: percentile(&f, 99.0),
        history_live_filtered_ms: filtered_ms,
        history_matched: matched,
        history_truth: truth,
    })
}

/// `len` pseudo-random bytes (splitmix64): no two chunks alike.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The morning storm: a package of `mb` megabytes to every machine, over links of the
/// sim's rates; each machine's time is from the action going out until it ran the command
/// (its files fetched and verified first).
async fn measure_package(a: &SimArgs, fleet: &Fleet, mb: f64, rings: usize) -> Result<PackageRun> {
    let size = (mb * 1_000_000.0) as usize;
    let data = bytes::Bytes::from(random_bytes(size, a.seed));
    let m = fleet
        .add_package("storm", &[("storm.bin".to_string(), data)], "true")
        .await?;
    if a.transport == SimTransport::Mem {
        fleet.set_bandwidth(a.host_mbps, a.server_mbps);
    }
    // Rings of the hub-and-spoke baseline are each machine alone.
    let r = match a.topology {
        Topology::Ring => rings.max(1),
        Topology::Star => a.endpoints,
    };
    let host = a.host_mbps * 1_000_000.0 / 8.0;
    let server = a.server_mbps * 1_000_000.0 / 8.0;
    let s = size as f64;
    let m_ring = f64::from(a.ring_size).min(a.endpoints as f64);
    let bound_s = (r as f64 * s / server).max(s / host)
        + match a.topology {
            Topology::Ring => m_ring * rollcall_patchdist::CHUNK_SIZE as f64 / host,
            Topology::Star => 0.0,
        };
    if !a.json {
        eprintln!(
            "package: {} bytes to {} machines in {r} rings; lower bound {:.2} s",
            size, a.endpoints, bound_s
        );
    }
    let t = Instant::now();
    let id = fleet
        .act(rollcall_actors::action::server::ActRequest::all(
            "storm",
            &[],
        ))
        .await?;
    let mut done_ms: Vec<Option<f64>> = vec![None; a.endpoints];
    let deadline = t + Duration::from_secs_f64(bound_s * 10.0 + 120.0);
    let mut said = Instant::now();
    loop {
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        for (i, e) in fleet.endpoints.iter().enumerate() {
            if done_ms[i].is_none() && e.executor.runs_of(id) > 0 {
                done_ms[i] = Some(ms);
            }
        }
        let n = done_ms.iter().filter(|d| d.is_some()).count();
        if n == a.endpoints || Instant::now() > deadline {
            break;
        }
        if !a.json && said.elapsed() >= Duration::from_secs(5) {
            said = Instant::now();
            eprintln!(
                "package: {n} of {} machines done after {:.1} s",
                a.endpoints,
                t.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut times: Vec<f64> = done_ms.iter().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    let complete = times.len();
    // A machine that never finished counts as the deadline in the percentiles.
    let cut = deadline.duration_since(t).as_secs_f64() * 1000.0;
    let mut all = times.clone();
    all.resize(a.endpoints, cut);
    let e = fleet.egress(&m);
    let egress = e.bytes;
    let p99 = percentile(&all, 99.0);
    Ok(PackageRun {
        package_bytes: size as u64,
        package_rings: r,
        package_server_egress_bytes: egress,
        package_egress_ratio: egress as f64 / (s * r as f64),
        package_server_machines: e.by_machine.len(),
        package_server_repeats: e.repeats,
        package_complete: complete,
        package_p50_ms: percentile(&all, 50.0),
        package_p99_ms: p99,
        package_max_ms: all.last().copied().unwrap_or(0.0),
        package_bound_ms: bound_s * 1000.0,
        package_p99_over_bound: p99 / (bound_s * 1000.0),
        host_mbps: a.host_mbps,
        server_mbps: a.server_mbps,
    })
}

/// Prints a report as a table.
pub fn print(r: &SimReport) {
    println!(
        "endpoints            {} ({:?}, {:?}, rings of {})",
        r.endpoints, r.transport, r.topology, r.ring_size
    );
    println!("started              {:.2} s", r.start_secs);
    if r.formed {
        println!(
            "registered, linked   {:.2} s ({} rings)",
            r.registered_secs, r.rings
        );
    } else {
        println!(
            "NOT FORMED after     {:.2} s: {}",
            r.registered_secs, r.gaps
        );
    }
    println!(
        "time to 100% answers p50 {:.1} ms, p99 {:.1} ms over {} questions",
        r.p50_ms,
        r.p99_ms,
        r.answer_ms.len()
    );
    println!(
        "server per question  {:.0} envelopes in, {:.0} out, {:.0} bytes",
        r.server_msgs_in_per_question, r.server_msgs_out_per_question, r.server_bytes_per_question
    );
    for x in &r.actions {
        println!(
            "action uninstall {:<22} {} targeted, {} completed in {:.1} ms (delivered in {:.1} ms), {} server envelopes; asked again: {} still have it",
            x.package,
            x.targeted,
            x.completed,
            x.done_ms,
            x.delivered_ms,
            x.server_msgs,
            x.matched_after
        );
    }
    if !r.actions.is_empty() {
        println!(
            "actions: every targeted machine done p50 {:.1} ms, p99 {:.1} ms; {:.0} server envelopes per action",
            r.action_p50_ms, r.action_p99_ms, r.server_msgs_per_action
        );
    }
    if let Some(p) = &r.package {
        println!(
            "package              {} bytes to {} rings: {} of {} machines verified and ran it; p50 {:.0} ms, p99 {:.0} ms, bound {:.0} ms (p99 {:.2} x bound)",
            p.package_bytes,
            p.package_rings,
            p.package_complete,
            r.endpoints,
            p.package_p50_ms,
            p.package_p99_ms,
            p.package_bound_ms,
            p.package_p99_over_bound
        );
        println!(
            "package egress       {} bytes from the server ({:.3} x size per ring) to {} machines, {} chunks sent again, at {} / {} Mbit/s host / server",
            p.package_server_egress_bytes,
            p.package_egress_ratio,
            p.package_server_machines,
            p.package_server_repeats,
            p.host_mbps,
            p.server_mbps
        );
    }
    if let Some(h) = &r.history {
        println!(
            "history questions    p50 {:.1} ms, p99 {:.1} ms; live questions beside them p50 {:.1} ms, p99 {:.1} ms, with a filter p50 {:.1} ms, p99 {:.1} ms (p50 ratio to the filtered {:.2}); matched {} of the {} machines whose history holds the miner",
            h.history_p50_ms,
            h.history_p99_ms,
            h.history_live_p50_ms,
            h.history_live_p99_ms,
            h.history_live_filtered_p50_ms,
            h.history_live_filtered_p99_ms,
            h.history_p50_ms / h.history_live_filtered_p50_ms.max(f64::MIN_POSITIVE),
            h.history_matched,
            h.history_truth
        );
    }
    println!("server connections   {}", r.server_connections);
    println!(
        "memory               {:.1} KiB RSS per endpoint",
        r.rss_kib_per_endpoint
    );
    println!(
        "every endpoint answered every question exactly once: {}",
        r.all_answered
    );
    if let Some(fewest) = r.answered.iter().min().filter(|&&n| n < r.endpoints) {
        println!(
            "fewest answers        {fewest} of {} (a question's wait ends after two minutes)",
            r.endpoints
        );
    }
}
