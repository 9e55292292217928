//! Questions end to end: the endpoint's [`SensorEvaluator`] (a ring member's bridge to its
//! sensors) and the server's [`QuestionDesk`] (operators ask, watch progress, list).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_cluster::questions::{Progress, QuestionSummary};
use rollcall_cluster::shard::RingServer;
use rollcall_runtime::OperatorRole;
use rollcall_runtime::node::{Deliver, DestinationGone, Incoming};
use rollcall_runtime::wire;
use serde::{Deserialize, Serialize};

use crate::action::server::{ActRequest, ActionBook, ActionReport, PackageReport, RingFiles};
use crate::case::{AlertTotals, Case, CaseBook, OpenCase};
use crate::question::{SensorSpec, parse};
use crate::search::{LEARNED_SENSORS, SavedQuestion, Suggestion, Vocabulary, search};
use crate::sensors::{PatchLevel, ScriptSensor, builtins, catalog_with};
use crate::store::ServerStore;
use rollcall_patchdist::{Hash, Manifest, Origin};
use serde_bytes::ByteBuf;

pub use crate::endpoint::{SENSOR_CONFIG, SensorConfig, SensorEvaluator, SignedConfig};

/// Name of the server actor operators ask questions through.
pub const DESK: &str = "question.desk";

/// Longest search text by default (a search box's words, not a document).
pub const MAX_SEARCH_BYTES: usize = 4096;

/// What the desk takes from operators (`[server]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeskLimits {
    /// The longest a question may stay open.
    pub max_ttl: Duration,
    /// The longest search text.
    pub max_search_bytes: usize,
}

impl Default for DeskLimits {
    fn default() -> Self {
        DeskLimits {
            max_ttl: MAX_TTL,
            max_search_bytes: MAX_SEARCH_BYTES,
        }
    }
}

/// How often the desk gathers the statuses of actions that are out.
const ACTION_TICK: Duration = Duration::from_millis(100);

/// Searches ranked at once.
const SEARCHES_AT_ONCE: usize = 2;

/// The longest a question may stay open by default (members hold it that long).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a question stays open unless the operator says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// The largest encoded question sent along the rings: well under the frame limit, with room
/// for the envelope and the answers that travel back with it.
pub const MAX_QUESTION_BODY_BYTES: usize = 512 * 1024;

