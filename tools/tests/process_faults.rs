//! The process-level fault suite: a real `rollcall server` and endpoint processes on three
//! loopback /24s (127.0.5–7.x), faulted with real signals, checked against the invariants
//! the simulated scenarios check:
//!
//! 1. no live endpoint's answer is lost: every question asked ends answered by every
//!    endpoint (those killed are started again from their state dirs and answer late);
//! 2. nothing is counted twice: each question's single row (every process reads the same
//!    host) counts exactly the machines that answered;
//! 3. live endpoints answer promptly: within the fault-free time + 1 s of a fault striking,
//!    every machine not itself faulted has answered the question in flight, and those asked
//!    while the fault stands;
//! 4. no endpoint that kept running is marked offline (evicted), including across server
//!    restarts;
//! 5. after healing, every ring is one chain again, its leaders holding their links;
//! 6. after a server restart, the rings' leaders are back within the registration interval.
//!
//! Faults, victims and moments come from a seed: `kill -9` of a middle member and of a
//! ring's forward leader mid-question, SIGSTOP/SIGCONT of a middle member (a grey machine),
//! the server killed and started again from its state dir twice in a row under the full
//! fleet, a whole subnet's processes killed and started again one after another, and a
//! ring cut in two by nftables rules. The cut needs root, `ip` and `nft`: the suite then
//! runs in a network namespace it makes (its own loopback, its own rules), and says why it
//! skipped the cut otherwise.
//! `ROLLCALL_PROCESS_SEEDS` (default 1) runs that many seeds from `ROLLCALL_PROCESS_SEED`
//! (default 1); `ROLLCALL_PROCESS_ENDPOINTS` (default 7) sets endpoints per subnet. The
//! failing seed is printed.

mod common;
use common::cluster::*;
use common::*;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rollcall::chaos::FormationGaps;
use rollcall::desk_client::DeskClient;
use rollcall_actors::desk::{DeskReply, DeskRequest};
use rollcall_cluster::proto::{Health, RingsReport};

const QUESTION: &str = "Get Computer Name from all machines";
const SUBNETS: [u8; 3] = [5, 6, 7];
/// Registration every 1–2 s: the server holds a machine offline after 3 × 2 s of silence.
const REGISTER_MIN_MS: &str = "1000";
const REGISTER_MAX_MS: &str = "2000";

