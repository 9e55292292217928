//! `rollcall server` and `rollcall endpoint`: nodes from configuration, through the composition root.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall::compose::{self, Answering, EndpointPlan};

use rollcall::config::Config;
use rollcall_actors::action::Executor;
use rollcall_actors::action::journal::{FileJournal, Journal};
use rollcall_actors::action::linux::{LinuxActions, LinuxExecutor};
use rollcall_actors::action::sim::SimExecutor;
use rollcall_actors::sensors::HostView;
use rollcall_actors::sensors::linux::LinuxHost;
use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
use rollcall_actors::store::ServerStore;
use rollcall_cluster::membership::{MembershipConfig, parse_cidr};
use rollcall_cluster::ring::RingConfig;
use rollcall_cluster::shard::{RingServer, RingServerConfig};
use rollcall_runtime::enrol::{self, CaEnroller};
use rollcall_runtime::identity::{self, Ca, Credentials, JoinToken, PeerRole, Validity};
use rollcall_runtime::node::{Node, NodeOptions};
use rollcall_runtime::signing::{ServerSigner, ServerTrust};
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};

use super::args::*;

pub(crate) fn node_options(cfg: &Config) -> NodeOptions {
    NodeOptions {
        max_frame_bytes: cfg.link.max_frame_bytes,
        reconnect: cfg.link.reconnect,
        seed: rand_seed(),
        ..NodeOptions::default()
    }
}

pub(crate) fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id())
}

/// Starts a server node on `listen` serving enrolment from `ca`, with its ring service,
/// signing what endpoints act on with `signer`, and refusing the identities revoked in
/// `ca_dir`.
pub(crate) async fn start_server(
    ca: Arc<Ca>,
    ca_dir: Option<&Path>,
    signer: Arc<ServerSigner>,
    state_dir: &Path,
    listen: SocketAddr,
    cfg: &Config,
) -> Result<(Node, RingServer)> {
    let creds = if Credentials::exist_in(state_dir) {
        Credentials::load(state_dir)?
    } else {
        let c = ca.issue(PeerRole::Server, None, Validity::default())?;
        c.save(state_dir)?;
        c
    };
    let secret = identity::load_or_create_secret(state_dir)?;
    let opts = QuicOptions {
        timeouts: cfg.link.timeouts,
        limits: cfg.link.limits,
        enrolment: Some(Arc::new(CaEnroller::from_ca_dir(
            ca.clone(),
            signer.public_key(),
        ))),
        ..QuicOptions::default()
    };
    let t = QuicTransport::bind(listen, &creds, &secret, opts)
        .with_context(|| format!("listening on {listen}"))?;
    let node = Node::start(
        t,
        NodeOptions {
            link_event_capacity: 16_384,
            ..node_options(cfg)
        },
    )
    .await?;
    let ranges = |list: &[String], what: &str| {
        list.iter()
            .map(|s| parse_cidr(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("reading the {what} ranges"))
    };
    let isolated = ranges(&cfg.peering.isolated, "isolated")?;
    let declared_address_ranges = ranges(&cfg.peering.declared_address_ranges, "declared-address")?;
    let membership = MembershipConfig {
        mask_v4: cfg.peering.mask_v4,
        mask_v6: cfg.peering.mask_v6,
        isolated,
        declared_address_ranges,
        offline_retention: Duration::from_secs(cfg.peering.offline_retention_hours * 3600),
        max_hostname_bytes: cfg.peering.max_hostname_bytes,
        offline_after: Duration::from_millis(cfg.ring.register_max_ms.saturating_mul(3)),
        ..MembershipConfig::default()
    };
    let rcfg = RingServerConfig::for_ring(&ring_config(cfg), membership, 4);
    let store = ServerStore::open(&state_dir.join("server.redb"), cfg.server.results_kept)
        .context("opening the result store")?;
    // Packages' files: every chunk an admin uploaded, never evicted.
    let chunks = rollcall_patchdist::FileCache::open(&state_dir.join("origin.redb"), u64::MAX)
        .context("opening the package store")?;
    let signer_for_chaos = signer.clone();
    let services = compose::start_server_services_with(
        &node,
        rcfg,
        Some(Arc::new(store)),
        None,
        signer,
        Arc::new(chunks),
    )
    .await?;
    services.desk.set_limits(cfg.server.limits);
    services
        .desk
        .set_require_approval(cfg.actions.require_approval.clone());
    let exports = rollcall_actors::export::queue::ExportQueue::open(
        &state_dir.join("export.redb"),
        rollcall_actors::export::queue::QueueLimits::default(),
    )
    .context("opening the export queue")?;
    services
        .desk
        .set_exports(Arc::new(exports))
        .map_err(anyhow::Error::msg)?;
    if let Some(addr) = rollcall::alerts::serve(services.desk.clone(), &cfg.alerts, &ca).await? {
        println!("alerts listening on https://{addr}/alerts");
    }
    rollcall::chaos::relay::ChaosRelay::install(
        &node,
        services.rings.clone(),
        services.desk.clone(),
        signer_for_chaos,
    );
    rollcall_runtime::renewal::CaRenewal::install(&node, ca);
    if let Some(dir) = ca_dir {
        compose::watch_revocations(&node, &services, dir.to_path_buf())?;
    }
    Ok((node, services.rings))
}

/// The ring settings of an endpoint, from the validated config.
pub(crate) fn ring_config(cfg: &Config) -> RingConfig {
    RingConfig {
        successors: cfg.ring.successors,
        ..RingConfig::from_intervals(
            Duration::from_millis(cfg.ring.probe_interval_ms),
            Duration::from_millis(cfg.ring.hop_timeout_ms),
        )
    }
}

/// Starts an endpoint's ring membership under its node's supervisor, acting only on what the
/// server `trust` pins signed.
pub(crate) async fn start_member(
    node: &Node,
    server: SocketAddr,
    trust: Arc<ServerTrust>,
    cfg: &Config,
    hostname: String,
    answering: Answering,
) -> Result<ractor::ActorRef<rollcall_cluster::member::MemberMsg>> {
    compose::start_endpoint(
        node,
        EndpointPlan {
            server,
            advertise: advertised(node.local_addr(), server),
            hostname,
            ring: ring_config(cfg),
            register_min: Duration::from_millis(cfg.ring.register_min_ms),
            register_max: Duration::from_millis(cfg.ring.register_max_ms),
            server_timeout: Duration::from_secs(10),
            seed: rand_seed(),
            answering,
            trust,
        },
    )
    .await
}

/// The address peers should dial: the listening address, or, when it is a wildcard, the local
/// address the system would use to reach the server (no packet is sent to find it).
pub(crate) fn advertised(listen: SocketAddr, server: SocketAddr) -> SocketAddr {
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap_or(listen);
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(server)?;
            s.local_addr()
        })
        .map(|a| SocketAddr::new(a.ip(), listen.port()))
        .unwrap_or(listen)
}

