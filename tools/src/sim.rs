//! `rollcall sim`: a server and N endpoints in one process — the production actors, with
//! simulated hosts as sensors — on the in-memory transport or real QUIC over loopback; and
//! `rollcall bench scale`, which runs a fixed matrix of sims and writes the results table.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_actors::desk::{DeskReply, DeskRequest, QuestionDesk, SensorEvaluator};
use rollcall_actors::sensors::Sensors;
use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
use rollcall_cluster::member::{EvaluatorHandle, MemberConfig, RingMember};
use rollcall_cluster::membership::{MembershipConfig, parse_cidr};
use rollcall_cluster::ring::RingConfig;
use rollcall_cluster::shard::{RingServer, RingServerConfig};
use rollcall_runtime::identity::{Ca, NodeSecret, PeerRole, Validity};
use rollcall_runtime::node::{Node, NodeOptions};
use rollcall_runtime::transport::mem::MemNetwork;
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};
use rollcall_runtime::{NodeId, OperatorRole, PeerIdentity};
use serde::{Deserialize, Serialize};

/// Which transport the simulated fleet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum SimTransport {
    /// The in-memory network (every envelope still encoded and decoded).
    Mem,
    /// Real QUIC, each endpoint on its own 127.x.y.z address.
    Quic,
}

/// How endpoints reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Topology {
    /// Rings per subnet; only leaders talk to the server.
    Ring,
    /// Hub and spoke: every endpoint talks to the server directly (the baseline).
    Star,
}

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
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
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
    /// The merged rows of the last question: (operating system, version, count).
    pub last_rows: Vec<(String, String, u64)>,
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

/// The address of endpoint `i`: subnet `i / ring_size` as 127.A.B.0/24, host `i % ring_size + 1`.
pub fn endpoint_ip(i: usize, ring_size: u16) -> IpAddr {
    let subnet = i / usize::from(ring_size);
    let host = (i % usize::from(ring_size)) as u8 + 1;
    let a = 1 + (subnet / 256) as u8;
    let b = (subnet % 256) as u8;
    IpAddr::V4(Ipv4Addr::new(127, a, b, host))
}

