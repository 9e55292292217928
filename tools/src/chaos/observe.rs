//! What a scenario watches while it runs: the questions it asked, the victims it struck, and the fleet's rings and answers over time.

use crate::fleet::{Fleet, SIM_QUESTION};
use anyhow::Result;
use rand::{Rng, rngs::SmallRng};
use rollcall_cluster::proto::{Health, RingsReport};
use rollcall_runtime::NodeId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

#[allow(unused_imports)]
use super::*;

/// A question the scenario asked.
pub(super) struct Asked {
    pub(super) id: u64,
    /// Prompt answers are due within baseline + 1 s of this moment (`None`: not timed).
    pub(super) due_from: Option<Instant>,
    /// When every endpoint due to answer promptly had answered.
    pub(super) complete_at: Option<Instant>,
    /// Asked of a server that later restarted (its answers went with it).
    pub(super) lost_with_server: bool,
    /// The endpoints due to answer promptly that had not yet, at the last sample before it
    /// was complete (the first few): who a late question waited for.
    pub(super) waiting_for: Vec<NodeId>,
}

/// Who a fault touched.
#[derive(Default)]
pub(super) struct Victims {
    /// May stop answering for a while and may be evicted (killed, paused, rebooting).
    pub(super) excused: HashSet<NodeId>,
    /// Killed for good: not expected to answer at all.
    pub(super) lost: HashSet<NodeId>,
    /// Timed kills and restarts still to come: (index, when, restart rather than kill).
    pub(super) restarts: Vec<(usize, Instant, bool)>,
}

/// Samples the server while the scenario runs.
pub(super) struct Observer {
    pub(super) every: Duration,
    pub(super) seen: HashSet<NodeId>,
    pub(super) evictions: BTreeMap<NodeId, String>,
    /// The server's connections (invariant 5).
    pub(super) links: super::links::LeaderLinks,
    pub(super) questions: Vec<Asked>,
    pub(super) victims: Victims,
    pub(super) samples: u64,
    /// The server's registrations served so far, at each sample (a restarted server counts
    /// from 0 again).
    pub(super) registrations: Vec<(Instant, u64)>,
}

pub(super) fn members(
    r: &RingsReport,
) -> impl Iterator<Item = &rollcall_cluster::proto::MemberReport> {
    r.machines()
}

impl Observer {
    pub(super) fn new(every: Duration) -> Observer {
        Observer {
            every,
            seen: HashSet::new(),
            evictions: BTreeMap::new(),
            links: Default::default(),
            questions: Vec::new(),
            victims: Victims::default(),
            samples: 0,
            registrations: Vec::new(),
        }
    }

    /// The most registrations the server served in any one second since `from` (from the
    /// samples: a window of 1 s between two samples).
    pub(super) fn peak_registrations_per_second(&self, from: Instant) -> u64 {
        let r: Vec<(Instant, u64)> = self
            .registrations
            .iter()
            .filter(|(t, _)| *t >= from)
            .copied()
            .collect();
        let mut peak = 0;
        let mut j = 0;
        for i in 0..r.len() {
            while j < i && r[i].0.saturating_duration_since(r[j].0) > Duration::from_secs(1) {
                j += 1;
            }
            // A restart in between (the count went down) starts the window again.
            if r[i].1 >= r[j].1 {
                peak = peak.max(r[i].1 - r[j].1);
            }
        }
        peak
    }

