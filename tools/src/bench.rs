//! `rollcall bench scale`: runs the scale matrix as separate `rollcall sim` processes (so each
//! run's memory is its own) and writes a Markdown table with the machine and the command;
//! `rollcall bench recorder`: the history recorder's cost on this machine.

#[cfg(feature = "simulation")]
use std::path::Path;
#[cfg(feature = "simulation")]
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
#[cfg(feature = "simulation")]
use anyhow::{Context, bail};

#[cfg(feature = "simulation")]
use crate::sim::SimReport;

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), {mem_gib:.1} GiB memory")
}

#[cfg(feature = "simulation")]
fn run_sim(args: &[String]) -> Result<SimReport> {
    let exe = std::env::current_exe().context("finding the rollcall binary")?;
    eprintln!("rollcall sim {}", args.join(" "));
    let out = Command::new(exe)
        .arg("sim")
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "error")
        .output()
        .context("running rollcall sim")?;
    if !out.status.success() {
        bail!(
            "rollcall sim {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the sim's report")
}

/// Runs the matrix and writes `out`.
#[cfg(feature = "simulation")]
pub fn scale(out: &Path, max_endpoints: usize, questions: usize) -> Result<()> {
    let q = questions.to_string();
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    let mut sizes = vec![1_000usize, 10_000];
    if max_endpoints > 10_000 {
        sizes.push(max_endpoints);
    }
    for n in sizes.iter().filter(|n| **n <= max_endpoints.max(1_000)) {
        for topology in ["ring", "star"] {
            runs.push((
                format!("{n} mem {topology}"),
                vec![
                    "--endpoints".into(),
                    n.to_string(),
                    "--ring-size".into(),
                    "100".into(),
                    "--transport".into(),
                    "mem".into(),
                    "--topology".into(),
                    topology.into(),
                    "--questions".into(),
                    q.clone(),
                ],
            ));
        }
    }
    for topology in ["ring", "star"] {
        runs.push((
            format!("1000 quic {topology}"),
            vec![
                "--endpoints".into(),
                "1000".into(),
                "--ring-size".into(),
                "100".into(),
                "--transport".into(),
                "quic".into(),
                "--topology".into(),
                topology.into(),
                "--questions".into(),
                q.clone(),
            ],
        ));
    }
    let mut rows = Vec::new();
    for (label, args) in &runs {
        match run_sim(args) {
            Ok(r) => rows.push((label.clone(), args.join(" "), Ok(r))),
            Err(e) => rows.push((label.clone(), args.join(" "), Err(format!("{e:#}")))),
        }
    }
    let mut md = String::new();
    md += "# Scale benchmark\n\n";
    md += &format!("Machine: {}. Build: release.\n\n", machine());
    md += &format!(
        "Reproduce: `cargo run --release -p rollcall -- bench scale --max-endpoints {max_endpoints} --questions {questions}`\n\n"
    );
    md += "Each row is one `rollcall sim` process: a server and N endpoints with simulated hosts, the production actors, asked the same question `questions` times in a row. *Time to 100%* is from the ask to the last endpoint's answer merged at the server. *Server msgs/bytes* count envelopes the server received and sent during each question (mean). RSS is resident memory added per endpoint.\n\n";
    md += "| run | endpoints | transport | topology | registered (s) | p50 to 100% (ms) | p99 to 100% (ms) | server msgs in/q | server msgs out/q | server KiB/q | server conns | RSS KiB/endpoint | all answered once |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (label, _, r) in &rows {
        match r {
            Ok(r) => {
                md += &format!(
                    "| {label} | {} | {:?} | {:?} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} | {} | {:.1} | {} |\n",
                    r.endpoints,
                    r.transport,
                    r.topology,
                    r.registered_secs,
                    r.p50_ms,
                    r.p99_ms,
                    r.server_msgs_in_per_question,
                    r.server_msgs_out_per_question,
                    r.server_bytes_per_question / 1024.0,
                    r.server_connections,
                    r.rss_kib_per_endpoint,
                    r.all_answered
                );
            }
            Err(e) => {
                md += &format!(
                    "| {label} | failed: {} |||||||||||| \n",
                    e.lines().next().unwrap_or("")
                )
            }
        }
    }
    // Ring against star, same N, same transport.
    md += "\n## Ring against star\n\n| endpoints / transport | server msgs (ring ÷ star) | server bytes (ring ÷ star) | p99 (ring ÷ star) |\n|---|---|---|---|\n";
    let find = |label: &str| {
        rows.iter()
            .find(|(l, _, r)| l == label && r.is_ok())
            .and_then(|(_, _, r)| r.as_ref().ok())
    };
    for (label, _, _) in rows.iter().filter(|(l, _, _)| l.ends_with(" ring")) {
        let star_label = label.replace(" ring", " star");
        if let (Some(ring), Some(star)) = (find(label), find(&star_label)) {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            md += &format!(
                "| {} | {:.4} | {:.4} | {:.2} |\n",
                label.trim_end_matches(" ring"),
                ratio(
                    ring.server_msgs_in_per_question + ring.server_msgs_out_per_question,
                    star.server_msgs_in_per_question + star.server_msgs_out_per_question
                ),
                ratio(
                    ring.server_bytes_per_question,
                    star.server_bytes_per_question
                ),
                ratio(ring.p99_ms, star.p99_ms)
            );
        }
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    print!("{md}");
    Ok(())
}

/// This process's CPU time so far (user and system).
fn cpu_time() -> Duration {
    let t = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    match t {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Runs the history recorder on this machine for `samples` samples after a first one, one
/// every `interval`, and prints its cost.
pub async fn recorder(interval: Duration, samples: u32) -> Result<()> {
    use rollcall_actors::history::linux::ProcSampler;
    use rollcall_actors::history::recorder::Recording;
    use rollcall_actors::history::store::{HistoryStore, Limits};
    let dir = tempfile::tempdir()?;
    let now = rollcall_runtime::signing::unix_ms;
    let store = std::sync::Arc::new(HistoryStore::open(
        &dir.path().join("history.redb"),
        Limits::default(),
        now(),
    )?);
    let mut rec = Recording::new(Box::new(ProcSampler::new()), store.clone());
    let before = cpu_time();
    let first = rec.step(now())?;
    let first_cpu = cpu_time() - before;
    println!("machine: {}", machine());
    println!(
        "first sample: {} things live, {:.1} ms CPU (every running executable hashed once)",
        first.live,
        first_cpu.as_secs_f64() * 1000.0
    );
    let start = std::time::Instant::now();
    let cpu0 = cpu_time();
    let (mut started, mut ended) = (0, 0);
    let mut in_steps = Duration::ZERO;
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    for _ in 0..samples {
        tick.tick().await;
        let c = cpu_time();
        let s = rec.step(now())?;
        in_steps += cpu_time() - c;
        started += s.started;
        ended += s.ended;
    }
    let cpu = cpu_time() - cpu0;
    let wall = start.elapsed();
    println!(
        "{samples} samples every {} ms: {:.3} ms CPU per sample in the recorder, {:.4} % of one core ({:.4} % for the whole process, its idle runtime included); {started} records started, {ended} ended; store {} bytes",
        interval.as_millis(),
        in_steps.as_secs_f64() * 1000.0 / f64::from(samples.max(1)),
        in_steps.as_secs_f64() / wall.as_secs_f64() * 100.0,
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        store.bytes()
    );
    Ok(())
}
