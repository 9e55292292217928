//! The audit log's side of the desk: what a request is recorded as, and appending it with
//! its outcome.

use super::*;

/// What the audit log records of a request (`None`: a read, not recorded).
pub(super) fn audited(req: &DeskRequest) -> Option<String> {
    let cut = |s: &str| s.chars().take(1000).collect::<String>();
    match req {
        DeskRequest::Ask { text, .. } => Some(format!("ask {:?}", cut(text))),
        DeskRequest::AddSensor { name, script } => Some(format!(
            "add sensor {:?} ({} bytes of script)",
            cut(name),
            script.len()
        )),
        DeskRequest::SetBaseline(levels) => Some(format!(
            "set the patch baseline ({} packages)",
            levels.len()
        )),
        DeskRequest::Save(q) => Some(format!("save {:?}: {:?}", cut(&q.name), cut(&q.text))),
        DeskRequest::RunSaved { name } => Some(format!("run saved {:?}", cut(name))),
        DeskRequest::Act(a) => Some(format!(
            "act {} {:?}{}{}{}",
            a.package,
            a.params.iter().map(|p| cut(p)).collect::<Vec<_>>(),
            a.filter
                .as_ref()
                .map(|f| format!(" where {:?}", cut(f)))
                .unwrap_or_default(),
            a.from_question
                .map(|q| format!(" on the machines of question {q}"))
                .unwrap_or_default(),
            if a.all { " on all machines" } else { "" }
        )),
        DeskRequest::Export { id, to, .. } => Some(format!("export question {id} to {}", cut(to))),
        DeskRequest::SavedExport { name, to, .. } => Some(format!(
            "export every run of saved {:?} to {}",
            cut(name),
            to.as_deref().map(cut).unwrap_or_else(|| "nowhere".into())
        )),
        DeskRequest::OpenCase(c) => Some(format!(
            "open a case: {} indicators from {:?}",
            c.indicators.len(),
            cut(&c.source)
        )),
        DeskRequest::Approve { id } => Some(format!("approve action {id}")),
        DeskRequest::Deny { id } => Some(format!("deny action {id}")),
        DeskRequest::Cancel { id } => Some(format!("cancel action {id}")),
        DeskRequest::AddPackage {
            name,
            command,
            timeout_secs,
            ..
        } => Some(format!(
            "add package {:?}: {:?} (timeout {timeout_secs} s)",
            cut(name),
            cut(command)
        )),
        _ => None,
    }
}

impl QuestionDesk {
    /// Records in the audit log a request served beside the desk (a chaos command relayed
    /// to endpoints): who, what, and how it went.
    pub fn record_audit(&self, who: &rollcall_runtime::PeerIdentity, what: &str, outcome: &str) {
        self.audit(who, what, &DeskReply::Done(outcome.to_string()));
    }

    /// Appends `who`'s request `what` and its outcome to the audit log (when the desk has a
    /// store; a failure to write is logged, never lost silently).
    pub(super) fn audit(
        &self,
        who: &rollcall_runtime::PeerIdentity,
        what: &str,
        reply: &DeskReply,
    ) {
        let Some(st) = &self.store else {
            return;
        };
        let outcome = match reply {
            DeskReply::Asked { id, expected, .. } => {
                format!("asked as question {id} of {expected} machines")
            }
            DeskReply::Done(s) => s.clone(),
            DeskReply::Action(r) => format!("action {} {}", r.id, r.phase),
            DeskReply::Error(e) => format!("refused: {e}"),
            _ => "done".into(),
        };
        let now = rollcall_runtime::signing::unix_ms();
        if let Err(e) = st.append_audit(who.id.as_str(), &who.role.to_string(), what, &outcome, now)
        {
            tracing::error!(error = %e, who = %who.id, "could not write the audit log");
        }
    }
}
