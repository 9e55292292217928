//! The relay cores stepped together with no runtime, as quinn-proto's tests step a pair of
//! connections: a chain of members, each a [`Round`], messages delivered in an order a seed
//! picks, some duplicated, some members dying, hop deadlines firing early (a slow hop) or
//! late; then the server's [`ChainWalk`] asks whoever is still missing. Whatever the
//! interleaving, the server counts every live machine exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rollcall_runtime::NodeId;

use super::*;
use crate::proto::{EncodedAnswer, NodeAnswer, Partial};
use crate::questions::QuestionStore;
use crate::relay::walk::{ChainWalk, Outcome, Step};

#[derive(Debug, Clone, PartialEq)]
enum Waiter {
    Server,
    Member { at: usize, generation: u64 },
}

#[derive(Debug, Clone)]
enum Msg {
    Ask {
        to: usize,
        from: Waiter,
    },
    /// The hop clock of `at`'s forward to `to` ran out (taken early: a slow hop).
    Deadline {
        at: usize,
        generation: u64,
        to: usize,
    },
    /// `at`'s sensors are done.
    Eval {
        at: usize,
    },
    /// `at` found `to` dead (its probe went unanswered, its link closed).
    Down {
        at: usize,
        to: usize,
    },
    Answer {
        to: Waiter,
        merged: Partial,
    },
}

struct Harness {
    ids: Vec<NodeId>,
    rounds: Vec<Option<Round<Waiter, Partial>>>,
    alive: Vec<bool>,
    /// Successors each member routes past (their hop clock ran out).
    skip: Vec<BTreeSet<usize>>,
    /// Hops taken: (from, generation, to).
    acked: BTreeSet<(usize, u64, usize)>,
    pool: Vec<Msg>,
    rng: SmallRng,
    store: QuestionStore,
    question: u64,
    deaths_left: usize,
    steps: usize,
    /// The clock (a millisecond a step) and how long a finished round's result is kept
    /// (none: never).
    t0: Instant,
    keep: Option<Duration>,
}

fn parity(i: usize) -> NodeAnswer {
    NodeAnswer {
        rows: Some(vec![vec![
            if i.is_multiple_of(2) { "even" } else { "odd" }.into(),
        ]]),
        problems: vec![],
    }
}

fn answer_of(i: usize) -> crate::proto::TaggedAnswer {
    EncodedAnswer::new(&parity(i)).into()
}

impl Harness {
    fn new(n: usize, seed: u64) -> Harness {
        let ids: Vec<NodeId> = (0..n).map(|i| NodeId::new(format!("m{i:03}"))).collect();
        let store = QuestionStore::new(
            4,
            std::sync::Arc::new(rollcall_runtime::signing::ServerSigner::generate().expect("key")),
        );
        let hosts: Vec<(NodeId, CompactString)> = ids
            .iter()
            .map(|id| (id.clone(), CompactString::from(id.0.as_str())))
            .collect();
        let question = store.create(
            "q".into(),
            vec!["parity".into()],
            vec![],
            Duration::from_secs(600),
            hosts.iter().map(|(id, h)| (id, h)),
        );
        let mut rng = SmallRng::seed_from_u64(seed);
        let deaths_left = rng.random_range(0..=n / 3);
        // Kept for none, some or many steps: answered from what was kept, or again down the
        // chain once it has gone.
        let keep = match rng.random_range(0..3) {
            0 => None,
            1 => Some(Duration::from_millis(rng.random_range(1..40))),
            _ => Some(Duration::from_secs(3600)),
        };
        Harness {
            ids,
            rounds: (0..n).map(|_| None).collect(),
            alive: vec![true; n],
            skip: vec![BTreeSet::new(); n],
            acked: BTreeSet::new(),
            pool: Vec::new(),
            rng,
            store,
            question,
            deaths_left,
            steps: 0,
            t0: Instant::now(),
            keep,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.steps as u64)
    }

    fn route_target(&self, i: usize) -> Option<usize> {
        (i + 1..self.ids.len()).find(|j| !self.skip[i].contains(j))
    }

