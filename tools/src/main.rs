//! `rollcall`: the operator CLI and node launcher.
//!
//! One thin binary over the library crates: it parses flags, loads configuration and
//! credentials, starts nodes and prints results. Protocol logic lives in the libraries.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod bench;

// One process may run a server and 100,000 simulated endpoints, each a handful of actors
// passing small messages: mimalloc serves those many small, short-lived allocations faster
// than the system allocator, and fragments less. (Off without the `mimalloc` feature, so that
// heaptrack, which intercepts malloc, sees every allocation.)
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};
use rollcall::{results, sim};
use rollcall_actors::desk::{DESK, DeskReply, DeskRequest, QuestionDesk, SensorEvaluator};
use rollcall_actors::question::SensorSpec;
use rollcall_actors::search::SavedQuestion;
use rollcall_actors::sensors::linux::LinuxHost;
use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
use rollcall_actors::sensors::{HostView, PatchLevel, Sensors};
use rollcall_actors::store::ServerStore;
use rollcall_cluster::member::{EvaluatorHandle, MemberConfig, RingMember};
use rollcall_cluster::membership::{MembershipConfig, parse_cidr};
use rollcall_cluster::proto::{AdminRequest, RING_ADMIN, RingsReport};
use rollcall_cluster::questions::Progress;
use rollcall_cluster::ring::RingConfig;
use rollcall_cluster::shard::{RingServer, RingServerConfig};
use rollcall_runtime::config::{Config, RawConfig};
use rollcall_runtime::enrol::{self, CaEnroller};
use rollcall_runtime::identity::{
    self, Ca, Credentials, JoinToken, OperatorRole, PeerRole, Validity,
};
use rollcall_runtime::node::{Node, NodeOptions, NodeStatus, STATUS_ACTOR, StatusRequest};
use rollcall_runtime::supervisor::{ChildSpec, Restart};
use rollcall_runtime::telemetry;
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};

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
    /// Look at the rings (any operator role).
    #[command(subcommand)]
    Ring(RingCommand),
    /// Ask every machine a question and watch the answers arrive (operator role), e.g.
    /// `rollcall ask 'Get Computer Name and Operating System from all machines with
    /// Installed Applications contains "openssl"'`.
    #[command(after_long_help = ASK_HELP)]
    Ask(AskArgs),
    /// Show a question's results again, or export them (any operator role).
    Results(ResultsArgs),
    /// List the questions the server keeps (any operator role).
    Questions(OperatorArgs),
    /// Turn plain words into ranked questions, e.g. `rollcall search "machines with chrome"`.
    Search(SearchArgs),
    /// Saved questions: save (optionally reissued on a schedule), list, run.
    #[command(subcommand)]
    Saved(SavedCommand),
    /// Sensors: list them, or register a script sensor every endpoint receives (admin role).
    #[command(subcommand)]
    Sensor(SensorCommand),
    /// Set the patch baseline that the `Missing Patches` sensor compares against (admin role).
    Patches(PatchesArgs),
    /// Run a server and N simulated endpoints in one process and measure questions:
    /// registration time, time to 100% of answers, server messages and bytes, memory.
    Sim(sim::SimArgs),
    /// Inject faults into a fleet served by `rollcall sim --serve`, or run a fault scenario
    /// and print its invariant table (admin role). The server flags come first, e.g.
    /// `rollcall chaos --server 127.0.0.1:4800 --cert-dir ops kill --random 10%`, or
    /// `... --scenario ring-split`, `... --scenario all`.
    Chaos(ChaosArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a server and N endpoints (simulated machines) on loopback in one process, enrol
    /// them over QUIC, show the rings they form, ask them a question and show the answer.
    Demo(DemoArgs),
}

/// Where the server is and who is asking.
#[derive(Debug, Args)]
struct OperatorArgs {
    /// The server's address.
    #[arg(long)]
    server: SocketAddr,
    /// Operator credentials written by `rollcall ca issue-operator --out`.
    #[arg(long)]
    cert_dir: PathBuf,
}

/// `rollcall chaos` arguments.
#[derive(Debug, Args)]
struct ChaosArgs {
    #[command(flatten)]
    op: OperatorArgs,
    /// Run a scenario (or `all` of them, one after another) from a healed fleet and print
    /// the invariant table: neighbour-killed, grey-neighbour, slow-neighbour, leader-killed,
    /// both-leaders-killed, ring-split, subnet-reboot, offline-and-back,
    /// loss-and-duplication, server-restart. Exits non-zero if an invariant fails.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Seed of the scenario's choices (which ring, which machines, when).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the scenario's fault lasts before healing, in seconds.
    #[arg(long, default_value_t = 4)]
    fault_secs: u64,
    /// The window in which subnet-reboot's machines reboot, in seconds.
    #[arg(long, default_value_t = 60)]
    reboot_window_secs: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<ChaosAction>,
}

