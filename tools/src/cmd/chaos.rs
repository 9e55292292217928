//! `rollcall chaos`: faults against a real cluster's endpoints (relayed by its server) or a
//! served simulated fleet, and scenarios against the latter.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use rollcall_runtime::identity::Credentials;

use super::args::*;
use rollcall::desk_client::*;

impl TargetArgs {
    pub(crate) fn target(&self) -> rollcall::chaos::Target {
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

pub(crate) async fn chaos_command(a: ChaosArgs) -> Result<std::process::ExitCode> {
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
    let (mut ran, mut held, mut skipped) = (0usize, 0usize, 0usize);
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
                    "{} takes no chaos commands (a server or a fleet served by `rollcall sim --serve` does)",
                    a.op.server
                )
            }
            Err(e) => return Err(e).context("sending the chaos command"),
        };
        // A real server runs a scenario on its own and is asked for the result.
        let reply = match reply {
            ChaosReply::Started(run) => {
                eprintln!("the server runs it as scenario run {run}");
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    match link
                        .call(
                            CHAOS,
                            &ChaosRequest::ScenarioResult(run),
                            Duration::from_secs(30),
                        )
                        .await
                        .context("asking for the scenario's result")?
                    {
                        ChaosReply::Running(_) => continue,
                        done => break done,
                    }
                }
            }
            other => other,
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
            ChaosReply::Relayed(all) => {
                let refused = all.iter().filter(|o| !o.applied).count();
                ok &= refused == 0;
                if a.json {
                    println!("{}", serde_json::to_string(&all)?);
                } else {
                    println!("{}", rollcall::chaos::relay::summary(&all));
                    for o in &all {
                        println!(
                            "  {}  {}  {}  {}",
                            o.id,
                            o.addr,
                            if o.applied { "applied" } else { "NOT APPLIED" },
                            o.detail
                        );
                    }
                }
            }
            ChaosReply::Scenario(r) => {
                ok &= r.passed();
                ran += 1;
                held += usize::from(r.passed());
                if a.json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{}", r.table());
                }
            }
            ChaosReply::Started(_) | ChaosReply::Running(_) => {
                bail!("the server answered a scenario's result with another run")
            }
            ChaosReply::Skipped(why) => {
                skipped += 1;
                if a.json {
                    println!("{}", serde_json::json!({ "skipped": why }));
                } else {
                    println!("skipped: {why}\n");
                }
            }
            ChaosReply::Error(e) => {
                node.shutdown_and_wait(Duration::from_secs(1)).await;
                bail!("{e}")
            }
        }
    }
    if ran + skipped > 1 && !a.json {
        println!(
            "{held} of {ran} scenarios held every invariant{}",
            if skipped > 0 {
                format!("; {skipped} skipped (they need a simulated fleet)")
            } else {
                String::new()
            }
        );
    }
    node.shutdown_and_wait(Duration::from_secs(1)).await;
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
