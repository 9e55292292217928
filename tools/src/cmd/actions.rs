//! `rollcall act`, `rollcall action …`, `rollcall package …`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rollcall::desk_client::DeskClient;
use rollcall_actors::action::server::{ActRequest, ActionReport};
use rollcall_actors::desk::{DeskReply, DeskRequest};

use super::args::{ActArgs, ActionCommand, OperatorArgs, PackageCommand};
use super::questions::desk_command;

/// The kinds counted, in the order they print.
const KINDS: &[&str] = &[
    "completed",
    "failed",
    "refused",
    "expired",
    "interrupted",
    "running",
    "waiting",
];

/// The report as one JSON object with the counts as keys.
pub(crate) fn report_json(r: &ActionReport) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": r.id,
        "description": r.description,
        "package": r.package,
        "phase": r.phase,
        "issued_by": r.issued_by,
        "approved_by": r.approved_by,
        "dry_run": r.dry_run,
        "targeted": r.targeted,
        "awaiting_approval": r.awaiting_approval,
        "done": r.done,
        "expires_in_ms": r.expires_in_ms,
        "machines": r.machines.iter().map(|m| serde_json::json!({
            "id": m.id, "status": m.status, "output": m.output,
        })).collect::<Vec<_>>(),
        "machines_total": r.machines_total,
    });
    for k in KINDS {
        v[*k] = serde_json::json!(r.count(k));
    }
    v
}

fn counts_line(r: &ActionReport) -> String {
    let mut parts = vec![format!("{} targeted", r.targeted)];
    for k in KINDS {
        let n = r.count(k);
        if n > 0 {
            parts.push(format!("{n} {k}"));
        }
    }
    parts.join(", ")
}

fn print_report(r: &ActionReport, machines: bool) {
    println!("action {}: {}", r.id, r.description);
    println!(
        "  {} · issued by {}{}{}",
        r.phase,
        r.issued_by,
        r.approved_by
            .as_ref()
            .map(|a| format!(", approved by {a}"))
            .unwrap_or_default(),
        if r.dry_run { " · dry run" } else { "" }
    );
    println!("  {}", counts_line(r));
    if machines && !r.machines.is_empty() {
        println!("  {:<40} {:<32} OUTPUT", "MACHINE", "STATUS");
        for m in &r.machines {
            let out = m.output.replace('\n', " ⏎ ");
            println!("  {:<40} {:<32} {}", m.id, m.status, out.escape_debug());
        }
        if r.machines_total > r.machines.len() {
            println!("  … {} more machines", r.machines_total - r.machines.len());
        }
    }
}

