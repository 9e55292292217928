//! The command line: every command, its flags and their help (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

use clap::{Args, Parser, Subcommand};
use rollcall::config::{Config, RawConfig};
#[cfg(feature = "simulation")]
use rollcall::sim;
use rollcall_runtime::identity::OperatorRole;

/// rollcall asks every machine in a fleet a question and has the answer in seconds.
///
/// Start here: `rollcall demo` runs a server and a few endpoints on loopback, enrols them
/// and shows that each is connected. For a real cluster: `rollcall ca init`, then
/// `rollcall server`, then `rollcall endpoint` on each machine with the join token.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about, long_about)]
pub(crate) struct Cli {
    /// How logs are written to stderr: `text` for people, `json` (one object per line)
    /// for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text)]
    pub(crate) log_format: LogFormatArg,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormatArg {
    /// One readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// The audit log: who asked, saved or changed what, and how it went, each entry chained
    /// to the one before by its hash; says whether the whole chain holds (admin role; exit 1
    /// if it does not).
    Audit(AuditArgs),
    /// Act on machines: run a package on the machines a filter or an earlier question
    /// names, e.g. `rollcall act uninstall anydesk --where 'Installed Applications contains
    /// "anydesk"'` (operator role). Signed by the server, run at most once per machine; the
    /// counts stream until every targeted machine is done.
    #[command(after_long_help = ACT_HELP)]
    Act(ActArgs),
    /// Actions: status, list, approve, deny, cancel.
    #[command(subcommand)]
    Action(ActionCommand),
    /// Packages actions run: list them, or register a command (admin role).
    #[command(subcommand)]
    Package(PackageCommand),
    /// Indicators of compromise: import a CSV list or a STIX 2.1 bundle of file hashes,
    /// addresses and domain names, and find the machines that have or had them (operator
    /// role).
    #[command(subcommand)]
    Ioc(IocCommand),
    /// Cases: indicator searches opened by imports and by detection products' alerts, with
    /// the machines found (any operator role).
    #[command(subcommand)]
    Case(CaseCommand),
    /// Results out: a question's answers as events, one per machine row, written as JSON
    /// lines here (`--to jsonl:PATH`) or delivered by the server to a Splunk HTTP Event
    /// Collector (`--to splunk-hec:URL --hec-token T`) or a syslog receiver (`--to
    /// syslog:udp://HOST:PORT`, `syslog:tcp://…`, RFC 5424). The server keeps undelivered
    /// events in a bounded queue and retries with backoff; without an id, shows the queue.
    Export(ExportArgs),
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
    #[cfg(feature = "simulation")]
    Sim(sim::SimArgs),
    /// Inject faults (admin role): into a real cluster, whose server relays each fault to
    /// the targeted endpoints started with `--allow-chaos` (others refuse, and the refusal
    /// is audited), or into a fleet served by `rollcall sim --serve`, which also runs fault
    /// scenarios and prints their invariant table. The server flags come first, e.g.
    /// `rollcall chaos --server 127.0.0.1:4800 --cert-dir ops kill --random 10%`, or
    /// `... --scenario ring-split`, `... --scenario all`.
    Chaos(ChaosArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a server and N endpoints (simulated machines) on loopback in one process, enrol
    /// them over QUIC, show the rings they form, ask them a question and show the answer.
    Demo(DemoArgs),
    /// Serve the browser console as this operator: a search box, live answer grids, the
    /// rings, actions and their approval, the audit log. It binds to loopback and prints a
    /// URL with a token made at launch; every request without that token is refused. The
    /// operator's certificate never leaves this machine, and the server checks the
    /// operator's role on every request.
    Console(ConsoleArgs),
}

/// `rollcall console` arguments.
#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
    /// Where the console listens (keep it on loopback: whoever has the URL acts as this
    /// operator). Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
}

/// Where the server is and who is asking.
#[derive(Debug, Args)]
pub(crate) struct OperatorArgs {
    /// The server's address.
    #[arg(long)]
    pub(crate) server: SocketAddr,
    /// Operator credentials written by `rollcall ca issue-operator --out`.
    #[arg(long)]
    pub(crate) cert_dir: PathBuf,
}

/// `rollcall chaos` arguments.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
    /// Run a scenario (or `all` of them, one after another) from a healed fleet and print
    /// the invariant table: neighbour-killed, grey-neighbour, slow-neighbour, leader-killed,
    /// both-leaders-killed, leaders-and-tenth-killed, ring-split, subnet-reboot,
    /// offline-and-back, loss-and-duplication, server-restart, action-offline-restart,
    /// package-corrupt-peer, package-leader-killed, package-torn-write. Exits non-zero if
    /// an invariant fails.
    #[arg(long, value_name = "NAME")]
    pub(crate) scenario: Option<String>,
    /// Seed of the scenario's choices (which ring, which machines, when).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// How long the scenario's fault lasts before healing, in seconds.
    #[arg(long, default_value_t = 4)]
    pub(crate) fault_secs: u64,
    /// The window in which subnet-reboot's machines reboot, in seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) reboot_window_secs: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) action: Option<ChaosAction>,
}

