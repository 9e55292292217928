//! The server's side of chaos on a real cluster: the `chaos.control` route (admin role only)
//! resolves a fault's targets from the rings it knows, signs one command per targeted
//! machine, and relays it to that machine's chaos agent over a short link. Every request is
//! written to the audit log with what each machine said, refusals included.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::SmallRng};
use rollcall_actors::desk::QuestionDesk;
use rollcall_cluster::proto::{Health, MemberReport, RingsReport};
use rollcall_cluster::shard::RingServer;
use rollcall_runtime::node::{CHAOS_AGENT_ROUTE, Deliver, DestinationGone, Node};
use rollcall_runtime::signing::ServerSigner;
use rollcall_runtime::{Incoming, OperatorRole, PeerIdentity};

use super::agent::{AgentCommand, AgentFault, AgentReply};
use super::commands::*;
use super::{CHAOS, Scenario, ScenarioOptions};

/// How long the relay waits for one machine (dial and answer).
const PER_MACHINE: Duration = Duration::from_secs(5);
/// Machines told at once.
const AT_ONCE: usize = 64;

/// Relays chaos commands to the endpoints of a real cluster.
pub struct ChaosRelay {
    node: Node,
    rings: RingServer,
    desk: Arc<QuestionDesk>,
    signer: Arc<ServerSigner>,
    /// Scenario runs: the latest number, and each run's result once it has one.
    runs: std::sync::Mutex<(u64, std::collections::BTreeMap<u64, Option<ChaosReply>>)>,
}

/// Scenario runs whose results are kept.
const RUNS_KEPT: usize = 64;

impl ChaosRelay {
    /// Serves [`CHAOS`] on the server `node` for admin operators.
    pub fn install(
        node: &Node,
        rings: RingServer,
        desk: Arc<QuestionDesk>,
        signer: Arc<ServerSigner>,
    ) {
        let relay = Arc::new(ChaosRelay {
            node: node.clone(),
            rings,
            desk,
            signer,
            runs: std::sync::Mutex::default(),
        });
        node.router().register(
            CHAOS,
            rollcall_runtime::Roles::OPERATORS,
            Arc::new(RelayRoute(relay)),
        );
    }

    /// The rings this server keeps.
    pub fn rings(&self) -> &RingServer {
        &self.rings
    }

    /// The server's node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The server's question desk.
    pub fn desk(&self) -> &QuestionDesk {
        &self.desk
    }

    /// Starts scenario `scenario` as a run of its own (one at a time), answered at once:
    /// a run takes longer than a call may wait. Its result is audited when it ends.
    fn start(
        self: &Arc<Self>,
        scenario: Scenario,
        opts: ScenarioOptions,
        who: &PeerIdentity,
    ) -> ChaosReply {
        if let Some(why) = scenario.needs_simulation() {
            return ChaosReply::Skipped(format!(
                "scenario {} does not run against a real cluster: {why}",
                scenario.name()
            ));
        }
        let run = {
            let mut runs = rollcall_runtime::sync::lock(&self.runs);
            if let Some((n, _)) = runs.1.iter().find(|(_, r)| r.is_none()) {
                return ChaosReply::Error(format!(
                    "scenario run {n} is still going; one runs at a time"
                ));
            }
            runs.0 += 1;
            let n = runs.0;
            runs.1.insert(n, None);
            while runs.1.len() > RUNS_KEPT {
                runs.1.pop_first();
            }
            n
        };
        let (me, who) = (self.clone(), who.clone());
        tokio::spawn(async move {
            let reply = match super::run_on_cluster(&me, &who, scenario, &opts).await {
                Ok(report) => ChaosReply::Scenario(report),
                Err(e) => ChaosReply::Error(format!("scenario {}: {e}", scenario.name())),
            };
            me.audit(
                &who,
                &format!("chaos --scenario {} (run {run}) ended", scenario.name()),
                &reply,
            );
            rollcall_runtime::sync::lock(&me.runs)
                .1
                .insert(run, Some(reply));
        });
        ChaosReply::Started(run)
    }