/// What operators ask the desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeskRequest {
    /// Ask a question (operator role).
    Ask {
        /// The question text.
        text: String,
        /// How long it stays open (default 10 minutes).
        ttl_ms: Option<u64>,
    },
    /// Where a question stands (viewer role).
    Progress {
        /// Its id.
        id: u64,
        /// The first row wanted (rows come in pages that fit one reply; see `Progress::cut`).
        #[serde(default)]
        rows_from: usize,
    },
    /// The kept questions (viewer role).
    List,
    /// Register a script sensor that every endpoint receives (admin role).
    AddSensor {
        /// Its name in questions.
        name: String,
        /// The shell script; its output lines are the values.
        script: String,
    },
    /// The sensor names questions may use (viewer role).
    Sensors,
    /// Set the patch baseline for `Missing Patches` (admin role).
    SetBaseline(Vec<PatchLevel>),
    /// Save a question, optionally reissued every `every_secs` (operator role).
    Save(SavedQuestion),
    /// The saved questions (viewer role).
    Saved,
    /// Ask a saved question now (operator role).
    RunSaved {
        /// Its name.
        name: String,
    },
    /// Rank complete questions for plain words (viewer role).
    Search {
        /// The words.
        text: String,
    },
    /// The audit log's last entries, and whether its chain holds (admin role).
    Audit {
        /// How many entries.
        last: usize,
    },
    /// Issue an action (operator role).
    Act(ActRequest),
    /// Where an action stands (viewer role).
    ActionStatus {
        /// Its id.
        id: u64,
        /// List only machines where it did not complete.
        failed_only: bool,
    },
    /// The actions, newest first (viewer role).
    Actions,
    /// Approve an action awaiting approval (an admin other than its issuer).
    Approve {
        /// Its id.
        id: u64,
    },
    /// Deny an action awaiting approval (admin role).
    Deny {
        /// Its id.
        id: u64,
    },
    /// Cancel an action (its issuer, or an admin): before it is out, or where it has not
    /// started.
    Cancel {
        /// Its id.
        id: u64,
    },
    /// Register a package that runs a command (admin role).
    AddPackage {
        /// Its name.
        name: String,
        /// The command (`sh -c`; parameters are `$1`, `$2`, …).
        command: String,
        /// Longest a run may take.
        timeout_secs: u64,
        /// Its files, uploaded before with [`DeskRequest::PutChunk`].
        #[serde(default)]
        manifest: Option<Manifest>,
    },
    /// The packages actions may run (viewer role).
    Packages,
    /// Of these chunk hashes, which the server lacks (admin role): answered with
    /// [`DeskReply::Lacking`], the indices in `hashes`.
    LackingChunks {
        /// Chunk hashes.
        hashes: Vec<ByteBuf>,
    },
    /// Keep this chunk of a package's file (admin role; the server hashes it itself).
    PutChunk {
        /// At most 64 KiB.
        data: ByteBuf,
    },
    /// Where a package with files stands: its files, what left the server for it (per
    /// ring), and its actions' machines (viewer role).
    PackageStatus {
        /// The package.
        name: String,
    },
    /// Look for indicators across the fleet, now and in history (operator role).
    OpenCase(OpenCase),
    /// The cases, newest first, and the alert listener's counts (viewer role).
    Cases,
    /// One case with its findings (viewer role).
    Case {
        /// Its id.
        id: u64,
    },
    /// Queue question `id`'s events (one per machine row) for a Splunk HTTP Event
    /// Collector or a syslog receiver (operator role; `jsonl:` is written by the CLI).
    Export {
        /// The question.
        id: u64,
        /// `splunk-hec:URL` or `syslog:udp://HOST:PORT` / `syslog:tcp://HOST:PORT`.
        to: String,
        /// The collector's token (Splunk).
        token: Option<String>,
    },
    /// Question `id`'s events from the `from`-th, a page at a time (viewer role).
    ExportEvents {
        /// The question.
        id: u64,
        /// The first event wanted.
        from: usize,
    },
    /// Where the export queue's sinks stand (viewer role).
    ExportStatus,
    /// Try every waiting sink again now (operator role).
    ExportRetry,
    /// Export every run of saved question `name` to `to` (operator role; `None` stops it).
    SavedExport {
        /// The saved question.
        name: String,
        /// As for [`DeskRequest::Export`].
        to: Option<String>,
        /// The collector's token (Splunk).
        token: Option<String>,
    },
    /// The machines that gave one row of question `id`'s answers, from the `from`-th, a
    /// page at a time (viewer role): a grid's row expanded to its machines.
    RowMachines {
        /// The question.
        id: u64,
        /// The row's cells, as [`Progress`] lists them.
        cells: Vec<String>,
        /// The first machine wanted.
        from: usize,
    },
}

/// The desk's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeskReply {
    /// The question is out.
    Asked {
        /// Its id.
        id: u64,
        /// Machines expected to answer.
        expected: usize,
        /// The question as understood.
        canonical: String,
    },
    /// Progress.
    Progress(Progress),
    /// The list.
    List(Vec<QuestionSummary>),
    /// The sensors questions may use, with what each reads.
    Sensors(Vec<SensorSpec>),
    /// Saved questions.
    Saved(Vec<SavedQuestion>),
    /// Search results, best first.
    Suggestions(Vec<Suggestion>),
    /// Done, with what was done.
    Done(String),
    /// The audit log's last entries, and the whole chain's check: `Ok(entries)` or where it
    /// breaks.
    Audit {
        /// The entries, oldest first.
        entries: Vec<crate::store::AuditEntry>,
        /// The chain's check.
        chain: Result<u64, String>,
    },
    /// Where an action stands.
    Action(ActionReport),
    /// The actions (without their machines).
    Actions(Vec<ActionReport>),
    /// The packages: (name and parameter, what it does).
    Packages(Vec<(String, String)>),
    /// Indices of the chunks asked about that the server lacks.
    Lacking(Vec<u32>),
    /// Where a package stands.
    PackageStatus(PackageReport),
    /// A case (as opened, or with its findings).
    Case(Case),
    /// A page of a question's events.
    Events {
        /// The events.
        events: Vec<crate::export::Event>,
        /// How many there are in all.
        total: usize,
    },
    /// The export queue's sinks.
    ExportStatus(Vec<crate::export::queue::SinkStatus>),
    /// The cases (without findings), and what the alert listener took and refused.
    Cases {
        /// Newest first.
        cases: Vec<Case>,
        /// The alert listener's counts.
        alerts: AlertTotals,
    },
    /// The request could not be served (a parse error with its column, an unknown id, a
    /// missing role).
    Error(String),
    /// A page of the machines that gave a row: (node id, host name), by host name.
    Machines {
        /// The machines.
        machines: Vec<(String, String)>,
        /// How many there are in all.
        total: usize,
    },
}