/// A fault to apply now.
#[derive(Debug, Subcommand)]
pub(crate) enum ChaosAction {
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
pub(crate) struct TargetArgs {
    /// One endpoint, by id or address.
    #[arg(long)]
    pub(crate) node: Option<String>,
    /// A random share of the running endpoints, e.g. 10%.
    #[arg(long, value_parser = parse_percent)]
    pub(crate) random: Option<f64>,
    /// Every current leader.
    #[arg(long)]
    pub(crate) leaders: bool,
    /// Every endpoint of a subnet, e.g. 127.1.0.0/24.
    #[arg(long)]
    pub(crate) subnet: Option<String>,
    /// Every endpoint.
    #[arg(long)]
    pub(crate) all: bool,
}

pub(crate) fn parse_percent(s: &str) -> Result<f64, String> {
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

/// The question language, for `rollcall ask --help`.
pub(crate) const ASK_HELP: &str = "\
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
pub(crate) struct OutputFlags {
    /// Print JSON (the whole progress record) instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,
    /// Print the rows as CSV (a header, then one line per distinct row with its count).
    #[arg(long)]
    pub(crate) csv: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AskArgs {
    /// The question.
    pub(crate) question: String,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
    #[command(flatten)]
    pub(crate) out: OutputFlags,
    /// Stop watching after this many seconds (the question stays open; see `rollcall results`).
    #[arg(long, default_value_t = 30)]
    pub(crate) wait_secs: u64,
    /// How long the question stays open for machines that answer late.
    #[arg(long, default_value_t = 600)]
    pub(crate) ttl_secs: u64,
}

#[derive(Debug, Args)]
pub(crate) struct ResultsArgs {
    /// The question's id (from `rollcall ask` or `rollcall questions`).
    pub(crate) id: u64,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
    #[command(flatten)]
    pub(crate) out: OutputFlags,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Run the scale matrix (rings and the hub-and-spoke baseline, in-memory and QUIC) as
    /// separate `rollcall sim` processes and write the table to a Markdown file.
    #[cfg(feature = "simulation")]
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
    /// Start a server and N endpoint processes of this binary on loopback (real host
    /// sensors; one /24 per ring) and measure: launch to all answering (first start,
    /// enrolment included), memory per endpoint (PSS, RSS), idle CPU per endpoint and of
    /// the server, and restart from state dirs to all answering.
    Processes {
        /// Endpoint processes.
        #[arg(long, default_value_t = 100)]
        endpoints: usize,
        /// Machines per /24 (one ring each), at most 250.
        #[arg(long, default_value_t = 100)]
        ring_size: usize,
        /// Seconds over which idle CPU is measured (after 10 s of settling).
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
        /// A configuration file for the server and every endpoint.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the history recorder on this machine's /proc for a while (into a temporary
    /// store) and print what it cost: CPU per sample and as a share of one core, after the
    /// first sample (which hashes every running executable once).
    Recorder {
        /// The sampling interval.
        #[arg(long, default_value_t = 5000)]
        interval_ms: u64,
        /// How many samples after the first.
        #[arg(long, default_value_t = 12)]
        samples: u32,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// How many of the last entries to show.
    #[arg(long, default_value_t = 50)]
    pub(crate) last: usize,
    /// One JSON object per entry, then one for the chain's check.
    #[arg(long)]
    pub(crate) json: bool,
    /// Only check the chain (exit 1 if broken).
    #[arg(long)]
    pub(crate) verify: bool,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// Plain words: sensor names (typos forgiven) and values to look for.
    pub(crate) words: String,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SavedCommand {
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
    /// Export every run of a saved question (scheduled or run by hand) once it finishes,
    /// as `rollcall export` does (network sinks only), or stop with `--off`.
    Export {
        /// Its name.
        name: String,
        /// Where to: splunk-hec:URL or syslog:udp://HOST:PORT / syslog:tcp://HOST:PORT.
        #[arg(long, required_unless_present = "off")]
        to: Option<String>,
        /// The Splunk collector's token.
        #[arg(long)]
        hec_token: Option<String>,
        /// A file holding the token (its first line).
        #[arg(long)]
        hec_token_file: Option<PathBuf>,
        /// Stop exporting its runs.
        #[arg(long, conflicts_with = "to")]
        off: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
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
pub(crate) enum SensorCommand {
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
pub(crate) struct PatchesArgs {
    /// A file with one `package minimum-version` per line (`#` starts a comment).
    #[arg(long)]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RingCommand {
    /// Print each ring in order: its members, their health (ok, slow, suspect, offline),
    /// which ends they lead, and the server's connection count.
    Show(RingShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RingShowArgs {
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
    /// Only this ring: its id (`127.0.1.0/24`) or any address inside it.
    #[arg(long)]
    pub(crate) subnet: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
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
        /// How many endpoints may enrol with it (any number if not given).
        #[arg(long)]
        uses: Option<u32>,
        /// How long it is accepted, e.g. `30m`, `24h`, `7d` (for ever if not given).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List the join tokens (by the first 8 characters of their secret) with what is left
    /// of them.
    Tokens {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Revoke a join token (a running server refuses it at once).
    RevokeToken {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The token's id from `rollcall ca tokens` (its secret's first 8 characters).
        id: String,
    },
    /// Revoke the certificates of an endpoint (its node id) or an operator (their name): a
    /// running server refuses everything they send within a second, and hands the list to
    /// endpoints in its signed configuration so they refuse them too.
    Revoke {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The endpoint's node id (as `rollcall ring show` lists it) or the operator's name.
        id: String,
    },
    /// List the revoked endpoints and operators.
    Revoked {
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

/// Reads `30s`, `15m`, `24h`, `7d`.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m, 24h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

pub(crate) fn parse_role(s: &str) -> Result<OperatorRole, String> {
    s.parse()
}

/// Link settings shared by every node command.
#[derive(Debug, Args)]
pub(crate) struct LinkFlags {
    /// A TOML configuration file (section `[link]`); flags override it.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Send a keep-alive after this many milliseconds without traffic.
    #[arg(long)]
    pub(crate) keep_alive_ms: Option<u64>,
    /// Close a link after this many milliseconds without hearing from the peer.
    #[arg(long)]
    pub(crate) idle_timeout_ms: Option<u64>,
    /// Serve Prometheus metrics (OpenMetrics text) on http://ADDR/metrics, with /healthz and
    /// /readyz for probes [default: off, or metrics.listen]. Keep it on loopback or a
    /// management network: it needs no credentials.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
}

impl LinkFlags {
    pub(crate) fn load(&self) -> Result<Config> {
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
        if let Some(a) = self.metrics_listen {
            raw.metrics.listen = Some(a.to_string());
        }
        Ok(raw.validate()?)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The CA directory made by `rollcall ca init` [or the config file's node.ca_dir].
    #[arg(long)]
    pub(crate) ca_dir: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:4700, or node.listen].
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// Where the server keeps its certificate and node secret [default: node.state_dir, or
    /// CA_DIR/server].
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Prefix length of an IPv4 peering range: endpoints in the same range form a ring
    /// [default: 24, or the config file's peering.mask_v4].
    #[arg(long)]
    pub(crate) mask_v4: Option<u8>,
    /// A range whose machines never peer (VPN pools); repeat for more. Adds to the config
    /// file's peering.isolated.
    #[arg(long, value_name = "CIDR")]
    pub(crate) isolated: Vec<String>,
    /// How many questions' results to keep in the server's store (oldest dropped first)
    /// [default: 1000, or server.results_kept].
    #[arg(long)]
    pub(crate) results_kept: Option<usize>,
    #[command(flatten)]
    pub(crate) link: LinkFlags,
}

#[derive(Debug, Args)]
pub(crate) struct EndpointArgs {
    /// The server's address [or the config file's node.server].
    #[arg(long)]
    pub(crate) server: Option<SocketAddr>,
    /// The join token printed by `rollcall ca init` or `rollcall ca join-token`; needed on
    /// first start only. Prefer `--join-token-file` or the environment: a command line is
    /// readable by every local user.
    #[arg(long, env = "ROLLCALL_JOIN_TOKEN", hide_env_values = true)]
    pub(crate) join_token: Option<String>,
    /// A file holding the join token (first start only). Without either, the config file's
    /// node.join_token or node.join_token_file.
    #[arg(long, conflicts_with = "join_token")]
    pub(crate) join_token_file: Option<PathBuf>,
    /// Where the endpoint keeps its key, certificate and node secret [or node.state_dir].
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// UDP address to listen on for peers [default: 0.0.0.0:0 (any port), or node.listen].
    #[arg(long)]
    pub(crate) listen: Option<SocketAddr>,
    /// Answer questions as a simulated machine (a deterministic profile from this seed)
    /// instead of reading this one: for test fleets.
    #[arg(long, value_name = "SEED")]
    pub(crate) simulate_host: Option<u64>,
    /// Let an admin's `rollcall chaos` (relayed and signed by the server) kill, pause, slow,
    /// partition or degrade this process, for failover tests on a test cluster [default:
    /// off, or chaos.allow]. Without it such commands are refused and the server audits it.
    #[arg(long)]
    pub(crate) allow_chaos: bool,
    /// Shortest registration interval in milliseconds [default: 30000, or ring.register_min_ms].
    #[arg(long)]
    pub(crate) register_min_ms: Option<u64>,
    /// Longest registration interval in milliseconds [default: 90000, or ring.register_max_ms].
    #[arg(long)]
    pub(crate) register_max_ms: Option<u64>,
    #[command(flatten)]
    pub(crate) link: LinkFlags,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many endpoints to start, each on its own loopback address.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub(crate) endpoints: u16,
    /// Spread them over this many subnets (127.0.1.x, 127.0.2.x, …): one ring each.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub(crate) subnets: u16,
    /// The question to ask once the rings have formed.
    #[arg(
        long,
        default_value = "Get Operating System and OS Version from all machines"
    )]
    pub(crate) question: String,
    /// Print the rings and the answer as JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) const ACT_HELP: &str = "\
Packages (rollcall package list shows the admins' too):
  delete-file PATH     moves the file into the endpoint's quarantine folder with its SHA-256
                       (--purge deletes it); only under the endpoint's [actions] file_roots
  kill-process X       kills processes by name, pid or SHA-256 of the executable
  quarantine           drops all traffic except to the server and the ring neighbours (nftables)
  release              lifts the quarantine
  uninstall NAME       apt/dpkg, or dnf/rpm
  run-script           runs --script-file with sh; its exit code and output come back

Targets (exactly one): --where FILTER (each machine evaluates it on itself; one that cannot
tell is not targeted), --from-question ID (the machines that matched it), --all.

Packages in the server's [actions] require_approval (by default all but release) wait until
an admin other than the issuer runs `rollcall action approve ID`.

Statuses: waiting (spread), running, completed, failed, refused, expired, interrupted.
Exit status: 0 when every targeted machine completed, 1 when one did not, 2 when the
server refused the action, 3 when --wait-secs passed first.";

/// `rollcall act` arguments.
#[derive(Debug, Args)]
pub(crate) struct ActArgs {
    /// The package (built-in or registered).
    pub(crate) package: String,
    /// Its parameters.
    pub(crate) params: Vec<String>,
    /// Machines matching this filter (the question language's `where` part).
    #[arg(long = "where", value_name = "FILTER")]
    pub(crate) filter: Option<String>,
    /// The machines that matched question ID.
    #[arg(long, value_name = "ID")]
    pub(crate) from_question: Option<u64>,
    /// Every machine.
    #[arg(long)]
    pub(crate) all: bool,
    /// Say what would be done, change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Seconds the action may start in (default: 600 + the package's timeout).
    #[arg(long)]
    pub(crate) expire_secs: Option<u64>,
    /// Each machine starts after a random share of this many seconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) spread_secs: u64,
    /// How long to watch the counts (0: print the action and return).
    #[arg(long, default_value_t = 60)]
    pub(crate) wait_secs: u64,
    /// delete-file: delete instead of moving to the quarantine folder.
    #[arg(long)]
    pub(crate) purge: bool,
    /// run-script: the script.
    #[arg(long)]
    pub(crate) script_file: Option<PathBuf>,
    /// One line of JSON at the end instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ActionCommand {
    /// Counts, then each machine with its status and the first bytes of its output.
    Status {
        /// The action's id.
        id: u64,
        /// Only machines where it did not complete.
        #[arg(long)]
        failed: bool,
        /// One line of JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// The actions, newest first.
    List(OperatorArgs),
    /// Approve an action awaiting approval (an admin other than its issuer); it goes out.
    Approve {
        /// The action's id.
        id: u64,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Deny an action awaiting approval (admin).
    Deny {
        /// The action's id.
        id: u64,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Cancel an action (its issuer or an admin): one awaiting approval never goes out; one
    /// that is out is no longer handed to returning machines, and a signed cancel stops it
    /// wherever it has not started (waiting its share of the spread, or not received yet).
    Cancel {
        /// The action's id.
        id: u64,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PackageCommand {
    /// The packages actions may run.
    List(OperatorArgs),
    /// Register a package that runs a command with `sh -c`; an action's parameters are its
    /// `$1`, `$2`, … (never pasted into the command).
    ///
    /// With `--file`, the files are cut into 64 KiB chunks, hashed (BLAKE3) and uploaded
    /// (chunks the server already holds are skipped, so an interrupted upload resumes); the
    /// manifest travels signed with each action. Each targeted machine fetches the chunks
    /// from its ring neighbours (only a ring's leader fetches from the server), verifies
    /// every chunk and file, and runs the command in a folder holding the files, e.g.
    /// `--file fix.deb --command 'dpkg -i fix.deb'`.
    Add {
        /// Its name.
        name: String,
        /// The command.
        #[arg(long)]
        command: String,
        /// Longest a run may take.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// A file the package carries (repeatable); it is written under its own name in
        /// the folder the command runs in.
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<std::path::PathBuf>,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Where a package with files stands: its files, what left the server for it (per ring,
    /// and chunks sent again after a fault), and its actions' machines.
    Status {
        /// The package.
        name: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum IocCommand {
    /// Read FILE (a STIX 2.1 bundle, or a CSV with `type,value` columns or one value a
    /// line), ask every machine whether it runs or ran those executables or connected to
    /// those addresses (domain names: the addresses they resolve to from the server), and
    /// print the machines found with their first and last sightings. Indicators endpoints
    /// cannot look for are listed as skipped, with the reason; a malformed file imports
    /// nothing (exit 2).
    Import {
        /// The indicator file.
        file: PathBuf,
        /// Then run this package on the machines found (e.g. `quarantine`); it waits for an
        /// admin's approval where the package needs one.
        #[arg(long, value_name = "PACKAGE")]
        then: Option<String>,
        /// One JSON object: the case.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaseCommand {
    /// The cases, newest first, and the alert listener's counts.
    List {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// One case: what it looked for, the machines found, its response.
    Show {
        /// The case's id.
        id: u64,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

/// `rollcall export` arguments.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The question's id (none: show the export queue).
    pub(crate) id: Option<u64>,
    /// Where to: jsonl:PATH, splunk-hec:URL, syslog:udp://HOST:PORT or syslog:tcp://HOST:PORT.
    #[arg(long, requires = "id")]
    pub(crate) to: Option<String>,
    /// The Splunk collector's token.
    #[arg(long)]
    pub(crate) hec_token: Option<String>,
    /// A file holding the token (its first line).
    #[arg(long)]
    pub(crate) hec_token_file: Option<PathBuf>,
    /// Wait until the server delivered what waits for that sink (at most a minute; exit 1
    /// if events still wait).
    #[arg(long)]
    pub(crate) wait: bool,
    /// Try every waiting sink again now, whatever its backoff.
    #[arg(long)]
    pub(crate) retry: bool,
    /// The queue as one JSON array.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) op: OperatorArgs,
}