    /// Serves one request from `who` (an admin).
    pub async fn serve(self: &Arc<Self>, req: ChaosRequest, who: &PeerIdentity) -> ChaosReply {
        match req {
            ChaosRequest::Scenario { scenario, opts } => self.start(scenario, opts, who),
            ChaosRequest::ScenarioResult(run) => {
                match rollcall_runtime::sync::lock(&self.runs).1.get(&run) {
                    None => ChaosReply::Error(format!("no scenario run {run}")),
                    Some(None) => ChaosReply::Running(format!("scenario run {run} is still going")),
                    Some(Some(r)) => r.clone(),
                }
            }
            ChaosRequest::Fault {
                action: FaultAction::Restart,
                ..
            } => ChaosReply::Error(
                "a killed endpoint process is started again by its service manager (the \
                 systemd unit restarts it) or by hand; the server cannot start it"
                    .into(),
            ),
            ChaosRequest::Fault {
                action,
                target,
                seed,
            } => {
                let report = self.rings.report(None).await;
                let reach_all = matches!(action, FaultAction::Heal | FaultAction::Resume);
                let who = match pick(&report, &target, seed, reach_all) {
                    Ok(w) => w,
                    Err(e) => return ChaosReply::Error(e),
                };
                ChaosReply::Relayed(self.relay(&report, &who, &action).await)
            }
        }
    }

