//! The server's walk of one chain, sans-IO: which member to ask next for a payload that
//! travels the ring (a question today), given who has not answered, who failed and when.
//!
//! The server asks the first member of the chain who has not answered (the forward leader,
//! at first); what comes back covers it and everyone after it the chain reached. A gap (a
//! split ring, a member routed around) is walked by asking its first member directly. A
//! member that fails is asked again only once every member not yet failed has been asked,
//! and no sooner than the retry interval *from when its failure was known*: a dead member
//! costs a dial timeout, longer than the retry interval, and stamping the time the attempt
//! started while retrying in ring order kept the walk on a ring's first dead members and
//! never on the live ones after them. One whose link closed under the call is asked again
//! at once, a few times.
//!
//! Driven by the shard's fan-out task (`RingServer::walk`), which does the asking; tested
//! with no runtime by stepping it against a simulated chain.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rollcall_runtime::NodeId;

/// What the walk does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every member it was given has answered: the chain is done.
    Done,
    /// Ask this member (an index into the members given).
    Ask(usize),
    /// Everyone still missing failed a moment ago: wait until then and look again.
    WaitUntil(Instant),
}

/// How asking a member ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered, for itself and the members after it that the chain reached.
    Answered {
        /// Its own answer was in what came back (else it is treated as failed).
        covered: bool,
    },
    /// It did not answer.
    Failed {
        /// The link closed under the call (a leader's link being replaced): worth asking
        /// again at once.
        link_closed: bool,
    },
}

/// The walk of one chain for one payload.
#[derive(Debug, Clone)]
pub struct ChainWalk {
    retry: Duration,
    quick_max: u32,
    /// When each failed member's failure became known.
    failed: HashMap<NodeId, Instant>,
    /// Immediate re-asks spent per member.
    quick: HashMap<NodeId, u32>,
    asked: u32,
}

impl ChainWalk {
    /// A walk that skips a failed member for `retry`, and asks a member whose link closed
    /// again at once up to `quick_max` times.
    pub fn new(retry: Duration, quick_max: u32) -> ChainWalk {
        ChainWalk {
            retry,
            quick_max,
            failed: HashMap::new(),
            quick: HashMap::new(),
            asked: 0,
        }
    }

    /// The next step, given the chain's members in ring order that have not answered.
    pub fn next(&self, missing: &[&NodeId], now: Instant) -> Step {
        if missing.is_empty() {
            return Step::Done;
        }
        // Members not yet failed first, in ring order: a failed member retried as soon as
        // its interval passed would keep the walk from the live members after it (each
        // retry of a dead one costs a dial timeout, longer than the interval).
        if let Some(i) = missing.iter().position(|id| !self.failed.contains_key(*id)) {
            return Step::Ask(i);
        }
        // Then the failed ones whose interval passed, the longest-failed first.
        let eligible = missing
            .iter()
            .enumerate()
            .filter_map(|(i, id)| self.failed.get(*id).map(|t| (i, *t)))
            .filter(|(_, t)| now.saturating_duration_since(*t) >= self.retry)
            .min_by_key(|(_, t)| *t);
        if let Some((i, _)) = eligible {
            return Step::Ask(i);
        }
        let next = missing
            .iter()
            .filter_map(|id| self.failed.get(*id))
            .min()
            .map(|t| *t + self.retry)
            .unwrap_or(now + self.retry);
        Step::WaitUntil(next)
    }

    /// Asking `member` ended with `outcome`, known at `now`.
    pub fn handle(&mut self, member: &NodeId, outcome: Outcome, now: Instant) {
        self.asked += 1;
        match outcome {
            Outcome::Answered { covered: true } => {
                self.failed.remove(member);
            }
            Outcome::Answered { covered: false } => {
                self.failed.insert(member.clone(), now);
            }
            Outcome::Failed { link_closed } => {
                let tries = self.quick.entry(member.clone()).or_default();
                if link_closed && *tries < self.quick_max {
                    *tries += 1;
                } else {
                    self.failed.insert(member.clone(), now);
                }
            }
        }
    }