    fn forward(&mut self, i: usize) {
        let target = self.route_target(i);
        let to_id = target.map(|t| self.ids[t].clone());
        let Some(round) = self.rounds[i].as_mut() else {
            return;
        };
        match round.forward(to_id.as_ref()) {
            Forward::Hop { generation, .. } => {
                let to = target.expect("a hop has a target");
                self.pool.push(Msg::Ask {
                    to,
                    from: Waiter::Member { at: i, generation },
                });
                self.pool.push(Msg::Deadline {
                    at: i,
                    generation,
                    to,
                });
            }
            Forward::EndOfChain => self.try_finish(i),
            Forward::Finished => {}
        }
    }

    fn try_finish(&mut self, i: usize) {
        let me = self.ids[i].clone();
        let keep_until = self.keep.map(|k| self.now() + k);
        let Some(f) = self.rounds[i].as_mut().and_then(|r| r.finish(&me)) else {
            return;
        };
        for w in f.waiters {
            self.pool.push(Msg::Answer {
                to: w,
                merged: f.merged.clone(),
            });
        }
        if let Some(own) = f.send_late {
            let a = own.answer.decode().expect("own answer");
            self.store.late_answer(self.question, me, a);
        }
        if let (Some(until), Some(r)) = (keep_until, self.rounds[i].as_mut()) {
            r.keep(f.merged, until);
        }
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Ask { to, from } => {
                if !self.alive[to] {
                    return;
                }
                if let Waiter::Member { at, generation } = &from {
                    self.acked.insert((*at, *generation, to));
                }
                match self.rounds[to].as_mut() {
                    None => {
                        self.rounds[to] = Some(Round::new(Some(from), false));
                        self.forward(to);
                        self.pool.push(Msg::Eval { at: to });
                    }
                    Some(r) => {
                        let now = self.t0 + Duration::from_millis(self.steps as u64);
                        let target = (to + 1..self.ids.len())
                            .find(|j| !self.skip[to].contains(j))
                            .map(|t| self.ids[t].clone());
                        let j = r.join(Some(from), false, now, target.as_ref());
                        if let Some((w, merged)) = j.answer_now {
                            self.pool.push(Msg::Answer { to: w, merged });
                        }
                        if j.forward_again {
                            self.forward(to);
                        }
                    }
                }
            }
            Msg::Eval { at } => {
                if !self.alive[at] {
                    return;
                }
                let own = self.store.tagged(&self.ids[at], self.question, &parity(at));
                if let Some(r) = self.rounds[at].as_mut() {
                    r.own_result(own);
                }
                self.try_finish(at);
            }
            Msg::Answer {
                to: Waiter::Server,
                merged,
            } => {
                let m = self
                    .store
                    .merge(self.question, merged, &NodeId::new("m000"), |_| true);
                assert_eq!(m.tampered, 0, "honest members' answers always verify");
            }
            Msg::Answer {
                to: Waiter::Member { at, generation },
                merged,
            } => {
                if !self.alive[at] {
                    return;
                }
                let taken = self.rounds[at]
                    .as_mut()
                    .is_some_and(|r| r.downstream(generation, merged).is_ok());
                if taken {
                    self.try_finish(at);
                }
            }
            Msg::Deadline { at, generation, to } => {
                if !self.acked.contains(&(at, generation, to)) {
                    self.route_past(at, to);
                }
            }
            Msg::Down { at, to } => self.route_past(at, to),
        }
    }

    /// `at` routes past `to`, and forwards anew what waited on it.
    fn route_past(&mut self, at: usize, to: usize) {
        {
            if !self.alive[at] {
                return;
            }
            {
                self.skip[at].insert(to);
                let target = self.route_target(at).map(|t| self.ids[t].clone());
                let reroute = self.rounds[at]
                    .as_ref()
                    .is_some_and(|r| r.waits_on_other_than(target.as_ref()));
                if reroute {
                    self.forward(at);
                }
            }
        }
    }

    /// Delivers messages in the seed's order until none are left; some are delivered
    /// twice, some members die.
    fn drain(&mut self) {
        while !self.pool.is_empty() {
            self.steps += 1;
            assert!(self.steps < 200_000, "the relay does not settle");
            let k = self.rng.random_range(0..self.pool.len());
            let msg = self.pool.swap_remove(k);
            if matches!(msg, Msg::Ask { .. } | Msg::Answer { .. })
                && self.rng.random_range(0..100) < 5
            {
                self.pool.push(msg.clone());
            }
            if self.deaths_left > 0 && self.rng.random_range(0..100) < 3 {
                let victim = self.rng.random_range(0..self.ids.len());
                if self.alive[victim] {
                    self.alive[victim] = false;
                    self.rounds[victim] = None;
                    self.deaths_left -= 1;
                    // Whoever waits on it finds out (its probe, its closed link).
                    for at in 0..victim {
                        let waits = self.rounds[at]
                            .as_ref()
                            .is_some_and(|r| r.waiting_on() == Some(&self.ids[victim]));
                        if waits {
                            self.pool.push(Msg::Down { at, to: victim });
                        }
                    }
                }
            }
            self.deliver(msg);
        }
    }

    /// Delivers asks first, then evaluations, then answers, then deadlines (every hop in
    /// time from here on).
    fn drain_in_order(&mut self) {
        let rank = |m: &Msg| match m {
            Msg::Ask { .. } => 0,
            Msg::Eval { .. } => 1,
            Msg::Answer { .. } => 2,
            Msg::Deadline { .. } | Msg::Down { .. } => 3,
        };
        while let Some(k) = (0..self.pool.len()).min_by_key(|&k| rank(&self.pool[k])) {
            let m = self.pool.remove(k);
            self.deliver(m);
        }
    }

    /// The server's walk: ask the first member, then whoever is missing, until every live
    /// member has answered (dead ones fail their dial).
    fn run(&mut self) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut walk = ChainWalk::new(Duration::from_secs(1), 2);
        for _ in 0..(4 * self.ids.len() + 8) {
            let answered = self.store.have_answered(self.question, self.ids.iter());
            let missing_ix: Vec<usize> = (0..self.ids.len()).filter(|&i| !answered[i]).collect();
            if missing_ix.iter().all(|&i| !self.alive[i]) {
                return;
            }
            let missing: Vec<&NodeId> = missing_ix.iter().map(|&i| &self.ids[i]).collect();
            match walk.next(&missing, now) {
                Step::Done => return,
                Step::WaitUntil(t) => now = t,
                Step::Ask(k) => {
                    let target = missing_ix[k];
                    if !self.alive[target] {
                        now += Duration::from_secs(2);
                        walk.handle(
                            &self.ids[target],
                            Outcome::Failed { link_closed: false },
                            now,
                        );
                        continue;
                    }
                    self.pool.push(Msg::Ask {
                        to: target,
                        from: Waiter::Server,
                    });
                    self.drain();
                    now += Duration::from_millis(10);
                    let covered = self
                        .store
                        .have_answered(self.question, [&self.ids[target]].into_iter())[0];
                    walk.handle(&self.ids[target], Outcome::Answered { covered }, now);
                }
            }
        }
    }
}

