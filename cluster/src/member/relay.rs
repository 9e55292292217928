//! The member's side of the relay: a question's state on this member (its [`Round`] with
//! the envelope and expiry), the hop that carries it to the successor (whose answer finishes
//! the round where it arrives), and taking, forwarding, rerouting and finishing questions.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};
use rollcall_runtime::NodeId;
use rollcall_runtime::node::{CallError, Incoming, PeerHandle};

use crate::proto::{
    EncodedAnswer, MEMBER, MemberRequest, NodeAnswer, Partial, QuestionEnvelope, ServerRequest,
};
use crate::relay::{Forward, Round};

/// Answers questions on an endpoint: the bridge to its sensors (which live in
/// `rollcall-actors`; the ring only carries the encoded question and the answers).
use super::*;

/// One question in flight on this member: its envelope and expiry, and the round of it
/// (the relay core: forward first, merge on the way back).
pub(super) struct QState {
    pub(super) env: QuestionEnvelope,
    pub(super) deadline: tokio::time::Instant,
    pub(super) round: Round<Incoming, Partial>,
    /// How this member, compromised, changes what it passes on (tests only).
    #[cfg(feature = "hostile")]
    pub(super) tamper: Option<crate::relay::tamper::Tamper>,
}
/// A question's state, shared with the callback of the hop that carries it on: the
/// successor's answer finishes the round where it arrives (see [`finish_where_answered`]),
/// without a message to this member and a turn of it for each machine on the way back.
pub(super) type Shared = Arc<std::sync::Mutex<QState>>;
pub(super) fn lock(q: &Shared) -> std::sync::MutexGuard<'_, QState> {
    // Nothing that holds the lock leaves the state half-changed on a panic.
    rollcall_runtime::sync::lock(q)
}
impl QState {
    /// When both our answer and the answers after us are in: merges them and answers every
    /// waiter. `Some` if the round finished now, holding our own answer if it is to go to
    /// the server directly.
    fn finish(
        &mut self,
        me: &NodeId,
        keep_for: Duration,
    ) -> Option<Option<crate::proto::TaggedAnswer>> {
        #[allow(unused_mut)]
        let mut f = self.round.finish(me)?;
        #[cfg(feature = "hostile")]
        if let Some(t) = self.tamper {
            f.merged = crate::relay::tamper::apply(t, &f.merged, me);
        }
        for mut w in f.waiters {
            let _ = w.answer(&f.merged);
        }
        // Kept as it was sent (changed, on a compromised member), not copied.
        self.round.keep(f.merged, super::now() + keep_for);
        Some(f.send_late)
    }
}

