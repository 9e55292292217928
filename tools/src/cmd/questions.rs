//! `rollcall ask`, `results`, `questions`, `search`, `saved`, `sensor`, `patches`: the question desk from the command line.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use rollcall::results;
use rollcall_actors::desk::{DeskReply, DeskRequest};
use rollcall_actors::question::SensorSpec;
use rollcall_cluster::questions::Progress;

use super::args::*;
use rollcall::desk_client::*;

pub(crate) async fn ask(a: AskArgs) -> Result<std::process::ExitCode> {
    let desk = DeskClient::connect(a.op.server, &a.op.cert_dir).await?;
    let req = DeskRequest::Ask {
        text: a.question.clone(),
        ttl_ms: Some(a.ttl_secs.saturating_mul(1000)),
    };
    watch(desk, req, a.wait_secs, &a.out).await
}

/// Sends an ask (plain or saved), then streams progress until every expected machine has
/// answered or `wait_secs` pass, and prints the results.
pub(crate) async fn watch(
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
            p.cut.rows_total.max(p.rows.len())
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
    // Every row for the answer printed (a large fleet's rows come in several pages).
    let p = if p.cut.rows_total > p.rows.len() {
        desk.progress_all_rows(id).await?
    } else {
        p
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
pub(crate) async fn desk_command(
    op: &OperatorArgs,
    req: DeskRequest,
) -> Result<std::process::ExitCode> {
    let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
    let reply = desk.call(req).await;
    desk.close().await;
    match reply? {
        DeskReply::Done(what) => println!("{what}"),
        DeskReply::Sensors(list) => print!("{}", results::sensor_table(&list)),
        DeskReply::Packages(list) => {
            for (name, what) in list {
                println!("{name:<34} {what}");
            }
        }
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

pub(crate) async fn results(a: ResultsArgs) -> Result<()> {
    let desk = DeskClient::connect(a.op.server, &a.op.cert_dir).await?;
    let p = desk.progress_all_rows(a.id).await;
    let catalog = desk.catalog().await;
    desk.close().await;
    print_progress(&p?, &a.out, &catalog)
}

/// The column a desk error names (`at column 42: …`).
pub(crate) fn error_column(e: &str) -> Option<usize> {
    e.strip_prefix("at column ")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

pub(crate) async fn audit(a: AuditArgs) -> Result<std::process::ExitCode> {
    let desk = DeskClient::connect(a.op.server, &a.op.cert_dir).await?;
    let reply = desk.call(DeskRequest::Audit { last: a.last }).await;
    desk.close().await;
    match reply? {
        DeskReply::Audit { entries, chain } if a.json => {
            if !a.verify {
                for e in &entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            }
            let (ok, detail) = match &chain {
                Ok(n) => (true, format!("{n} entries")),
                Err(w) => (false, w.clone()),
            };
            println!(
                "{}",
                serde_json::json!({"chain_intact": ok, "detail": detail})
            );
            Ok(std::process::ExitCode::from(if ok { 0 } else { 1 }))
        }
        DeskReply::Audit { entries, chain } => {
            let entries = if a.verify { Vec::new() } else { entries };
            if !entries.is_empty() {
                println!(
                    "{:>6}  {:<24} {:<28} WHAT → OUTCOME",
                    "#", "WHEN (UTC ms)", "WHO"
                );
                for e in &entries {
                    println!(
                        "{:>6}  {:<24} {:<28} {} → {}",
                        e.seq,
                        e.at_unix_ms,
                        format!("{} ({})", e.who, e.role),
                        e.what.escape_debug(),
                        e.outcome.escape_debug()
                    );
                }
            }
            match chain {
                Ok(n) => {
                    println!("audit chain intact: {n} entries");
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(where_) => {
                    println!("audit chain BROKEN: {where_}");
                    Ok(std::process::ExitCode::from(1))
                }
            }
        }
        DeskReply::Error(e) => {
            eprintln!("error: {e}");
            Ok(std::process::ExitCode::from(2))
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

pub(crate) async fn questions(op: OperatorArgs) -> Result<()> {
    let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
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

pub(crate) fn print_progress(
    p: &Progress,
    out: &OutputFlags,
    catalog: &[SensorSpec],
) -> Result<()> {
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