/// What the desk keeps (in the store when it has one).
#[derive(Debug, Default)]
struct DeskState {
    config: SensorConfig,
    saved: Vec<SavedQuestion>,
    last_issued: std::collections::HashMap<String, tokio::time::Instant>,
    /// Values the fleet reported, for the search box.
    vocab: Vocabulary,
    /// What it takes from operators.
    limits: DeskLimits,
    /// Questions whose values have been learned.
    learned: HashSet<u64>,
    /// Saved questions whose every run is exported, and where.
    saved_exports: std::collections::BTreeMap<String, crate::export::Sink>,
    /// Runs of those waiting to finish before they are exported.
    pending_exports: std::collections::HashMap<u64, (String, crate::export::Sink)>,
    /// Questions not expired yet, kept so that a restarted server asks them again.
    open: Vec<OpenQuestion>,
}

/// The server's question desk.
pub struct QuestionDesk {
    rings: RingServer,
    actions: Arc<ActionBook>,
    cases: Arc<CaseBook>,
    exports: std::sync::OnceLock<Arc<crate::export::queue::ExportQueue>>,
    /// Searches ranked at once (the rest wait their turn).
    searches: Arc<tokio::sync::Semaphore>,
    store: Option<Arc<ServerStore>>,
    state: Mutex<DeskState>,
}

const SCRIPTS_KEY: &str = "script-sensors";
const BASELINE_KEY: &str = "patch-baseline";
const SAVED_KEY: &str = "saved-questions";
const OPEN_KEY: &str = "open-questions";

