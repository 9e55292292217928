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
//! An ask the member has not taken (acknowledged) within the hedge time is not waited out:
//! the next member is asked beside it, up to a few at once. A dead member costs a dial
//! timeout before it fails, and several dead members in a row, asked one after another,
//! held the live members after them for seconds. An ask that was taken is a chain at work
//! and is waited for: asking beside it would send the question down the ring twice.
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
    /// Asking beside an ask not taken this long, and at most this many at once.
    hedge: Option<(Duration, usize)>,
    /// When each failed member's failure became known.
    failed: HashMap<NodeId, Instant>,
    /// Immediate re-asks spent per member.
    quick: HashMap<NodeId, u32>,
    /// Asks under way: when each started, and whether the member took it.
    in_flight: HashMap<NodeId, (Instant, bool)>,
    asked: u32,
}

impl ChainWalk {
    /// A walk that skips a failed member for `retry`, and asks a member whose link closed
    /// again at once up to `quick_max` times.
    pub fn new(retry: Duration, quick_max: u32) -> ChainWalk {
        ChainWalk {
            retry,
            quick_max,
            hedge: None,
            failed: HashMap::new(),
            quick: HashMap::new(),
            in_flight: HashMap::new(),
            asked: 0,
        }
    }

    /// Asks the next member beside any ask not taken within `after`, up to `at_most` asks
    /// at once (see the module's documentation). Without it, one ask at a time.
    pub fn hedged(mut self, after: Duration, at_most: usize) -> ChainWalk {
        self.hedge = Some((after, at_most.max(1)));
        self
    }

    /// The next step, given the chain's members in ring order that have not answered.
    /// With asks under way, `WaitUntil` means: until then, or until an ask ends or is taken.
    pub fn next(&self, missing: &[&NodeId], now: Instant) -> Step {
        if missing.is_empty() {
            return Step::Done;
        }
        if !self.in_flight.is_empty() {
            // Asking beside the asks under way only once none was taken within the hedge
            // time (a taken ask is a chain at work), and with a slot free.
            let (after, at_most) = self.hedge.unwrap_or((Duration::MAX, 1));
            let mut due = now;
            for (started, taken) in self.in_flight.values() {
                if *taken {
                    return Step::WaitUntil(now + self.retry);
                }
                due = due.max(started.checked_add(after).unwrap_or(now + self.retry));
            }
            if due > now {
                return Step::WaitUntil(due);
            }
            if self.in_flight.len() >= at_most {
                return Step::WaitUntil(now + self.retry);
            }
        }
        let free = |id: &NodeId| !self.in_flight.contains_key(id);
        // Members not yet failed first, in ring order: a failed member retried as soon as
        // its interval passed would keep the walk from the live members after it (each
        // retry of a dead one costs a dial timeout, longer than the interval).
        if let Some(i) = missing
            .iter()
            .position(|id| free(id) && !self.failed.contains_key(*id))
        {
            return Step::Ask(i);
        }
        // Then the failed ones whose interval passed, the longest-failed first.
        let eligible = missing
            .iter()
            .enumerate()
            .filter(|(_, id)| free(id))
            .filter_map(|(i, id)| self.failed.get(*id).map(|t| (i, *t)))
            .filter(|(_, t)| now.saturating_duration_since(*t) >= self.retry)
            .min_by_key(|(_, t)| *t);
        if let Some((i, _)) = eligible {
            return Step::Ask(i);
        }
        let next = missing
            .iter()
            .filter(|id| free(id))
            .filter_map(|id| self.failed.get(*id))
            .min()
            .map(|t| *t + self.retry)
            .unwrap_or(now + self.retry);
        Step::WaitUntil(next)
    }

    /// `member` is being asked from `now` (for a walk that asks several at once: one asked
    /// and never marked so is taken for the only ask under way).
    pub fn asking(&mut self, member: &NodeId, now: Instant) {
        self.in_flight.insert(member.clone(), (now, false));
    }

    /// `member` took its ask: its chain is at work.
    pub fn taken(&mut self, member: &NodeId) {
        if let Some(a) = self.in_flight.get_mut(member) {
            a.1 = true;
        }
    }

