//! `rollcall`: the operator CLI and node launcher.
//!
//! One thin binary over the library crates: it parses flags, loads configuration and
//! credentials, starts nodes and prints results. Protocol logic lives in the libraries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use rollcall_runtime::config::{Config, RawConfig};
use rollcall_runtime::enrol::{self, CaEnroller};
use rollcall_runtime::identity::{
    self, Ca, Credentials, JoinToken, OperatorRole, PeerRole, Validity,
};
use rollcall_runtime::node::{Node, NodeOptions, NodeStatus, STATUS_ACTOR, StatusRequest};
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};
use rollcall_runtime::{telemetry, tls::LinkTimeouts};

/// rollcall asks every machine in a fleet a question and has the answer in seconds.
///
/// Start here: `rollcall demo` runs a server and a few endpoints on loopback, enrols them
/// and shows that each is connected. For a real cluster: `rollcall ca init`, then
/// `rollcall server`, then `rollcall endpoint` on each machine with the join token.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the cluster certificate authority, join tokens and operator certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Run a server: it holds the CA, enrols endpoints and accepts their connections.
    Server(ServerArgs),
    /// Run an endpoint agent: enrol with a join token on first start, then stay connected.
    Endpoint(EndpointArgs),
    /// Ask a server for its status: its connected peers and link counters (any operator role).
    Status(StatusArgs),
    /// Run a server and N endpoints on loopback in one process, enrol them over QUIC,
    /// and show that each is connected.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a new cluster CA in DIR and print a first join token.
    Init {
        /// Where the CA's certificate, key and join tokens are kept.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name, shown in its certificate.
        #[arg(long, default_value = "rollcall cluster CA")]
        name: String,
    },
    /// Create another join token for the CA in DIR (a running server accepts it at once).
    JoinToken {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue an operator certificate with a role, for use with `--cert-dir`.
    IssueOperator {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The operator's name (shown in audit logs).
        #[arg(long)]
        name: String,
        /// viewer (read results and status), operator (also ask and act), admin (also
        /// manage the cluster and run chaos).
        #[arg(long, value_parser = parse_role)]
        role: OperatorRole,
        /// Where to write node.pem, node.key and ca.pem.
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

fn parse_role(s: &str) -> Result<OperatorRole, String> {
    s.parse()
}

/// Link settings shared by every node command.
#[derive(Debug, Args)]
struct LinkFlags {
    /// A TOML configuration file (section `[link]`); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Send a keep-alive after this many milliseconds without traffic.
    #[arg(long)]
    keep_alive_ms: Option<u64>,
    /// Close a link after this many milliseconds without hearing from the peer.
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
}

impl LinkFlags {
    fn load(&self) -> Result<Config> {
        let mut raw = match &self.config {
            Some(p) => RawConfig::from_file(p)?,
            None => RawConfig::default(),
        };
        if self.keep_alive_ms.is_some() {
            raw.link.keep_alive_ms = self.keep_alive_ms;
        }
        if self.idle_timeout_ms.is_some() {
            raw.link.idle_timeout_ms = self.idle_timeout_ms;
        }
        Ok(raw.validate()?)
    }
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The CA directory made by `rollcall ca init`.
    #[arg(long)]
    ca_dir: PathBuf,
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:4700")]
    listen: SocketAddr,
    /// Where the server keeps its certificate and node secret [default: CA_DIR/server].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    link: LinkFlags,
}

#[derive(Debug, Args)]
struct EndpointArgs {
    /// The server's address.
    #[arg(long)]
    server: SocketAddr,
    /// The join token printed by `rollcall ca init` or `rollcall ca join-token`; needed on
    /// first start only.
    #[arg(long, env = "ROLLCALL_JOIN_TOKEN")]
    join_token: Option<String>,
    /// Where the endpoint keeps its key, certificate and node secret.
    #[arg(long)]
    state_dir: PathBuf,
    /// UDP address to listen on for peers.
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    #[command(flatten)]
    link: LinkFlags,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The server's address.
    #[arg(long)]
    server: SocketAddr,
    /// The operator credentials written by `rollcall ca issue-operator --out`.
    #[arg(long)]
    cert_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// How many endpoints to start (each on its own 127.0.1.x address).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=250))]
    endpoints: u16,
    /// Print the server's status as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Demo(_) | Command::Status(_) | Command::Ca(_)
    );
    telemetry::init(if quiet { "warn" } else { "info" });
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Ca(c) => ca(c)?,
        Command::Server(a) => server(a).await?,
        Command::Endpoint(a) => endpoint(a).await?,
        Command::Status(a) => status(a).await?,
        Command::Demo(a) => return demo(a).await,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn ca(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init { dir, name } => {
            let ca = Ca::init(&dir, &name).context("creating the CA")?;
            let token = ca.new_join_token()?;
            println!(
                "created CA in {} (fingerprint {})",
                dir.display(),
                ca.fingerprint()
            );
            println!("join token: {token}");
        }
        CaCommand::JoinToken { dir } => {
            let ca = Ca::load(&dir).context("loading the CA")?;
            println!("{}", ca.new_join_token()?);
        }
        CaCommand::IssueOperator {
            dir,
            name,
            role,
            out,
            days,
        } => {
            let ca = Ca::load(&dir).context("loading the CA")?;
            let validity = Validity {
                not_after_secs: days * 24 * 3600,
                ..Validity::default()
            };
            let creds = ca.issue(PeerRole::Operator(role), Some(&name), validity)?;
            creds.save(&out)?;
            println!(
                "issued {} certificate for {name} in {}",
                PeerRole::Operator(role),
                out.display()
            );
        }
    }
    Ok(())
}

fn node_options(cfg: &Config) -> NodeOptions {
    NodeOptions {
        max_frame_bytes: cfg.max_frame_bytes,
        reconnect: cfg.reconnect,
        seed: rand_seed(),
        ..NodeOptions::default()
    }
}

fn rand_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id())
}