impl QuestionDesk {
    /// A desk that asks through `rings`, keeping results and settings in `store` if given
    /// (settings saved there before are loaded, and new question ids continue after the
    /// stored ones).
    pub fn new(rings: RingServer, store: Option<Arc<ServerStore>>) -> QuestionDesk {
        let mut state = DeskState::default();
        if let Some(st) = &store {
            let mut load = || -> Result<(), crate::store::StoreError> {
                state.config.scripts = st.setting(SCRIPTS_KEY)?.unwrap_or_default();
                state.config.baseline = st.setting(BASELINE_KEY)?.unwrap_or_default();
                state.saved = st.setting(SAVED_KEY)?.unwrap_or_default();
                state.saved_exports = st.setting(exports::SAVED_EXPORTS_KEY)?.unwrap_or_default();
                state.open = st.setting(OPEN_KEY)?.unwrap_or_default();
                rings.resume_question_ids(st.last_id()?);
                Ok(())
            };
            if let Err(e) = load() {
                tracing::error!(error = %e, "could not load the desk's settings; starting empty");
            }
        }
        let actions = Arc::new(ActionBook::new(rings.clone(), store.clone()));
        let desk = QuestionDesk {
            cases: Arc::new(CaseBook::new(rings.clone(), actions.clone(), store.clone())),
            actions,
            exports: std::sync::OnceLock::new(),
            rings,
            searches: Arc::new(tokio::sync::Semaphore::new(SEARCHES_AT_ONCE)),
            store,
            state: Mutex::new(state),
        };
        desk.publish_config();
        desk
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeskState> {
        rollcall_runtime::sync::lock(&self.state)
    }

    fn catalog(&self) -> Vec<SensorSpec> {
        catalog_with(&self.lock().config.scripts)
    }

    /// Sets what the desk takes from operators.
    pub fn set_limits(&self, limits: DeskLimits) {
        self.lock().limits = limits;
    }

    /// Sets the revoked endpoints and operators the configuration hands every endpoint (from
    /// the CA directory's list); re-signed and handed out only if it changed.
    pub fn set_revoked(&self, ids: &[rollcall_runtime::NodeId]) {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        {
            let mut st = self.lock();
            if st.config.revoked == ids {
                return;
            }
            st.config.revoked = ids;
        }
        self.publish_config();
    }

    /// Hands the sensor configuration to every endpoint at its next registration.
    fn publish_config(&self) {
        let cfg = self.lock().config.clone();
        match SignedConfig::sign(&cfg, self.rings.signer()).and_then(|s| wire::encode_body(&s)) {
            Ok(body) => {
                self.rings
                    .set_registration_extras(vec![rollcall_cluster::proto::Handoff {
                        to: SENSOR_CONFIG.to_string(),
                        body,
                    }])
            }
            Err(e) => tracing::error!(error = %e, "could not encode the sensor configuration"),
        }
    }

    fn persist<T: Serialize>(&self, key: &str, value: &T) -> Result<(), String> {
        match &self.store {
            Some(st) => st.put_setting(key, value).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    async fn ask(&self, text: String, ttl: Duration) -> DeskReply {
        let q = match parse(&text, &self.catalog()) {
            Ok(q) => q,
            Err(e) => return DeskReply::Error(e.to_string()),
        };
        let body = match wire::encode_body(&q) {
            Ok(b) if b.len() > MAX_QUESTION_BODY_BYTES => {
                return DeskReply::Error(format!(
                    "the question encodes to {} bytes; at most {MAX_QUESTION_BODY_BYTES} travel a ring (use fewer or shorter conditions)",
                    b.len()
                ));
            }
            Ok(b) => b,
            Err(e) => return DeskReply::Error(e.to_string()),
        };
        let columns = q.select.iter().map(ToString::to_string).collect();
        let id = self.rings.ask(text.clone(), columns, body, ttl).await;
        // Not a progress report: that lists every machine yet to answer (all of them, now).
        let expected = self.rings.expected(id).unwrap_or(0);
        if self.store.is_some() {
            let open = {
                let mut st = self.lock();
                st.open.push(OpenQuestion {
                    id,
                    text,
                    expires_unix_ms: rollcall_runtime::signing::unix_ms()
                        .saturating_add(ttl.as_millis() as u64),
                    expected,
                });
                st.open.clone()
            };
            if let Err(e) = self.persist(OPEN_KEY, &open) {
                tracing::error!(question = id, error = %e, "could not keep the open question");
            }
        }
        DeskReply::Asked {
            id,
            expected,
            canonical: q.to_string(),
        }
    }

    /// The actions.
    pub fn actions(&self) -> &Arc<ActionBook> {
        &self.actions
    }

    /// The cases.
    pub fn cases(&self) -> &Arc<CaseBook> {
        &self.cases
    }

    /// Opens a case for `who` (an operator, or an alert's product).
    pub async fn open_case(&self, req: OpenCase, who: &str) -> Result<Case, String> {
        self.cases.open(req, who, self.catalog()).await
    }

    /// Sets the packages that wait for a second admin's approval (`[actions]
    /// require_approval`).
    pub fn set_require_approval(&self, packages: Vec<String>) {
        self.actions.set_require_approval(packages);
    }

    /// Serves one request from `who`.
    pub async fn serve(&self, req: DeskRequest, who: &rollcall_runtime::PeerIdentity) -> DeskReply {
        let role = who.role;
        let needed = match req {
            DeskRequest::Ask { .. }
            | DeskRequest::Save(_)
            | DeskRequest::RunSaved { .. }
            | DeskRequest::Act(_)
            | DeskRequest::OpenCase(_)
            | DeskRequest::Export { .. }
            | DeskRequest::ExportRetry
            | DeskRequest::SavedExport { .. }
            | DeskRequest::Cancel { .. } => OperatorRole::Operator,
            DeskRequest::AddSensor { .. }
            | DeskRequest::SetBaseline(_)
            | DeskRequest::Audit { .. }
            | DeskRequest::Approve { .. }
            | DeskRequest::Deny { .. }
            | DeskRequest::AddPackage { .. }
            | DeskRequest::LackingChunks { .. }
            | DeskRequest::PutChunk { .. } => OperatorRole::Admin,
            _ => OperatorRole::Viewer,
        };
        if !role.allows(needed) {
            return DeskReply::Error(format!("this needs the {needed} role; you are {role}"));
        }
        let me = who.id.as_str();
        let result = |r: Result<String, String>| match r {
            Ok(s) => DeskReply::Done(s),
            Err(e) => DeskReply::Error(e),
        };
        match req {
            DeskRequest::Act(a) => match self.actions.act(a, me, &self.catalog()).await {
                Ok(r) => DeskReply::Action(r),
                Err(e) => DeskReply::Error(e),
            },
            DeskRequest::ActionStatus { id, failed_only } => {
                match self.actions.report(id, failed_only) {
                    Some(r) => DeskReply::Action(r),
                    None => DeskReply::Error(format!("no action {id}")),
                }
            }
            DeskRequest::Actions => DeskReply::Actions(self.actions.list()),
            DeskRequest::OpenCase(c) => match self.open_case(c, me).await {
                Ok(c) => DeskReply::Case(c),
                Err(e) => DeskReply::Error(e),
            },
            DeskRequest::Cases => DeskReply::Cases {
                cases: self.cases.list(),
                alerts: self.cases.alert_totals(),
            },
            r @ (DeskRequest::Export { .. }
            | DeskRequest::ExportEvents { .. }
            | DeskRequest::ExportStatus
            | DeskRequest::ExportRetry
            | DeskRequest::SavedExport { .. }) => self.export_request(r).await,
            DeskRequest::RowMachines { id, cells, from } => {
                match rows::machines_of_row(&self.rings, id, &cells).await {
                    Some(all) => DeskReply::Machines {
                        total: all.len(),
                        machines: all.into_iter().skip(from).take(rows::PAGE).collect(),
                    },
                    None => {
                        DeskReply::Error(format!("no question {id} (it may have been dropped)"))
                    }
                }
            }
            DeskRequest::Case { id } => match self.cases.get(id) {
                Some(c) => DeskReply::Case(c),
                None => DeskReply::Error(format!("no case {id}")),
            },
            DeskRequest::Approve { id } => result(self.actions.approve(id, me).await),
            DeskRequest::Deny { id } => result(self.actions.stop(id, me, true, true)),
            DeskRequest::Cancel { id } => result(
                self.actions
                    .cancel(id, me, role.allows(OperatorRole::Admin))
                    .await,
            ),
            DeskRequest::AddPackage {
                name,
                command,
                timeout_secs,
                manifest,
            } => result(
                self.actions
                    .add_package(&name, &command, timeout_secs, manifest),
            ),
            DeskRequest::LackingChunks { hashes } => {
                let Some(origin) = self.actions.origin() else {
                    return DeskReply::Error("this server keeps no package files".into());
                };
                let asked: Vec<Hash> = hashes
                    .iter()
                    .map(|h| <Hash>::try_from(h.as_slice()).unwrap_or_default())
                    .collect();
                let lacking = origin.lacking(&asked);
                DeskReply::Lacking(
                    asked
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| lacking.contains(h))
                        .map(|(i, _)| i as u32)
                        .collect(),
                )
            }
            DeskRequest::PutChunk { data } => {
                let Some(origin) = self.actions.origin() else {
                    return DeskReply::Error("this server keeps no package files".into());
                };
                if data.len() > rollcall_patchdist::CHUNK_SIZE {
                    return DeskReply::Error("a chunk is at most 64 KiB".into());
                }
                match origin.put_chunk(bytes::Bytes::from(data.into_vec())) {
                    Ok(h) => DeskReply::Done(rollcall_patchdist::manifest::hex(&h)),
                    Err(e) => DeskReply::Error(e.to_string()),
                }
            }
            DeskRequest::PackageStatus { name } => match self.package_status(&name).await {
                Ok(r) => DeskReply::PackageStatus(r),
                Err(e) => DeskReply::Error(e),
            },
            DeskRequest::Packages => DeskReply::Packages(self.actions.packages()),
            DeskRequest::Ask { text, ttl_ms } => {
                let ttl = ttl_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TTL);
                // Every member holds an open question until it expires: the server's policy
                // bounds how long, whatever an operator asks for.
                let max = self.lock().limits.max_ttl;
                if ttl.is_zero() || ttl > max {
                    return DeskReply::Error(format!(
                        "a question stays open between 1 ms and {} h, not {} ms",
                        max.as_secs() / 3600,
                        ttl.as_millis()
                    ));
                }
                self.ask(text, ttl).await
            }
            DeskRequest::Progress { id, rows_from } => match self.rings.progress(id) {
                Some(p) => DeskReply::Progress(p.page(rows_from)),
                None => match self.store.as_ref().map(|s| s.progress(id)) {
                    Some(Ok(Some(p))) => DeskReply::Progress(p.page(rows_from)),
                    Some(Err(e)) => DeskReply::Error(e.to_string()),
                    _ => DeskReply::Error(format!(
                        "no question {id} (it may have been dropped from the store)"
                    )),
                },
            },
            DeskRequest::List => {
                let mut list = self.rings.questions();
                if let Some(Ok(stored)) = self.store.as_ref().map(|s| s.list()) {
                    let live: HashSet<u64> = list.iter().map(|q| q.id).collect();
                    list.extend(stored.into_iter().filter(|q| !live.contains(&q.id)));
                }
                list.sort_by_key(|q| std::cmp::Reverse(q.id));
                // A list of any length fits one reply: long texts are cut (a question may be
                // 256 KiB; `results ID` shows the whole of one).
                for q in &mut list {
                    cut_text(&mut q.text);
                }
                DeskReply::List(list)
            }
            DeskRequest::AddSensor { name, script } => {
                let name = name.trim().to_string();
                let taken = builtins().any(|b| b.name.eq_ignore_ascii_case(&name));
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
                    && !name.split(' ').any(|w| {
                        ["and", "or", "not", "from", "with"]
                            .contains(&w.to_ascii_lowercase().as_str())
                    });
                if taken || !valid {
                    return DeskReply::Error(format!(
                        "{name:?} cannot be a sensor name (built-in, empty, or not plain words)"
                    ));
                }
                let scripts = {
                    let mut st = self.lock();
                    st.config
                        .scripts
                        .retain(|s| !s.name.eq_ignore_ascii_case(&name));
                    st.config
                        .scripts
                        .push(ScriptSensor::new(name.clone(), script));
                    st.config.scripts.clone()
                };
                if let Err(e) = self.persist(SCRIPTS_KEY, &scripts) {
                    return DeskReply::Error(e);
                }
                self.publish_config();
                DeskReply::Done(format!(
                    "script sensor {name:?} registered; endpoints get it at their next registration"
                ))
            }
            DeskRequest::Sensors => DeskReply::Sensors(self.catalog()),
            DeskRequest::SetBaseline(levels) => {
                let n = levels.len();
                self.lock().config.baseline = levels.clone();
                if let Err(e) = self.persist(BASELINE_KEY, &levels) {
                    return DeskReply::Error(e);
                }
                self.publish_config();
                DeskReply::Done(format!("patch baseline of {n} packages set"))
            }
            DeskRequest::Save(q) => {
                if let Err(e) = parse(&q.text, &self.catalog()) {
                    return DeskReply::Error(e.to_string());
                }
                let saved = {
                    let mut st = self.lock();
                    st.saved.retain(|s| s.name != q.name);
                    st.saved.push(q.clone());
                    st.saved.clone()
                };
                if let Err(e) = self.persist(SAVED_KEY, &saved) {
                    return DeskReply::Error(e);
                }
                DeskReply::Done(format!("saved {:?}", q.name))
            }
            DeskRequest::Saved => {
                let mut saved = self.lock().saved.clone();
                for q in &mut saved {
                    cut_text(&mut q.text);
                }
                DeskReply::Saved(saved)
            }
            DeskRequest::RunSaved { name } => {
                let text = self
                    .lock()
                    .saved
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| s.text.clone());
                match text {
                    Some(t) => {
                        let reply = self.ask(t, DEFAULT_TTL).await;
                        self.exported_run(&name, &reply);
                        reply
                    }
                    None => DeskReply::Error(format!("no saved question named {name:?}")),
                }
            }
            DeskRequest::Audit { last } => match &self.store {
                None => DeskReply::Error("this server keeps no audit log (no store)".into()),
                Some(st) => match (st.audit(last.min(10_000)), st.verify_audit()) {
                    (Ok(entries), Ok(chain)) => DeskReply::Audit { entries, chain },
                    (Err(e), _) | (_, Err(e)) => DeskReply::Error(e.to_string()),
                },
            },
            DeskRequest::Search { text } => {
                let max = self.lock().limits.max_search_bytes;
                if text.len() > max {
                    return DeskReply::Error(format!(
                        "search text of {} bytes; at most {max}",
                        text.len()
                    ));
                }
                // A few at a time: ranking is CPU work, and the desk has other callers.
                let Ok(_turn) = self.searches.clone().acquire_owned().await else {
                    return DeskReply::Error("the server is shutting down".into());
                };
                let saved = self.lock().saved.clone();
                let vocab = self.lock().vocab.clone();
                let catalog = self.catalog();
                // Ranking is CPU work on text from the network: off the async runtime.
                match tokio::task::spawn_blocking(move || {
                    search(&text, &catalog, &saved, &vocab, 10)
                })
                .await
                {
                    Ok(list) => DeskReply::Suggestions(list),
                    Err(e) => DeskReply::Error(format!("search failed: {e}")),
                }
            }
        }
    }