#[test]
fn a_chain_answers_once_per_member_in_order_with_no_faults() {
    let mut h = Harness::new(5, 0);
    h.deaths_left = 0;
    h.pool.push(Msg::Ask {
        to: 0,
        from: Waiter::Server,
    });
    h.drain_in_order();
    let p = h.store.progress(h.question).expect("kept");
    assert_eq!((p.answered, p.expected, p.matched), (5, 5, 5));
    let rows: Vec<(String, u64)> = p
        .rows
        .iter()
        .map(|r| (r.cells[0].clone(), r.count))
        .collect();
    assert_eq!(rows, [("even".to_string(), 3), ("odd".into(), 2)]);
}

#[test]
fn a_slow_successor_is_routed_past_and_its_late_answer_to_the_old_round_is_dropped() {
    let mut h = Harness::new(3, 0);
    h.deaths_left = 0;
    h.pool.push(Msg::Ask {
        to: 0,
        from: Waiter::Server,
    });
    // Member 0 takes it and forwards to 1; 1's hop clock runs out before 1 takes it.
    let ask0 = h.pool.remove(0);
    h.deliver(ask0);
    let deadline = h
        .pool
        .iter()
        .position(|m| matches!(m, Msg::Deadline { .. }))
        .expect("a deadline");
    let d = h.pool.remove(deadline);
    h.deliver(d);
    // 0 now forwards to 2 (generation 2); the old ask to 1 is still in flight.
    assert_eq!(
        h.rounds[0].as_ref().and_then(|r| r.waiting_on().cloned()),
        Some(h.ids[2].clone())
    );
    h.drain_in_order();
    // 1 answered generation 1, which 0 no longer awaits: 1 is a gap, walked by the server.
    let before = h.store.have_answered(h.question, h.ids.iter());
    assert_eq!(before, [true, false, true]);
    h.run();
    let p = h.store.progress(h.question).expect("kept");
    assert_eq!((p.answered, p.expected), (3, 3));
}