/// A fault to apply now.
#[derive(Debug, Subcommand)]
enum ChaosAction {
    /// Kill silently (nothing leaves them, not even a close).
    Kill(TargetArgs),
    /// Start killed ones again, with their identity (running ones are killed first).
    Restart(TargetArgs),
    /// Pause: a grey machine that keeps its connections but answers nothing.
    Pause(TargetArgs),
    /// Resume paused ones.
    Resume(TargetArgs),
    /// Delay everything they send and receive.
    Slow {
        /// Milliseconds per message, each way.
        #[arg(long)]
        ms: u64,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Lose a share of what they send and receive.
    Loss {
        /// Percent, e.g. 10 or 10%.
        #[arg(long, value_parser = parse_percent)]
        percent: f64,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Duplicate a share of what they send and receive.
    Duplicate {
        /// Percent, e.g. 10 or 10%.
        #[arg(long, value_parser = parse_percent)]
        percent: f64,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Cut them off from every other endpoint.
    Partition {
        /// Cut them off from the server too.
        #[arg(long)]
        from_server: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Clear every fault (killed machines stay down until restarted).
    Heal,
}

/// Which endpoints a fault hits (exactly one).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// One endpoint, by id or address.
    #[arg(long)]
    node: Option<String>,
    /// A random share of the running endpoints, e.g. 10%.
    #[arg(long, value_parser = parse_percent)]
    random: Option<f64>,
    /// Every current leader.
    #[arg(long)]
    leaders: bool,
    /// Every endpoint of a subnet, e.g. 127.1.0.0/24.
    #[arg(long)]
    subnet: Option<String>,
    /// Every endpoint.
    #[arg(long)]
    all: bool,
}

impl TargetArgs {
    fn target(&self) -> rollcall::chaos::Target {
        use rollcall::chaos::Target;
        if let Some(n) = &self.node {
            Target::Node(n.clone())
        } else if let Some(p) = self.random {
            Target::Random(p)
        } else if self.leaders {
            Target::Leaders
        } else if let Some(s) = &self.subnet {
            Target::Subnet(s.clone())
        } else {
            Target::All
        }
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 10 or 10%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v}% is not between 0% and 100%"));
    }
    Ok(v)
}

async fn chaos_command(a: ChaosArgs) -> Result<std::process::ExitCode> {
    use rollcall::chaos::{
        CHAOS, ChaosReply, ChaosRequest, FaultAction, Scenario, ScenarioOptions,
    };
    let requests: Vec<ChaosRequest> = match (&a.scenario, &a.action) {
        (Some(_), Some(_)) => bail!("give either a fault or --scenario, not both"),
        (Some(name), None) => {
            let list: Vec<Scenario> = if name == "all" {
                Scenario::ALL.to_vec()
            } else {
                vec![
                    <Scenario as clap::ValueEnum>::from_str(name, true).map_err(|_| {
                        anyhow::anyhow!(
                            "no scenario {name:?}; one of: all, {}",
                            Scenario::ALL.map(|s| s.name()).join(", ")
                        )
                    })?,
                ]
            };
            let mut opts = ScenarioOptions::new(a.seed);
            opts.fault_for = Duration::from_secs(a.fault_secs.max(1));
            opts.reboot_window = Duration::from_secs(a.reboot_window_secs.max(1));
            list.into_iter()
                .map(|scenario| ChaosRequest::Scenario {
                    scenario,
                    opts: opts.clone(),
                })
                .collect()
        }
        (None, Some(action)) => {
            let (action, target) = match action {
                ChaosAction::Kill(t) => (FaultAction::Kill, t.target()),
                ChaosAction::Restart(t) => (FaultAction::Restart, t.target()),
                ChaosAction::Pause(t) => (FaultAction::Pause, t.target()),
                ChaosAction::Resume(t) => (FaultAction::Resume, t.target()),
                ChaosAction::Slow { ms, target } => (FaultAction::Slow(*ms), target.target()),
                ChaosAction::Loss { percent, target } => {
                    (FaultAction::Loss(*percent), target.target())
                }
                ChaosAction::Duplicate { percent, target } => {
                    (FaultAction::Duplicate(*percent), target.target())
                }
                ChaosAction::Partition {
                    from_server,
                    target,
                } => (FaultAction::Partition(*from_server), target.target()),
                ChaosAction::Heal => (FaultAction::Heal, rollcall::chaos::Target::All),
            };
            vec![ChaosRequest::Fault {
                action,
                target,
                seed: a.seed,
            }]
        }
        (None, None) => {
            bail!("say what to do: a fault (see `rollcall chaos --help`) or --scenario NAME")
        }
    };
    let creds = Credentials::load(&a.op.cert_dir).context("loading operator credentials")?;
    let node = operator_node(&creds, a.op.server).await?;
    let link = node.connect(a.op.server).await?;
    link.wait_connected(Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to {}", a.op.server))?;
    let mut ok = true;
    for req in requests {
        if let ChaosRequest::Scenario { scenario, opts } = &req {
            eprintln!(
                "running scenario {} (seed {}): forming, fault for {:?}, healing; this takes a minute or two",
                scenario.name(),
                opts.seed,
                opts.fault_for
            );
        }
        let reply: ChaosReply = match link.call(CHAOS, &req, Duration::from_secs(3600)).await {
            Ok(r) => r,
            Err(rollcall_runtime::node::CallError::Transport(
                rollcall_runtime::TransportError::Refused(
                    rollcall_runtime::transport::RefuseCode::UnknownDestination,
                ),
            )) => {
                bail!(
                    "{} takes no chaos commands: they run against a fleet served by `rollcall sim --serve`",
                    a.op.server
                )
            }
            Err(e) => return Err(e).context("sending the chaos command"),
        };
        match reply {
            ChaosReply::Applied(who) => {
                if a.json {
                    println!("{}", serde_json::to_string(&who)?);
                } else {
                    println!("applied to {} endpoint(s):", who.len());
                    for (id, ip) in who {
                        println!("  {id}  {ip}");
                    }
                }
            }
            ChaosReply::Scenario(r) => {
                ok &= r.passed();
                if a.json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{}", r.table());
                }
            }
            ChaosReply::Error(e) => {
                node.shutdown_and_wait(Duration::from_secs(1)).await;
                bail!("{e}")
            }
        }
    }
    node.shutdown_and_wait(Duration::from_secs(1)).await;
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// The question language, for `rollcall ask --help`.
const ASK_HELP: &str = "\
QUESTIONS
  Get SENSOR [and SENSOR ...] from all machines [with CONDITION]
  A condition is SENSOR OPERATOR VALUE, combined with and, or, not and parentheses
  (and binds tighter than or). `rollcall sensor list` shows every sensor with its type,
  unit, parameter and whether it gives several values.

ROWS
  Each machine gives one row per value of a sensor with several values (Installed
  Applications, Running Processes, Listening Ports, Logged In Users, IP Address, ...), so
  `Get Installed Applications from all machines` counts machines per application. With
  several sensors selected, a machine gives a row per combination of their values (at most
  1024; past that the answer says it was cut). COUNT is the number of machines that gave
  the row; a machine is counted once per distinct row.

OPERATORS (text comparisons ignore case, `matches` included; use (?-i) in a pattern to
respect case)
  contains, starts with, ends with, matches (regular expression)
  = (also equals, is, ==)
  != (also is not, <>, does not equal): no value equals it
  does not contain (also not contains, doesn't contain): no value contains it
  <  <=  >  >=: numbers, sizes and durations with units, and versions on version sensors
  A positive operator holds when any of a machine's values satisfies it; a negative one
  when none does. A sensor that failed on a machine makes its conditions unknown there:
  the machine does not match, and the failure is listed under problems.

VALUES
  Quote values with spaces: \"Rocky Linux\" or 'Rocky Linux'. A value keeps its text:
  `Kernel Version starts with 6.10` does not match 6.1.0. Units: Memory > 8 GB,
  Disk Free < 10 GiB, Uptime > 2 days (s, min, h, d, w). Parameters may be quoted and
  then hold commas and spaces: File Exists[\"/opt/my app/run.sh\"].

LIMITS
  At most 256 KiB of text, 4096 conditions, 16 selected sensors, and parentheses and
  `not` nested 32 deep; `a or b or c ...` is a flat list however long.

EXIT CODE
  0 when answers came back, 1 when the question failed on every machine that answered,
  2 when the server refused it (a parse error says at which column).";

/// How results are printed.
#[derive(Debug, Args)]
struct OutputFlags {
    /// Print JSON (the whole progress record) instead of a table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print the rows as CSV (a header, then one line per distinct row with its count).
    #[arg(long)]
    csv: bool,
}

#[derive(Debug, Args)]
struct AskArgs {
    /// The question.
    question: String,
    #[command(flatten)]
    op: OperatorArgs,
    #[command(flatten)]
    out: OutputFlags,
    /// Stop watching after this many seconds (the question stays open; see `rollcall results`).
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
    /// How long the question stays open for machines that answer late.
    #[arg(long, default_value_t = 600)]
    ttl_secs: u64,
}

#[derive(Debug, Args)]
struct ResultsArgs {
    /// The question's id (from `rollcall ask` or `rollcall questions`).
    id: u64,
    #[command(flatten)]
    op: OperatorArgs,
    #[command(flatten)]
    out: OutputFlags,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Run the scale matrix (rings and the hub-and-spoke baseline, in-memory and QUIC) as
    /// separate `rollcall sim` processes and write the table to a Markdown file.
    Scale {
        /// Where to write the results.
        #[arg(long, default_value = "bench/RESULTS.md")]
        out: PathBuf,
        /// The largest in-memory fleet (the matrix is 1k, 10k, then this).
        #[arg(long, default_value_t = 100_000)]
        max_endpoints: usize,
        /// Questions per run.
        #[arg(long, default_value_t = 5)]
        questions: usize,
    },
    /// Rank the search box's test set of plain requests (no server needed) and print the
    /// share whose expected question ranks first and within the first three.
    Search,
}

#[derive(Debug, Args)]
struct SearchArgs {
    /// Plain words: sensor names (typos forgiven) and values to look for.
    words: String,
    #[command(flatten)]
    op: OperatorArgs,
}

#[derive(Debug, Subcommand)]
enum SavedCommand {
    /// Save a question under a name.
    Add {
        /// Its name.
        name: String,
        /// The question.
        question: String,
        /// Reissue it every this many seconds.
        #[arg(long)]
        every_secs: Option<u64>,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// List saved questions.
    List(OperatorArgs),
    /// Ask a saved question now and watch its answers.
    Run {
        /// Its name.
        name: String,
        #[command(flatten)]
        op: OperatorArgs,
        #[command(flatten)]
        out: OutputFlags,
        /// Stop watching after this many seconds.
        #[arg(long, default_value_t = 30)]
        wait_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
enum SensorCommand {
    /// The sensor names questions may use.
    List(OperatorArgs),
    /// Register a shell script as a sensor; its output lines are its values. Endpoints get it
    /// (hash-checked) at their next registration and run it under the sensor budget.
    Add {
        /// The sensor's name in questions (plain words, not a built-in's).
        name: String,
        /// A file holding the script.
        #[arg(long)]
        script_file: PathBuf,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

#[derive(Debug, Args)]
struct PatchesArgs {
    /// A file with one `package minimum-version` per line (`#` starts a comment).
    #[arg(long)]
    file: PathBuf,
    #[command(flatten)]
    op: OperatorArgs,
}

#[derive(Debug, Subcommand)]
enum RingCommand {
    /// Print each ring in order: its members, their health (ok, slow, suspect, offline),
    /// which ends they lead, and the server's connection count.
    Show(RingShowArgs),
}

#[derive(Debug, Args)]
struct RingShowArgs {
    #[command(flatten)]
    op: OperatorArgs,
    /// Only this ring: its id (`127.0.1.0/24`) or any address inside it.
    #[arg(long)]
    subnet: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
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
    /// Prefix length of an IPv4 peering range: endpoints in the same range form a ring
    /// [default: 24, or the config file's peering.mask_v4].
    #[arg(long)]
    mask_v4: Option<u8>,
    /// A range whose machines never peer (VPN pools); repeat for more. Adds to the config
    /// file's peering.isolated.
    #[arg(long, value_name = "CIDR")]
    isolated: Vec<String>,
    /// How many questions' results to keep in the server's store (oldest dropped first)
    /// [default: 1000, or server.results_kept].
    #[arg(long)]
    results_kept: Option<usize>,
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
    /// Answer questions as a simulated machine (a deterministic profile from this seed)
    /// instead of reading this one: for test fleets.
    #[arg(long, value_name = "SEED")]
    simulate_host: Option<u64>,
    /// Shortest registration interval in milliseconds [default: 30000, or ring.register_min_ms].
    #[arg(long)]
    register_min_ms: Option<u64>,
    /// Longest registration interval in milliseconds [default: 90000, or ring.register_max_ms].
    #[arg(long)]
    register_max_ms: Option<u64>,
    #[command(flatten)]
    link: LinkFlags,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    op: OperatorArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// How many endpoints to start, each on its own loopback address.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=500))]
    endpoints: u16,
    /// Spread them over this many subnets (127.0.1.x, 127.0.2.x, …): one ring each.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=50))]
    subnets: u16,
    /// The question to ask once the rings have formed.
    #[arg(
        long,
        default_value = "Get Operating System and OS Version from all machines"
    )]
    question: String,
    /// Print the rings and the answer as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Long-running nodes log their lifecycle; one-shot commands only warnings.
    let quiet = !matches!(cli.command, Command::Server(_) | Command::Endpoint(_));
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
        Command::Ring(RingCommand::Show(a)) => ring_show(a).await?,
        Command::Ask(a) => return ask(a).await,
        Command::Results(a) => results(a).await?,
        Command::Questions(a) => questions(a).await?,
        Command::Sim(a) => {
            let (mut fleet, started) = sim::start(&a).await?;
            let r = sim::measure(&a, &fleet, started).await;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    fleet.shutdown().await;
                    return Err(e);
                }
            };
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                sim::print(&r);
            }
            match (a.serve, &a.cert_dir) {
                (Some(addr), Some(dir)) => {
                    sim::serve(fleet, addr, dir, wait_for_shutdown()).await?
                }
                _ => fleet.shutdown().await,
            }
            if !r.all_answered {
                bail!("not every endpoint answered every question");
            }
        }
        Command::Chaos(a) => return chaos_command(a).await,
        Command::Bench(BenchCommand::Scale {
            out,
            max_endpoints,
            questions,
        }) => {
            bench::scale(&out, max_endpoints, questions)?;
        }
        Command::Bench(BenchCommand::Search) => {
            use rollcall_actors::search::{HELD_OUT, REQUESTS, hit_rates};
            let catalog = rollcall_actors::sensors::catalog_with(&[]);
            println!("| set | requests | top-1 | top-3 |");
            println!("|---|---:|---:|---:|");
            let mut all_misses = Vec::new();
            for (name, set) in [("test set", REQUESTS), ("held out", HELD_OUT)] {
                let (top1, top3, misses) = hit_rates(set, &catalog);
                println!(
                    "| {name} | {} | {:.1}% | {:.1}% |",
                    set.len(),
                    top1 * 100.0,
                    top3 * 100.0
                );
                all_misses.extend(misses);
            }
            for (request, got) in all_misses {
                println!("missed in the top three: {request:?} -> {got:?}");
            }
        }
        Command::Search(a) => {
            return desk_command(&a.op, DeskRequest::Search { text: a.words }).await;
        }
        Command::Saved(SavedCommand::Add {
            name,
            question,
            every_secs,
            op,
        }) => {
            let q = SavedQuestion {
                name,
                text: question,
                every_secs,
            };
            return desk_command(&op, DeskRequest::Save(q)).await;
        }
        Command::Saved(SavedCommand::List(op)) => {
            return desk_command(&op, DeskRequest::Saved).await;
        }
        Command::Saved(SavedCommand::Run {
            name,
            op,
            out,
            wait_secs,
        }) => {
            let desk = DeskClient::connect(&op).await?;
            return watch(desk, DeskRequest::RunSaved { name }, wait_secs, &out).await;
        }
        Command::Sensor(SensorCommand::List(op)) => {
            return desk_command(&op, DeskRequest::Sensors).await;
        }
        Command::Sensor(SensorCommand::Add {
            name,
            script_file,
            op,
        }) => {
            let script = std::fs::read_to_string(&script_file)
                .with_context(|| format!("reading {}", script_file.display()))?;
            return desk_command(&op, DeskRequest::AddSensor { name, script }).await;
        }
        Command::Patches(a) => {
            let text = std::fs::read_to_string(&a.file)
                .with_context(|| format!("reading {}", a.file.display()))?;
            let mut levels = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let mut f = line.split_whitespace();
                match (f.next(), f.next(), f.next()) {
                    (Some(p), Some(v), None) => levels.push(PatchLevel {
                        package: p.into(),
                        min_version: v.into(),
                    }),
                    _ => bail!(
                        "{}:{}: expected `package minimum-version`",
                        a.file.display(),
                        n + 1
                    ),
                }
            }
            return desk_command(&a.op, DeskRequest::SetBaseline(levels)).await;
        }
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

/// Starts a server node on `listen` serving enrolment from `ca`, with its ring service.
async fn start_server(
    ca: Arc<Ca>,
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
        timeouts: cfg.timeouts,
        enrolment: Some(Arc::new(CaEnroller::from_ca_dir(ca))),
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
    let isolated = cfg
        .peering
        .isolated
        .iter()
        .map(|s| parse_cidr(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)
        .context("reading the isolated ranges")?;
    let rcfg = RingServerConfig {
        membership: MembershipConfig {
            mask_v4: cfg.peering.mask_v4,
            mask_v6: cfg.peering.mask_v6,
            isolated,
            offline_after: Duration::from_millis(cfg.ring.register_max_ms.saturating_mul(3)),
            ..MembershipConfig::default()
        },
        ..RingServerConfig::default()
    };
    let rings = RingServer::start(&node, rcfg, None)
        .await
        .map_err(anyhow::Error::msg)
        .context("starting the ring service")?;
    let store = ServerStore::open(&state_dir.join("server.redb"), cfg.results_kept)
        .context("opening the result store")?;
    QuestionDesk::new(rings.clone(), Some(Arc::new(store))).install(&node);
    Ok((node, rings))
}

/// The ring settings of an endpoint, from the validated config.
fn ring_config(cfg: &Config) -> RingConfig {
    let hop = Duration::from_millis(cfg.ring.hop_timeout_ms);
    let probe = Duration::from_millis(cfg.ring.probe_interval_ms);
    RingConfig {
        successors: cfg.ring.successors,
        probe_interval: probe,
        hop_timeout: hop,
        dead_timeout: hop * 4,
        dial_timeout: (hop * 10).max(Duration::from_secs(3)),
        pred_timeout: (probe + hop) * 4,
        retry_interval: hop * 4,
        report_interval: Duration::from_secs(2),
        ..RingConfig::default()
    }
}

/// Starts an endpoint's ring membership under its node's supervisor.
async fn start_member(
    node: &Node,
    server: SocketAddr,
    cfg: &Config,
    hostname: String,
    host: Arc<dyn HostView>,
) -> Result<ractor::ActorRef<rollcall_cluster::member::MemberMsg>> {
    let mut mc = MemberConfig::new(server, advertised(node.local_addr(), server), hostname);
    let evaluator = SensorEvaluator::new(Sensors::new(host));
    evaluator.accept_config_on(node);
    mc.evaluator = Some(EvaluatorHandle(Arc::new(evaluator)));
    mc.ring = ring_config(cfg);
    mc.register_min = Duration::from_millis(cfg.ring.register_min_ms);
    mc.register_max = Duration::from_millis(cfg.ring.register_max_ms);
    mc.seed = rand_seed();
    let n = node.clone();
    let spec = ChildSpec::new("ring.member", Restart::Permanent, RingMember, move || {
        (n.clone(), mc.clone())
    });
    let cell = node.start_child(spec).await?;
    Ok(cell.into())
}

/// The address peers should dial: the listening address, or, when it is a wildcard, the local
/// address the system would use to reach the server (no packet is sent to find it).
fn advertised(listen: SocketAddr, server: SocketAddr) -> SocketAddr {
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

async fn server(a: ServerArgs) -> Result<()> {
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
        cfg.results_kept = n;
    }
    let ca = Arc::new(Ca::load(&a.ca_dir).context("loading the CA")?);
    let state = a.state_dir.unwrap_or_else(|| a.ca_dir.join("server"));
    let (node, _rings) = start_server(ca, &state, a.listen, &cfg).await?;
    println!(
        "server {} listening on {}",
        node.identity().id,
        node.local_addr()
    );
    wait_for_shutdown().await;
    node.shutdown_and_wait(Duration::from_secs(2)).await;
    Ok(())
}

async fn endpoint(a: EndpointArgs) -> Result<()> {
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
    println!(
        "endpoint {} listening on {}",
        node.identity().id,
        node.local_addr()
    );
    let host: Arc<dyn HostView> = match a.simulate_host {
        Some(seed) => Arc::new(SimulatedHost(HostProfile::from_seed(
            seed,
            Some(node.local_addr().ip()),
        ))),
        None => Arc::new(LinuxHost::default()),
    };
    let member = start_member(&node, a.server, &cfg, hostname, host).await?;
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
    wait_for_shutdown().await;
    node.shutdown_and_wait(Duration::from_secs(2)).await;
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

/// A client-only node for an operator's requests.
async fn operator_node(creds: &Credentials, server: SocketAddr) -> Result<Node> {
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
    Ok(Node::start(t, NodeOptions::default()).await?)
}

/// Connects as an operator and fetches the server's status.
async fn fetch_status(creds: &Credentials, server: SocketAddr) -> Result<NodeStatus> {
    let node = operator_node(creds, server).await?;
    let link = node.connect(server).await?;
    link.wait_connected(Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let status = link
        .call(STATUS_ACTOR, &StatusRequest, Duration::from_secs(10))
        .await
        .context("asking for status")?;
    node.shutdown_and_wait(Duration::from_secs(1)).await;
    Ok(status)
}

/// Connects as an operator and fetches the rings.
async fn fetch_rings(
    creds: &Credentials,
    server: SocketAddr,
    subnet: Option<String>,
) -> Result<RingsReport> {
    let node = operator_node(creds, server).await?;
    let link = node.connect(server).await?;
    link.wait_connected(Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let report = link
        .call(
            RING_ADMIN,
            &AdminRequest::Show { subnet },
            Duration::from_secs(10),
        )
        .await
        .context("asking for the rings")?;
    node.shutdown_and_wait(Duration::from_secs(1)).await;
    Ok(report)
}

async fn ring_show(a: RingShowArgs) -> Result<()> {
    let creds = Credentials::load(&a.op.cert_dir).context("loading operator credentials")?;
    let report = fetch_rings(&creds, a.op.server, a.subnet).await?;
    print_rings(&report, a.json)
}

fn print_rings(report: &RingsReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let leads = |l: rollcall_cluster::proto::LeaderSides| match (l.forward, l.backward) {
        (true, true) => "forward+backward",
        (true, false) => "forward",
        (false, true) => "backward",
        _ => "",
    };
    for ring in &report.rings {
        println!(
            "ring {}: {} members, {} leader links",
            ring.ring,
            ring.members.len(),
            ring.leader_links
        );
        println!(
            "  {:>3}  {:<18} {:<22} {:<8} {:<17} HOST",
            "#", "NODE", "ADDRESS", "HEALTH", "LEADS"
        );
        for (i, m) in ring.members.iter().enumerate() {
            println!(
                "  {:>3}  {:<18} {:<22} {:<8} {:<17} {}",
                i + 1,
                m.id.0,
                m.addr.to_string(),
                m.health.to_string(),
                leads(m.leads),
                m.hostname
            );
        }
    }
    if !report.isolated.is_empty() {
        println!("isolated (no peering): {} endpoints", report.isolated.len());
        for m in &report.isolated {
            println!(
                "       {:<18} {:<22} {:<8} {}",
                m.id.0,
                m.addr.to_string(),
                m.health.to_string(),
                m.hostname
            );
        }
    }
    println!(
        "server connections: {} ({} held by ring leaders)",
        report.server_connections, report.ring_connections
    );
    Ok(())
}

async fn status(a: StatusArgs) -> Result<()> {
    let creds = Credentials::load(&a.op.cert_dir).context("loading operator credentials")?;
    let status = fetch_status(&creds, a.op.server).await?;
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
    // Fast timings so the demo settles in a second or two.
    let mut cfg = Config::default();
    cfg.ring.register_min_ms = 300;
    cfg.ring.register_max_ms = 600;
    cfg.ring.probe_interval_ms = 100;
    cfg.ring.hop_timeout_ms = 250;
    let (server, _rings) = start_server(
        ca.clone(),
        &dir.path().join("server"),
        "127.0.0.1:0".parse()?,
        &cfg,
    )
    .await?;
    let server_addr = server.local_addr();
    let subnets = a.subnets.min(a.endpoints);
    if !a.json {
        println!(
            "rollcall demo: server {} on {server_addr}; {} endpoints in {subnets} subnets (127.0.1.x …)",
            server.identity().id,
            a.endpoints
        );
    }

    // Enrol every endpoint over QUIC with the join token, as `rollcall endpoint` does.
    let t0 = Instant::now();
    let mut enrolled = Vec::new();
    for i in 0..a.endpoints {
        let subnet = (i % subnets) as u8 + 1;
        let host = (i / subnets) as u8 + 1;
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, subnet, host));
        let state = dir.path().join(format!("endpoint-{i}"));
        let creds = enrol::load_or_enrol(
            &state,
            server_addr,
            Some(&token),
            &format!("demo-{subnet}-{host}"),
            SocketAddr::new(ip, 0),
        )
        .await
        .with_context(|| format!("enrolling endpoint {i}"))?;
        enrolled.push((ip, state, creds));
    }
    let enrol_ms = t0.elapsed().as_millis();

    // Start them; they register, find their ring and link up.
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
        let seed = match ip {
            IpAddr::V4(v) => u64::from(v.octets()[2]) * 1000 + u64::from(v.octets()[3]),
            IpAddr::V6(_) => 0,
        };
        let profile = HostProfile::from_seed(seed, Some(*ip));
        start_member(
            &node,
            server_addr,
            &cfg,
            profile.hostname.clone(),
            Arc::new(SimulatedHost(profile)),
        )
        .await?;
        endpoints.push(node);
    }

    // Watch, as an admin operator would, until every ring is one chain with two leaders.
    let admin = ca.issue(
        PeerRole::Operator(OperatorRole::Admin),
        Some("demo-admin"),
        Validity::default(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let r = fetch_rings(&admin, server_addr, None).await?;
        let members: usize = r.rings.iter().map(|x| x.members.len()).sum();
        let settled = r.rings.len() == usize::from(subnets)
            && members == usize::from(a.endpoints)
            && r.rings.iter().all(|x| {
                x.members
                    .iter()
                    .all(|m| m.health == rollcall_cluster::proto::Health::Ok)
                    && x.members.first().is_some_and(|m| m.leads.forward)
                    && x.members.last().is_some_and(|m| m.leads.backward)
                    && x.leader_links == x.members.len().min(2)
            });
        if settled || Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ring_ms = t1.elapsed().as_millis();
    let members: usize = report.rings.iter().map(|x| x.members.len()).sum();
    if !a.json {
        println!(
            "enrolled {} endpoints in {enrol_ms} ms; rings formed in {ring_ms} ms\n",
            a.endpoints
        );
    }
    if !a.json {
        print_rings(&report, false)?;
    }
    if members != usize::from(a.endpoints) || report.rings.len() != usize::from(subnets) {
        bail!("only {members} of {} endpoints formed rings", a.endpoints);
    }

    // The main job: ask every machine a question, watch the answers merge along the rings.
    let desk = DeskClient::with_creds(&admin, server_addr).await?;
    let text = a.question.clone();
    let id = match desk
        .call(DeskRequest::Ask {
            text,
            ttl_ms: Some(60_000),
        })
        .await?
    {
        DeskReply::Asked { id, canonical, .. } => {
            if !a.json {
                println!("\nrollcall ask '{canonical}'");
            }
            id
        }
        DeskReply::Error(e) => bail!("{e}"),
        other => bail!("unexpected answer {other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let p = desk.progress(id).await?;
        if (p.fanned_out && p.answered >= p.expected) || Instant::now() >= deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let catalog = desk.catalog().await;
    desk.close().await;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "rings": report, "answer": answer })
            )?
        );
    } else {
        print_progress(
            &answer,
            &OutputFlags {
                json: false,
                csv: false,
            },
            &catalog,
        )?;
    }
    // Endpoints first (their actors stop with them), then the server, so nothing is left
    // trying to register with a server that is gone.
    for node in &endpoints {
        node.shutdown();
    }
    for node in &endpoints {
        node.shutdown_and_wait(Duration::from_millis(500)).await;
    }
    server.shutdown_and_wait(Duration::from_millis(500)).await;
    if answer.answered != usize::from(a.endpoints) {
        bail!(
            "only {} of {} endpoints answered",
            answer.answered,
            a.endpoints
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// An operator's connection to the server's question desk.
struct DeskClient {
    node: Node,
    link: rollcall_runtime::PeerHandle,
}

impl DeskClient {
    async fn connect(op: &OperatorArgs) -> Result<DeskClient> {
        let creds = Credentials::load(&op.cert_dir).context("loading operator credentials")?;
        DeskClient::with_creds(&creds, op.server).await
    }

    async fn with_creds(creds: &Credentials, server: SocketAddr) -> Result<DeskClient> {
        let node = operator_node(creds, server).await?;
        let link = node.connect(server).await?;
        link.wait_connected(Duration::from_secs(10))
            .await
            .with_context(|| format!("connecting to {server}"))?;
        Ok(DeskClient { node, link })
    }

    async fn call(&self, req: DeskRequest) -> Result<DeskReply> {
        self.link
            .call(DESK, &req, Duration::from_secs(30))
            .await
            .context("asking the question desk")
    }

    /// The sensor catalog (to show each column's values in its unit); empty if the server
    /// would not say.
    async fn catalog(&self) -> Vec<SensorSpec> {
        match self.call(DeskRequest::Sensors).await {
            Ok(DeskReply::Sensors(list)) => list,
            _ => Vec::new(),
        }
    }

    async fn progress(&self, id: u64) -> Result<Progress> {
        match self.call(DeskRequest::Progress { id }).await? {
            DeskReply::Progress(p) => Ok(p),
            DeskReply::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    async fn close(self) {
        self.node.shutdown_and_wait(Duration::from_secs(1)).await;
    }
}

async fn ask(a: AskArgs) -> Result<std::process::ExitCode> {
    let desk = DeskClient::connect(&a.op).await?;
    let req = DeskRequest::Ask {
        text: a.question.clone(),
        ttl_ms: Some(a.ttl_secs.saturating_mul(1000)),
    };
    watch(desk, req, a.wait_secs, &a.out).await
}

/// Sends an ask (plain or saved), then streams progress until every expected machine has
/// answered or `wait_secs` pass, and prints the results.
async fn watch(
    desk: DeskClient,
    req: DeskRequest,
    wait_secs: u64,
    out: &OutputFlags,
) -> Result<std::process::ExitCode> {
    let id = match desk.call(req.clone()).await? {
        DeskReply::Asked {
            id,
            expected,
            canonical,
        } => {
            eprintln!("question {id}: {canonical}");
            eprintln!("asking {expected} machines");
            id
        }
        DeskReply::Error(e) => {
            eprintln!("error: {e}");
            if let Some(column) = error_column(&e)
                && let DeskRequest::Ask { text, .. } = &req
            {
                eprintln!("{}", results::excerpt(text, column));
            }
            desk.close().await;
            return Ok(std::process::ExitCode::from(2));
        }
        other => bail!("unexpected answer {other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    let mut last = None;
    let p = loop {
        let p = desk.progress(id).await?;
        let line = format!(
            "answered {} of {} · {:.1} s · {} distinct rows",
            p.answered,
            p.expected,
            p.elapsed_ms as f64 / 1000.0,
            p.rows.len()
        );
        if last.as_ref() != Some(&line) {
            eprintln!("{line}");
            last = Some(line);
        }
        let done = p.fanned_out && p.answered >= p.expected;
        if done || Instant::now() >= deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let catalog = desk.catalog().await;
    desk.close().await;
    print_progress(&p, out, &catalog)?;
    if !(p.fanned_out && p.answered >= p.expected) {
        eprintln!(
            "still open for {} s; `rollcall results {id}` shows answers that arrive later",
            p.expires_in_ms / 1000
        );
    }
    if results::failed_everywhere(&p) {
        eprintln!(
            "error: the question failed on every machine that answered ({}); see the problems above",
            p.answered
        );
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Sends a request that answers with `Done`, a list or an error, and prints it.
async fn desk_command(op: &OperatorArgs, req: DeskRequest) -> Result<std::process::ExitCode> {
    let desk = DeskClient::connect(op).await?;
    let reply = desk.call(req).await;
    desk.close().await;
    match reply? {
        DeskReply::Done(what) => println!("{what}"),
        DeskReply::Sensors(list) => print!("{}", results::sensor_table(&list)),
        DeskReply::Saved(list) => {
            for s in list {
                let every = s
                    .every_secs
                    .map(|e| format!(" (every {e} s)"))
                    .unwrap_or_default();
                println!("{}{every}: {}", s.name, s.text);
            }
        }
        DeskReply::Suggestions(list) => {
            for (i, s) in list.iter().enumerate() {
                let saved = s
                    .saved
                    .as_ref()
                    .map(|n| format!("  [saved: {n}]"))
                    .unwrap_or_default();
                println!("{:>2}. {}{saved}", i + 1, s.question);
            }
        }
        DeskReply::Error(e) => {
            eprintln!("error: {e}");
            return Ok(std::process::ExitCode::from(2));
        }
        other => bail!("unexpected answer {other:?}"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn results(a: ResultsArgs) -> Result<()> {
    let desk = DeskClient::connect(&a.op).await?;
    let p = desk.progress(a.id).await;
    let catalog = desk.catalog().await;
    desk.close().await;
    print_progress(&p?, &a.out, &catalog)
}

/// The column a desk error names (`at column 42: …`).
fn error_column(e: &str) -> Option<usize> {
    e.strip_prefix("at column ")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

async fn questions(op: OperatorArgs) -> Result<()> {
    let desk = DeskClient::connect(&op).await?;
    let reply = desk.call(DeskRequest::List).await;
    desk.close().await;
    match reply? {
        DeskReply::List(list) => {
            println!("{:>5}  {:<6} {:>9}  QUESTION", "ID", "STATE", "ANSWERED");
            for q in list {
                let state = if q.open { "open" } else { "closed" };
                println!(
                    "{:>5}  {:<6} {:>9}  {}",
                    q.id,
                    state,
                    format!("{}/{}", q.answered, q.expected),
                    q.text
                );
            }
            Ok(())
        }
        DeskReply::Error(e) => bail!("{e}"),
        other => bail!("unexpected answer {other:?}"),
    }
}

fn print_progress(p: &Progress, out: &OutputFlags, catalog: &[SensorSpec]) -> Result<()> {
    if out.json {
        println!("{}", serde_json::to_string_pretty(p)?);
    } else if out.csv {
        print!("{}", results::csv(p));
    } else {
        print!(
            "{}",
            results::table(p, &results::column_kinds(&p.columns, catalog))
        );
    }
    Ok(())
}