    /// Registers the desk on the server node as [`DESK`] and starts its background work:
    /// saving results to the store, and reissuing scheduled saved questions.
    /// Keeps packages' files in `origin` (the server's store of them).
    pub fn with_origin(self, origin: Arc<Origin>) -> QuestionDesk {
        self.actions.set_origin(origin);
        self
    }

    /// Where package `name` stands: its files, what the server sent, and per ring where the
    /// machines' copies came from (`package status`).
    pub async fn package_status(&self, name: &str) -> Result<PackageReport, String> {
        let p = self
            .actions
            .package(name)
            .ok_or_else(|| format!("no package {name:?}"))?;
        let m = p
            .manifest
            .as_ref()
            .ok_or_else(|| format!("package {name} has no files"))?;
        let id = m.id();
        let egress = self
            .actions
            .origin()
            .map(|o| o.egress(&id))
            .unwrap_or_default();
        let machines = self.actions.package_machines(name);
        let mut by_ring: std::collections::BTreeMap<String, RingFiles> = Default::default();
        if !egress.by_machine.is_empty() || !machines.is_empty() {
            let report = self.rings.report(None).await;
            let ring_of: std::collections::HashMap<String, String> = report
                .rings
                .iter()
                .flat_map(|r| {
                    r.members
                        .iter()
                        .map(move |m| (m.id.to_string(), r.ring.to_string()))
                })
                .collect();
            fn row<'a>(
                by_ring: &'a mut std::collections::BTreeMap<String, RingFiles>,
                ring_of: &std::collections::HashMap<String, String>,
                machine: &str,
            ) -> &'a mut RingFiles {
                let ring = ring_of
                    .get(machine)
                    .cloned()
                    .unwrap_or_else(|| "(not in a listed ring)".into());
                by_ring.entry(ring.clone()).or_insert_with(|| RingFiles {
                    ring,
                    ..RingFiles::default()
                })
            }
            for (machine, bytes) in &egress.by_machine {
                row(&mut by_ring, &ring_of, machine).egress += bytes;
            }
            for (machine, f) in &machines {
                let r = row(&mut by_ring, &ring_of, &machine.to_string());
                r.machines += 1;
                if f.complete {
                    r.complete += 1;
                    r.from_peers += f.sources.from_peers;
                    r.from_server += f.sources.from_server;
                }
            }
        }
        let actions = self
            .actions
            .list()
            .into_iter()
            .filter(|a| a.package == name)
            .map(|a| (a.id, a.targeted, a.counts))
            .collect();
        Ok(PackageReport {
            name: name.to_string(),
            id: rollcall_patchdist::manifest::hex(&id),
            files: m.files.iter().map(|f| (f.name.clone(), f.size)).collect(),
            bytes: m.size(),
            chunks: m.chunk_count() as u64,
            egress,
            rings: by_ring.into_values().collect(),
            actions,
        })
    }

    pub fn install(self, node: &rollcall_runtime::Node) -> Arc<QuestionDesk> {
        let desk = Arc::new(self);
        node.router().register(
            DESK,
            rollcall_runtime::Roles::OPERATORS,
            Arc::new(DeskRoute(desk.clone())),
        );
        let weak = Arc::downgrade(&desk);
        let actions = Arc::downgrade(&desk);
        let resuming = Arc::downgrade(&desk);
        tokio::spawn(async move {
            if let Some(d) = resuming.upgrade() {
                d.resume_open().await;
            }
        });
        tokio::spawn(async move {
            if let Some(d) = actions.upgrade() {
                d.actions.resume().await;
            }
            let mut tick = tokio::time::interval(ACTION_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(desk) = actions.upgrade() else {
                    return;
                };
                let catalog = desk.catalog();
                desk.actions.tick(&catalog).await;
            }
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut finished: HashSet<u64> = HashSet::new();
            loop {
                tick.tick().await;
                let Some(desk) = weak.upgrade() else { return };
                desk.save_results(&mut finished).await;
                desk.learn();
                desk.reissue().await;
                desk.flush_exports().await;
            }
        });
        desk
    }

    /// Learns the values of finished questions that show a learned sensor, for the search
    /// box (each question once).
    fn learn(&self) {
        for q in self.rings.questions() {
            if q.answered < q.expected && q.open {
                continue;
            }
            if self.lock().learned.contains(&q.id) {
                continue;
            }
            let Some(p) = self.rings.progress(q.id) else {
                continue;
            };
            let mut st = self.lock();
            st.learned.insert(q.id);
            for (i, column) in p.columns.iter().enumerate() {
                if !LEARNED_SENSORS.contains(&column.as_str()) {
                    continue;
                }
                for r in &p.rows {
                    if let Some(v) = r.cells.get(i) {
                        st.vocab.learn(column, v);
                    }
                }
            }
        }
    }

    async fn save_results(&self, finished: &mut HashSet<u64>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        for q in self.rings.questions() {
            if finished.contains(&q.id) {
                continue;
            }
            let Some(p) = self.rings.progress(q.id) else {
                continue;
            };
            let store = store.clone();
            let saved = tokio::task::spawn_blocking(move || store.save_progress(&p)).await;
            match saved {
                Ok(Ok(())) if !q.open => {
                    finished.insert(q.id);
                    self.forget_open(q.id);
                }
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(question = q.id, error = %e, "could not save results")
                }
                Err(e) => tracing::error!(error = %e, "result saver failed"),
            }
        }
    }

    async fn reissue(&self) {
        let now = tokio::time::Instant::now();
        let due: Vec<SavedQuestion> = {
            let mut st = self.lock();
            let saved = st.saved.clone();
            saved
                .into_iter()
                .filter(|s| {
                    let Some(every) = s.every_secs.filter(|e| *e > 0) else {
                        return false;
                    };
                    let last = st.last_issued.get(&s.name).copied();
                    let due =
                        last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(every));
                    if due {
                        st.last_issued.insert(s.name.clone(), now);
                    }
                    due
                })
                .collect()
        };
        for s in due {
            let reply = self.ask(s.text.clone(), DEFAULT_TTL).await;
            if let DeskReply::Error(e) = &reply {
                tracing::warn!(saved = ?s.name, error = %e, "scheduled question failed");
            }
            self.exported_run(&s.name, &reply);
        }
    }
}