    pub(super) async fn sample(&mut self, fleet: &mut Fleet) -> Result<RingsReport> {
        let now = Instant::now();
        // Reboots due now.
        let mut due: Vec<(usize, Instant, bool)> = self
            .victims
            .restarts
            .iter()
            .filter(|(_, at, _)| *at <= now)
            .copied()
            .collect();
        due.sort_by_key(|(_, at, _)| *at);
        self.victims.restarts.retain(|(_, at, _)| *at > now);
        for (i, _, start) in due {
            if start {
                fleet.restart(i).await?;
            } else {
                fleet.kill(i);
            }
        }

        let r = fleet.report().await;
        self.samples += 1;
        self.registrations
            .push((Instant::now(), fleet.rings().registrations()));
        let present: HashMap<&NodeId, Health> = members(&r).map(|m| (&m.id, m.health)).collect();
        for id in &self.seen {
            if self.victims.excused.contains(id) || self.evictions.contains_key(id) {
                continue;
            }
            match present.get(id) {
                None => {
                    self.evictions
                        .insert(id.clone(), "dropped from its ring".into());
                }
                Some(Health::Offline) => {
                    self.evictions.insert(id.clone(), "marked offline".into());
                }
                Some(_) => {}
            }
        }
        self.seen.extend(
            present
                .iter()
                .filter(|(_, h)| **h != Health::Offline)
                .map(|(id, _)| (*id).clone()),
        );

        let conns = fleet.server().connected_peers();
        self.links.sample(&r, conns, &self.victims.excused, now);

        let prompt: Vec<&NodeId> = fleet
            .endpoints
            .iter()
            .filter(|e| e.alive() && !self.victims.excused.contains(&e.id))
            .map(|e| &e.id)
            .collect();
        for q in &mut self.questions {
            if q.complete_at.is_some() || q.lost_with_server {
                continue;
            }
            let Some(answered) = fleet.rings().responders(q.id) else {
                continue;
            };
            let answered: HashSet<NodeId> = answered.into_iter().collect();
            let missing: Vec<NodeId> = prompt
                .iter()
                .filter(|id| !answered.contains(**id))
                .take(3)
                .map(|id| (*id).clone())
                .collect();
            if missing.is_empty() {
                q.complete_at = Some(now);
            } else {
                q.waiting_for = missing;
            }
        }
        Ok(r)
    }

    /// Samples for `d`.
    pub(super) async fn watch(&mut self, fleet: &mut Fleet, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.sample(fleet).await?;
            tokio::time::sleep(self.every.min(end - Instant::now())).await;
        }
        Ok(())
    }

    /// Samples until every ring is one chain (and pending reboots are done), or `timeout`.
    pub(super) async fn until_formed(
        &mut self,
        fleet: &mut Fleet,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        let t0 = Instant::now();
        loop {
            let r = self.sample(fleet).await?;
            if self.victims.restarts.is_empty() && fleet.one_chain_each(&r) {
                return Ok(Some(t0.elapsed()));
            }
            if t0.elapsed() > timeout {
                if std::env::var("ROLLCALL_CHAOS_DEBUG").is_ok() {
                    eprintln!("not formed:\n{}", shape(&r));
                    for m in members(&r).filter(|m| m.leads.any()) {
                        if let Some(i) = fleet.index_of(&m.id) {
                            eprintln!("{}: {:?}", m.id, fleet.member_status(i).await);
                            let at_server: Vec<_> = fleet
                                .server()
                                .connected_peers()
                                .into_iter()
                                .filter(|p| p.peer.id == m.id)
                                .collect();
                            let mine = fleet.endpoints[i].node().map(|n| n.connected_peers());
                            eprintln!("  server has {at_server:?}\n  it has {mine:?}");
                        }
                    }
                }
                return Ok(None);
            }
            tokio::time::sleep(self.every).await;
        }
    }

    pub(super) async fn ask(
        &mut self,
        fleet: &Fleet,
        ttl: Duration,
        due_from: Option<Instant>,
    ) -> Result<()> {
        let id = fleet.ask(SIM_QUESTION, ttl).await?;
        self.questions.push(Asked {
            id,
            due_from: due_from.map(|d| d.max(Instant::now())),
            complete_at: None,
            waiting_for: Vec::new(),
            lost_with_server: false,
        });
        Ok(())
    }
}

/// Picks a ring from the report and returns its members' fleet indices in ring order.
pub(super) fn pick_ring(fleet: &Fleet, r: &RingsReport, rng: &mut SmallRng) -> Vec<usize> {
    if r.rings.is_empty() {
        return Vec::new();
    }
    let ring = &r.rings[rng.random_range(0..r.rings.len())];
    ring.members
        .iter()
        .filter_map(|m| fleet.index_of(&m.id))
        .collect()
}

/// A member of `ring` that leads neither end (or any member of a ring too small for one).
pub(super) fn pick_inner(ring: &[usize], rng: &mut SmallRng) -> Option<usize> {
    match ring.len() {
        0 => None,
        1 | 2 => Some(ring[rng.random_range(0..ring.len())]),
        n => Some(ring[rng.random_range(1..n - 1)]),
    }
}