/// The question every sim asks.
pub const SIM_QUESTION: &str = "Get Operating System and OS Version from all machines";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs one sim.
pub async fn run(a: &SimArgs) -> Result<SimReport> {
    if a.endpoints == 0 {
        bail!("--endpoints must be at least 1");
    }
    if usize::from(a.ring_size) * 255 * 256 < a.endpoints {
        bail!(
            "too many endpoints for rings of {}: use a larger --ring-size",
            a.ring_size
        );
    }
    let ca = Ca::generate("rollcall sim CA")?;
    let net = MemNetwork::new(a.seed, Duration::from_secs(30));
    net.set_default_latency(Duration::from_millis(a.hop_latency_ms));
    let server_creds = ca.issue(PeerRole::Server, None, Validity::default())?;
    let server_opts = NodeOptions {
        link_event_capacity: 65_536,
        ..NodeOptions::default()
    };
    let server = match a.transport {
        SimTransport::Mem => {
            let t = net.bind("127.0.0.1:7000".parse()?, server_creds.identity.clone())?;
            Node::start(t, server_opts.clone()).await?
        }
        SimTransport::Quic => {
            let t = QuicTransport::bind(
                "127.0.0.1:0".parse()?,
                &server_creds,
                &NodeSecret::generate(),
                QuicOptions::default(),
            )?;
            Node::start(t, server_opts.clone()).await?
        }
    };
    let isolated = match a.topology {
        Topology::Ring => Vec::new(),
        Topology::Star => vec![parse_cidr("0.0.0.0/0").map_err(anyhow::Error::msg)?],
    };
    let rcfg = RingServerConfig {
        membership: MembershipConfig {
            isolated,
            offline_after: Duration::from_secs(3600),
            ..MembershipConfig::default()
        },
        shards: 8,
        ..RingServerConfig::default()
    };
    let rings = RingServer::start(&server, rcfg, None)
        .await
        .map_err(anyhow::Error::msg)?;
    let desk = QuestionDesk::new(rings.clone(), None);
    let server_addr = server.local_addr();

    // Endpoints: slow probing and registration, so the fleet's own chatter stays small.
    let ring = RingConfig {
        probe_interval: Duration::from_secs(2),
        hop_timeout: Duration::from_secs(1),
        dead_timeout: Duration::from_secs(4),
        dial_timeout: Duration::from_secs(10),
        pred_timeout: Duration::from_secs(10),
        retry_interval: Duration::from_secs(5),
        report_interval: Duration::from_secs(2),
        ..RingConfig::default()
    };
    let rss_before = rss_kib();
    let t0 = Instant::now();
    let mut nodes = Vec::with_capacity(a.endpoints);
    let mut profiles: Vec<HostProfile> = Vec::with_capacity(a.endpoints);
    let progress_every = (a.endpoints / 20).max(1);
    for i in 0..a.endpoints {
        let ip = endpoint_ip(i, a.ring_size);
        let node = match a.transport {
            SimTransport::Mem => {
                let id = PeerIdentity {
                    id: NodeId(format!("e{i:07}")),
                    role: PeerRole::Endpoint,
                };
                let t = net.bind(SocketAddr::new(ip, 7000), id)?;
                Node::start(t, NodeOptions::default()).await?
            }
            SimTransport::Quic => {
                let creds = ca.issue(PeerRole::Endpoint, None, Validity::default())?;
                let t = QuicTransport::bind(
                    SocketAddr::new(ip, 0),
                    &creds,
                    &NodeSecret::generate(),
                    QuicOptions::default(),
                )
                .with_context(|| format!("binding {ip}"))?;
                Node::start(t, NodeOptions::default()).await?
            }
        };
        let profile = HostProfile::from_seed(
            a.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            Some(ip),
        );
        let evaluator =
            SensorEvaluator::new(Sensors::new(Arc::new(SimulatedHost(profile.clone()))));
        evaluator.accept_config_on(&node);
        let mut mc = MemberConfig::new(server_addr, node.local_addr(), profile.hostname.clone());
        mc.ring = ring;
        mc.register_min = Duration::from_secs(30);
        mc.register_max = Duration::from_secs(90);
        mc.seed = a.seed ^ i as u64;
        mc.evaluator = Some(EvaluatorHandle(Arc::new(evaluator)));
        ractor::Actor::spawn(None, RingMember, (node.clone(), mc))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        nodes.push(node);
        profiles.push(profile);
        if !a.json && (i + 1) % progress_every == 0 {
            eprint!("\rstarting endpoints: {} of {}", i + 1, a.endpoints);
        }
    }
    if !a.json {
        eprintln!();
    }
    let start_secs = t0.elapsed().as_secs_f64();

    // Registered, and every chain's leaders linked.
    let expected_rings = match a.topology {
        Topology::Ring => a.endpoints.div_ceil(usize::from(a.ring_size)),
        Topology::Star => 0,
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let report = loop {
        let r = rings.report(None).await;
        let members: usize =
            r.rings.iter().map(|x| x.members.len()).sum::<usize>() + r.isolated.len();
        let leaders_ok = r
            .rings
            .iter()
            .all(|x| x.leader_links == x.members.len().min(2))
            && r.isolated.iter().all(|m| m.leads.forward);
        if (members == a.endpoints && r.rings.len() == expected_rings && leaders_ok)
            || Instant::now() > deadline
        {
            break r;
        }
        if std::env::var("SIM_DEBUG").is_ok() {
            for x in &r.rings {
                let leads: Vec<String> = x
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.leads.any())
                    .map(|(i, m)| {
                        format!(
                            "{i}{}{}",
                            if m.leads.forward { "F" } else { "" },
                            if m.leads.backward { "B" } else { "" }
                        )
                    })
                    .collect();
                eprintln!(
                    "DEBUG {} n={} links={} leads={:?}",
                    x.ring,
                    x.members.len(),
                    x.leader_links,
                    leads
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let registered_secs = t0.elapsed().as_secs_f64();
    let rss_after = rss_kib();

    // Questions, one after another.
    let role = PeerRole::Operator(OperatorRole::Operator);
    let mut answer_ms = Vec::new();
    let (mut msgs_in, mut msgs_out, mut bytes) = (0u64, 0u64, 0u64);
    let mut all_answered = true;
    let mut last_rows = Vec::new();
    for _ in 0..a.questions {
        let before = server.stats();
        let t = Instant::now();
        let id = match desk
            .serve(
                DeskRequest::Ask {
                    text: SIM_QUESTION.into(),
                    ttl_ms: Some(600_000),
                },
                role,
            )
            .await
        {
            DeskReply::Asked { id, .. } => id,
            other => bail!("ask failed: {other:?}"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let n = rings.answered(id).context("question vanished")?;
            if n >= a.endpoints || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        answer_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let p = rings.progress(id).context("question vanished")?;
        let after = server.stats();
        msgs_in += after.envelopes_received - before.envelopes_received;
        msgs_out += after.envelopes_sent - before.envelopes_sent;
        bytes +=
            (after.bytes_received - before.bytes_received) + (after.bytes_sent - before.bytes_sent);
        let counted: u64 = p.rows.iter().map(|r| r.count).sum();
        all_answered &= p.answered == a.endpoints && counted == a.endpoints as u64;
        last_rows = p
            .rows
            .iter()
            .map(|r| (r.cells[0].clone(), r.cells[1].clone(), r.count))
            .collect();
    }
    let mut sorted = answer_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let q = a.questions.max(1) as f64;
    let server_connections = server.connected_peers().len();
    for n in &nodes {
        n.shutdown();
    }
    server.shutdown();
    Ok(SimReport {
        endpoints: a.endpoints,
        ring_size: a.ring_size,
        transport: a.transport,
        topology: a.topology,
        start_secs,
        registered_secs,
        rings: report.rings.len(),
        p50_ms: percentile(&sorted, 50.0),
        p99_ms: percentile(&sorted, 99.0),
        answer_ms,
        server_msgs_in_per_question: msgs_in as f64 / q,
        server_msgs_out_per_question: msgs_out as f64 / q,
        server_bytes_per_question: bytes as f64 / q,
        server_connections,
        rss_kib_per_endpoint: rss_after.saturating_sub(rss_before) as f64 / a.endpoints as f64,
        all_answered,
        last_rows,
    })
}

/// Prints a report as a table.
pub fn print(r: &SimReport) {
    println!(
        "endpoints            {} ({:?}, {:?}, rings of {})",
        r.endpoints, r.transport, r.topology, r.ring_size
    );
    println!("started              {:.2} s", r.start_secs);
    println!(
        "registered, linked   {:.2} s ({} rings)",
        r.registered_secs, r.rings
    );
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
    println!("server connections   {}", r.server_connections);
    println!(
        "memory               {:.1} KiB RSS per endpoint",
        r.rss_kib_per_endpoint
    );
    println!(
        "every endpoint answered every question exactly once: {}",
        r.all_answered
    );
}
