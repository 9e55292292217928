//! `rollcall bench processes`: what the agent costs as real processes. Starts a server and
//! N `rollcall endpoint` processes of this binary on loopback (one /24 per `--ring-size`
//! machines, real host sensors, default timing unless a config is given), and measures in
//! one run: the time from launching them all (enrolment included) to all N answering a
//! question; memory per endpoint (PSS and RSS, from `/proc/PID/smaps_rollup`); idle CPU per
//! endpoint and of the server over `--idle-secs`; and the time to all answering again once
//! every endpoint was stopped and started from its state dir.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_actors::desk::{DeskReply, DeskRequest};
use serde::Serialize;

use rollcall::desk_client::DeskClient;

/// How the benchmark runs.
pub struct ProcessBench {
    /// Endpoint processes.
    pub endpoints: usize,
    /// Machines per /24 (one ring each).
    pub ring_size: usize,
    /// How long idle CPU is measured.
    pub idle: Duration,
    /// A configuration file for every endpoint (and the server), if any.
    pub config: Option<PathBuf>,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// Endpoints.
    pub endpoints: usize,
    /// From launching every endpoint (first start, enrolment included) to all answering.
    pub first_start_ms: u64,
    /// Of that, from launching to the last one enrolled, and to the last one placed in a
    /// ring by the server.
    pub first_enrolled_ms: u64,
    /// See `first_enrolled_ms`.
    pub first_registered_ms: u64,
    /// On restart, from starting to the last one placed in a ring.
    pub restart_registered_ms: u64,
    /// From starting every endpoint again from its state dir to all answering.
    pub restart_ms: u64,
    /// Mean and largest PSS per endpoint, KiB.
    pub pss_kib_mean: u64,
    /// See `pss_kib_mean`.
    pub pss_kib_max: u64,
    /// Mean and largest RSS per endpoint, KiB.
    pub rss_kib_mean: u64,
    /// See `rss_kib_mean`.
    pub rss_kib_max: u64,
    /// Idle CPU per endpoint, percent of one core: mean and largest.
    pub idle_cpu_pct_mean: f64,
    /// See `idle_cpu_pct_mean`.
    pub idle_cpu_pct_max: f64,
    /// The server's idle CPU, percent of one core.
    pub server_idle_cpu_pct: f64,
    /// The server's RSS, KiB.
    pub server_rss_kib: u64,
    /// Seconds idle CPU was measured over.
    pub idle_secs: u64,
}

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// When it printed that it enrolled (`endpoint … listening`) and that the server placed
    /// it (`registered …`).
    marks: Arc<Mutex<(Option<Instant>, Option<Instant>)>>,
}

impl Proc {
    fn start(exe: &Path, args: &[&str], log: &Path) -> Result<Proc> {
        let log =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        let marks = Arc::new(Mutex::new((None, None)));
        let m = marks.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                {
                    let mut m = rollcall_runtime::sync::lock(&m);
                    if line.starts_with("endpoint ") && m.0.is_none() {
                        m.0 = Some(Instant::now());
                    }
                    if line.starts_with("registered ") && m.1.is_none() {
                        m.1 = Some(Instant::now());
                    }
                }
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Proc {
            child,
            lines,
            marks,
        })
    }

    fn line_starting(&self, prefix: &str, within: Duration) -> Result<String> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => bail!("no line starting with {prefix:?} within {within:?}"),
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of `pid` so far, in nanoseconds: the sum over its threads of the scheduler's
/// run time (`/proc/PID/task/*/schedstat`; clock ticks in `/proc/PID/stat` count in 10 ms,
/// too coarse for an idle agent).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (PSS, RSS) of `pid` in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

fn run_ok(exe: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How often a question is asked while the fleet comes up: the time to all answering is
/// known to within this (plus the question's own time).
const ASK_EVERY: Duration = Duration::from_millis(500);

/// Asks a question every [`ASK_EVERY`] until one of them has been answered by `n`
/// machines; the time from `from` to that moment. (A question is expected of the machines
/// registered when it is asked: asking again and again, rather than waiting on one, finds
/// the moment the whole fleet answers, not the moment the first question gave up.)
async fn until_all_answer(desk: &DeskClient, n: usize, from: Instant) -> Result<Duration> {
    let deadline = from + Duration::from_secs(120);
    let mut asked: Vec<u64> = Vec::new();
    let mut next_ask = Instant::now();
    let mut best = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if Instant::now() >= next_ask {
            next_ask += ASK_EVERY;
            match desk
                .call(DeskRequest::Ask {
                    text: "Get Computer Name from all machines".into(),
                    ttl_ms: Some(120_000),
                })
                .await?
            {
                DeskReply::Asked { id, .. } => asked.push(id),
                other => bail!("ask: {other:?}"),
            }
        }
        // The newest six: the likeliest to reach everyone (an older one expected fewer
        // machines, or is completed by late answers only).
        for id in asked.iter().rev().take(6) {
            let answered = desk.progress(*id).await?.answered;
            if answered >= n {
                return Ok(from.elapsed());
            }
            best = best.max(answered);
        }
        if Instant::now() > deadline {
            bail!("at most {best} of {n} answered one question within 120 s");
        }
    }
}

