//! `rollcall ioc import`, `rollcall case list|show`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall::desk_client::DeskClient;
use rollcall_actors::case::{CASE_WAIT, Case, CaseState, OpenCase};
use rollcall_actors::desk::{DeskReply, DeskRequest};

use super::args::{CaseCommand, IocCommand};

pub(crate) async fn ioc(c: IocCommand) -> Result<ExitCode> {
    let IocCommand::Import {
        file,
        then,
        json,
        op,
    } = c;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let imported = match rollcall_actors::ioc::import(&bytes) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {}: {e}; nothing imported", file.display());
            return Ok(ExitCode::from(2));
        }
    };
    if !json {
        for s in &imported.skipped {
            eprintln!("skipped {}: {}", s.what, s.why);
        }
    }
    if imported.indicators.is_empty() {
        eprintln!(
            "error: {} holds no indicator endpoints can look for",
            file.display()
        );
        return Ok(ExitCode::from(2));
    }
    let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
    let result = async {
        let req = OpenCase {
            source: file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            indicators: imported.indicators,
            skipped: imported.skipped,
            respond: then,
        };
        let case = match desk.call(DeskRequest::OpenCase(req)).await? {
            DeskReply::Case(c) => c,
            DeskReply::Error(e) => return Ok(Err(e)),
            other => bail!("unexpected answer {other:?}"),
        };
        if !json {
            eprintln!(
                "case {}: looking for {} indicators on every machine, now and in its history …",
                case.id,
                case.indicators.len()
            );
        }
        // Waited for until searched (the server gives its questions CASE_WAIT).
        let deadline = Instant::now() + CASE_WAIT + Duration::from_secs(30);
        loop {
            match desk.call(DeskRequest::Case { id: case.id }).await? {
                DeskReply::Case(c) if c.state == CaseState::Done => return Ok(Ok(c)),
                DeskReply::Case(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                DeskReply::Case(c) => {
                    return Ok(Err(format!(
                        "case {} still searching after {} s (rollcall case show {})",
                        c.id,
                        (CASE_WAIT + Duration::from_secs(30)).as_secs(),
                        c.id
                    )));
                }
                DeskReply::Error(e) => return Ok(Err(e)),
                other => bail!("unexpected answer {other:?}"),
            }
        }
    }
    .await;
    desk.close().await;
    match result? {
        Ok(case) => {
            if json {
                println!("{}", serde_json::to_string(&case)?);
            } else {
                print_case(&case);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

pub(crate) async fn case(c: CaseCommand) -> Result<ExitCode> {
    let (req, json, op) = match c {
        CaseCommand::List { json, op } => (DeskRequest::Cases, json, op),
        CaseCommand::Show { id, json, op } => (DeskRequest::Case { id }, json, op),
    };
    let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
    let reply = desk.call(req).await;
    desk.close().await;
    match reply? {
        DeskReply::Case(c) => {
            if json {
                println!("{}", serde_json::to_string(&c)?);
            } else {
                print_case(&c);
            }
        }
        DeskReply::Cases { cases, alerts } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "cases": cases, "alerts": alerts })
                );
            } else {
                println!(
                    "alerts: {} opened a case, {} refused for the token, {} refused as malformed",
                    alerts.accepted, alerts.refused_token, alerts.refused_malformed
                );
                for c in &cases {
                    println!(
                        "case {:<5} {:<10} {} by {}: {} indicators, {}",
                        c.id,
                        format!("{:?}", c.state).to_lowercase(),
                        rollcall_actors::history::utc(c.opened_unix_ms),
                        c.opened_by,
                        c.indicators.len(),
                        c.source
                    );
                }
            }
        }
        DeskReply::Error(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        other => bail!("unexpected answer {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_case(c: &Case) {
    println!(
        "case {} ({}), opened {} by {} from {}: {} of {} machines answered",
        c.id,
        format!("{:?}", c.state).to_lowercase(),
        rollcall_actors::history::utc(c.opened_unix_ms),
        c.opened_by,
        c.source,
        c.answered,
        c.expected
    );
    for s in &c.skipped {
        println!("  skipped {}: {}", s.what, s.why);
    }
    let mut labels: Vec<&str> = c.findings.iter().map(|f| f.indicator.as_str()).collect();
    labels.dedup();
    for i in &c.indicators {
        let label = i.to_string();
        if !labels.iter().any(|l| l.starts_with(&label)) {
            println!("{label}: no machine, now or in its history");
        }
    }
    for label in labels {
        let found: Vec<_> = c.findings.iter().filter(|f| f.indicator == label).collect();
        println!("{label}: {} machines", found.len());
        for f in found {
            println!("  {:<24} {}", f.hostname, f.sighting);
        }
    }
    match (&c.respond, c.response_action, &c.response_error) {
        (Some(p), Some(id), _) => println!(
            "response: action {id} ({p}) on {} machines (rollcall action status {id})",
            c.machines().len()
        ),
        (Some(p), None, Some(e)) => println!("response {p}: not issued: {e}"),
        _ => {}
    }
}
