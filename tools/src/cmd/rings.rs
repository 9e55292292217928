//! `rollcall status` and `rollcall ring show`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

use rollcall_cluster::proto::{AdminRequest, RING_ADMIN, RingsReport};
use rollcall_runtime::identity::Credentials;
use rollcall_runtime::node::{NodeStatus, STATUS_ACTOR, StatusRequest};

use super::args::*;
use rollcall::desk_client::*;

/// Connects as an operator and fetches the server's status.
pub(crate) async fn fetch_status(creds: &Credentials, server: SocketAddr) -> Result<NodeStatus> {
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
pub(crate) async fn fetch_rings(
    creds: &Credentials,
    server: SocketAddr,
    pinned: Option<&rollcall_runtime::NodeId>,
    subnet: Option<String>,
) -> Result<RingsReport> {
    let node = operator_node(creds, server).await?;
    let link = node.connect(server).await?;
    link.wait_connected(Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    if let Err(e) = link.require_peer(rollcall_runtime::PeerRole::Server, pinned) {
        node.shutdown();
        anyhow::bail!("{e}: not the rollcall server these credentials were issued for");
    }
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

pub(crate) async fn ring_show(a: RingShowArgs) -> Result<()> {
    let creds = Credentials::load(&a.op.cert_dir).context("loading operator credentials")?;
    let pin = rollcall::desk_client::server_pin(&a.op.cert_dir)?;
    let report = fetch_rings(&creds, a.op.server, pin.as_ref(), a.subnet).await?;
    print_rings(&report, a.json)
}

pub(crate) fn print_rings(report: &RingsReport, json: bool) -> Result<()> {
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
    let summarised = report.rings.iter().any(|r| r.members_total > 0);
    if summarised {
        println!(
            "(a large fleet: each ring shows its first and last member; `--subnet` lists one ring in full)"
        );
    }
    for ring in &report.rings {
        println!(
            "ring {}: {} members, {} leader links",
            ring.ring,
            ring.members_total.max(ring.members.len()),
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
        println!(
            "isolated (no peering): {} endpoints",
            report.isolated_total.max(report.isolated.len())
        );
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

pub(crate) async fn status(a: StatusArgs) -> Result<()> {
    let creds = Credentials::load(&a.op.cert_dir).context("loading operator credentials")?;
    let status = fetch_status(&creds, a.op.server).await?;
    print_status(&status, a.json)
}

pub(crate) fn print_status(status: &NodeStatus, json: bool) -> Result<()> {
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
    if !status.figures.is_empty() {
        println!();
        print_figures(&status.figures);
        return Ok(());
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
    println!(
        "refused: {} by role, {} revoked, {} unsigned, {} answers, {} slow frames, {} over budget, {} connections, {} enrolments",
        s.rejected_forbidden,
        s.rejected_revoked,
        s.rejected_unsigned,
        s.rejected_answers,
        s.rejected_slow,
        s.rejected_over_budget,
        s.rejected_connections,
        s.enrolments_refused
    );
    Ok(())
}

/// The figures the metrics listener serves, one a line: name, labels, value (counters
/// that never moved are left out; `--json` lists every one).
pub(crate) fn print_figures(figures: &[rollcall_runtime::figures::Figure]) {
    use rollcall_runtime::figures::FigureKind;
    println!("{:<58} VALUE", "FIGURE");
    for f in figures {
        if f.kind == FigureKind::Counter && f.value == 0.0 {
            continue;
        }
        let labels = f
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let name = if labels.is_empty() {
            f.name.clone()
        } else {
            format!("{}{{{labels}}}", f.name)
        };
        let value = match &f.kind {
            FigureKind::Histogram { sum, .. } if f.value > 0.0 => {
                format!("{} (mean {:.3} s)", f.value, sum / f.value)
            }
            _ if f.value.fract() == 0.0 => format!("{}", f.value as i64),
            _ => format!("{:.3}", f.value),
        };
        println!("{name:<58} {value}");
    }
}