    pub(super) async fn relay(
        &self,
        report: &RingsReport,
        who: &[MemberReport],
        action: &FaultAction,
    ) -> Vec<AgentOutcome> {
        let targeted: HashSet<IpAddr> = who.iter().map(|m| m.addr.ip()).collect();
        let others: Vec<IpAddr> = report
            .machines()
            .map(|m| m.addr.ip())
            .filter(|ip| !targeted.contains(ip))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let fault = match action {
            FaultAction::Kill => AgentFault::Kill,
            FaultAction::Pause => AgentFault::Pause,
            FaultAction::Resume => AgentFault::Resume,
            FaultAction::Slow(ms) => AgentFault::Slow(*ms),
            FaultAction::Loss(p) => AgentFault::Loss(*p),
            FaultAction::Duplicate(p) => AgentFault::Duplicate(*p),
            FaultAction::Partition(server) => AgentFault::Partition {
                peers: others,
                server: *server,
            },
            FaultAction::Heal | FaultAction::Restart => AgentFault::Heal,
        };
        futures::stream::iter(who.iter().cloned())
            .map(|m| {
                let cmd = AgentCommand::sign(&self.signer, &m.id, fault.clone());
                async move {
                    let said = self.tell(&m, &cmd).await;
                    let (applied, detail) = match said {
                        Ok(AgentReply::Applied(s)) => (true, s),
                        Ok(AgentReply::Refused(s)) => (false, format!("refused: {s}")),
                        Err(e) => (false, format!("not reached: {e}")),
                    };
                    AgentOutcome {
                        id: m.id.to_string(),
                        addr: m.addr.to_string(),
                        applied,
                        detail,
                    }
                }
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await
    }

    /// Sends `cmd` to machine `m`'s agent: over the link the server holds to it (a
    /// leader's), or over a link made for this command and closed after it.
    async fn tell(&self, m: &MemberReport, cmd: &AgentCommand) -> Result<AgentReply, String> {
        if let Some(link) = self.node.peer(&m.id) {
            match link.call(CHAOS_AGENT_ROUTE, cmd, PER_MACHINE).await {
                Ok(r) => return Ok(r),
                // A link closing as it was taken (a probe's own link, done): a link of its
                // own, once. The agent takes each command once, so a command that did arrive
                // is refused as taken, never applied twice.
                Err(
                    e @ (rollcall_runtime::node::CallError::NotConnected(_)
                    | rollcall_runtime::node::CallError::Transport(
                        rollcall_runtime::TransportError::ClosedByPeer(_)
                        | rollcall_runtime::TransportError::LocallyClosed
                        | rollcall_runtime::TransportError::Reset,
                    )),
                ) => {
                    tracing::debug!(machine = %m.id, error = %e, "link closed under a chaos command; dialing");
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let link = self
            .node
            .connect_once(m.addr, PER_MACHINE)
            .await
            .map_err(|e| e.to_string())?;
        let r = link
            .call(CHAOS_AGENT_ROUTE, cmd, PER_MACHINE)
            .await
            .map_err(|e| e.to_string());
        link.close();
        r
    }

    fn audit(&self, who: &PeerIdentity, what: &str, reply: &ChaosReply) {
        let outcome = match reply {
            ChaosReply::Relayed(all) => summary(all),
            ChaosReply::Scenario(r) => format!(
                "{} of {} invariants held",
                r.checks.iter().filter(|c| c.pass).count(),
                r.checks.len()
            ),
            ChaosReply::Skipped(why) => format!("skipped: {why}"),
            ChaosReply::Started(run) => format!("started as run {run}"),
            ChaosReply::Running(s) => s.clone(),
            ChaosReply::Error(e) => format!("refused: {e}"),
            _ => "done".into(),
        };
        self.desk.record_audit(who, what, &outcome);
    }
}

/// "applied on 3 of 4; refused by 1 (e123…: refused: …)".
pub fn summary(all: &[AgentOutcome]) -> String {
    let applied = all.iter().filter(|o| o.applied).count();
    let mut s = format!("applied on {applied} of {}", all.len());
    let failed: Vec<&AgentOutcome> = all.iter().filter(|o| !o.applied).collect();
    if let Some(f) = failed.first() {
        s.push_str(&format!(
            "; not on {} (first: {} {})",
            failed.len(),
            f.id,
            f.detail
        ));
    }
    s
}

/// The machines `target` names in `report`: those the server has not marked offline, or
/// every one it knows when `reach_all` (healing must reach a grey machine it gave up on).
pub fn pick(
    report: &RingsReport,
    target: &Target,
    seed: u64,
    reach_all: bool,
) -> Result<Vec<MemberReport>, String> {
    let live = |m: &&MemberReport| reach_all || m.health != Health::Offline;
    let mut picked: Vec<MemberReport> = match target {
        Target::All => report.machines().filter(live).cloned().collect(),
        Target::Node(who) => report
            .machines()
            .filter(|m| m.id.as_str() == who || m.addr.ip().to_string() == *who)
            .cloned()
            .collect(),
        Target::Leaders => report
            .machines()
            .filter(live)
            .filter(|m| m.leads.any())
            .cloned()
            .collect(),
        Target::Random(pct) => {
            if !(0.0..=100.0).contains(pct) {
                return Err(format!(
                    "--random takes a share from 0% to 100%, not {pct}%"
                ));
            }
            let mut all: Vec<MemberReport> = report.machines().filter(live).cloned().collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all.shuffle(&mut SmallRng::seed_from_u64(seed));
            let n = ((all.len() as f64) * pct / 100.0).round() as usize;
            all.truncate(n);
            all
        }
        Target::Subnet(s) => {
            let (net, prefix) = rollcall_cluster::membership::parse_cidr(s)
                .or_else(|_| rollcall_cluster::membership::parse_cidr(&format!("{s}/24")))?;
            report
                .machines()
                .filter(live)
                .filter(|m| in_subnet(m.addr.ip(), net, prefix))
                .cloned()
                .collect()
        }
    };
    // One machine listed in two rings (moving between them) is told once.
    let mut seen = HashSet::new();
    picked.retain(|m| seen.insert(m.id.clone()));
    if picked.is_empty() {
        return Err(format!("no endpoint matches {target}"));
    }
    Ok(picked)
}

struct RelayRoute(Arc<ChaosRelay>);

impl Deliver for RelayRoute {
    fn deliver(&self, mut incoming: Incoming) -> Result<(), DestinationGone> {
        let req = match incoming.decode::<ChaosRequest>() {
            Ok(r) => r,
            Err(e) => {
                // Counted as a rejected frame by `decode`.
                let _ = incoming.answer(&ChaosReply::Error(format!("bad chaos request: {e}")));
                return Ok(());
            }
        };
        let what = match &req {
            ChaosRequest::Fault { action, target, .. } => {
                format!("chaos {} {target}", fault_name(action))
            }
            ChaosRequest::Scenario { scenario, .. } => {
                format!("chaos --scenario {}", scenario.name())
            }
            ChaosRequest::ScenarioResult(run) => format!("chaos: result of scenario run {run}"),
        };
        let relay = self.0.clone();
        if !incoming.from.role.allows(OperatorRole::Admin) {
            let reply = ChaosReply::Error(format!(
                "chaos needs the admin role; {} is {}",
                incoming.from.id, incoming.from.role
            ));
            relay.audit(&incoming.from, &what, &reply);
            let _ = incoming.answer(&reply);
            return Ok(());
        }
        tokio::spawn(async move {
            // Asking after a run is not audited each time (its end is).
            let polling = matches!(req, ChaosRequest::ScenarioResult(_));
            let reply = relay.serve(req, &incoming.from).await;
            if !polling {
                relay.audit(&incoming.from, &what, &reply);
            }
            let _ = incoming.answer(&reply);
        });
        Ok(())
    }
}

fn fault_name(a: &FaultAction) -> String {
    match a {
        FaultAction::Kill => "kill".into(),
        FaultAction::Restart => "restart".into(),
        FaultAction::Pause => "pause".into(),
        FaultAction::Resume => "resume".into(),
        FaultAction::Slow(ms) => format!("slow --ms {ms}"),
        FaultAction::Loss(p) => format!("loss --percent {p}"),
        FaultAction::Duplicate(p) => format!("duplicate --percent {p}"),
        FaultAction::Partition(true) => "partition --from-server".into(),
        FaultAction::Partition(false) => "partition".into(),
        FaultAction::Heal => "heal".into(),
    }
}