/// Whether step `name` runs (`ROLLCALL_PROCESS_STEPS=sigstop,server` runs those only).
fn step(name: &str) -> bool {
    std::env::var("ROLLCALL_PROCESS_STEPS").map_or(true, |v| v.split(',').any(|s| s == name))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The wall clock as the processes' logs print it (seconds of the day, UTC).
fn chrono_now() -> String {
    let ms = rollcall_runtime::signing::unix_ms() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// One endpoint process (running or not) and where it lives.
struct Ep {
    ip: String,
    state: String,
    proc: Option<Running>,
}

struct Suite {
    c: Cluster,
    port: u16,
    server: Option<Running>,
    eps: Vec<Ep>,
    desk: Option<DeskClient>,
    op: Option<DeskClient>,
    /// Machines faulted in the current step (excused from promptness and eviction).
    victims: HashSet<String>,
    /// Every question asked, to be answered by every endpoint in the end.
    questions: Vec<u64>,
    evicted: BTreeMap<String, String>,
    fault_free: Duration,
    findings: Vec<String>,
    log: Vec<String>,
}

impl Suite {
    fn start(&mut self, i: usize) {
        let e = &self.eps[i];
        let listen = format!("{}:{}", e.ip, self.port);
        let r = Running::start(&[
            "endpoint",
            "--server",
            &self.c.addr,
            "--join-token",
            &self.c.token,
            "--state-dir",
            &e.state,
            "--listen",
            &listen,
            "--register-min-ms",
            REGISTER_MIN_MS,
            "--register-max-ms",
            REGISTER_MAX_MS,
            "--config",
            &self.c.p("endpoint.toml"),
        ]);
        self.eps[i].proc = Some(r);
    }

    /// Starts endpoint `i` again from its state dir, and waits until it has registered.
    fn restart(&mut self, i: usize) {
        self.start(i);
        self.eps[i]
            .proc
            .as_ref()
            .expect("started")
            .line_starting("registered in ring ");
    }

    fn kill(&mut self, i: usize) {
        // Running's drop is `kill -9` and a wait.
        self.eps[i].proc = None;
    }

    fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(p) = &self.eps[i].proc {
            let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
            nix::sys::signal::kill(pid, sig).expect("signal");
        }
    }

    fn index_of_addr(&self, addr: &std::net::SocketAddr) -> Option<usize> {
        let ip = addr.ip().to_string();
        self.eps.iter().position(|e| e.ip == ip)
    }

    fn alive(&self) -> usize {
        self.eps.iter().filter(|e| e.proc.is_some()).count()
    }

    async fn desk(&mut self) -> &DeskClient {
        if self.desk.is_none() {
            let d = DeskClient::connect(self.c.addr.parse().expect("addr"), &self.c.path("vera"))
                .await
                .expect("desk");
            self.desk = Some(d);
        }
        self.desk.as_ref().expect("desk")
    }

    /// The operator's desk, kept between questions (so that a fault can strike while the
    /// question just asked is still travelling).
    async fn operator(&mut self) -> &DeskClient {
        if self.op.is_none() {
            let d = DeskClient::connect(self.c.addr.parse().expect("addr"), &self.c.path("olga"))
                .await
                .expect("operator desk");
            self.op = Some(d);
        }
        self.op.as_ref().expect("operator desk")
    }

    /// The rings, and any running machine outside the victims the server holds offline.
    async fn sample(&mut self) -> Option<RingsReport> {
        let r = self.desk().await.rings().await.ok()?;
        for ring in &r.rings {
            for m in &ring.members {
                if m.health == Health::Offline
                    && !self.victims.contains(m.id.as_str())
                    && self
                        .index_of_addr(&m.addr)
                        .is_some_and(|i| self.eps[i].proc.is_some())
                {
                    self.evicted
                        .entry(m.id.to_string())
                        .or_insert_with(|| format!("{} marked offline", m.addr));
                }
            }
        }
        Some(r)
    }

    /// Waits until every ring is one chain of the running machines; how long it took.
    async fn formed(&mut self, within: Duration) -> Option<Duration> {
        self.until(within, FormationGaps::formed).await
    }

    /// Waits until every ring's leaders hold their links to the server (the first member
    /// leading forward, the last backward); how long it took.
    async fn leaders_back(&mut self, within: Duration) -> Option<Duration> {
        self.until(within, |g| {
            g.rings > 0 && g.rings_missing_links == 0 && g.rings_misled == 0
        })
        .await
    }

    async fn until(
        &mut self,
        within: Duration,
        done: impl Fn(&FormationGaps) -> bool,
    ) -> Option<Duration> {
        let t0 = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last = None;
        while t0.elapsed() < within {
            tick.tick().await;
            if let Some(r) = self.sample().await {
                let g = FormationGaps::of(&r, self.alive());
                if done(&g) {
                    return Some(t0.elapsed());
                }
                last = Some(g.to_string());
            }
        }
        self.log
            .push(format!("not formed after {within:?}: {last:?}"));
        None
    }

    async fn ask(&mut self) -> u64 {
        let r = self
            .operator()
            .await
            .call(DeskRequest::Ask {
                text: QUESTION.into(),
                ttl_ms: Some(600_000),
            })
            .await
            .expect("ask");
        let DeskReply::Asked { id, .. } = r else {
            panic!("ask: {r:?}")
        };
        self.questions.push(id);
        id
    }

    /// Time from `from` until every running machine outside the victims answered `id`.
    async fn live_answered(
        &mut self,
        id: u64,
        from: Instant,
        within: Duration,
    ) -> Option<Duration> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut samples = 0u32;
        while from.elapsed() < within {
            tick.tick().await;
            samples += 1;
            if samples.is_multiple_of(10) {
                self.sample().await;
            }
            let Ok(p) = self.desk().await.progress(id).await else {
                continue;
            };
            let running: HashSet<String> = self.running_ids().await;
            let missing = p
                .not_answered
                .iter()
                .filter(|(who, _)| {
                    running.contains(who.as_str()) && !self.victims.contains(who.as_str())
                })
                .count();
            let answered_running = running
                .iter()
                .filter(|r| !self.victims.contains(*r))
                .count();
            if missing == 0 && p.answered >= answered_running {
                return Some(from.elapsed());
            }
        }
        None
    }

    /// Ids of the running machines, as the server knows them by address.
    async fn running_ids(&mut self) -> HashSet<String> {
        let Some(r) = self.sample().await else {
            return HashSet::new();
        };
        r.rings
            .iter()
            .flat_map(|ring| ring.members.iter())
            .filter(|m| {
                self.index_of_addr(&m.addr)
                    .is_some_and(|i| self.eps[i].proc.is_some())
            })
            .map(|m| m.id.to_string())
            .collect()
    }

    /// A ring (seeded) in ring order, as fleet indices.
    async fn ring(&mut self, rng: &mut SmallRng) -> Vec<usize> {
        let r = self.sample().await.expect("rings");
        let ring = &r.rings[rng.random_range(0..r.rings.len())];
        ring.members
            .iter()
            .filter(|m| m.health != Health::Offline)
            .filter_map(|m| self.index_of_addr(&m.addr))
            .collect()
    }

    fn id_at(&self, report: &RingsReport, i: usize) -> String {
        report
            .rings
            .iter()
            .flat_map(|r| r.members.iter())
            .find(|m| self.index_of_addr(&m.addr) == Some(i))
            .map(|m| m.id.to_string())
            .unwrap_or_default()
    }

    fn check(&mut self, what: &str, ok: bool, measured: String) {
        self.log.push(format!(
            "{:<62} {:<5} {measured}",
            what,
            if ok { "pass" } else { "FAIL" }
        ));
        if !ok {
            self.findings.push(format!("{what}: {measured}"));
        }
    }

    /// A question asked, the fault struck once a seeded share of the machines (under half)
    /// has answered it (or as it completes), two more questions while it stands;
    /// promptness checked for all three.
    async fn mid_question(
        &mut self,
        name: &str,
        rng: &mut SmallRng,
        strike: impl FnOnce(&mut Suite),
    ) {
        let id = self.ask().await;
        let n = self.eps.len();
        let share = rng.random_range(0..n / 2);
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let at = loop {
            tick.tick().await;
            match self.desk().await.progress(id).await {
                Ok(p) if p.answered >= share || p.answered >= p.expected => break p.answered,
                _ => {}
            }
        };
        strike(self);
        let struck = Instant::now();
        let bound = self.fault_free + Duration::from_secs(1);
        let first = self
            .live_answered(id, struck, Duration::from_secs(30))
            .await;
        let mut worst = first;
        self.log.push(format!(
            "  question {id} in flight, struck after {} answers: {:?} ms",
            at,
            first.map(|d| d.as_millis())
        ));
        for _ in 0..2 {
            let t = Instant::now();
            let wall = chrono_now();
            let q = self.ask().await;
            let took = self.live_answered(q, t, Duration::from_secs(30)).await;
            self.log.push(format!(
                "  question {q} asked at {wall}: {:?} ms",
                took.map(|d| d.as_millis())
            ));
            worst = match (worst, took) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        self.check(
            &format!("{name}: live machines answered within fault-free + 1 s"),
            worst.is_some_and(|w| w <= bound),
            format!(
                "slowest {:?} (question in flight {:?}; bound {} ms)",
                worst.map(|w| w.as_millis()),
                first.map(|w| w.as_millis()),
                bound.as_millis()
            ),
        );
    }
}

/// LAN timing, as the simulated fault scenarios use: probe every 400 ms, a hop not taken
/// within 200 ms is routed past (the server's chain watch follows the same settings).
const RING_TIMING: &str = "[ring]\nprobe_interval_ms = 400\nhop_timeout_ms = 200\n";

async fn suite(seed: u64, per_subnet: u8) -> Suite {
    let c = cluster();
    let server_toml = c.path("server.toml");
    let mut cfg = std::fs::read_to_string(&server_toml).expect("server config");
    cfg.push_str(RING_TIMING);
    std::fs::write(&server_toml, cfg).expect("server config");
    std::fs::write(c.path("endpoint.toml"), RING_TIMING).expect("endpoint config");
    let server = c.server();
    let port = {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("port")
    };
    let mut eps = Vec::new();
    for s in SUBNETS {
        for h in 1..=per_subnet {
            eps.push(Ep {
                ip: format!("127.0.{s}.{h}"),
                state: c.p(&format!("ep-{s}-{h}")),
                proc: None,
            });
        }
    }
    let mut suite = Suite {
        c,
        port,
        server: Some(server),
        eps,
        desk: None,
        op: None,
        victims: HashSet::new(),
        questions: Vec::new(),
        evicted: BTreeMap::new(),
        fault_free: Duration::ZERO,
        findings: Vec::new(),
        log: vec![format!("seed {seed}")],
    };
    let t = Instant::now();
    for i in 0..suite.eps.len() {
        suite.start(i);
    }
    for e in &suite.eps {
        e.proc
            .as_ref()
            .expect("started")
            .line_starting("registered in ring ");
    }
    let formed = suite.formed(Duration::from_secs(60)).await;
    suite.check(
        "rings formed at start",
        formed.is_some(),
        format!(
            "{} endpoints in {} ms",
            suite.eps.len(),
            t.elapsed().as_millis()
        ),
    );
    suite
}

/// The nftables table a split lives in.
const SPLIT_TABLE: &str = "rollcall_split";

/// Rules that drop everything between the addresses of `a` and those of `b`, both ways.
fn split_rules(a: &[String], b: &[String]) -> String {
    let (a, b) = (a.join(", "), b.join(", "));
    format!(
        "table inet {SPLIT_TABLE} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    ip saddr {{ {a} }} ip daddr {{ {b} }} counter drop\n    ip saddr {{ {b} }} ip daddr {{ {a} }} counter drop\n  }}\n}}\n"
    )
}

/// Applies an nftables script (in this test's network namespace).
fn nft(script: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("nft script");
    let status = child.wait().expect("nft");
    assert!(status.success(), "nft refused:\n{script}");
}

/// Packets the split's rules dropped so far (their counters).
fn dropped_by_split() -> u64 {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", SPLIT_TABLE])
        .output()
        .expect("nft list");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

/// Moves this thread, and every thread and process it starts from now on, into a network
/// namespace of its own with its loopback up, so a step can cut links with nftables
/// without touching the machine's own rules. `Err` says why not.
fn private_netns() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("not root: a network namespace and nftables need it".into());
    }
    let have = |tool: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["ip", "nft"] {
        if !have(tool) {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot make a network namespace: {e}"))?;
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if !up.success() {
        return Err("`ip link set lo up` failed in the new namespace".into());
    }
    Ok(())
}

async fn run_seed(seed: u64, per_subnet: u8, netns: &Result<(), String>) -> Suite {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut s = suite(seed, per_subnet).await;
    let n = s.eps.len();

    // Fault-free: the best of three questions.
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let id = s.ask().await;
        let took = s
            .live_answered(id, t, Duration::from_secs(30))
            .await
            .expect("fault-free question answered");
        best = best.min(took);
    }
    s.fault_free = best;
    s.log.push(format!(
        "fault-free time to every answer: {} ms",
        best.as_millis()
    ));

    if step("middle") {
        // 1. kill -9 of a middle member, mid-question; started again afterwards.
        let ring = s.ring(&mut rng).await;
        let victim = ring[rng.random_range(1..ring.len() - 1)];
        let report = s.sample().await.expect("rings");
        s.victims.insert(s.id_at(&report, victim));
        s.mid_question("kill -9 of a middle member", &mut rng, |s| s.kill(victim))
            .await;
        s.restart(victim);
        s.victims.clear();
        let healed = s.formed(Duration::from_secs(30)).await;
        s.check(
            "kill -9 of a middle member: one chain again once it is back",
            healed.is_some(),
            format!("{:?} ms", healed.map(|d| d.as_millis())),
        );
    }

    if step("leader") {
        // 2. kill -9 of a ring's forward leader, mid-question.
        let ring = s.ring(&mut rng).await;
        let leader = ring[0];
        let report = s.sample().await.expect("rings");
        s.victims.insert(s.id_at(&report, leader));
        s.mid_question("kill -9 of a forward leader", &mut rng, |s| s.kill(leader))
            .await;
        s.restart(leader);
        s.victims.clear();
        let healed = s.formed(Duration::from_secs(30)).await;
        s.check(
            "kill -9 of a forward leader: one chain again once it is back",
            healed.is_some(),
            format!("{:?} ms", healed.map(|d| d.as_millis())),
        );
    }

    if step("sigstop") {
        // 3. A grey machine: SIGSTOP mid-question, SIGCONT once the questions asked while
        //    it is stopped were answered by the others.
        let ring = s.ring(&mut rng).await;
        let grey = ring[rng.random_range(1..ring.len() - 1)];
        let report = s.sample().await.expect("rings");
        s.victims.insert(s.id_at(&report, grey));
        s.mid_question("SIGSTOP of a middle member", &mut rng, |s| {
            s.signal(grey, nix::sys::signal::Signal::SIGSTOP)
        })
        .await;
        s.signal(grey, nix::sys::signal::Signal::SIGCONT);
        s.victims.clear();
        let healed = s.formed(Duration::from_secs(30)).await;
        s.check(
            "SIGSTOP/SIGCONT: one chain again after SIGCONT",
            healed.is_some(),
            format!("{:?} ms", healed.map(|d| d.as_millis())),
        );
    }

    if step("server") {
        // 4. The server killed and started again from its state dir, twice in a row, under
        //    the full fleet. No machine may be marked offline; every ring's leaders are back
        //    within one registration interval (2 s) and two registration retries (each at
        //    most the ring's retry interval, 800 ms: the first may meet the old server's
        //    connection).
        let leaders_bound = Duration::from_millis(2000 + 2 * 800);
        for round in 1..=2 {
            s.server = None; // kill -9
            s.desk = None;
            s.op = None;
            let server = s.c.start_server();
            server.line_starting("server ");
            let t = Instant::now();
            s.server = Some(server);
            let leaders = s.leaders_back(Duration::from_secs(30)).await;
            let all = s.formed(Duration::from_secs(30)).await.map(|_| t.elapsed());
            s.check(
                &format!(
                    "server restart {round}: leaders back within {} ms",
                    leaders_bound.as_millis()
                ),
                leaders.is_some_and(|d| d <= leaders_bound),
                format!(
                    "leaders {:?} ms, every machine registered {:?} ms",
                    leaders.map(|d| d.as_millis()),
                    all.map(|d| d.as_millis())
                ),
            );
        }
        let t = Instant::now();
        let id = s.ask().await;
        let took = s.live_answered(id, t, Duration::from_secs(30)).await;
        s.check(
            "after two server restarts: every machine answers within fault-free + 1 s",
            took.is_some_and(|d| d <= s.fault_free + Duration::from_secs(1)),
            format!("{:?} ms", took.map(|d| d.as_millis())),
        );
    }

    if step("partition") {
        match netns {
            Err(why) => s
                .log
                .push(format!("nftables split of a ring: skipped ({why})")),
            Ok(()) => {
                // 6. A ring cut in two by nftables (each side still reaches the server and
                //    the other rings), mid-question; the rules removed afterwards. Nobody
                //    is excused: every machine can still answer.
                let ring = s.ring(&mut rng).await;
                let cut = rng.random_range(1..ring.len());
                let ips = |part: &[usize]| -> Vec<String> {
                    part.iter().map(|&i| s.eps[i].ip.clone()).collect()
                };
                let (head, tail) = (ips(&ring[..cut]), ips(&ring[cut..]));
                s.log.push(format!(
                    "  ring split between {{{}}} and {{{}}}",
                    head.join(", "),
                    tail.join(", ")
                ));
                let rules = split_rules(&head, &tail);
                s.mid_question("nftables split of a ring", &mut rng, |_| nft(&rules))
                    .await;
                let dropped = dropped_by_split();
                s.check(
                    "nftables split of a ring: the rules dropped the ring's packets across it",
                    dropped > 0,
                    format!("{dropped} packets dropped"),
                );
                nft(&format!("delete table inet {SPLIT_TABLE}\n"));
                let healed = s.formed(Duration::from_secs(30)).await;
                s.check(
                    "nftables split of a ring: one chain again once the rules are gone",
                    healed.is_some(),
                    format!("{:?} ms", healed.map(|d| d.as_millis())),
                );
            }
        }
    }

    if step("subnet") {
        // 5. A subnet's processes all killed and started again, one after another in a
        //    seeded order, each as soon as the one before it is up.
        let subnet = SUBNETS[rng.random_range(0..SUBNETS.len())];
        let members: Vec<usize> = (0..n)
            .filter(|&i| s.eps[i].ip.starts_with(&format!("127.0.{subnet}.")))
            .collect();
        let report = s.sample().await.expect("rings");
        for &i in &members {
            s.victims.insert(s.id_at(&report, i));
            s.kill(i);
        }
        let id = s.ask().await;
        let mut order = members.clone();
        order.shuffle(&mut rng);
        for &i in &order {
            s.start(i);
            s.eps[i]
                .proc
                .as_ref()
                .expect("started")
                .line_starting("endpoint ");
        }
        for &i in &members {
            s.eps[i]
                .proc
                .as_ref()
                .expect("started")
                .line_starting("registered in ring ");
        }
        let healed = s.formed(Duration::from_secs(30)).await;
        s.check(
            &format!("subnet 127.0.{subnet}.0/24 restarted: one chain again"),
            healed.is_some(),
            format!("{:?} ms", healed.map(|d| d.as_millis())),
        );
        s.victims.clear();
        let _ = id;
    }

    // Every question asked, answered by every machine, each counted once.
    let end = Instant::now() + Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let questions = s.questions.clone();
    let mut short = Vec::new();
    loop {
        tick.tick().await;
        short.clear();
        for &q in &questions {
            match s.desk().await.progress(q).await {
                Ok(p) => {
                    let counted: u64 = p.rows.iter().map(|r| r.count).sum();
                    if p.answered != n || counted != n as u64 {
                        short.push(format!(
                            "question {q}: {} answered, {counted} counted of {n}; not answered: {:?}",
                            p.answered, p.not_answered
                        ));
                    }
                }
                Err(e) => short.push(format!("question {q}: {e}")),
            }
        }
        if short.is_empty() || Instant::now() >= end {
            break;
        }
    }
    s.check(
        "no answer lost, none counted twice",
        short.is_empty(),
        if short.is_empty() {
            format!(
                "all {} questions answered by all {n} machines once",
                questions.len()
            )
        } else {
            format!("{} short: {}", short.len(), short[0])
        },
    );
    let evicted = s.evicted.clone();
    s.check(
        "no running machine outside the faulted ones marked offline",
        evicted.is_empty(),
        match evicted.iter().next() {
            None => "none".into(),
            Some((id, why)) => format!("{} evicted; first: {id} {why}", evicted.len()),
        },
    );
    for d in [s.desk.take(), s.op.take()].into_iter().flatten() {
        d.close().await;
    }
    s
}

#[test]
fn real_processes_hold_the_invariants_under_signals_and_restarts() {
    let seeds = env_or("ROLLCALL_PROCESS_SEEDS", 1);
    let first = env_or("ROLLCALL_PROCESS_SEED", 1);
    let per_subnet = env_or("ROLLCALL_PROCESS_ENDPOINTS", 7).clamp(3, 60) as u8;
    // Before the runtime: its threads, and the processes they start, are made in the
    // namespace of the thread that builds it.
    let netns = private_netns();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut failed = Vec::new();
    for seed in first..first + seeds {
        let s = rt.block_on(run_seed(seed, per_subnet, &netns));
        let report = s.log.join("\n");
        eprintln!("{report}");
        if !s.findings.is_empty() {
            failed.push(format!("seed {seed}: {}", s.findings.join("; ")));
        }
    }
    assert!(
        failed.is_empty(),
        "invariants violated (rerun with ROLLCALL_PROCESS_SEED=<seed> ROLLCALL_PROCESS_SEEDS=1):\n{}",
        failed.join("\n")
    );
}