    /// How many asks are under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Asking `member` ended with `outcome`, known at `now`.
    pub fn handle(&mut self, member: &NodeId, outcome: Outcome, now: Instant) {
        self.in_flight.remove(member);
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

/// The order in which the walk takes the members still missing: given every member in ring
/// order with whether it has answered and whether a neighbour reported it unreachable, the
/// indices of those that have not answered, to hand to [`ChainWalk::next`] in this order.
///
/// Members past the last one that answered come first: the chain ended before them (its last
/// members found every successor they know down), so live members there are cut off and
/// wait for the server alone. Members missing inside the answered stretch were routed past
/// by their own neighbours: most are down, and each costs a dial timeout. Within each part,
/// ring order, with members reported unreachable after the rest. With nobody answered yet,
/// ring order (the forward leader first).
pub fn asking_order(answered: &[bool], suspect: &[bool]) -> Vec<usize> {
    let tail_from = answered.iter().rposition(|a| *a).map_or(0, |i| i + 1);
    let mut order: Vec<usize> = (0..answered.len()).filter(|&i| !answered[i]).collect();
    order.sort_by_key(|&i| (i < tail_from, suspect.get(i).copied().unwrap_or(false)));
    order
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

    /// Seeds a seeded test runs: `ROLLCALL_SEEDS`, 200 by default.
    fn seeds() -> u64 {
        std::env::var("ROLLCALL_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200)
    }

    /// A chain of up to 29 members drawn from `seed`: 30 % dead, half of those blocking,
    /// and (with `closes`) 10 % whose link closes once; with its live members and how many
    /// are dead.
    fn random_chain(seed: u64, closes: bool) -> (Chain, BTreeSet<usize>, usize) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = rng.random_range(1..30);
        let mut c = Chain::new(n);
        for i in 0..n {
            c.live[i] = rng.random_range(0..100) >= 30;
            c.blocks[i] = !c.live[i] && rng.random_range(0..100) < 50;
            if closes {
                c.closes_once[i] = rng.random_range(0..100) < 10;
            }
        }
        let live: BTreeSet<usize> = (0..n).filter(|&i| c.live[i]).collect();
        let dead = n - live.len();
        (c, live, dead)
    }

    /// What happens to an ask in the hedged harness.
    #[derive(Debug, Clone, Copy)]
    enum Ev {
        Taken(usize),
        Answer(usize),
        Fail(usize),
    }

    impl Chain {
        /// As `walk`, with asks side by side: a live member takes an ask after `take_ms`
        /// and its chain answers after `answer_ms`; a dead one never takes it and fails
        /// after the dial timeout.
        fn walk_hedged(
            &mut self,
            hedge_ms: u64,
            at_most: usize,
            take_ms: u64,
            limit_ms: u64,
        ) -> Run {
            let t0 = Instant::now();
            let at = |ms: u64| t0 + Duration::from_millis(ms);
            let mut w = ChainWalk::new(Duration::from_millis(1000), 2)
                .hedged(Duration::from_millis(hedge_ms), at_most);
            let mut now_ms = 0u64;
            let mut events: std::collections::BTreeMap<(u64, u64), Ev> = Default::default();
            let mut seq = 0u64;
            let mut answered = BTreeSet::new();
            let mut asked = Vec::new();
            let mut finished_at_ms = None;
            let mut under_way = BTreeSet::new();
            while now_ms <= limit_ms {
                let missing_ix: Vec<usize> = (0..self.ids.len())
                    .filter(|i| !answered.contains(i))
                    .collect();
                if missing_ix.iter().all(|&i| !self.live[i]) && finished_at_ms.is_none() {
                    finished_at_ms = Some(now_ms);
                }
                let missing: Vec<&NodeId> = missing_ix.iter().map(|&i| &self.ids[i]).collect();
                let wait_until = match w.next(&missing, at(now_ms)) {
                    Step::Done => break,
                    Step::Ask(k) => {
                        let i = missing_ix[k];
                        assert!(
                            under_way.insert(i),
                            "member {i} asked while its ask is under way"
                        );
                        asked.push(i);
                        w.asking(&self.ids[i], at(now_ms));
                        let mut push = |ms: u64, e: Ev| {
                            seq += 1;
                            events.insert((ms, seq), e);
                        };
                        if self.live[i] {
                            push(now_ms + take_ms, Ev::Taken(i));
                            push(now_ms + self.answer_ms, Ev::Answer(i));
                        } else {
                            push(now_ms + self.dial_timeout_ms, Ev::Fail(i));
                        }
                        continue;
                    }
                    Step::WaitUntil(t) => t.duration_since(t0).as_millis() as u64,
                };
                let next_event = events.keys().next().map(|k| k.0);
                now_ms = match next_event {
                    Some(e) if e <= wait_until => e,
                    _ => wait_until,
                };
                while let Some((&(ms, sq), &e)) = events.iter().next() {
                    if ms > now_ms {
                        break;
                    }
                    events.remove(&(ms, sq));
                    match e {
                        Ev::Taken(i) => w.taken(&self.ids[i]),
                        Ev::Answer(i) => {
                            under_way.remove(&i);
                            answered.insert(i);
                            for j in i + 1..self.ids.len() {
                                if self.blocks[j] {
                                    break;
                                }
                                if self.live[j] {
                                    answered.insert(j);
                                }
                            }
                            w.handle(
                                &self.ids[i],
                                Outcome::Answered { covered: true },
                                at(now_ms),
                            );
                        }
                        Ev::Fail(i) => {
                            under_way.remove(&i);
                            w.handle(
                                &self.ids[i],
                                Outcome::Failed { link_closed: false },
                                at(now_ms),
                            );
                        }
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
    fn dead_members_in_a_row_are_asked_side_by_side_and_the_live_ones_after_them_reached_soon() {
        // Three dead at the head of the chain: one at a time, 3 dial timeouts (6 s) before
        // member 3 was asked; side by side, one hedge time (500 ms) each.
        let mut c = Chain::new(6);
        for i in 0..3 {
            c.live[i] = false;
        }
        let one_by_one = Chain {
            live: c.live.clone(),
            ..Chain::new(6)
        }
        .walk(1000, 60_000);
        assert_eq!(one_by_one.finished_at_ms, Some(3 * 2000 + 50));
        let r = c.walk_hedged(500, 4, 5, 60_000);
        assert_eq!(&r.asked[..4], &[0, 1, 2, 3], "asked {:?}", r.asked);
        assert_eq!(r.answered, (3..6).collect());
        assert_eq!(r.finished_at_ms, Some(1500 + 50));
    }

    #[test]
    fn a_taken_ask_is_waited_for_and_nothing_is_asked_beside_it() {
        // A long chain at work: asking beside it would send the question down it twice.
        let mut c = Chain::new(8);
        c.answer_ms = 3000;
        let r = c.walk_hedged(500, 4, 5, 60_000);
        assert_eq!(r.asked, [0]);
        assert_eq!(r.finished_at_ms, Some(3000));
    }

    #[test]
    fn side_by_side_asks_at_most_as_many_as_allowed() {
        let mut c = Chain::new(8);
        for i in 0..6 {
            c.live[i] = false;
        }
        let r = c.walk_hedged(500, 2, 5, 60_000);
        // 0 at 0, 1 at 500; both fail at 2000 and 2500; 2 at 2000, 3 at 2500, ...
        assert_eq!(&r.asked[..7], &[0, 1, 2, 3, 4, 5, 6], "asked {:?}", r.asked);
        assert_eq!(r.answered, (6..8).collect());
        assert_eq!(r.finished_at_ms, Some(6000 + 50));
    }

    #[test]
    fn side_by_side_any_mix_of_dead_and_blocking_members_ends_with_every_live_member_answered() {
        for seed in 0..seeds() {
            let (mut c, live, dead) = random_chain(seed, false);
            let r = c.walk_hedged(500, 4, 5, 600_000);
            assert_eq!(r.answered, live, "seed {seed}");
            let bound = (dead as u64 + 1) * (2000 + 1000) + live.len() as u64 * 60;
            assert!(
                r.finished_at_ms.is_some_and(|t| t <= bound),
                "seed {seed}: finished at {:?}, bound {bound}",
                r.finished_at_ms
            );
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
        for seed in 0..seeds() {
            let (mut c, live, dead) = random_chain(seed, true);
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

    #[test]
    fn the_members_past_the_chain_end_are_asked_before_the_gaps_inside_it_and_suspects_last() {
        // Nobody answered yet: ring order, the forward leader first.
        assert_eq!(asking_order(&[false; 4], &[false; 4]), [0, 1, 2, 3]);
        // The chain covered 0, 2, 3 and ended: 4 and 5 are cut off behind it, 1 was routed past.
        let answered = [true, false, true, true, false, false];
        assert_eq!(asking_order(&answered, &[false; 6]), [4, 5, 1]);
        // A member reported unreachable goes after the others of its part.
        let suspect = [false, false, false, false, true, false];
        assert_eq!(asking_order(&answered, &suspect), [5, 4, 1]);
        // Everyone answered: nothing to ask.
        assert!(asking_order(&[true; 3], &[false; 3]).is_empty());
    }
}