/// Starts a server node on `listen` serving enrolment from `ca`.
async fn start_server(
    ca: Arc<Ca>,
    state_dir: &Path,
    listen: SocketAddr,
    cfg: &Config,
) -> Result<Node> {
    let creds = if Credentials::exist_in(state_dir) {
        Credentials::load(state_dir)?
    } else {
        let c = ca.issue(PeerRole::Server, None, Validity::default())?;
        c.save(state_dir)?;
        c
    };
    let secret = identity::load_or_create_secret(state_dir)?;
    let opts = QuicOptions {
        timeouts: cfg.timeouts,
        enrolment: Some(Arc::new(CaEnroller::from_ca_dir(ca))),
        rng_seed: None,
    };
    let t = QuicTransport::bind(listen, &creds, &secret, opts)
        .with_context(|| format!("listening on {listen}"))?;
    Ok(Node::start(t, node_options(cfg)).await?)
}

async fn server(a: ServerArgs) -> Result<()> {
    let cfg = a.link.load()?;
    let ca = Arc::new(Ca::load(&a.ca_dir).context("loading the CA")?);
    let state = a.state_dir.unwrap_or_else(|| a.ca_dir.join("server"));
    let node = start_server(ca, &state, a.listen, &cfg).await?;
    println!(
        "server {} listening on {}",
        node.identity().id,
        node.local_addr()
    );
    wait_for_shutdown().await;
    node.shutdown();
    Ok(())
}

async fn endpoint(a: EndpointArgs) -> Result<()> {
    let cfg = a.link.load()?;
    let token = a
        .join_token
        .as_deref()
        .map(str::parse::<JoinToken>)
        .transpose()
        .context("reading the join token")?;
    let hostname = hostname();
    let enrol_bind = SocketAddr::new(a.listen.ip(), 0);
    let creds = enrol::load_or_enrol(
        &a.state_dir,
        a.server,
        token.as_ref(),
        &hostname,
        enrol_bind,
    )
    .await
    .context("enrolling")?;
    let secret = identity::load_or_create_secret(&a.state_dir)?;
    let opts = QuicOptions {
        timeouts: cfg.timeouts,
        ..QuicOptions::default()
    };
    let t = QuicTransport::bind(a.listen, &creds, &secret, opts)
        .with_context(|| format!("listening on {}", a.listen))?;
    let node = Node::start(t, node_options(&cfg)).await?;
    let link = node.connect(a.server).await?;
    println!(
        "endpoint {} listening on {}",
        node.identity().id,
        node.local_addr()
    );
    match link.wait_connected(Duration::from_secs(30)).await {
        Ok(server) => println!("connected to server {} at {}", server.id, a.server),
        Err(e) => tracing::warn!(error = %e, "not connected yet; will keep trying"),
    }
    wait_for_shutdown().await;
    node.shutdown();
    Ok(())
}