#[test]
fn a_late_round_answers_the_server_alone() {
    let mut r: Round<Waiter, Partial> = Round::new(None, true);
    assert_eq!(r.forward(None), Forward::EndOfChain);
    assert!(
        r.finish(&NodeId::new("m")).is_none(),
        "own result not in yet"
    );
    r.own_result(answer_of(0));
    let f = r.finish(&NodeId::new("m")).expect("finished");
    assert!(f.waiters.is_empty());
    assert_eq!(
        f.send_late.map(|o| o.answer.decode().ok()),
        Some(answer_of(0).answer.decode().ok())
    );
    assert_eq!(f.merged.len(), 1);
    // Asked again by a predecessor after it finished: a new generation down the chain.
    let j = r.join(Some(Waiter::Server), false, Instant::now(), None);
    assert!(j.forward_again && j.answer_now.is_none());
    assert_eq!(
        r.forward(Some(&NodeId::new("next"))),
        Forward::Hop {
            to: NodeId::new("next"),
            generation: 2
        }
    );
    assert!(!r.awaits(1) && r.awaits(2));
    assert!(r.downstream(1, Partial::default()).is_err());
}

#[test]
fn any_interleaving_of_deliveries_duplicates_and_deaths_counts_each_live_machine_exactly_once() {
    let seeds: u64 = std::env::var("ROLLCALL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for seed in 0..seeds {
        let n = 2 + (seed as usize % 23);
        let mut h = Harness::new(n, seed);
        h.pool.push(Msg::Ask {
            to: 0,
            from: Waiter::Server,
        });
        h.drain();
        h.run();
        let p = h.store.progress(h.question).expect("kept");
        let live: Vec<&NodeId> = (0..n).filter(|&i| h.alive[i]).map(|i| &h.ids[i]).collect();
        let answered = h.store.have_answered(h.question, live.iter().copied());
        assert!(
            answered.iter().all(|a| *a),
            "seed {seed}: live members missing: {:?}",
            p.not_answered
        );
        // Exactly once: the rows count each answering machine once, and no one is counted
        // who was not in the chain.
        let responders = h.store.responders(h.question).expect("kept");
        assert_eq!(p.answered, responders.len(), "seed {seed}");
        assert_eq!(
            p.rows.iter().map(|r| r.count).sum::<u64>(),
            p.answered as u64,
            "seed {seed}"
        );
        assert!(p.answered >= live.len() && p.answered <= n, "seed {seed}");
        let evens = responders
            .iter()
            .filter(|id| {
                id.0[1..]
                    .parse::<usize>()
                    .is_ok_and(|i| i.is_multiple_of(2))
            })
            .count() as u64;
        let counted_evens = p
            .rows
            .iter()
            .find(|r| r.cells[0] == "even")
            .map(|r| r.count)
            .unwrap_or(0);
        assert_eq!(counted_evens, evens, "seed {seed}");
    }
}

