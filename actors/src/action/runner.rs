//! The endpoint's side of an action: verify, check the target, journal, run, answer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_cluster::proto::NodeAnswer;
use rollcall_runtime::WireStats;
use rollcall_runtime::signing::ServerTrust;

use super::journal::Journal;
use super::{
    ActionRefusal, ActionSpec, Executor, OUTPUT_IN_ANSWER, Outcome, PackageFiles, PackageKind,
    SignedAction, Status, Target, cut, now_ms,
};
use crate::sensors::{ActionState, Sensors};

/// Runs the actions the server sends this endpoint, each at most once.
pub struct ActionRunner {
    me: String,
    trust: Arc<ServerTrust>,
    journal: Arc<dyn Journal>,
    exec: Arc<dyn Executor>,
    stats: Arc<WireStats>,
    files: Option<Arc<dyn PackageFiles>>,
}

impl std::fmt::Debug for ActionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActionRunner({})", self.me)
    }
}

/// One status row: `[status, the output's first bytes]`.
fn answer(status: &Status, output: &str) -> NodeAnswer {
    NodeAnswer {
        rows: Some(vec![vec![
            status.to_string(),
            cut(output, OUTPUT_IN_ANSWER).to_string(),
        ]]),
        problems: Vec::new(),
    }
}

impl ActionRunner {
    /// A runner for machine `me` (its node id), taking actions the server pinned in `trust`
    /// signed, keeping them in `journal`, running them with `exec`; refusals are counted in
    /// `stats` (`actions_refused`).
    pub fn new(
        me: impl Into<String>,
        trust: Arc<ServerTrust>,
        journal: Arc<dyn Journal>,
        exec: Arc<dyn Executor>,
        stats: Arc<WireStats>,
    ) -> Arc<ActionRunner> {
        Arc::new(ActionRunner {
            me: me.into(),
            trust,
            journal,
            exec,
            stats,
            files: None,
        })
    }

