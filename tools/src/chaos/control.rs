//! Fault control: targets, fault actions, and the `chaos.control` route (admin role only) that applies them to a served fleet.

use crate::fleet::Fleet;
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::SmallRng};
use rollcall_cluster::proto::RingsReport;
use std::collections::HashSet;
use std::time::Duration;

#[allow(unused_imports)]
use super::*;

/// Resolves a target to fleet indices.
pub fn resolve(
    fleet: &Fleet,
    report: &RingsReport,
    target: &Target,
    seed: u64,
) -> Result<Vec<usize>> {
    let all = 0..fleet.endpoints.len();
    let picked: Vec<usize> = match target {
        Target::All => all.collect(),
        Target::Node(who) => all
            .filter(|&i| {
                let e = &fleet.endpoints[i];
                e.id.0 == *who || e.ip.to_string() == *who
            })
            .collect(),
        Target::Leaders => members(report)
            .filter(|m| m.leads.any())
            .filter_map(|m| fleet.index_of(&m.id))
            .collect(),
        Target::Random(pct) => {
            if !(0.0..=100.0).contains(pct) {
                anyhow::bail!("--random takes a share from 0% to 100%, not {pct}%");
            }
            let mut running: Vec<usize> = all.filter(|&i| fleet.endpoints[i].alive()).collect();
            running.shuffle(&mut SmallRng::seed_from_u64(seed));
            let n = ((running.len() as f64) * pct / 100.0).round() as usize;
            running.truncate(n);
            running.sort_unstable();
            running
        }
        Target::Subnet(s) => {
            let (net, prefix) = rollcall_cluster::membership::parse_cidr(s)
                .or_else(|_| rollcall_cluster::membership::parse_cidr(&format!("{s}/24")))
                .map_err(anyhow::Error::msg)?;
            all.filter(|&i| in_subnet(fleet.endpoints[i].ip, net, prefix))
                .collect()
        }
    };
    if picked.is_empty() {
        anyhow::bail!("no endpoint matches {target}");
    }
    Ok(picked)
}

/// Applies `action` to the endpoints at `who`.
pub async fn apply(fleet: &mut Fleet, action: &FaultAction, who: &[usize]) -> Result<()> {
    match action {
        FaultAction::Kill => who.iter().for_each(|&i| {
            fleet.kill(i);
        }),
        FaultAction::Restart => {
            for &i in who {
                fleet.restart(i).await?;
            }
        }
        FaultAction::Pause | FaultAction::Resume => who.iter().for_each(|&i| {
            fleet.pause(i, *action == FaultAction::Pause);
        }),
        FaultAction::Slow(ms) => who.iter().for_each(|&i| {
            fleet.slow(i, Duration::from_millis(*ms));
        }),
        FaultAction::Loss(p) => who.iter().for_each(|&i| fleet.loss(i, p / 100.0)),
        FaultAction::Duplicate(p) => who.iter().for_each(|&i| fleet.duplicate(i, p / 100.0)),
        FaultAction::Partition(with_server) => {
            let set: HashSet<usize> = who.iter().copied().collect();
            let rest: Vec<usize> = (0..fleet.endpoints.len())
                .filter(|i| !set.contains(i))
                .collect();
            fleet.partition(who, &rest, *with_server);
        }
        FaultAction::Heal => fleet.heal(),
    }
    Ok(())
}

/// Serves [`ChaosRequest`]s against a fleet, one at a time.
pub struct ChaosControl {
    pub(super) fleet: std::sync::Arc<tokio::sync::Mutex<Fleet>>,
}

impl ChaosControl {
    /// Controls `fleet`.
    pub fn new(fleet: std::sync::Arc<tokio::sync::Mutex<Fleet>>) -> ChaosControl {
        ChaosControl { fleet }
    }

    /// Handles one request.
    pub async fn serve(&self, req: ChaosRequest) -> ChaosReply {
        let mut fleet = self.fleet.lock().await;
        let r: Result<ChaosReply> = async {
            match req {
                ChaosRequest::Fault {
                    action,
                    target,
                    seed,
                } => {
                    let report = fleet.report().await;
                    let who = if action == FaultAction::Heal {
                        (0..fleet.endpoints.len()).collect()
                    } else {
                        resolve(&fleet, &report, &target, seed)?
                    };
                    apply(&mut fleet, &action, &who).await?;
                    Ok(ChaosReply::Applied(
                        who.iter()
                            .map(|&i| {
                                let e = &fleet.endpoints[i];
                                (e.id.0.to_string(), e.ip.to_string())
                            })
                            .collect(),
                    ))
                }
                ChaosRequest::ScenarioResult(_) => Ok(ChaosReply::Error(
                    "a simulated fleet answers its scenarios at once; there is no run to ask after"
                        .into(),
                )),
                ChaosRequest::Scenario { scenario, opts } => {
                    fleet.reset().await?;
                    Ok(ChaosReply::Scenario(
                        run_scenario(&mut fleet, scenario, &opts).await?,
                    ))
                }
            }
        }
        .await;
        r.unwrap_or_else(|e| ChaosReply::Error(format!("{e:#}")))
    }

    /// Serves [`CHAOS`] on `node` for admin operators.
    pub fn install(self, node: &rollcall_runtime::Node) {
        node.router().register(
            CHAOS,
            rollcall_runtime::Roles::ADMIN,
            std::sync::Arc::new(ChaosRoute(std::sync::Arc::new(self))),
        );
    }
}

pub(super) struct ChaosRoute(pub(super) std::sync::Arc<ChaosControl>);

impl rollcall_runtime::node::Deliver for ChaosRoute {
    fn deliver(
        &self,
        mut incoming: rollcall_runtime::Incoming,
    ) -> Result<(), rollcall_runtime::node::DestinationGone> {
        if !incoming
            .from
            .role
            .allows(rollcall_runtime::OperatorRole::Admin)
        {
            let _ = incoming.answer(&ChaosReply::Error(format!(
                "chaos needs the admin role; {} is {}",
                incoming.from.id, incoming.from.role
            )));
            return Ok(());
        }
        let req = match incoming.decode::<ChaosRequest>() {
            Ok(r) => r,
            Err(e) => {
                // Counted as a rejected frame by `decode`.
                let _ = incoming.answer(&ChaosReply::Error(format!("bad chaos request: {e}")));
                return Ok(());
            }
        };
        let control = self.0.clone();
        tokio::spawn(async move {
            let reply = control.serve(req).await;
            let _ = incoming.answer(&reply);
        });
        Ok(())
    }
}