async fn wait_for_shutdown() {
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Connects as an operator and fetches the server's status.
async fn fetch_status(creds: &Credentials, server: SocketAddr) -> Result<NodeStatus> {
    let bind = match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        IpAddr::V4(_) => "0.0.0.0:0".parse()?,
        IpAddr::V6(_) => "[::]:0".parse()?,
    };
    let t = QuicTransport::bind(
        bind,
        creds,
        &identity::NodeSecret::generate(),
        QuicOptions::default(),
    )?;
    let node = Node::start(t, NodeOptions::default()).await?;
    let link = node.connect(server).await?;
    link.wait_connected(Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let status = link
        .call(STATUS_ACTOR, &StatusRequest, Duration::from_secs(10))
        .await
        .context("asking for status")?;
    node.shutdown();
    Ok(status)
}

async fn status(a: StatusArgs) -> Result<()> {
    let creds = Credentials::load(&a.cert_dir).context("loading operator credentials")?;
    let status = fetch_status(&creds, a.server).await?;
    print_status(&status, a.json)
}

fn print_status(status: &NodeStatus, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    println!(
        "{} {} at {} (asked by {})",
        status.identity.role, status.identity.id, status.addr, status.asked_by
    );
    println!("{:<18} {:<18} ADDRESS", "PEER", "ROLE");
    for p in &status.peers {
        println!(
            "{:<18} {:<18} {}",
            p.peer.id.0,
            p.peer.role.to_string(),
            p.addr
        );
    }
    let s = &status.stats;
    println!(
        "links: {} accepted, {} refused at handshake; envelopes: {} in, {} out, {} rejected",
        s.connections_accepted,
        s.handshakes_refused,
        s.envelopes_received,
        s.envelopes_sent,
        s.rejected_total()
    );
    Ok(())
}

async fn demo(a: DemoArgs) -> Result<std::process::ExitCode> {
    let dir = tempfile::tempdir().context("making a scratch directory")?;
    let ca = Arc::new(Ca::init(&dir.path().join("ca"), "rollcall demo CA")?);
    let token = ca.new_join_token()?;
    let cfg = Config {
        timeouts: LinkTimeouts::default(),
        ..Config::default()
    };
    let server = start_server(
        ca.clone(),
        &dir.path().join("server"),
        "127.0.0.1:0".parse()?,
        &cfg,
    )
    .await?;
    let server_addr = server.local_addr();
    if !a.json {
        println!(
            "rollcall demo: server {} on {server_addr}, {} endpoints on 127.0.1.x",
            server.identity().id,
            a.endpoints
        );
    }

    // Enrol every endpoint over QUIC with the join token, as `rollcall endpoint` does.
    let t0 = Instant::now();
    let mut enrolled = Vec::new();
    for i in 1..=a.endpoints {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8));
        let state = dir.path().join(format!("endpoint-{i}"));
        let creds = enrol::load_or_enrol(
            &state,
            server_addr,
            Some(&token),
            &format!("demo-host-{i}"),
            SocketAddr::new(ip, 0),
        )
        .await
        .with_context(|| format!("enrolling endpoint {i}"))?;
        enrolled.push((ip, state, creds));
    }
    let enrol_ms = t0.elapsed().as_millis();

    let t1 = Instant::now();
    let mut endpoints = Vec::new();
    for (ip, state, creds) in &enrolled {
        let secret = identity::load_or_create_secret(state)?;
        let t = QuicTransport::bind(
            SocketAddr::new(*ip, 0),
            creds,
            &secret,
            QuicOptions::default(),
        )?;
        let node = Node::start(t, NodeOptions::default()).await?;
        let link = node.connect(server_addr).await?;
        endpoints.push((node, link));
    }
    for (node, link) in &endpoints {
        link.wait_connected(Duration::from_secs(10))
            .await
            .with_context(|| format!("endpoint {} connecting", node.identity().id))?;
        server
            .wait_peer(&node.identity().id, Duration::from_secs(10))
            .await
            .with_context(|| format!("server never saw endpoint {}", node.identity().id))?;
    }
    let link_ms = t1.elapsed().as_millis();

    // Ask the server, as an admin operator would.
    let admin = ca.issue(
        PeerRole::Operator(OperatorRole::Admin),
        Some("demo-admin"),
        Validity::default(),
    )?;
    let status = fetch_status(&admin, server_addr).await?;
    let connected = status
        .peers
        .iter()
        .filter(|p| p.peer.role == PeerRole::Endpoint)
        .count();
    if !a.json {
        println!(
            "enrolled {} endpoints in {enrol_ms} ms; all linked to the server in {link_ms} ms\n",
            a.endpoints
        );
    }
    print_status(&status, a.json)?;
    if !a.json {
        println!("\n{connected} of {} endpoints connected", a.endpoints);
    }
    for (node, _) in &endpoints {
        node.shutdown();
    }
    server.shutdown();
    if connected != usize::from(a.endpoints) {
        bail!(
            "only {connected} of {} endpoints are connected",
            a.endpoints
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