    /// A runner as [`ActionRunner::new`] that gets packages' files with `files` before it
    /// runs their commands.
    pub fn with_files(
        me: impl Into<String>,
        trust: Arc<ServerTrust>,
        journal: Arc<dyn Journal>,
        exec: Arc<dyn Executor>,
        stats: Arc<WireStats>,
        files: Arc<dyn PackageFiles>,
    ) -> Arc<ActionRunner> {
        Arc::new(ActionRunner {
            me: me.into(),
            trust,
            journal,
            exec,
            stats,
            files: Some(files),
        })
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// Starts again the actions that were waiting for their share of the spread when the
    /// endpoint stopped (ones that were running are interrupted, never run again).
    pub fn resume(self: &Arc<Self>) {
        for (id, e) in self.journal.all() {
            if e.status != Status::Waiting {
                continue;
            }
            match e.action.open(&self.trust, now_ms()) {
                Ok(spec) => {
                    tokio::spawn(Self::run_later(
                        Arc::downgrade(self),
                        spec,
                        e.action.stamp.expires_unix_ms,
                    ));
                }
                Err(ActionRefusal::Expired(_)) => {
                    let _ = self.journal.set(id, Status::Expired, "", 0);
                }
                Err(r) => {
                    let _ = self.journal.set(id, Status::Refused(r.to_string()), "", 0);
                }
            }
        }
    }

    fn refused(&self, why: &ActionRefusal) -> NodeAnswer {
        self.stats.incr(|s| &s.actions_refused);
        tracing::warn!(reason = %why, "refused an action");
        match why {
            ActionRefusal::Expired(_) => answer(&Status::Expired, ""),
            other => answer(&Status::Refused(other.to_string()), ""),
        }
    }

    /// This machine's answer to the action a question body carries: its status there.
    pub fn deliver(
        self: &Arc<Self>,
        body: &[u8],
        sensors: Arc<Sensors>,
    ) -> BoxFuture<'static, NodeAnswer> {
        let signed = match SignedAction::from_question_body(body) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                return Box::pin(std::future::ready(
                    self.refused(&ActionRefusal::Unreadable(e.to_string())),
                ));
            }
            None => {
                return Box::pin(std::future::ready(
                    self.refused(&ActionRefusal::Unreadable("not an action".into())),
                ));
            }
        };
        let spec = match signed.open(&self.trust, now_ms()) {
            Ok(s) => s,
            Err(why) => {
                // One it already holds says where it stands (an expired copy changes nothing).
                if let (ActionRefusal::Expired(_), Some((status, output))) =
                    (&why, self.journal.status(signed.id))
                {
                    return Box::pin(std::future::ready(answer(&status, &output)));
                }
                return Box::pin(std::future::ready(self.refused(&why)));
            }
        };
        if let PackageKind::Cancel(target) = spec.package.kind {
            let outcome = match self.journal.cancel(target, &signed) {
                Ok(Status::Cancelled) => answer(
                    &Status::Completed,
                    &format!("action {target} cancelled before it started"),
                ),
                Ok(other) => answer(
                    &Status::Completed,
                    &format!("action {target} was already {other}"),
                ),
                Err(e) => answer(&Status::Failed(e.to_string()), ""),
            };
            return Box::pin(std::future::ready(outcome));
        }
        let me = self.clone();
        Box::pin(async move {
            // One it holds says where it stands: the target is not looked at again (an
            // uninstall's filter no longer matches the machine it ran on).
            // (The deliberately broken `broken-journal` build skips this and forgets in
            // `begin`: the chaos suite's "never twice" check must catch it.)
            if let Some((status, output)) = me.journal.status(spec.id)
                && !cfg!(feature = "broken-journal")
            {
                return answer(&status, &output);
            }
            if !me.targeted(&spec, &sensors).await {
                if let (Some(m), Some(files)) = (&spec.package.manifest, &me.files) {
                    files.relay(m.clone());
                }
                return NodeAnswer {
                    rows: None,
                    problems: Vec::new(),
                };
            }
            match me.journal.begin(&signed) {
                Err(e) => {
                    tracing::error!(action = spec.id, error = %e, "cannot write the action journal: not run");
                    answer(&Status::Failed(e.to_string()), "")
                }
                Ok(Some(held)) => answer(&held.status, &held.output),
                Ok(None) => {
                    let expires = signed.stamp.expires_unix_ms;
                    let fetch_first = spec.package.manifest.is_some();
                    if spec.spread_secs == 0 && me.exec.immediate() && !fetch_first {
                        let (status, output) = me.run_now(&spec, expires, None).await;
                        return answer(&status, &output);
                    }
                    let status = if spec.spread_secs == 0 && !fetch_first {
                        Status::Running
                    } else {
                        Status::Waiting
                    };
                    let runner = Arc::downgrade(&me);
                    tokio::spawn(Self::run_later(runner, spec, expires));
                    answer(&status, "")
                }
            }
        })
    }

    async fn targeted(&self, spec: &ActionSpec, sensors: &Sensors) -> bool {
        match &spec.target {
            Target::All => true,
            Target::Machines(ids) => ids.contains(&self.me),
            Target::Where(q) => sensors.matches(q).await,
        }
    }

    /// Waits this machine's share of the spread, then runs, if the endpoint still runs
    /// (one that stopped meanwhile finds the action waiting in its journal when it starts).
    async fn run_later(me: Weak<Self>, spec: Arc<ActionSpec>, expires_unix_ms: u64) {
        if spec.spread_secs > 0 {
            let wait = Duration::from_millis(rand::random_range(0..spec.spread_secs * 1000));
            tokio::time::sleep(wait).await;
        }
        let Some(runner) = me.upgrade() else {
            return;
        };
        let Some(m) = spec.package.manifest.clone() else {
            runner.run_now(&spec, expires_unix_ms, None).await;
            return;
        };
        let Some(files) = runner.files.clone() else {
            let _ = runner.journal.set(
                spec.id,
                Status::Failed("this endpoint cannot fetch package files".into()),
                "",
                0,
            );
            return;
        };
        // The files first (the action stays waiting meanwhile: an endpoint that stops
        // fetches only what it lacks when it starts again).
        drop(runner);
        let got = files.obtain(spec.id, m.clone()).await;
        let Some(runner) = me.upgrade() else {
            return;
        };
        match got {
            Ok((dir, sources)) => {
                if let Err(e) = runner.journal.set_files(spec.id, sources) {
                    tracing::warn!(action = spec.id, error = %e, "cannot journal where the files came from");
                }
                runner.run_now(&spec, expires_unix_ms, dir).await;
            }
            Err(e) => {
                let _ = runner.journal.set(
                    spec.id,
                    Status::Failed(format!("package files: {e}")),
                    "",
                    0,
                );
            }
        }
        files.release(spec.id, &m);
    }

    /// Runs `spec` once: journalled as running first (if that write fails, it does not run).
    /// Returns where it stands after.
    async fn run_now(
        &self,
        spec: &ActionSpec,
        expires_unix_ms: u64,
        dir: Option<std::path::PathBuf>,
    ) -> (Status, String) {
        let id = spec.id;
        let cap = spec.package.output_cap;
        let now = |e: Option<(Status, String)>| {
            e.unwrap_or_else(|| (Status::Failed("not in the journal".into()), String::new()))
        };
        if now_ms() > expires_unix_ms {
            if self
                .journal
                .get(id)
                .is_some_and(|e| e.status == Status::Waiting)
            {
                let _ = self.journal.set(id, Status::Expired, "", cap);
            }
            return now(self.journal.status(id));
        }
        // Running is written (durably) before anything runs; of several callers, one wins.
        match self.journal.start(id) {
            Ok(true) => {}
            Ok(false) => return now(self.journal.status(id)),
            Err(e) => {
                tracing::error!(action = id, error = %e, "cannot journal the action as running: not run");
                return (Status::Failed(e.to_string()), String::new());
            }
        }
        let timeout = Duration::from_secs(spec.package.timeout_secs.max(1));
        let outcome = match tokio::time::timeout(timeout, self.exec.run_in(spec, dir)).await {
            Ok(o) => o,
            Err(_) => Outcome::failed(format!("timed out after {} s", timeout.as_secs())),
        };
        tracing::info!(action = id, package = %spec.package.name, status = %outcome.status, "action done");
        if let Err(e) = self
            .journal
            .set(id, outcome.status.clone(), &outcome.output, cap)
        {
            tracing::error!(action = id, error = %e, "cannot journal the action's outcome");
        }
        now(self.journal.status(id))
    }
}

impl ActionState for ActionRunner {
    fn status(&self, id: u64) -> Option<(String, String)> {
        self.journal
            .status(id)
            .map(|(s, output)| (s.to_string(), cut(&output, OUTPUT_IN_ANSWER).to_string()))
    }

    fn files(&self, id: u64) -> Option<String> {
        self.journal
            .get(id)
            .filter(|e| !e.before_arrival)
            .and_then(|e| e.files)
            .map(|f| f.cell())
    }

    fn quarantined(&self) -> bool {
        self.exec.quarantined()
    }
}