/// How long a finished round's result is kept for a predecessor that routes past a member
/// that died holding it (see `crate::relay::round`): until such a member is found dead.
pub(super) fn keep_for(ring: &crate::ring::RingConfig) -> Duration {
    ring.dead_timeout
}
/// How many rounds one thread is finishing inside each other: on the in-memory transport an
/// answer is handed to the predecessor's callback at once, so a chain's way back runs as
/// nested calls. Past this depth the rest goes by message, which bounds the stack.
const MAX_NESTED_FINISHES: u32 = 32;
thread_local! {
    static NESTED_FINISHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
/// Finishes round `generation` of `q` with the successor's answer `down`, right where the
/// answer arrived, if nothing else needs this member: our own answer is in, the round still
/// waits on that successor, the question is not one to answer to the server ourselves, the
/// state is not in use (by this member or a round further up on this thread), and the
/// thread's nesting allows. Hands `down` back otherwise, for the member to take as a message.
fn finish_where_answered(
    q: &Shared,
    generation: u64,
    me: &NodeId,
    keep_for: Duration,
    down: Partial,
) -> Result<(), Partial> {
    let depth = NESTED_FINISHES.with(|d| d.get());
    if depth >= MAX_NESTED_FINISHES {
        return Err(down);
    }
    let Ok(mut st) = q.try_lock() else {
        return Err(down);
    };
    if !st.round.has_own() || st.round.is_late() {
        return Err(down);
    }
    st.round.downstream(generation, down)?;
    /// Puts the depth back however the finish ends (a panic included).
    struct Nested(u32);
    impl Drop for Nested {
        fn drop(&mut self) {
            NESTED_FINISHES.with(|d| d.set(self.0));
        }
    }
    NESTED_FINISHES.with(|d| d.set(depth + 1));
    let _restore = Nested(depth);
    st.finish(me, keep_for);
    Ok(())
}
/// One hop of a question, handed to a successor: its answer (or failure) comes back to the
/// member as `Downstream`.
pub(super) struct HopSend {
    id: u64,
    generation: u64,
    to: NodeId,
    hop: Duration,
    me: ActorRef<MemberMsg>,
    /// The question's state and this member's id, to finish the round where the answer
    /// arrives.
    state: Shared,
    my_id: NodeId,
    /// How long the finished round's result is kept.
    keep_for: Duration,
}
impl HopSend {
    /// Sends the question over `link` (closed after the answer if it was `dialed` for it).
    /// The answer comes back from wherever it is known (on the in-memory transport, the
    /// answering side), with no task per hop: only the hop's deadline waits, to route past a
    /// successor that did not take the question in time (the question's expiry bounds the
    /// rest). The deadline starts once the link is there: dialing time never judges a hop.
    fn over(self, link: &PeerHandle, dialed: bool, env: QuestionEnvelope) {
        let HopSend {
            id,
            generation,
            to,
            hop,
            me,
            state,
            my_id,
            keep_for,
        } = self;
        let acked = Arc::new(AtomicBool::new(false));
        let (back, answered_by) = (me.clone(), to.clone());
        // Only a link dialed for this question is held by its callback, to be closed.
        let closing = dialed.then(|| link.clone());
        let started = link.call_then(
            MEMBER,
            &MemberRequest::Ask(env),
            acked.clone(),
            move |result: Result<Partial, CallError>| {
                if let Some(l) = closing {
                    l.close();
                }
                let result = match result {
                    Ok(down) => {
                        match finish_where_answered(&state, generation, &my_id, keep_for, down) {
                            Ok(()) => return,
                            Err(down) => Ok(down),
                        }
                    }
                    Err(e) => Err(e),
                };
                let _ = back.send_message(MemberMsg::Downstream {
                    id,
                    generation,
                    to: answered_by,
                    result,
                });
            },
        );
        if let Err(e) = started {
            if dialed {
                link.close();
            }
            let _ = me.send_message(MemberMsg::Downstream {
                id,
                generation,
                to,
                result: Err(e),
            });
            return;
        }
        hop_deadlines::watch(hop_deadlines::Deadline {
            at: tokio::time::Instant::now() + hop,
            acked,
            me,
            to,
        });
    }

    /// The question could not be sent.
    fn failed(self, e: CallError) {
        let _ = self.me.send_message(MemberMsg::Downstream {
            id: self.id,
            generation: self.generation,
            to: self.to,
            result: Err(e),
        });
    }
}

impl MemberState {
    /// Takes a question: joins the round under way, or starts one — forward first, then
    /// evaluate (once per question), then merge.
    pub(super) fn ask(
        &mut self,
        myself: &ActorRef<MemberMsg>,
        env: QuestionEnvelope,
        waiter: Option<Incoming>,
        late: bool,
    ) {
        let id = env.id;
        // The same id with another signature is another question: a server that restarted
        // without its store numbers its questions from 1 again. The one held is let go.
        if self
            .questions
            .get(&id)
            .is_some_and(|q| lock(q).env.signature != env.signature)
        {
            self.questions.remove(&id);
        }
        if let Some(q) = self.questions.get(&id) {
            // Asked again after a round finished (a predecessor rerouted): answered from the
            // round's kept result while the route is the one it came by, else a new round
            // down the chain, whose members answer from their own state.
            let target = self.core.route_target().map(|m| m.id.clone());
            let joined = lock(q)
                .round
                .join(waiter, late, super::now(), target.as_ref());
            if let Some((mut w, merged)) = joined.answer_now {
                let _ = w.answer(&merged);
            }
            if let Some(own) = joined.send_late {
                self.send_late(id, own);
            }
            if joined.forward_again {
                self.forward(myself, id);
            }
            return;
        }
        // The hop's time to live is not signed: never past the signed expiry (with the clock
        // skew allowed), so a sender cannot make members hold a question for longer.
        let signed_left = env
            .stamp
            .expires_unix_ms
            .saturating_add(rollcall_runtime::signing::CLOCK_SKEW.as_millis() as u64)
            .saturating_sub(rollcall_runtime::signing::unix_ms());
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(env.ttl_ms.min(signed_left));
        // What a round keeps is for a reroute during its question: the round of the question
        // before this one lets go of its result now (so a fleet simulated in one process,
        // which holds every member's, holds one question's worth at most).
        if let Some(q) = self
            .kept_for
            .replace(id)
            .and_then(|old| self.questions.get(&old))
        {
            lock(q).round.let_go_kept();
        }
        // The question is read now; the sensors run once it went on.
        let work = self
            .cfg
            .evaluator
            .as_ref()
            .map(|ev| ev.0.evaluate(&env.body));
        self.questions.insert(
            id,
            Arc::new(std::sync::Mutex::new(QState {
                env,
                deadline,
                // A late question is answered alone, straight to the server.
                round: Round::new(waiter, late),
                #[cfg(feature = "hostile")]
                tamper: self.cfg.tamper,
            })),
        );
        if !late {
            self.forward(myself, id);
        }
        let me = myself.clone();
        match work {
            Some(mut work) => {
                // Sensors that answer at once (most do; a simulated host always does) are
                // taken here; only work that waits gets a task of its own, whose answer comes
                // back as a message. The question went on first either way.
                match futures::FutureExt::now_or_never(&mut work) {
                    Some(answer) => self.evaluated(id, answer),
                    None => {
                        tokio::spawn(async move {
                            let answer = work.await;
                            let _ = me.send_message(MemberMsg::Evaluated { id, answer });
                        });
                    }
                }
            }
            None => {
                let _ = me.send_message(MemberMsg::Evaluated {
                    id,
                    answer: NodeAnswer {
                        rows: None,
                        problems: vec!["this endpoint has no sensors".into()],
                    },
                });
            }
        }
    }

    /// Sends question `id` to the current route target (or, with none, ends the chain here).
    pub(super) fn forward(&mut self, myself: &ActorRef<MemberMsg>, id: u64) {
        let target = self.core.route_target().cloned();
        let Some(state) = self.questions.get(&id) else {
            return;
        };
        let mut q = lock(state);
        let generation = match q.round.forward(target.as_ref().map(|t| &t.id)) {
            // Finished meanwhile (where its answer arrived).
            Forward::Finished => return,
            Forward::EndOfChain => {
                drop(q);
                self.complete(id);
                return;
            }
            Forward::Hop { generation, .. } => generation,
        };
        let Some(target) = target else {
            return;
        };
        tracing::debug!(question = id, to = %target.id, at = ?tokio::time::Instant::now(), "forwarding");
        let left = q
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let env = QuestionEnvelope {
            ttl_ms: left.as_millis() as u64,
            ..q.env.clone()
        };
        drop(q);
        let state = state.clone();
        let send = HopSend {
            id,
            generation,
            to: target.id,
            hop: self.cfg.ring.hop_timeout,
            me: myself.clone(),
            state,
            my_id: self.me.id.clone(),
            keep_for: keep_for(&self.cfg.ring),
        };
        match self.links.get(&send.to).filter(|l| l.is_connected()) {
            Some(link) => send.over(link, false, env),
            // No link held: one dialed for this question alone, closed after it.
            None => {
                let (node, dial) = (self.node.clone(), self.cfg.ring.dial_timeout);
                tokio::spawn(async move {
                    match Box::pin(node.connect_once(target.addr, dial.min(left))).await {
                        Ok(link) => send.over(&link, true, env),
                        Err(e) => send.failed(e),
                    }
                });
            }
        }
    }

    /// Questions waiting on a successor the ring has since routed past go to the new one.
    pub(super) fn reroute_questions(&mut self, myself: &ActorRef<MemberMsg>) {
        let target = self.core.route_target().map(|m| m.id.clone());
        let now = tokio::time::Instant::now();
        self.questions
            .retain(|_, q| lock(q).deadline + Duration::from_secs(60) > now);
        let stale: Vec<u64> = self
            .questions
            .iter()
            .filter(|(_, q)| {
                let q = lock(q);
                q.round.waits_on_other_than(target.as_ref()) && q.deadline > now
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            tracing::debug!(
                question = id,
                to = ?target,
                me = %self.me.id,
                candidates = ?self
                    .core
                    .candidates()
                    .iter()
                    .map(|m| (m.id.0.clone(), self.core.health(&m.id)))
                    .collect::<Vec<_>>(),
                "rerouting past a late successor"
            );
            self.forward(myself, id);
        }
    }

    /// A question from a predecessor (`Ask`) or handed over by the server (`Late`).
    pub(super) fn take_question(
        &mut self,
        myself: &ActorRef<MemberMsg>,
        mut inc: Incoming,
        req: MemberRequest,
    ) -> Result<(), ActorProcessingErr> {
        // Read and passed on only if the pinned server signed it, and it is current: an
        // endpoint or anyone on the path cannot make up a question, change one, or replay
        // one that expired.
        if let MemberRequest::Ask(env) | MemberRequest::Late(env) = &req
            && let Err(e) = env.verify(&self.cfg.trust)
        {
            self.node.wire_stats().incr(|s| &s.rejected_unsigned);
            tracing::warn!(
                question = env.id,
                from = %inc.from.id,
                error = %e,
                "refused a question the server did not sign"
            );
            inc.refuse();
            return Ok(());
        }
        match req {
            // Not registered since it started: without its answer key its answer could not
            // be told from a changed one, and would cost the answers it joins. Refused: the
            // predecessor routes past it, and the server asks it once it has registered.
            MemberRequest::Ask(env) if self.answer_key.is_none() => {
                tracing::debug!(
                    question = env.id,
                    "refused a question before the first registration"
                );
                inc.refuse();
            }
            MemberRequest::Ask(env) => {
                // Taken: the predecessor stops its hop clock (the answer follows once the
                // rest of the chain has answered).
                inc.ack();
                // Read: the frame goes back to the allocator now, not once the whole chain
                // after us has answered (the call waits here that long, on every member of
                // every chain at once).
                inc.body = Default::default();
                self.ask(myself, env, Some(inc), false);
            }
            MemberRequest::Late(env) => {
                inc.answer(&())?;
                self.ask(myself, env, None, true);
            }
            _ => inc.refuse(),
        }
        Ok(())
    }

    /// What the successor answered to round `generation` of question `id` came back (an
    /// answer to an earlier round, rerouted since, is dropped).
    pub(super) fn downstream(&mut self, id: u64, generation: u64, answer: Partial) {
        let Some(q) = self.questions.get(&id) else {
            return;
        };
        if lock(q).round.downstream(generation, answer).is_err() {
            return;
        }
        self.complete(id);
    }

    /// Our own answer to question `id` is in.
    pub(super) fn evaluated(&mut self, id: u64, answer: NodeAnswer) {
        if let Some(q) = self.questions.get(&id) {
            let answer = EncodedAnswer::new(&answer);
            // Tagged with this machine's key, so no hop can change it unnoticed (a machine
            // with no key yet gives an empty tag: the server asks it again).
            let tag = self
                .answer_key
                .as_ref()
                .map(|k| k.tag(id, answer.as_bytes()))
                .unwrap_or_default();
            lock(q)
                .round
                .own_result(crate::proto::TaggedAnswer { answer, tag });
        }
        self.complete(id);
    }

    /// When both our answer and the answers after us are in: merge, cache, reply.
    pub(super) fn complete(&mut self, id: u64) {
        let Some(q) = self.questions.get(&id) else {
            return;
        };
        let late_own = lock(q)
            .finish(&self.me.id, keep_for(&self.cfg.ring))
            .flatten();
        if let Some(own) = late_own {
            self.send_late(id, own);
        }
    }

    pub(super) fn send_late(&self, id: u64, answer: crate::proto::TaggedAnswer) {
        let answer = answer.answer;
        let node = self.node.clone();
        let link = self.server_link.clone();
        let (server, t) = (self.cfg.server_ref(), self.cfg.server_timeout);
        tokio::spawn(async move {
            let answer = match answer.decode() {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(question = id, error = %e, "own answer undecodable");
                    return;
                }
            };
            let r: Result<(), CallError> = server_call(
                &node,
                link,
                server,
                t,
                &ServerRequest::Answer { id, answer },
            )
            .await;
            if let Err(e) = r {
                tracing::warn!(question = id, error = %e, "could not send a late answer");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(1);

    fn waiting(generation: u64, own: bool, late: bool) -> Shared {
        let mut round = Round::new(None, late);
        for _ in 0..generation {
            round.forward(Some(&NodeId("next".into())));
        }
        if own {
            round.own_result(
                EncodedAnswer::new(&NodeAnswer {
                    rows: Some(vec![vec!["Debian".into()]]),
                    problems: vec![],
                })
                .into(),
            );
        }
        Arc::new(std::sync::Mutex::new(QState {
            env: QuestionEnvelope {
                id: 1,
                body: vec![],
                ttl_ms: 60_000,
                stamp: rollcall_runtime::signing::Stamp::now_for(Duration::from_secs(60)),
                signature: vec![],
            },
            deadline: tokio::time::Instant::now() + Duration::from_secs(60),
            round,
            #[cfg(feature = "hostile")]
            tamper: None,
        }))
    }

    fn from_below() -> Partial {
        let mut p = Partial::default();
        let a = EncodedAnswer::new(&NodeAnswer {
            rows: Some(vec![vec!["Ubuntu".into()]]),
            problems: vec![],
        });
        p.add(&NodeId("below".into()), &a.into());
        p
    }

    #[test]
    fn a_round_is_finished_where_its_answer_arrives_only_when_nothing_else_needs_the_member() {
        let me = NodeId("me".into());
        // Our answer in, round 2 waiting: finished on the spot, only our own answer kept.
        let q = waiting(2, true, false);
        assert!(finish_where_answered(&q, 2, &me, KEEP, from_below()).is_ok());
        {
            let st = lock(&q);
            assert!(st.round.is_done() && st.round.waiting_on().is_none());
            assert!(st.round.has_own());
        }
        // Finished once: a second answer to the same round is the member's to drop.
        assert_eq!(
            finish_where_answered(&q, 2, &me, KEEP, from_below()),
            Err(from_below())
        );
        // Each case that needs the member hands the answer back untouched and the state
        // as it was: an earlier round (rerouted since), our own answer not in yet, a
        // question to answer to the server ourselves, the state in use.
        for (q, generation) in [
            (waiting(3, true, false), 2),
            (waiting(2, false, false), 2),
            (waiting(2, true, true), 2),
        ] {
            assert_eq!(
                finish_where_answered(&q, generation, &me, KEEP, from_below()),
                Err(from_below())
            );
            let st = lock(&q);
            assert!(!st.round.is_done() && st.round.waiting_on().is_some());
        }
        let q = waiting(2, true, false);
        let held = lock(&q);
        assert_eq!(
            finish_where_answered(&q, 2, &me, KEEP, from_below()),
            Err(from_below())
        );
        drop(held);
        // Nested too deep on this thread: by message.
        NESTED_FINISHES.with(|d| d.set(MAX_NESTED_FINISHES));
        let deep = finish_where_answered(&q, 2, &me, KEEP, from_below());
        NESTED_FINISHES.with(|d| d.set(0));
        assert_eq!(deep, Err(from_below()));
        assert!(finish_where_answered(&q, 2, &me, KEEP, from_below()).is_ok());
        assert_eq!(
            NESTED_FINISHES.with(|d| d.get()),
            0,
            "the depth is restored"
        );
    }
}
