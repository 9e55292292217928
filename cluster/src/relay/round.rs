//! One member's round of a payload on a ring, sans-IO: take it (or join the round under way),
//! forward it first, then merge this machine's own result with what the successor sends back,
//! and answer everyone waiting. A successor that does not take the payload in time is routed
//! past: the round moves to a new generation, and an answer to an older one is dropped.
//!
//! A [`Round`] holds no links, timers or clock: the member keeps it (behind a lock shared with
//! the hop's callback, so an answer can finish the round where it arrives) and does what its
//! methods return. `W` is whoever waits on the round (a predecessor's call), `M` the merged
//! result (questions' `Partial`; action statuses and chunk holdings next).
//!
//! A finished round's result is kept a short while (handed back with [`Round::keep`] once
//! the waiters have it, until the time the member gives): the predecessor it went to may
//! have died before passing it up, and the member before that then routes past it to this
//! one. Answered from what was kept, that costs one hop; without it, a new round went down the whole rest of the chain, and a ring
//! with machines going down one after another was walked again for each of them. What was
//! kept answers only while the member would still forward to the successor it came from: a
//! route that changed since (a successor found down, or back) may reach machines the kept
//! result does not cover, so the round goes down the chain again.

use std::time::Instant;

use rollcall_runtime::NodeId;

/// The result merged along a ring on the way back.
pub trait Merged: Default + Clone {
    /// One machine's own contribution.
    type Own: Clone;
    /// Adds machine `me`'s own contribution.
    fn add(&mut self, me: &NodeId, own: &Self::Own);
}

impl Merged for crate::proto::Partial {
    type Own = crate::proto::TaggedAnswer;
    fn add(&mut self, me: &NodeId, own: &Self::Own) {
        crate::proto::Partial::add(self, me, own);
    }
}

/// What joining a round under way asks of the member.
#[derive(Debug)]
pub struct Joined<W, M: Merged> {
    /// The round had finished and was asked again (a predecessor rerouted): forward anew.
    pub forward_again: bool,
    /// Send this machine's own result to the server directly (the payload was handed over
    /// late and the result is already in).
    pub send_late: Option<M::Own>,
    /// The round had finished a moment ago and its result is still kept: answer this waiter
    /// with it now (nothing goes down the chain again).
    pub answer_now: Option<(W, M)>,
}

/// Where a forward goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Send it to this successor, as this generation of the round.
    Hop {
        /// The successor.
        to: NodeId,
        /// The round's generation (its answer is taken only while this is current).
        generation: u64,
    },
    /// No successor: the chain ends here (the round may finish now).
    EndOfChain,
    /// The round finished meanwhile: nothing to send.
    Finished,
}

/// A finished round: the merged result, and whoever waited on it, to answer.
#[derive(Debug)]
pub struct Finished<W, M: Merged> {
    /// Everything from here to the end of the chain.
    pub merged: M,
    /// Whoever waits on it.
    pub waiters: Vec<W>,
    /// This machine's own result, to send to the server directly (a late payload).
    pub send_late: Option<M::Own>,
}

/// One member's round of one payload.
#[derive(Debug)]
pub struct Round<W, M: Merged> {
    own: Option<M::Own>,
    down: Option<M>,
    generation: u64,
    forwarded_to: Option<NodeId>,
    waiters: Vec<W>,
    /// A round finished (its merged result went to the waiters, and is kept only a short
    /// while: machines down the chain keep their own results, so asking again later costs a
    /// round, not memory).
    done: bool,
    /// Answer to the server directly (a payload handed over at registration).
    late: bool,
    /// The last finished round's result and until when it is kept.
    kept: Option<(M, Instant)>,
    /// The successor the last finished round's result came from (none: the chain ended
    /// here).
    finished_via: Option<NodeId>,
}

impl<W, M: Merged> Round<W, M> {
    /// A new round, waited on by `waiter`; a `late` one is answered alone, straight to the
    /// server (nothing is forwarded).
    pub fn new(waiter: Option<W>, late: bool) -> Round<W, M> {
        Round {
            own: None,
            down: late.then(M::default),
            generation: 0,
            forwarded_to: None,
            waiters: waiter.into_iter().collect(),
            done: false,
            late,
            kept: None,
            finished_via: None,
        }
    }

