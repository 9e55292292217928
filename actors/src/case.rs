//! Cases: indicators (imported by an operator, or carried by a detection product's alert)
//! searched for across the fleet, now and in every machine's history, with the machines
//! found kept and, if asked for, a response action issued on them (approved as any action).
//!
//! A case asks one question per 15 indicators, of the form
//!
//! ```text
//! Get Computer Name and Process Hash History[H] and Connection History[A] …
//!     from all machines with Process Hash Last Seen[H] >= 0 or Connection Last Seen[A] >= 0 …
//! ```
//!
//! and reads each answering machine's cells: a machine is a finding for every indicator
//! whose cell it filled. Domain names are looked for as the addresses they resolve to from
//! the server when the case opens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_cluster::shard::RingServer;
use rollcall_runtime::signing::unix_ms;
use rollcall_runtime::wire;
use serde::{Deserialize, Serialize};

use crate::action::server::{ActRequest, ActionBook};
use crate::ioc::{Indicator, Skipped};
use crate::question::{MAX_SELECTED, SensorSpec, parse};
use crate::store::ServerStore;

/// How long a case's questions are waited for.
pub const CASE_WAIT: Duration = Duration::from_secs(60);
/// Cases kept (the oldest dropped past it).
pub const MAX_CASES: usize = 1000;
/// Findings kept per case.
pub const MAX_FINDINGS: usize = 100_000;
/// Indicators one case may hold.
pub const MAX_CASE_INDICATORS: usize = crate::ioc::MAX_INDICATORS;

const CASES_KEY: &str = "cases";

/// What opens a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenCase {
    /// Where the indicators came from (a file name, an alert's product and id).
    pub source: String,
    /// What to look for.
    pub indicators: Vec<Indicator>,
    /// What the source held that cannot be looked for (kept with the case).
    pub skipped: Vec<Skipped>,
    /// A package to run on the machines found (an action, approved as any other).
    pub respond: Option<String>,
}

/// One machine that has (or had) one indicator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The indicator, as written (`sha256:…`, `ip:…`, `domain:… (address)`).
    pub indicator: String,
    /// The machine's node id.
    pub machine: String,
    /// Its host name.
    pub hostname: String,
    /// What its history says: first and last seen, how often, by what.
    pub sighting: String,
}

/// Where a case stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseState {
    /// Its questions are out.
    Searching,
    /// Every question was answered by every machine expected (or its wait ran out).
    Done,
}

/// One case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// Its id.
    pub id: u64,
    /// Who opened it (an operator, or `alert:PRODUCT`).
    pub opened_by: String,
    /// When (ms since the Unix epoch).
    pub opened_unix_ms: u64,
    /// Where its indicators came from.
    pub source: String,
    /// What it looks for.
    pub indicators: Vec<Indicator>,
    /// What it could not look for, and why (domains that did not resolve among them).
    pub skipped: Vec<Skipped>,
    /// The questions it asked.
    pub questions: Vec<u64>,
    /// Where it stands.
    pub state: CaseState,
    /// Machines that answered its questions, of those expected (when done).
    pub answered: usize,
    /// See `answered`.
    pub expected: usize,
    /// What it found, by indicator then host name.
    pub findings: Vec<Finding>,
    /// The response package asked for, and what became of it (the action's id, or why
    /// none was issued).
    pub respond: Option<String>,
    /// The response action's id.
    pub response_action: Option<u64>,
    /// Why no response action was issued, if one was asked for.
    pub response_error: Option<String>,
}

impl Case {
    /// Distinct machines found.
    pub fn machines(&self) -> Vec<String> {
        let mut m: Vec<String> = self.findings.iter().map(|f| f.machine.clone()).collect();
        m.sort();
        m.dedup();
        m
    }
}

/// Alerts taken and refused (what the alert listener counts).
#[derive(Debug, Default)]
pub struct AlertCounts {
    /// Alerts that opened a case.
    pub accepted: AtomicU64,
    /// Refused: no bearer token or the wrong one.
    pub refused_token: AtomicU64,
    /// Refused: not an alert this server reads.
    pub refused_malformed: AtomicU64,
}

/// The counts as a reply carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertTotals {
    /// Alerts that opened a case.
    pub accepted: u64,
    /// Refused for the token.
    pub refused_token: u64,
    /// Refused as malformed.
    pub refused_malformed: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    last_id: u64,
    cases: BTreeMap<u64, Case>,
}

/// The server's cases.
pub struct CaseBook {
    rings: RingServer,
    actions: Arc<ActionBook>,
    store: Option<Arc<ServerStore>>,
    book: Mutex<Book>,
    /// What the alert listener took and refused.
    pub alerts: AlertCounts,
}

