//! The desk's exports: a question's events queued for a Splunk collector or a syslog
//! receiver, paged to the CLI for JSON lines, and every run of a saved question exported
//! once it has finished.

use std::sync::Arc;

use super::{DeskReply, DeskRequest, QuestionDesk};
use crate::export::queue::ExportQueue;
use crate::export::{Sink, events_of};

pub(super) const SAVED_EXPORTS_KEY: &str = "saved-exports";

/// Events in one page, at most.
const PAGE_EVENTS: usize = 2000;
/// Bytes of events in one page, about (a reply must fit a frame).
const PAGE_BYTES: usize = 600 * 1024;

impl QuestionDesk {
    /// Delivers exports through `queue` (its worker starts now; a second queue is
    /// refused).
    pub fn set_exports(&self, queue: Arc<ExportQueue>) -> Result<(), String> {
        self.exports
            .set(queue.clone())
            .map_err(|_| "the desk already has an export queue".to_string())?;
        tokio::spawn(queue.run());
        Ok(())
    }

    /// A sink an operator may name remotely: a network one (a file path on the server is
    /// not theirs to write).
    fn remote_sink(to: &str, token: Option<&str>) -> Result<Sink, String> {
        let sink = Sink::parse(to, token)?;
        if matches!(sink, Sink::Jsonl(_)) {
            return Err(
                "jsonl: is written where the CLI runs (rollcall export ID --to jsonl:PATH), not on the server"
                    .into(),
            );
        }
        Ok(sink)
    }

    fn queue(&self) -> Result<&Arc<ExportQueue>, String> {
        self.exports
            .get()
            .ok_or_else(|| "this server keeps no export queue".to_string())
    }

    pub(super) async fn export_request(&self, req: DeskRequest) -> DeskReply {
        let r = async {
            match req {
                DeskRequest::Export { id, to, token } => {
                    let sink = Self::remote_sink(&to, token.as_deref())?;
                    let queue = self.queue()?;
                    let events = events_of(&self.rings, id)
                        .await
                        .ok_or_else(|| format!("no question {id} (it may have been dropped)"))?;
                    let p = self.rings.progress(id);
                    let n = queue.enqueue(sink.clone(), &events)?;
                    let of = p
                        .map(|p| format!(" ({} of {} machines answered)", p.answered, p.expected))
                        .unwrap_or_default();
                    Ok(DeskReply::Done(format!(
                        "queued {n} events of question {id} for {sink}{of}"
                    )))
                }
                DeskRequest::ExportEvents { id, from } => {
                    let all = events_of(&self.rings, id)
                        .await
                        .ok_or_else(|| format!("no question {id} (it may have been dropped)"))?;
                    let total = all.len();
                    let mut bytes = 0usize;
                    let events = all
                        .into_iter()
                        .skip(from)
                        .take(PAGE_EVENTS)
                        .take_while(|e| {
                            bytes += e.question.len()
                                + e.host.len()
                                + e.machine.len()
                                + e.columns
                                    .iter()
                                    .map(|(k, v)| k.len() + v.len() + 8)
                                    .sum::<usize>()
                                + 32;
                            bytes <= PAGE_BYTES
                        })
                        .collect();
                    Ok(DeskReply::Events { events, total })
                }
                DeskRequest::ExportStatus => Ok(DeskReply::ExportStatus(
                    self.exports.get().map(|q| q.status()).unwrap_or_default(),
                )),
                DeskRequest::ExportRetry => {
                    self.queue()?.retry_now();
                    Ok(DeskReply::Done("trying every waiting sink again".into()))
                }
                DeskRequest::SavedExport { name, to, token } => {
                    if !self.lock().saved.iter().any(|s| s.name == name) {
                        return Err(format!("no saved question named {name:?}"));
                    }
                    let said = match to {
                        Some(to) => {
                            let sink = Self::remote_sink(&to, token.as_deref())?;
                            self.queue()?;
                            let said = format!("every run of {name:?} is exported to {sink}");
                            self.lock().saved_exports.insert(name, sink);
                            said
                        }
                        None => {
                            self.lock().saved_exports.remove(&name);
                            format!("runs of {name:?} are no longer exported")
                        }
                    };
                    let all = self.lock().saved_exports.clone();
                    self.persist(SAVED_EXPORTS_KEY, &all)?;
                    Ok(DeskReply::Done(said))
                }
                other => Err(format!("not an export request: {other:?}")),
            }
        }
        .await;
        r.unwrap_or_else(DeskReply::Error)
    }

    /// Notes a run of saved question `name` (as `reply` says it was asked), to export once
    /// it has finished, if its runs are exported.
    pub(super) fn exported_run(&self, name: &str, reply: &DeskReply) {
        let DeskReply::Asked { id, .. } = reply else {
            return;
        };
        let mut st = self.lock();
        if let Some(sink) = st.saved_exports.get(name).cloned() {
            st.pending_exports.insert(*id, (name.to_string(), sink));
        }
    }

    /// Queues the events of the saved runs that have finished.
    pub(super) async fn flush_exports(&self) {
        let pending: Vec<(u64, (String, Sink))> = self
            .lock()
            .pending_exports
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (id, (name, sink)) in pending {
            let finished = match (self.rings.is_open(id), self.rings.progress(id)) {
                (Some((fanned, open)), Some(p)) => !open || (fanned && p.answered >= p.expected),
                _ => true,
            };
            if !finished {
                continue;
            }
            self.lock().pending_exports.remove(&id);
            let (Ok(queue), Some(events)) = (self.queue(), events_of(&self.rings, id).await) else {
                tracing::error!(question = id, saved = %name, "a saved run could not be exported: no queue or no question");
                continue;
            };
            match queue.enqueue(sink.clone(), &events) {
                Ok(n) => {
                    tracing::info!(question = id, saved = %name, events = n, sink = %sink, "saved run queued for export")
                }
                Err(e) => {
                    tracing::error!(question = id, saved = %name, error = %e, "a saved run was not exported")
                }
            }
        }
    }
}
