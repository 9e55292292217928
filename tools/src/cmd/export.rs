//! `rollcall export`, `rollcall saved export`.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall::desk_client::DeskClient;
use rollcall_actors::desk::{DeskReply, DeskRequest};
use rollcall_actors::export::Sink;

use super::args::ExportArgs;

/// How long `--wait` waits for delivery.
const WAIT_FOR_DELIVERY: Duration = Duration::from_secs(60);

/// The collector's token from `--hec-token` or `--hec-token-file`.
pub(crate) fn token(
    inline: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>> {
    match (inline, file) {
        (Some(t), None) => Ok(Some(t)),
        (None, Some(f)) => Ok(Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        )),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => bail!("give --hec-token or --hec-token-file, not both"),
    }
}

pub(crate) async fn export(a: ExportArgs) -> Result<ExitCode> {
    let desk = DeskClient::connect(a.op.server, &a.op.cert_dir).await?;
    let r = run(&desk, a).await;
    desk.close().await;
    match r? {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn run(desk: &DeskClient, a: ExportArgs) -> Result<std::result::Result<ExitCode, String>> {
    if a.retry {
        match desk.call(DeskRequest::ExportRetry).await? {
            DeskReply::Done(s) => println!("{s}"),
            DeskReply::Error(e) => return Ok(Err(e)),
            other => bail!("unexpected answer {other:?}"),
        }
    }
    let Some(id) = a.id else {
        // The queue's state.
        return match desk.call(DeskRequest::ExportStatus).await? {
            DeskReply::ExportStatus(list) => {
                if a.json {
                    println!("{}", serde_json::to_string(&list)?);
                } else if list.is_empty() {
                    println!("nothing exported yet");
                }
                if !a.json {
                    for s in &list {
                        println!(
                            "{}: {} waiting, {} delivered, {} failed tries, {} refused (queue full){}",
                            s.sink,
                            s.queued,
                            s.delivered,
                            s.failures,
                            s.refused,
                            s.last_error
                                .as_ref()
                                .map(|e| format!(
                                    "; last error: {e}; next try in {} ms",
                                    s.retry_in_ms
                                ))
                                .unwrap_or_default()
                        );
                    }
                }
                Ok(Ok(ExitCode::SUCCESS))
            }
            DeskReply::Error(e) => Ok(Err(e)),
            other => bail!("unexpected answer {other:?}"),
        };
    };
    let Some(to) = a.to else {
        return Ok(Err(
            "say where: --to jsonl:PATH | splunk-hec:URL | syslog:udp://HOST:PORT".into(),
        ));
    };
    let token = token(a.hec_token, a.hec_token_file.as_deref())?;
    let sink = match Sink::parse(&to, token.as_deref()) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    if let Sink::Jsonl(path) = &sink {
        // Written here, a page at a time.
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        let mut from = 0;
        loop {
            match desk.call(DeskRequest::ExportEvents { id, from }).await? {
                DeskReply::Events { events, total } => {
                    for e in &events {
                        writeln!(out, "{}", e.json())?;
                    }
                    from += events.len();
                    if events.is_empty() || from >= total {
                        break;
                    }
                }
                DeskReply::Error(e) => return Ok(Err(e)),
                other => bail!("unexpected answer {other:?}"),
            }
        }
        out.flush()?;
        println!("wrote {from} events of question {id} to {}", path.display());
        return Ok(Ok(ExitCode::SUCCESS));
    }
    match desk
        .call(DeskRequest::Export {
            id,
            to: to.clone(),
            token,
        })
        .await?
    {
        DeskReply::Done(s) => println!("{s}"),
        DeskReply::Error(e) => return Ok(Err(e)),
        other => bail!("unexpected answer {other:?}"),
    }
    if !a.wait {
        return Ok(Ok(ExitCode::SUCCESS));
    }
    // Until the server has delivered everything waiting for that sink.
    let name = sink.to_string();
    let deadline = Instant::now() + WAIT_FOR_DELIVERY;
    loop {
        let list = match desk.call(DeskRequest::ExportStatus).await? {
            DeskReply::ExportStatus(l) => l,
            DeskReply::Error(e) => return Ok(Err(e)),
            other => bail!("unexpected answer {other:?}"),
        };
        let Some(s) = list.into_iter().find(|s| s.sink == name) else {
            return Ok(Err(format!("the server lists no sink {name}")));
        };
        if s.queued == 0 {
            println!("delivered: {} events to {name}", s.delivered);
            return Ok(Ok(ExitCode::SUCCESS));
        }
        if Instant::now() > deadline {
            eprintln!(
                "{} events still wait for {name} (they stay queued on the server{}); rollcall export --retry tries again now",
                s.queued,
                s.last_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            );
            return Ok(Ok(ExitCode::from(1)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