impl std::fmt::Debug for CaseBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaseBook")
    }
}

/// One column of a case's question: which indicator, the sensor argument, its label.
#[derive(Debug, Clone)]
struct Column {
    history: &'static str,
    last_seen: &'static str,
    arg: String,
    label: String,
}

impl CaseBook {
    /// A case book asking through `rings`, responding through `actions`, keeping cases in
    /// `store` (those kept before are loaded).
    pub fn new(
        rings: RingServer,
        actions: Arc<ActionBook>,
        store: Option<Arc<ServerStore>>,
    ) -> CaseBook {
        let book = store
            .as_ref()
            .and_then(|st| match st.setting::<Book>(CASES_KEY) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "could not load the cases; starting empty");
                    None
                }
            })
            .unwrap_or_default();
        CaseBook {
            rings,
            actions,
            store,
            book: Mutex::new(book),
            alerts: AlertCounts::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        rollcall_runtime::sync::lock(&self.book)
    }

    fn persist(&self) {
        if let Some(st) = &self.store {
            let b = self.lock();
            if let Err(e) = st.put_setting(CASES_KEY, &*b) {
                tracing::error!(error = %e, "could not save the cases");
            }
        }
    }

    /// The alert counts now.
    pub fn alert_totals(&self) -> AlertTotals {
        AlertTotals {
            accepted: self.alerts.accepted.load(Ordering::Relaxed),
            refused_token: self.alerts.refused_token.load(Ordering::Relaxed),
            refused_malformed: self.alerts.refused_malformed.load(Ordering::Relaxed),
        }
    }

    /// Every case, newest first, without findings.
    pub fn list(&self) -> Vec<Case> {
        self.lock()
            .cases
            .values()
            .rev()
            .map(|c| Case {
                findings: Vec::new(),
                ..c.clone()
            })
            .collect()
    }

    /// Case `id`.
    pub fn get(&self, id: u64) -> Option<Case> {
        self.lock().cases.get(&id).cloned()
    }

    /// Opens a case for `who`: its questions go out now and its findings fill in over the
    /// next seconds (at most [`CASE_WAIT`]). Returns it as opened.
    pub async fn open(
        self: &Arc<Self>,
        req: OpenCase,
        who: &str,
        catalog: Vec<SensorSpec>,
    ) -> Result<Case, String> {
        if req.indicators.is_empty() {
            return Err("no indicators to look for".into());
        }
        if req.indicators.len() > MAX_CASE_INDICATORS {
            return Err(format!("at most {MAX_CASE_INDICATORS} indicators a case"));
        }
        if let Some(p) = &req.respond
            && self.actions.package(p).is_none()
        {
            return Err(format!(
                "no package {p:?} to respond with (rollcall package list)"
            ));
        }
        let mut skipped = req.skipped.clone();
        skipped.truncate(MAX_CASE_INDICATORS);
        let mut columns = Vec::new();
        for i in &req.indicators {
            match i {
                Indicator::Sha256(h) => columns.push(Column {
                    history: "Process Hash History",
                    last_seen: "Process Hash Last Seen",
                    arg: h.clone(),
                    label: i.to_string(),
                }),
                Indicator::Ip(a) => columns.push(Column {
                    history: "Connection History",
                    last_seen: "Connection Last Seen",
                    arg: a.to_string(),
                    label: i.to_string(),
                }),
                Indicator::Domain(d) => match resolve(d).await {
                    Ok(addrs) => {
                        for a in addrs {
                            columns.push(Column {
                                history: "Connection History",
                                last_seen: "Connection Last Seen",
                                arg: a.to_string(),
                                label: format!("{i} ({a})"),
                            });
                        }
                    }
                    Err(why) => skipped.push(Skipped {
                        what: i.to_string(),
                        why,
                    }),
                },
            }
        }
        let mut questions = Vec::new();
        let mut plan = Vec::new();
        for batch in columns.chunks(MAX_SELECTED - 1) {
            let select: Vec<String> = batch
                .iter()
                .map(|c| format!("{}[{:?}]", c.history, c.arg))
                .collect();
            let filter: Vec<String> = batch
                .iter()
                .map(|c| format!("{}[{:?}] >= 0", c.last_seen, c.arg))
                .collect();
            let text = format!(
                "Get Computer Name and {} from all machines with {}",
                select.join(" and "),
                filter.join(" or ")
            );
            let q = parse(&text, &catalog).map_err(|e| format!("{text}: {e}"))?;
            let body = wire::encode_body(&q).map_err(|e| e.to_string())?;
            let cols = q.select.iter().map(ToString::to_string).collect();
            let id = self.rings.ask(text, cols, body, CASE_WAIT).await;
            questions.push(id);
            plan.push((id, batch.to_vec()));
        }
        let case = {
            let mut b = self.lock();
            b.last_id += 1;
            let case = Case {
                id: b.last_id,
                opened_by: who.to_string(),
                opened_unix_ms: unix_ms(),
                source: req.source,
                indicators: req.indicators,
                skipped,
                questions,
                state: CaseState::Searching,
                answered: 0,
                expected: 0,
                findings: Vec::new(),
                respond: req.respond,
                response_action: None,
                response_error: None,
            };
            b.cases.insert(case.id, case.clone());
            while b.cases.len() > MAX_CASES {
                b.cases.pop_first();
            }
            case
        };
        tracing::info!(case = case.id, by = who, source = %case.source, indicators = case.indicators.len(), "case opened");
        self.persist();
        let me = self.clone();
        let id = case.id;
        let who = who.to_string();
        tokio::spawn(async move { me.watch(id, plan, who, catalog).await });
        Ok(case)
    }

    /// Gathers case `id`'s findings until its questions are answered, then responds.
    async fn watch(
        &self,
        id: u64,
        plan: Vec<(u64, Vec<Column>)>,
        who: String,
        catalog: Vec<SensorSpec>,
    ) {
        let deadline = tokio::time::Instant::now() + CASE_WAIT;
        loop {
            let complete = plan.iter().all(|(q, _)| {
                let fanned = self.rings.is_open(*q).is_none_or(|(f, _)| f);
                let answered = self.rings.answered(*q).unwrap_or(0);
                let expected = self.rings.expected(*q).unwrap_or(0);
                fanned && answered >= expected
            });
            let over = tokio::time::Instant::now() >= deadline;
            if complete || over {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut findings = Vec::new();
        let (mut answered, mut expected) = (usize::MAX, 0usize);
        for (q, cols) in &plan {
            answered = answered.min(self.rings.answered(*q).unwrap_or(0));
            expected = expected.max(self.rings.expected(*q).unwrap_or(0));
            let Some(groups) = self.rings.answers_by_machine(*q) else {
                continue;
            };
            for (answer, machines) in groups {
                for row in answer.rows.iter().flatten() {
                    let host = row.first().cloned().unwrap_or_default();
                    for (k, c) in cols.iter().enumerate() {
                        let Some(cell) = row.get(k + 1) else {
                            continue;
                        };
                        if cell.is_empty() || cell.starts_with('[') {
                            continue;
                        }
                        for m in &machines {
                            if findings.len() < MAX_FINDINGS {
                                findings.push(Finding {
                                    indicator: c.label.clone(),
                                    machine: m.to_string(),
                                    hostname: host.clone(),
                                    sighting: cell.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
        findings.sort_by(|a, b| (&a.indicator, &a.hostname).cmp(&(&b.indicator, &b.hostname)));
        let respond = {
            let mut b = self.lock();
            let Some(c) = b.cases.get_mut(&id) else {
                return;
            };
            c.findings = findings;
            c.answered = if answered == usize::MAX { 0 } else { answered };
            c.expected = expected;
            c.respond.clone().map(|p| (p, c.machines()))
        };
        let mut outcome = (None, None);
        if let Some((package, machines)) = respond {
            outcome = if machines.is_empty() {
                (
                    None,
                    Some("no machine found: nothing to respond on".to_string()),
                )
            } else {
                let req = ActRequest {
                    package,
                    machines: Some(machines),
                    ..ActRequest::default()
                };
                match self.actions.act(req, &who, &catalog).await {
                    Ok(r) => (Some(r.id), None),
                    Err(e) => (None, Some(e)),
                }
            };
        }
        {
            let mut b = self.lock();
            if let Some(c) = b.cases.get_mut(&id) {
                (c.response_action, c.response_error) = outcome;
                c.state = CaseState::Done;
                tracing::info!(
                    case = id,
                    findings = c.findings.len(),
                    machines = c.machines().len(),
                    "case searched"
                );
            }
        }
        self.persist();
    }
}

/// The addresses `domain` resolves to from the server.
async fn resolve(domain: &str) -> Result<Vec<std::net::IpAddr>, String> {
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((domain, 0))).await {
        Ok(Ok(addrs)) => {
            let mut v: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).collect();
            v.sort();
            v.dedup();
            if v.is_empty() {
                Err("the name resolves to no address from the server".into())
            } else {
                Ok(v)
            }
        }
        Ok(Err(e)) => Err(format!("the name does not resolve from the server: {e}")),
        Err(_) => Err("resolving the name took over 5 s".into()),
    }
}