    /// The payload came again (a predecessor's reroute, the server's re-ask, a hand-off):
    /// wait on the round under way; if it had finished, answer from its kept result while
    /// that lasts and `target` (the ring's route target now) is still where it came from, or
    /// else start a new generation.
    pub fn join(
        &mut self,
        waiter: Option<W>,
        late: bool,
        now: Instant,
        target: Option<&NodeId>,
    ) -> Joined<W, M> {
        self.late |= late;
        let send_late = if late { self.own.clone() } else { None };
        self.release_kept(now);
        if self.finished_via.as_ref() != target {
            self.kept = None;
        }
        let mut answer_now = None;
        let mut again = false;
        if let Some(w) = waiter {
            match (&self.kept, self.done) {
                (Some((merged, _)), true) => answer_now = Some((w, merged.clone())),
                (None, true) => {
                    again = true;
                    self.waiters.push(w);
                }
                (_, false) => self.waiters.push(w),
            }
        }
        if again {
            self.done = false;
            self.down = None;
        }
        Joined {
            forward_again: again,
            send_late,
            answer_now,
        }
    }

    /// Keeps the result of the round that just finished (after its waiters were answered
    /// with it: nothing is copied) until `until`, to answer a predecessor that routes here
    /// again in the meantime.
    pub fn keep(&mut self, merged: M, until: Instant) {
        if self.done {
            self.kept = Some((merged, until));
        }
    }

    /// Lets go of the kept result now.
    pub fn let_go_kept(&mut self) {
        self.kept = None;
    }

    /// Lets go of the kept result if its time is over; whether one is still kept.
    pub fn release_kept(&mut self, now: Instant) -> bool {
        if self.kept.as_ref().is_some_and(|(_, until)| *until <= now) {
            self.kept = None;
        }
        self.kept.is_some()
    }

    /// Forwards to `target` (the ring's route target now), as a new generation.
    pub fn forward(&mut self, target: Option<&NodeId>) -> Forward {
        if self.done {
            return Forward::Finished;
        }
        self.generation += 1;
        match target {
            None => {
                self.forwarded_to = None;
                self.down = Some(M::default());
                Forward::EndOfChain
            }
            Some(to) => {
                self.forwarded_to = Some(to.clone());
                Forward::Hop {
                    to: to.clone(),
                    generation: self.generation,
                }
            }
        }
    }

    /// Whether generation `generation` still waits on its successor.
    pub fn awaits(&self, generation: u64) -> bool {
        self.generation == generation && self.down.is_none() && !self.done
    }

    /// Whether the round waits on a successor other than `target` (the ring has routed
    /// past it since): then forward again.
    pub fn waits_on_other_than(&self, target: Option<&NodeId>) -> bool {
        self.down.is_none() && self.forwarded_to.is_some() && self.forwarded_to.as_ref() != target
    }

    /// The successor this round waits on.
    pub fn waiting_on(&self) -> Option<&NodeId> {
        self.forwarded_to.as_ref()
    }

    /// The successor's result to generation `generation`; handed back if that generation
    /// is no longer awaited (rerouted since, or finished).
    pub fn downstream(&mut self, generation: u64, merged: M) -> Result<(), M> {
        if !self.awaits(generation) {
            return Err(merged);
        }
        self.down = Some(merged);
        Ok(())
    }

    /// This machine's own result.
    pub fn own_result(&mut self, own: M::Own) {
        self.own = Some(own);
    }

    /// Whether this machine's own result is in.
    pub fn has_own(&self) -> bool {
        self.own.is_some()
    }

    /// Whether the round answers the server directly.
    pub fn is_late(&self) -> bool {
        self.late
    }

    /// Whether the round finished (and was not asked again since).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether anyone waits on the round.
    pub fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// When both this machine's own result and the successor's are in: merges them and
    /// hands back the result with everyone to answer; keeps only the own result (see
    /// [`Round::keep`] for the merged one).
    pub fn finish(&mut self, me: &NodeId) -> Option<Finished<W, M>> {
        if self.done || self.own.is_none() {
            return None;
        }
        let mut merged = self.down.take()?;
        if let Some(own) = &self.own {
            merged.add(me, own);
        }
        self.done = true;
        self.finished_via = self.forwarded_to.take();
        Some(Finished {
            merged,
            // Taken, not drained: a finished round keeps no room for waiters.
            waiters: std::mem::take(&mut self.waiters),
            send_late: if self.late { self.own.clone() } else { None },
        })
    }
}

#[cfg(test)]
mod tests;
