//! Questions that were open when the server stopped: kept in the store while they are
//! open, and asked again by a restarted server once its fleet is back.

use std::time::Duration;

use serde::Serialize;

use super::*;

/// A question still open, as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(super) struct OpenQuestion {
    pub(super) id: u64,
    pub(super) text: String,
    pub(super) expires_unix_ms: u64,
    /// Machines it expected when first asked (asked again, it waits for as many).
    #[serde(default)]
    pub(super) expected: usize,
}

/// How long a restarted server waits for its fleet to register again before it asks the
/// questions that were open (at most; it asks at once when as many machines as each
/// expected are back).
const RESUME_WAIT: Duration = Duration::from_secs(120);

impl QuestionDesk {
    /// Question `id` expired: a restart no longer asks it again.
    pub(super) fn forget_open(&self, id: u64) {
        let open = {
            let mut st = self.lock();
            let before = st.open.len();
            st.open.retain(|o| o.id != id);
            (st.open.len() != before).then(|| st.open.clone())
        };
        if let Some(open) = open
            && let Err(e) = self.persist(OPEN_KEY, &open)
        {
            tracing::error!(question = id, error = %e, "could not update the open questions");
        }
    }

    /// After a restart: asks again, under their own ids, the questions that were open and
    /// not answered by every machine expected when the server stopped (answers that were
    /// on their way to the old server are not lost: every machine answers afresh). Each is
    /// asked once as many machines as it expected have registered again, or after
    /// [`RESUME_WAIT`].
    pub(super) async fn resume_open(&self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let now_ms = rollcall_runtime::signing::unix_ms();
        let open: Vec<OpenQuestion> = self.lock().open.clone();
        let mut waiting = Vec::new();
        for o in open {
            if o.expires_unix_ms <= now_ms {
                self.forget_open(o.id);
                continue;
            }
            // As many machines as it ever expected (asked again after an earlier restart
            // before every machine was back, it expected fewer).
            let stored = store.progress(o.id).ok().flatten();
            let expected = stored.as_ref().map_or(0, |p| p.expected).max(o.expected);
            if stored.is_some_and(|p| expected > 0 && p.answered >= expected) {
                continue;
            }
            waiting.push((o, expected));
        }
        if waiting.is_empty() {
            return;
        }
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !waiting.is_empty() {
            tick.tick().await;
            // Machines registered again (a count of joins would count one that joined
            // twice twice).
            let back = self.rings.report(None).await.online().count();
            let waited = started.elapsed() >= RESUME_WAIT;
            let mut still = Vec::new();
            for (o, expected) in waiting {
                if back < expected && !waited {
                    still.push((o, expected));
                    continue;
                }
                let left = o
                    .expires_unix_ms
                    .saturating_sub(rollcall_runtime::signing::unix_ms());
                if left == 0 {
                    self.forget_open(o.id);
                    continue;
                }
                let asked = self.ask_again(&o, Duration::from_millis(left)).await;
                // Kept with the larger expectation, for a restart before it is answered.
                if let Ok(n) = asked {
                    self.keep_expected(o.id, n.max(expected));
                }
                match asked {
                    Ok(n) => tracing::info!(
                        question = o.id,
                        machines = n,
                        "asked again: it was open when the server stopped"
                    ),
                    Err(e) => {
                        tracing::warn!(question = o.id, error = %e, "could not ask an open question again")
                    }
                }
            }
            waiting = still;
        }
    }

    fn keep_expected(&self, id: u64, expected: usize) {
        let open = {
            let mut st = self.lock();
            for o in st.open.iter_mut().filter(|o| o.id == id) {
                o.expected = o.expected.max(expected);
            }
            st.open.clone()
        };
        if let Err(e) = self.persist(OPEN_KEY, &open) {
            tracing::error!(question = id, error = %e, "could not update the open questions");
        }
    }

    async fn ask_again(&self, o: &OpenQuestion, ttl: Duration) -> Result<usize, String> {
        let q = parse(&o.text, &self.catalog()).map_err(|e| e.to_string())?;
        let body = wire::encode_body(&q).map_err(|e| e.to_string())?;
        let columns = q.select.iter().map(ToString::to_string).collect();
        let id = self
            .rings
            .ask_as(Some(o.id), o.text.clone(), columns, body, ttl)
            .await;
        Ok(self.rings.expected(id).unwrap_or(0))
    }
}