mod audit;
use audit::audited;
mod exports;
mod resume;
mod rows;
use resume::OpenQuestion;

struct DeskRoute(Arc<QuestionDesk>);

/// Characters of a question's text a list shows.
const LISTED_TEXT_CHARS: usize = 300;

/// Cuts `text` to what a list shows, marking the cut.
fn cut_text(text: &mut String) {
    if let Some((at, _)) = text.char_indices().nth(LISTED_TEXT_CHARS) {
        text.truncate(at);
        text.push('…');
    }
}

/// The desk as a route, to serve it on a second node of the same process too (a
/// simulation's operator-facing node).
pub fn route(desk: Arc<QuestionDesk>) -> Arc<dyn Deliver> {
    Arc::new(DeskRoute(desk))
}

impl Deliver for DeskRoute {
    fn deliver(&self, mut incoming: Incoming) -> Result<(), DestinationGone> {
        let Ok(req) = incoming.decode::<DeskRequest>() else {
            incoming.refuse();
            return Ok(());
        };
        let desk = self.0.clone();
        tokio::spawn(async move {
            let what = audited(&req);
            let reply = desk.serve(req, &incoming.from).await;
            if let Some(what) = what {
                desk.audit(&incoming.from, &what, &reply);
            }
            let _ = incoming.answer(&reply);
        });
        Ok(())
    }
}