pub(crate) async fn server(a: ServerArgs) -> Result<()> {
    let mut cfg = a.link.load()?;
    if let Some(m) = a.mask_v4 {
        if m > 32 {
            bail!("--mask-v4 must be at most 32");
        }
        cfg.peering.mask_v4 = m;
    }
    cfg.peering.isolated.extend(a.isolated);
    if let Some(n) = a.results_kept {
        if n == 0 {
            bail!("--results-kept must be at least 1");
        }
        cfg.server.results_kept = n;
    }
    let ca_dir = a
        .ca_dir
        .or(cfg.node.ca_dir.clone())
        .ok_or_else(|| NotConfigured("set the CA directory: --ca-dir, or [node] ca_dir".into()))?;
    let listen = a
        .listen
        .or(cfg.node.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 4700)));
    if !ca_dir.exists() {
        return Err(NotConfigured(format!(
            "no CA in {0}: make it with `rollcall ca init --dir {0}`",
            ca_dir.display()
        ))
        .into());
    }
    let ca = Arc::new(Ca::load(&ca_dir).context("loading the CA")?);
    let signer = Arc::new(
        ServerSigner::load_or_create(&ca_dir).context("loading the server's signing key")?,
    );
    let state = a
        .state_dir
        .or(cfg.node.state_dir.clone())
        .unwrap_or_else(|| ca_dir.join("server"));
    let metrics = start_metrics(&cfg, "opening the store").await?;
    let (node, _rings) = start_server(ca, Some(&ca_dir), signer, &state, listen, &cfg).await?;
    if let Some(m) = &metrics {
        // Started means the store is open and the socket bound: ready while it runs.
        let n = node.clone();
        m.attach(
            &node,
            Arc::new(move || {
                let up = !n.is_shut_down();
                Box::pin(async move {
                    if up {
                        Ok(())
                    } else {
                        Err("shutting down".into())
                    }
                })
            }),
        );
    }
    println!(
        "server {} listening on {}",
        node.identity().id,
        node.local_addr()
    );
    wait_for_shutdown().await;
    node.shutdown_and_wait(Duration::from_secs(2)).await;
    Ok(())
}