    /// How many members were asked so far.
    pub fn asked(&self) -> u32 {
        self.asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    /// A simulated chain: each member live or dead; a live member asked answers for itself
    /// and every live member after it up to the next dead one the ring cannot route past
    /// (`blocks`), after `answer_ms`; a dead one fails after the dial timeout.
    struct Chain {
        ids: Vec<NodeId>,
        live: Vec<bool>,
        blocks: Vec<bool>,
        answer_ms: u64,
        dial_timeout_ms: u64,
        closes_once: Vec<bool>,
    }

    struct Run {
        asked: Vec<usize>,
        answered: BTreeSet<usize>,
        finished_at_ms: Option<u64>,
    }

    impl Chain {
        fn new(n: usize) -> Chain {
            Chain {
                ids: (0..n).map(|i| NodeId::new(format!("m{i:02}"))).collect(),
                live: vec![true; n],
                blocks: vec![false; n],
                answer_ms: 50,
                dial_timeout_ms: 2000,
                closes_once: vec![false; n],
            }
        }

        /// Walks the chain until every live member answered or `limit_ms` passed. Members
        /// that are dead stay "online" in the server's view (not evicted yet), as they do
        /// for the suspicion timeout.
        fn walk(&mut self, retry_ms: u64, limit_ms: u64) -> Run {
            let t0 = Instant::now();
            let mut now_ms = 0u64;
            let mut w = ChainWalk::new(Duration::from_millis(retry_ms), 2);
            let mut answered = BTreeSet::new();
            let mut asked = Vec::new();
            let mut finished_at_ms = None;
            while now_ms <= limit_ms {
                let missing_ix: Vec<usize> = (0..self.ids.len())
                    .filter(|i| !answered.contains(i))
                    .collect();
                if missing_ix.iter().all(|&i| !self.live[i]) && finished_at_ms.is_none() {
                    finished_at_ms = Some(now_ms);
                }
                let missing: Vec<&NodeId> = missing_ix.iter().map(|&i| &self.ids[i]).collect();
                match w.next(&missing, t0 + Duration::from_millis(now_ms)) {
                    Step::Done => break,
                    Step::WaitUntil(t) => {
                        now_ms = t.duration_since(t0).as_millis() as u64;
                    }
                    Step::Ask(k) => {
                        let i = missing_ix[k];
                        asked.push(i);
                        let outcome = if std::mem::take(&mut self.closes_once[i]) {
                            now_ms += 1;
                            Outcome::Failed { link_closed: true }
                        } else if self.live[i] {
                            now_ms += self.answer_ms;
                            answered.insert(i);
                            for j in i + 1..self.ids.len() {
                                if self.blocks[j] {
                                    break;
                                }
                                if self.live[j] {
                                    answered.insert(j);
                                }
                            }
                            Outcome::Answered { covered: true }
                        } else {
                            now_ms += self.dial_timeout_ms;
                            Outcome::Failed { link_closed: false }
                        };
                        w.handle(&self.ids[i], outcome, t0 + Duration::from_millis(now_ms));
                    }
                }
            }
            Run {
                asked,
                answered,
                finished_at_ms,
            }
        }
    }

    #[test]
    fn a_dead_first_member_is_skipped_once_its_dial_timed_out_and_the_next_is_asked() {
        // The defect: a failure stamped with the time the attempt started (2 s dial, 1 s
        // retry) made the first member eligible at once, every time: "1 of 5" for good.
        let mut c = Chain::new(5);
        c.live[0] = false;
        let r = c.walk(1000, 60_000);
        assert_eq!(&r.asked[..2], &[0, 1], "asked {:?}", r.asked);
        assert_eq!(r.answered, (1..5).collect());
        assert_eq!(r.finished_at_ms, Some(2050));
    }

    #[test]
    fn gaps_are_walked_member_by_member_and_each_live_member_is_answered() {
        // A split ring: members 3 and 6 are dead and the ring cannot route past them.
        let mut c = Chain::new(9);
        for i in [3, 6] {
            c.live[i] = false;
            c.blocks[i] = true;
        }
        let r = c.walk(1000, 60_000);
        assert_eq!(&r.asked[..5], &[0, 3, 4, 6, 7], "asked {:?}", r.asked);
        assert_eq!(r.answered, [0, 1, 2, 4, 5, 7, 8].into_iter().collect());
        assert_eq!(r.finished_at_ms, Some(50 + 2000 + 50 + 2000 + 50));
    }

    #[test]
    fn a_closed_link_is_asked_again_at_once() {
        let mut c = Chain::new(3);
        c.closes_once[0] = true;
        let r = c.walk(1000, 60_000);
        assert_eq!(r.asked, [0, 0]);
        assert_eq!(r.finished_at_ms, Some(51));
    }

    #[test]
    fn with_every_member_dead_the_walk_retries_each_at_the_retry_interval_and_no_sooner() {
        let mut c = Chain::new(3);
        c.live = vec![false; 3];
        let r = c.walk(1000, 10_000);
        // 0, 1, 2 fail at 2 s, 4 s, 6 s; 0 is eligible again at 3 s, so it goes next.
        assert_eq!(&r.asked[..5], &[0, 1, 2, 0, 1], "asked {:?}", r.asked);
        assert!(r.answered.is_empty());
    }

    #[test]
    fn any_mix_of_dead_and_blocking_members_ends_with_every_live_member_answered() {
        let seeds: u64 = std::env::var("ROLLCALL_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        for seed in 0..seeds {
            let mut rng = SmallRng::seed_from_u64(seed);
            let n = rng.random_range(1..30);
            let mut c = Chain::new(n);
            for i in 0..n {
                c.live[i] = rng.random_range(0..100) >= 30;
                c.blocks[i] = !c.live[i] && rng.random_range(0..100) < 50;
                c.closes_once[i] = rng.random_range(0..100) < 10;
            }
            let live: BTreeSet<usize> = (0..n).filter(|&i| c.live[i]).collect();
            let dead = n - live.len();
            let r = c.walk(1000, 600_000);
            assert_eq!(r.answered, live, "seed {seed}");
            // Each dead member costs at most one dial before every live one is reached,
            // plus a retry interval of waiting each time the walk ran out of candidates.
            let bound = (dead as u64 + 1) * (2000 + 1000) + live.len() as u64 * 60;
            assert!(
                r.finished_at_ms.is_some_and(|t| t <= bound),
                "seed {seed}: finished at {:?}, bound {bound}",
                r.finished_at_ms
            );
        }
    }
}