#[test]
fn a_finished_round_kept_answers_a_reroute_at_once_and_a_new_round_goes_down_once_it_has_gone() {
    let m = NodeId::new("m");
    let t0 = Instant::now();
    let mut r: Round<Waiter, Partial> = Round::new(Some(Waiter::Server), false);
    assert!(matches!(
        r.forward(Some(&NodeId::new("next"))),
        Forward::Hop { .. }
    ));
    r.own_result(answer_of(0));
    r.downstream(1, Partial::default()).expect("awaited");
    let f = r.finish(&m).expect("finished");
    assert_eq!(f.waiters, [Waiter::Server]);
    r.keep(f.merged.clone(), t0 + Duration::from_secs(2));
    // Asked again within the time: answered with the same result, nothing forwarded.
    let again = Waiter::Member {
        at: 7,
        generation: 3,
    };
    let next = NodeId::new("next");
    let j = r.join(
        Some(again.clone()),
        false,
        t0 + Duration::from_secs(1),
        Some(&next),
    );
    assert!(!j.forward_again);
    assert_eq!(j.answer_now, Some((again.clone(), f.merged.clone())));
    assert_eq!(r.forward(Some(&next)), Forward::Finished);
    // Once the time is over the result is let go, and asking again starts a round.
    assert!(!r.release_kept(t0 + Duration::from_secs(2)));
    let j = r.join(
        Some(again.clone()),
        false,
        t0 + Duration::from_secs(3),
        Some(&next),
    );
    assert!(j.forward_again && j.answer_now.is_none());
    // A route that changed since the result came (the successor routed past, or back):
    // the kept result may miss machines the new route reaches, so a new round goes down.
    assert!(matches!(r.forward(Some(&next)), Forward::Hop { .. }));
    r.downstream(2, Partial::default()).expect("awaited");
    let f = r.finish(&m).expect("finished");
    r.keep(f.merged, t0 + Duration::from_secs(10));
    let other = NodeId::new("other");
    let j = r.join(
        Some(again),
        false,
        t0 + Duration::from_secs(4),
        Some(&other),
    );
    assert!(j.forward_again && j.answer_now.is_none());
}

#[test]
fn a_member_that_dies_holding_its_successors_answers_costs_one_hop_not_the_rest_of_the_chain() {
    let n = 8;
    let mut h = Harness::new(n, 0);
    h.deaths_left = 0;
    h.keep = Some(Duration::from_secs(3600));
    h.pool.push(Msg::Ask {
        to: 0,
        from: Waiter::Server,
    });
    // Every member takes the question and evaluates; the chain's end answers back up.
    while let Some(k) = h
        .pool
        .iter()
        .position(|m| matches!(m, Msg::Ask { .. } | Msg::Eval { .. }))
    {
        let m = h.pool.remove(k);
        h.deliver(m);
    }
    // The answers come back up to member 3, which dies with them.
    loop {
        let k = h
            .pool
            .iter()
            .position(|m| matches!(m, Msg::Answer { .. }))
            .expect("an answer on its way up");
        if matches!(
            h.pool[k],
            Msg::Answer {
                to: Waiter::Member { at: 3, .. },
                ..
            }
        ) {
            h.pool.remove(k);
            break;
        }
        let m = h.pool.remove(k);
        h.deliver(m);
    }
    h.alive[3] = false;
    h.rounds[3] = None;
    h.pool.retain(|m| !matches!(m, Msg::Deadline { .. }));
    // Member 2 finds 3 dead and asks 4, whose kept result answers it at once: no ask goes
    // further down the chain.
    h.pool.push(Msg::Down { at: 2, to: 3 });
    let mut asked = Vec::new();
    while !h.pool.is_empty() {
        let m = h.pool.remove(0);
        if let Msg::Ask { to, .. } = &m {
            asked.push(*to);
        }
        if !matches!(m, Msg::Deadline { .. }) {
            h.deliver(m);
        }
    }
    assert_eq!(asked, [4]);
    let answered = h.store.have_answered(h.question, h.ids.iter());
    assert_eq!(
        answered,
        [true, true, true, false, true, true, true, true],
        "everyone but the dead member, counted from one chain"
    );
    let p = h.store.progress(h.question).expect("kept");
    assert_eq!((p.answered, p.expected), (7, 8));
}