/// The exit status a finished report gives: 0 all completed, 1 otherwise.
fn exit_for(r: &ActionReport) -> ExitCode {
    let bad: u64 = ["failed", "refused", "expired", "interrupted"]
        .iter()
        .map(|k| r.count(k))
        .sum();
    if r.done && bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(crate) async fn act(a: ActArgs) -> Result<ExitCode> {
    let script = match &a.script_file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        None => None,
    };
    let req = ActRequest {
        package: a.package.clone(),
        params: a.params.clone(),
        filter: a.filter.clone(),
        from_question: a.from_question,
        all: a.all,
        dry_run: a.dry_run,
        expire_secs: a.expire_secs,
        spread_secs: a.spread_secs,
        purge: a.purge,
        script,
        machines: None,
    };
    let desk = DeskClient::connect(a.op.server, &a.op.cert_dir).await?;
    let first = match desk.call(DeskRequest::Act(req)).await? {
        DeskReply::Action(r) => r,
        DeskReply::Error(e) => {
            desk.close().await;
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        other => bail!("unexpected answer {other:?}"),
    };
    if first.awaiting_approval {
        desk.close().await;
        if a.json {
            println!("{}", report_json(&first));
        } else {
            println!(
                "action {} awaits approval: an admin other than {} runs `rollcall action approve {}`",
                first.id, first.issued_by, first.id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = watch(&desk, first.id, a.wait_secs, !a.json).await;
    desk.close().await;
    let (r, timed_out) = r?;
    if a.json {
        println!("{}", report_json(&r));
    } else {
        print_report(&r, true);
    }
    if timed_out {
        if !a.json {
            eprintln!(
                "still going after {} s: rollcall action status {}",
                a.wait_secs, r.id
            );
        }
        return Ok(ExitCode::from(3));
    }
    Ok(exit_for(&r))
}

/// Follows action `id` until it is done or `wait_secs` pass; whether they passed.
async fn watch(
    desk: &DeskClient,
    id: u64,
    wait_secs: u64,
    live: bool,
) -> Result<(ActionReport, bool)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_secs);
    let mut last = String::new();
    loop {
        let r = match desk
            .call(DeskRequest::ActionStatus {
                id,
                failed_only: false,
            })
            .await?
        {
            DeskReply::Action(r) => r,
            DeskReply::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer {other:?}"),
        };
        let line = counts_line(&r);
        if live && line != last {
            eprintln!("action {id}: {line}");
            last = line;
        }
        if r.done {
            return Ok((r, false));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((r, true));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn action(c: ActionCommand) -> Result<ExitCode> {
    match c {
        ActionCommand::Status {
            id,
            failed,
            json,
            op,
        } => {
            let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
            let reply = desk
                .call(DeskRequest::ActionStatus {
                    id,
                    failed_only: failed,
                })
                .await;
            desk.close().await;
            match reply? {
                DeskReply::Action(r) => {
                    if json {
                        println!("{}", report_json(&r));
                    } else {
                        print_report(&r, true);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                DeskReply::Error(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
                other => bail!("unexpected answer {other:?}"),
            }
        }
        ActionCommand::List(op) => list(&op).await,
        ActionCommand::Approve { id, op } => desk_command(&op, DeskRequest::Approve { id }).await,
        ActionCommand::Deny { id, op } => desk_command(&op, DeskRequest::Deny { id }).await,
        ActionCommand::Cancel { id, op } => desk_command(&op, DeskRequest::Cancel { id }).await,
    }
}

async fn list(op: &OperatorArgs) -> Result<ExitCode> {
    let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
    let reply = desk.call(DeskRequest::Actions).await;
    desk.close().await;
    match reply? {
        DeskReply::Actions(list) => {
            for r in list {
                println!(
                    "{:>5}  {:<20} {:<28} {}",
                    r.id,
                    r.phase,
                    counts_line(&r),
                    r.description
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DeskReply::Error(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

pub(crate) async fn package(c: PackageCommand) -> Result<ExitCode> {
    match c {
        PackageCommand::List(op) => desk_command(&op, DeskRequest::Packages).await,
        PackageCommand::Add {
            name,
            command,
            timeout_secs,
            files,
            op,
        } => {
            let manifest = if files.is_empty() {
                None
            } else {
                match upload(&op, &files).await? {
                    Ok(m) => Some(m),
                    Err(refused) => {
                        eprintln!("error: {refused}");
                        return Ok(ExitCode::from(2));
                    }
                }
            };
            desk_command(
                &op,
                DeskRequest::AddPackage {
                    name,
                    command,
                    timeout_secs,
                    manifest,
                },
            )
            .await
        }
        PackageCommand::Status { name, json, op } => {
            let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
            let reply = desk.call(DeskRequest::PackageStatus { name }).await;
            desk.close().await;
            match reply? {
                DeskReply::PackageStatus(r) => {
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        print_package(&r);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                DeskReply::Error(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
                other => bail!("unexpected answer {other:?}"),
            }
        }
    }
}

fn print_package(r: &rollcall_actors::action::server::PackageReport) {
    println!("package {} ({})", r.name, r.id);
    for (f, size) in &r.files {
        println!("  {f:<40} {size:>14} bytes");
    }
    println!("  {} bytes in {} chunks of 64 KiB", r.bytes, r.chunks);
    // Rings that got anything from the server (a ring with no machine that fetched is not
    // a ring the server had to feed).
    let fed = r.rings.iter().filter(|g| g.egress > 0).count().max(1) as f64;
    println!(
        "server egress: {} bytes ({:.3} x size per ring fed), {} chunks, {} sent again after a fault",
        r.egress.bytes,
        r.egress.bytes as f64 / (r.bytes.max(1) as f64 * fed),
        r.egress.chunks,
        r.egress.repeats
    );
    if !r.rings.is_empty() {
        println!(
            "  {:<28} {:>9} {:>9} {:>16} {:>16} {:>16}",
            "ring", "machines", "complete", "from peers", "from server", "server sent"
        );
    }
    for g in &r.rings {
        println!(
            "  {:<28} {:>9} {:>9} {:>16} {:>16} {:>16}",
            g.ring, g.machines, g.complete, g.from_peers, g.from_server, g.egress
        );
    }
    for (id, targeted, counts) in &r.actions {
        let c: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("action {id}: {targeted} targeted, {}", c.join(", "));
    }
}

/// Cuts `files` into chunks, uploads those the server lacks (with progress), and returns
/// the manifest, or the server's refusal.
async fn upload(
    op: &OperatorArgs,
    files: &[std::path::PathBuf],
) -> Result<std::result::Result<rollcall_patchdist::Manifest, String>> {
    let mut named = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable file name", f.display()))?
            .to_string();
        let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        named.push((name, bytes::Bytes::from(data)));
    }
    let (manifest, chunks) = rollcall_patchdist::Manifest::build(&named)?;
    let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
    let result = async {
        let hashes: Vec<serde_bytes::ByteBuf> = chunks
            .iter()
            .map(|c| serde_bytes::ByteBuf::from(c.hash().to_vec()))
            .collect();
        let mut lacking = Vec::new();
        // Asked in batches that keep each request well inside a frame.
        for (b, batch) in hashes.chunks(8192).enumerate() {
            match desk
                .call(DeskRequest::LackingChunks {
                    hashes: batch.to_vec(),
                })
                .await?
            {
                DeskReply::Lacking(idx) => {
                    lacking.extend(idx.into_iter().map(|i| b * 8192 + i as usize))
                }
                DeskReply::Error(e) => return Ok(Err(e)),
                other => bail!("unexpected answer {other:?}"),
            }
        }
        let total = lacking.len();
        eprintln!(
            "{} bytes in {} chunks; uploading {total} the server lacks",
            manifest.size(),
            chunks.len()
        );
        for (n, i) in lacking.into_iter().enumerate() {
            let data = serde_bytes::ByteBuf::from(chunks[i].data().to_vec());
            match desk.call(DeskRequest::PutChunk { data }).await? {
                DeskReply::Done(_) => {}
                DeskReply::Error(e) => return Ok(Err(format!("uploading chunk {i}: {e}"))),
                other => bail!("unexpected answer {other:?}"),
            }
            if (n + 1) % 160 == 0 || n + 1 == total {
                eprintln!("uploaded {} of {total} chunks", n + 1);
            }
        }
        Ok(Ok(manifest))
    }
    .await;
    desk.close().await;
    result
}