/// The time from `from` by which each tenth of `eps` had printed mark `which` (0: enrolled,
/// 1: placed in a ring).
fn deciles(eps: &[Proc], from: Instant, which: usize) -> Vec<String> {
    let mut at: Vec<u64> = eps
        .iter()
        .filter_map(|e| {
            let m = rollcall_runtime::sync::lock(&e.marks);
            if which == 0 { m.0 } else { m.1 }
        })
        .map(|t| t.saturating_duration_since(from).as_millis() as u64)
        .collect();
    at.sort_unstable();
    (1..=10)
        .map(|d| {
            at.get((at.len() * d / 10).saturating_sub(1))
                .copied()
                .unwrap_or(0)
                .to_string()
        })
        .collect()
}

/// Runs the benchmark.
pub async fn run(b: &ProcessBench) -> Result<ProcessReport> {
    if b.endpoints == 0 || b.ring_size == 0 || b.ring_size > 250 {
        bail!("--endpoints must be at least 1 and --ring-size from 1 to 250");
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    let dir = tempfile::tempdir()?;
    let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
    let init = run_ok(&exe, &["ca", "init", "--dir", &p("ca")])?;
    let token = init
        .lines()
        .find_map(|l| l.strip_prefix("join token: "))
        .context("no join token from ca init")?
        .to_string();
    run_ok(
        &exe,
        &[
            "ca",
            "issue-operator",
            "--dir",
            &p("ca"),
            "--name",
            "bench",
            "--role",
            "operator",
            "--out",
            &p("op"),
        ],
    )?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = b.config.as_ref().map(|c| c.to_string_lossy().into_owned());
    let ca_dir = p("ca");
    let mut server_args = vec!["server", "--ca-dir", &ca_dir, "--listen", &addr];
    if let Some(c) = &config {
        server_args.extend(["--config", c]);
    }
    let server = Proc::start(&exe, &server_args, &dir.path().join("server.log"))?;
    server.line_starting("server ", Duration::from_secs(30))?;

    let launch = |i: usize| -> Result<Proc> {
        let (s, h) = (i / b.ring_size, i % b.ring_size + 1);
        let listen = format!("127.0.{}.{h}:0", 20 + s);
        let state = p(&format!("ep{i}"));
        let mut args = vec![
            "endpoint",
            "--server",
            &addr,
            "--join-token",
            &token,
            "--state-dir",
            &state,
            "--listen",
            &listen,
        ];
        if let Some(c) = &config {
            args.extend(["--config", c]);
        }
        Proc::start(&exe, &args, &dir.path().join(format!("ep{i}.log")))
    };
    eprintln!("launching {} endpoints", b.endpoints);
    let t0 = Instant::now();
    let mut eps = (0..b.endpoints).map(launch).collect::<Result<Vec<_>>>()?;
    let launched = t0.elapsed();
    let desk = DeskClient::connect(addr.parse()?, Path::new(&p("op"))).await?;
    let first_start = match until_all_answer(&desk, b.endpoints, t0).await {
        Ok(t) => t,
        Err(e) => {
            // Say which processes ended, and why (their last log lines).
            for (i, ep) in eps.iter_mut().enumerate() {
                if let Ok(Some(status)) = ep.child.try_wait() {
                    let log = std::fs::read_to_string(dir.path().join(format!("ep{i}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    eprintln!("endpoint {i} ended ({status}): {}", tail.join(" | "));
                }
            }
            return Err(e);
        }
    };
    let last_mark = |eps: &[Proc], from: Instant, which: usize| -> u64 {
        eps.iter()
            .filter_map(|e| {
                let m = rollcall_runtime::sync::lock(&e.marks);
                if which == 0 { m.0 } else { m.1 }
            })
            .map(|t| t.saturating_duration_since(from).as_millis() as u64)
            .max()
            .unwrap_or(0)
    };
    let (first_enrolled, first_registered) = (last_mark(&eps, t0, 0), last_mark(&eps, t0, 1));
    eprintln!(
        "enrolled by decile (ms): {}",
        deciles(&eps, t0, 0).join(" ")
    );
    eprintln!(
        "CPU used by then: endpoints {} ms in all, server {} ms",
        eps.iter().map(|e| cpu_ns(e.pid())).sum::<u64>() / 1_000_000,
        cpu_ns(server.pid()) / 1_000_000
    );
    // Where the slowest one spent its time: its own log's warnings.
    if let Some((i, _)) = eps
        .iter()
        .enumerate()
        .filter_map(|(i, e)| rollcall_runtime::sync::lock(&e.marks).1.map(|t| (i, t)))
        .max_by_key(|(_, t)| *t)
    {
        let log =
            std::fs::read_to_string(dir.path().join(format!("ep{i}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().take(8).collect();
        eprintln!(
            "the last endpoint placed (ep{i}) logged:\n  {}",
            tail.join("\n  ")
        );
    }
    eprintln!(
        "all {} answering {} ms after launch (the last launched at {} ms, enrolled at {first_enrolled} ms, placed at {first_registered} ms)",
        b.endpoints,
        first_start.as_millis(),
        launched.as_millis()
    );

    // Idle: settle, then CPU over the window.
    let settle = Duration::from_secs(10);
    eprintln!(
        "idle: settling {} s, then measuring {} s",
        settle.as_secs(),
        b.idle.as_secs()
    );
    tokio::time::sleep(settle).await;
    let before: Vec<u64> = eps.iter().map(|e| cpu_ns(e.pid())).collect();
    let server_before = cpu_ns(server.pid());
    let t = Instant::now();
    tokio::time::sleep(b.idle).await;
    let ns = t.elapsed().as_nanos() as f64;
    let pct: Vec<f64> = eps
        .iter()
        .zip(&before)
        .map(|(e, b)| cpu_ns(e.pid()).saturating_sub(*b) as f64 / ns * 100.0)
        .collect();
    let server_pct = cpu_ns(server.pid()).saturating_sub(server_before) as f64 / ns * 100.0;
    let secs = ns / 1e9;
    let mem: Vec<(u64, u64)> = eps.iter().map(|e| memory_kib(e.pid())).collect();
    let server_rss = memory_kib(server.pid()).1;

    // Restart from state dirs.
    for e in &mut eps {
        e.stop();
    }
    drop(eps);
    let t1 = Instant::now();
    let eps = (0..b.endpoints).map(launch).collect::<Result<Vec<_>>>()?;
    let restart = until_all_answer(&desk, b.endpoints, t1).await?;
    let restart_registered = last_mark(&eps, t1, 1);
    eprintln!(
        "restart: placed by decile (ms): {}",
        deciles(&eps, t1, 1).join(" ")
    );
    drop(eps);
    desk.close().await;

    let n = b.endpoints as u64;
    Ok(ProcessReport {
        endpoints: b.endpoints,
        first_start_ms: first_start.as_millis() as u64,
        first_enrolled_ms: first_enrolled,
        first_registered_ms: first_registered,
        restart_registered_ms: restart_registered,
        restart_ms: restart.as_millis() as u64,
        pss_kib_mean: mem.iter().map(|m| m.0).sum::<u64>() / n,
        pss_kib_max: mem.iter().map(|m| m.0).max().unwrap_or(0),
        rss_kib_mean: mem.iter().map(|m| m.1).sum::<u64>() / n,
        rss_kib_max: mem.iter().map(|m| m.1).max().unwrap_or(0),
        idle_cpu_pct_mean: pct.iter().sum::<f64>() / pct.len().max(1) as f64,
        idle_cpu_pct_max: pct.iter().cloned().fold(0.0, f64::max),
        server_idle_cpu_pct: server_pct,
        server_rss_kib: server_rss,
        idle_secs: secs.round() as u64,
    })
}

impl ProcessReport {
    /// The report as a Markdown table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("| measure | value |\n|---|---:|\n");
        let rows: Vec<(String, String)> = vec![
            ("endpoint processes".into(), self.endpoints.to_string()),
            (
                "launch to all answering, first start (ms)".into(),
                self.first_start_ms.to_string(),
            ),
            (
                "… of which, launch to the last enrolled / placed in a ring (ms)".into(),
                format!("{} / {}", self.first_enrolled_ms, self.first_registered_ms),
            ),
            (
                "restart to all answering, from state dirs (ms)".into(),
                self.restart_ms.to_string(),
            ),
            (
                "… of which, restart to the last placed in a ring (ms)".into(),
                self.restart_registered_ms.to_string(),
            ),
            (
                "PSS per endpoint, mean / max (MiB)".into(),
                format!(
                    "{:.1} / {:.1}",
                    self.pss_kib_mean as f64 / 1024.0,
                    self.pss_kib_max as f64 / 1024.0
                ),
            ),
            (
                "RSS per endpoint, mean / max (MiB)".into(),
                format!(
                    "{:.1} / {:.1}",
                    self.rss_kib_mean as f64 / 1024.0,
                    self.rss_kib_max as f64 / 1024.0
                ),
            ),
            (
                format!(
                    "idle CPU per endpoint over {} s, mean / max (% of a core)",
                    self.idle_secs
                ),
                format!(
                    "{:.3} / {:.3}",
                    self.idle_cpu_pct_mean, self.idle_cpu_pct_max
                ),
            ),
            (
                "server idle CPU (% of a core)".into(),
                format!("{:.3}", self.server_idle_cpu_pct),
            ),
            (
                "server RSS (MiB)".into(),
                format!("{:.1}", self.server_rss_kib as f64 / 1024.0),
            ),
        ];
        for (k, v) in rows {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        s
    }
}