/// A setting the node cannot start without is missing (the process exits with 78,
/// EX_CONFIG, which its service unit does not restart on).
#[derive(Debug, thiserror::Error)]
#[error("not configured: {0}")]
pub(crate) struct NotConfigured(pub(crate) String);

/// Starts the metrics listener if the config asks for one.
async fn start_metrics(
    cfg: &Config,
    waiting_on: &str,
) -> Result<Option<rollcall::metrics::MetricsListener>> {
    let Some(addr) = cfg.metrics.listen else {
        return Ok(None);
    };
    let m = rollcall::metrics::MetricsListener::serve(addr).await?;
    m.waiting_on(waiting_on);
    println!("metrics on http://{}/metrics", m.addr());
    Ok(Some(m))
}

pub(crate) async fn endpoint(a: EndpointArgs) -> Result<()> {
    let mut cfg = a.link.load()?;
    if let Some(v) = a.register_min_ms {
        cfg.ring.register_min_ms = v;
    }
    if let Some(v) = a.register_max_ms {
        cfg.ring.register_max_ms = v;
    }
    if cfg.ring.register_min_ms == 0 || cfg.ring.register_min_ms > cfg.ring.register_max_ms {
        bail!("the registration interval must satisfy 0 < min <= max");
    }
    let server = a.server.or(cfg.node.server).ok_or_else(|| {
        NotConfigured("set the server's address: --server, or [node] server".into())
    })?;
    let state_dir = a
        .state_dir
        .clone()
        .or(cfg.node.state_dir.clone())
        .ok_or_else(|| {
            NotConfigured("set the state directory: --state-dir, or [node] state_dir".into())
        })?;
    let listen = a
        .listen
        .or(cfg.node.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    // Flags first, then the config file.
    let (join_token, join_token_file) = match (&a.join_token, &a.join_token_file) {
        (None, None) => (
            cfg.node.join_token.clone(),
            cfg.node.join_token_file.clone(),
        ),
        _ => (a.join_token.clone(), a.join_token_file.clone()),
    };
    let from_file = match &join_token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the join token from {}", p.display()))?,
        ),
        None => None,
    };
    let token = join_token
        .as_deref()
        .or(from_file.as_deref())
        .map(|t| t.trim().parse::<JoinToken>())
        .transpose()
        .context("reading the join token")?;
    let hostname = hostname();
    let metrics = start_metrics(&cfg, "enrolling with the server").await?;
    let enrol_bind = SocketAddr::new(listen.ip(), 0);
    // A server that cannot be reached, or whose exchange broke off (a fleet starting all at
    // once), is tried again with backoff; a refusal (a bad token) ends the process.
    let mut wait = Duration::from_secs(1);
    let enrolled = loop {
        match enrol::load_or_enrol(&state_dir, server, token.as_ref(), &hostname, enrol_bind).await
        {
            Ok(e) => break e,
            Err(e @ (enrol::EnrolError::Connect { .. } | enrol::EnrolError::Exchange(_))) => {
                let jittered = wait.mul_f64(rand::random_range(0.5..=1.0));
                tracing::warn!(error = %e, retry_in = ?jittered, "enrolment failed; trying again");
                tokio::time::sleep(jittered).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
            Err(e) => return Err(e).context("enrolling"),
        }
    };
    let secret = identity::load_or_create_secret(&state_dir)?;
    let allow_chaos = a.allow_chaos || cfg.chaos.allow;
    // Socket faults only where chaos is allowed: every datagram passes through them.
    let socket_faults = allow_chaos.then(|| {
        Arc::new(rollcall_runtime::transport::faults::SocketFaults::seeded(
            rand_seed(),
        ))
    });
    let opts = QuicOptions {
        timeouts: cfg.link.timeouts,
        limits: cfg.link.limits,
        faults: socket_faults.clone(),
        ..QuicOptions::default()
    };
    let t = QuicTransport::bind(listen, &enrolled.creds, &secret, opts)
        .with_context(|| format!("listening on {}", listen))?;
    let node = Node::start(t.clone(), node_options(&cfg)).await?;
    // Its certificate is short-lived: renewed over its link before a third of its life is left.
    rollcall_runtime::renewal::keep_renewed(
        node.clone(),
        t,
        state_dir.clone(),
        server,
        enrolled.trust.server_id.clone(),
        enrolled.creds.clone(),
    );
    println!(
        "endpoint {} listening on {}",
        node.identity().id,
        node.local_addr()
    );
    if let Some(m) = &metrics {
        m.waiting_on("starting the ring member");
    }
    let journal: Arc<dyn Journal> = Arc::new(
        FileJournal::open(&state_dir.join("actions.redb")).context("opening the action journal")?,
    );
    // Who a quarantined machine may still reach: the server, and its ring neighbours as
    // its ring actor last saw them.
    let reachable = Arc::new(std::sync::RwLock::new(vec![server.ip()]));
    let (host, executor, linux): (Arc<dyn HostView>, Arc<dyn Executor>, Option<LinuxExecutor>) =
        match a.simulate_host {
            Some(seed) => {
                let host = Arc::new(SimulatedHost::new(HostProfile::from_seed(
                    seed,
                    Some(node.local_addr().ip()),
                )));
                (host.clone(), Arc::new(SimExecutor::new(host)), None)
            }
            None => {
                let r = reachable.clone();
                let exec = LinuxExecutor::new(LinuxActions {
                    file_roots: cfg.actions.file_roots.clone(),
                    quarantine_dir: cfg
                        .actions
                        .quarantine_dir
                        .clone()
                        .unwrap_or_else(|| state_dir.join("quarantine")),
                    state_dir: state_dir.clone(),
                    allow: Arc::new(move || rollcall_runtime::sync::read(&r).clone()),
                });
                (
                    Arc::new(LinuxHost::default()),
                    Arc::new(exec.clone()),
                    Some(exec),
                )
            }
        };
    // A real machine records its history; a simulated one answers from its seeded history.
    let history = match (a.simulate_host, cfg.history.enabled) {
        (None, true) => Some(compose::HistoryPlan::open(
            &state_dir.join("history.redb"),
            &cfg.history,
        )?),
        _ => None,
    };
    let trust = Arc::new(enrolled.trust);
    rollcall::chaos::agent::ChaosAgent::install(
        &node,
        allow_chaos,
        trust.clone(),
        socket_faults,
        cfg.chaos.fault_limit,
        server.ip(),
    );
    if allow_chaos {
        tracing::warn!("chaos commands allowed: an admin may kill, pause or degrade this process");
    }
    let member = start_member(
        &node,
        server,
        trust,
        &cfg,
        hostname,
        Answering::Acting {
            host,
            journal,
            executor,
            files: Some(Box::new(compose::FilesPlan {
                cache: Arc::new(
                    rollcall_patchdist::FileCache::open(
                        &state_dir.join("chunks.redb"),
                        cfg.actions.package_cache_bytes,
                    )
                    .context("opening the package chunk cache")?,
                ),
                cfg: rollcall_patchdist::PatchConfig::default(),
                work_dir: Some(state_dir.join("work")),
            })),
            history,
        },
    )
    .await?;
    if let Some(m) = &metrics {
        // Ready once the server has placed it: in a ring, or in an isolated range.
        let member = member.clone();
        m.attach(
            &node,
            Arc::new(move || {
                let member = member.clone();
                Box::pin(async move {
                    match rollcall_cluster::member::status(&member).await {
                        Some(s) if s.registrations > 0 => Ok(()),
                        Some(_) => Err("not registered with the server yet".into()),
                        None => Err("the ring member is restarting".into()),
                    }
                })
            }),
        );
    }
    {
        let member = member.clone();
        let server = server.ip();
        tokio::spawn(async move {
            loop {
                if let Some(s) = rollcall_cluster::member::status(&member).await {
                    let mut ips = vec![server];
                    ips.extend(s.view.iter().map(|m| m.addr.ip()));
                    ips.sort();
                    ips.dedup();
                    *rollcall_runtime::sync::write(&reachable) = ips;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rollcall_cluster::member::status(&member).await {
            Some(s) if s.registrations > 0 => {
                match &s.ring {
                    Some(r) => println!("registered in ring {r} with {} members", s.ring_members),
                    None => println!("registered in an isolated range (no peering)"),
                }
                break;
            }
            _ if Instant::now() >= deadline => {
                tracing::warn!("not registered yet; will keep trying");
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    if let Some(exec) = linux
        && let Some(o) = exec.reapply_quarantine().await
    {
        println!("quarantine put back: {}", o.status);
    }
    wait_for_shutdown().await;
    node.shutdown_and_wait(Duration::from_secs(2)).await;
    Ok(())
}

pub(crate) async fn wait_for_shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
