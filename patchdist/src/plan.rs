//! What to fetch next, from whom: one package's download on one endpoint, sans-IO.
//!
//! [`Fetch`] knows which chunks this machine holds, which its neighbours say they hold, and
//! what is in flight. [`Fetch::next`] hands out requests: several per peer at once
//! (pipelining), the first few chunks in order and then the rarest among its neighbours
//! first, from the server only when this machine is its ring's leader and no neighbour
//! holds the chunk; when every chunk it lacks is in flight and few are left, a second peer
//! is asked for each (endgame). Outcomes come back through [`Fetch::done`]: a peer that
//! sent a bad chunk is avoided for the rest of the package, a busy one rests a moment, and
//! the chunk goes back to be asked of someone else. It reads no clock: `now` is passed in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How a download paces itself.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Requests in flight to one peer.
    pub per_peer: usize,
    /// Requests in flight to the server (leaders only).
    pub server_in_flight: usize,
    /// A request not answered within this is given up and asked elsewhere.
    pub timeout: Duration,
    /// The same for a request to the server, which may be slow under load but is the only
    /// source: given up only after this.
    pub server_timeout: Duration,
    /// Chunks fetched in order before rarest-first begins.
    pub in_order_first: usize,
    /// How many of the chunks it lacks (lowest first) rarest-first chooses among.
    pub window: usize,
    /// Endgame: when every chunk it lacks is in flight and at most this many are left, each
    /// is also asked of a second peer.
    pub endgame: usize,
    /// How long a peer that answered "busy", or a source whose request failed, is left
    /// alone.
    pub busy_rest: Duration,
    /// The leader holds (or has asked the server for) at most this many chunks that no
    /// neighbour holds yet, while its neighbours are taking chunks: if it stops, its ring
    /// loses at most these, and the server sends them again.
    pub server_lead: usize,
    /// Neighbours count as taking chunks for this long after one last did (and after the
    /// download starts).
    pub peers_active: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            per_peer: 4,
            server_in_flight: 8,
            timeout: Duration::from_secs(30),
            server_timeout: Duration::from_secs(300),
            in_order_first: 4,
            window: 64,
            endgame: 8,
            busy_rest: Duration::from_millis(200),
            server_lead: 8,
            peers_active: Duration::from_secs(2),
        }
    }
}

/// Where a chunk is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source<P> {
    /// A ring neighbour.
    Peer(P),
    /// The server (the package's origin).
    Server,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The chunk came and matched its hash.
    Good,
    /// The chunk came and did not match its hash.
    Corrupt,
    /// The source's pool was full.
    Busy,
    /// The source does not hold it.
    Missing,
    /// The call failed or timed out.
    Failed,
}

/// What a good chunk meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A chunk this machine lacked: keep it.
    New,
    /// Another request brought it first (endgame): drop it.
    Duplicate,
}

/// What a download has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Chunks received from peers.
    pub from_peers: u64,
    /// Chunks received from the server.
    pub from_server: u64,
    /// Requests to the server asked again after one failed.
    pub server_retries: u64,
    /// Bad chunks received.
    pub corrupt: u64,
    /// "Busy" answers.
    pub busy: u64,
    /// Chunks that came twice (endgame).
    pub duplicates: u64,
    /// Requests that failed or timed out.
    pub failed: u64,
}

#[derive(Debug)]
struct PeerState {
    /// Its place in the order of preference (the nearest predecessor first).
    rank: usize,
    /// A machine outside the view that announced to us: asked only when the view has had
    /// nothing to give for a while.
    fallback: bool,
    holds: Vec<bool>,
    in_flight: usize,
    avoided: bool,
    resting_until: Option<Instant>,
}

/// One package's download on one machine.
#[derive(Debug)]
pub struct Fetch<P: Ord + Clone> {
    cfg: FetchConfig,
    have: Vec<bool>,
    held: usize,
    /// Holders among the peers that are not avoided.
    rarity: Vec<u16>,
    /// Lacked and not in flight.
    wanted: BTreeSet<u32>,
    /// Wanted and held by a peer.
    available: BTreeSet<u32>,
    peers: BTreeMap<P, PeerState>,
    in_flight: HashMap<u32, Vec<(Source<P>, Instant)>>,
    server_allowed: bool,
    server_busy: usize,
    server_resting_until: Option<Instant>,
    /// A neighbour took a chunk since the last [`Fetch::next`].
    peer_progress: bool,
    /// Since when no peer of the view has had a chunk to give.
    view_starved_since: Option<Instant>,
    /// Chunks held that no neighbour holds.
    lone: usize,
    /// Until when the neighbours count as taking chunks (see [`FetchConfig::peers_active`]).
    peers_active_until: Option<Instant>,
    stats: FetchStats,
}

impl<P: Ord + Clone> Fetch<P> {
    /// A download of `have.len()` chunks, of which those `true` in `have` are held already.
    pub fn new(have: Vec<bool>, cfg: FetchConfig) -> Fetch<P> {
        let n = have.len();
        let wanted = (0..n as u32).filter(|&i| !have[i as usize]).collect();
        let held = have.iter().filter(|h| **h).count();
        Fetch {
            cfg,
            have,
            held,
            rarity: vec![0; n],
            wanted,
            available: BTreeSet::new(),
            peers: BTreeMap::new(),
            in_flight: HashMap::new(),
            server_allowed: false,
            server_busy: 0,
            server_resting_until: None,
            peer_progress: false,
            view_starved_since: None,
            lone: held,
            peers_active_until: None,
            stats: FetchStats::default(),
        }
    }

    /// Whether every chunk is held.
    pub fn complete(&self) -> bool {
        self.held == self.have.len()
    }

    /// Chunks held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether chunk `i` is held.
    pub fn has(&self, i: u32) -> bool {
        self.have.get(i as usize).copied().unwrap_or(false)
    }

    /// The held chunks, as a bitmap.
    pub fn have(&self) -> &[bool] {
        &self.have
    }

    /// What it has seen.
    pub fn stats(&self) -> &FetchStats {
        &self.stats
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.values().map(Vec::len).sum()
    }

    /// Whether it may ask the server (it leads its ring's forward end).
    pub fn allow_server(&mut self, allowed: bool) {
        self.server_allowed = allowed;
    }

    /// The neighbours now; returns those that are new (ask them what they hold). Requests
    /// to ones that left are given up.
    pub fn set_peers(&mut self, now: &[P]) -> Vec<P> {
        let gone: Vec<P> = self
            .peers
            .keys()
            .filter(|p| !now.contains(p))
            .cloned()
            .collect();
        for p in gone {
            if let Some(st) = self.peers.remove(&p) {
                if !st.avoided {
                    self.count_holdings(&st.holds, false);
                }
                let mine: Vec<u32> = self
                    .in_flight
                    .iter()
                    .filter(|(_, v)| v.iter().any(|(s, _)| *s == Source::Peer(p.clone())))
                    .map(|(i, _)| *i)
                    .collect();
                for i in mine {
                    self.drop_request(i, &Source::Peer(p.clone()));
                }
            }
        }
        let mut fresh = Vec::new();
        for p in now {
            if !self.peers.contains_key(p) {
                self.peers.insert(
                    p.clone(),
                    PeerState {
                        rank: 0,
                        fallback: false,
                        holds: vec![false; self.have.len()],
                        in_flight: 0,
                        avoided: false,
                        resting_until: None,
                    },
                );
                fresh.push(p.clone());
            }
        }
        for (rank, p) in now.iter().enumerate() {
            if let Some(st) = self.peers.get_mut(p) {
                st.rank = rank;
            }
        }
        fresh
    }

    /// Marks `these` of the peers as fallbacks (machines outside the view): asked only when
    /// no other peer has had anything to give for [`FetchConfig::busy_rest`].
    pub fn set_fallback(&mut self, these: &[P]) {
        for (id, st) in self.peers.iter_mut() {
            st.fallback = these.contains(id);
        }
    }

    fn count_holdings(&mut self, holds: &[bool], add: bool) {
        for (i, h) in holds.iter().enumerate() {
            if *h {
                self.bump(i as u32, add);
            }
        }
    }

    fn bump(&mut self, i: u32, add: bool) {
        let held = self.have[i as usize];
        let r = &mut self.rarity[i as usize];
        if add {
            *r = r.saturating_add(1);
            if *r == 1 && held {
                self.lone = self.lone.saturating_sub(1);
            }
            if self.wanted.contains(&i) {
                self.available.insert(i);
            }
        } else if *r > 0 {
            *r -= 1;
            if *r == 0 {
                self.available.remove(&i);
                if held {
                    self.lone += 1;
                }
            }
        }
    }

    /// `peer` holds the chunks `indices` (ignored from a peer it does not know, or avoids).
    pub fn holdings(&mut self, peer: &P, indices: impl IntoIterator<Item = u32>) {
        let n = self.have.len();
        let Some(st) = self.peers.get_mut(peer) else {
            return;
        };
        if st.avoided {
            return;
        }
        let mut added = Vec::new();
        for i in indices {
            if (i as usize) < n && !st.holds[i as usize] {
                st.holds[i as usize] = true;
                added.push(i);
            }
        }
        if !added.is_empty() {
            self.peer_progress = true;
        }
        for i in added {
            self.bump(i, true);
        }
    }

    /// `peer`'s whole bitmap (its answer when asked).
    pub fn holdings_all(&mut self, peer: &P, bitmap: &[bool]) {
        let idx = bitmap
            .iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(i, _)| i as u32);
        self.holdings(peer, idx.collect::<Vec<_>>());
    }

    fn usable(&self, p: &PeerState, i: u32, now: Instant) -> bool {
        !p.avoided
            && p.holds[i as usize]
            && p.in_flight < self.cfg.per_peer
            && p.resting_until.is_none_or(|t| now >= t)
    }

    /// The peer to ask for chunk `i`: the most preferred usable one (the nearest
    /// predecessor first: each chunk then crosses each machine's links about once).
    fn pick_peer(
        &self,
        i: u32,
        now: Instant,
        not: Option<&Source<P>>,
        fallbacks: bool,
    ) -> Option<P> {
        self.peers
            .iter()
            .filter(|(id, p)| {
                (fallbacks || !p.fallback)
                    && self.usable(p, i, now)
                    && not.is_none_or(|s| *s != Source::Peer((*id).clone()))
            })
            .min_by_key(|(_, p)| (p.rank, p.in_flight))
            .map(|(id, _)| id.clone())
    }

    fn send(&mut self, i: u32, from: Source<P>, now: Instant, out: &mut Vec<(u32, Source<P>)>) {
        match &from {
            Source::Peer(p) => {
                if let Some(st) = self.peers.get_mut(p) {
                    st.in_flight += 1;
                }
            }
            Source::Server => self.server_busy += 1,
        }
        self.wanted.remove(&i);
        self.available.remove(&i);
        self.in_flight
            .entry(i)
            .or_default()
            .push((from.clone(), now));
        out.push((i, from));
    }

    /// The requests to send now.
    pub fn next(&mut self, now: Instant) -> Vec<(u32, Source<P>)> {
        let mut out = Vec::new();
        let mut cands: Vec<u32> = self
            .available
            .iter()
            .take(self.cfg.window)
            .copied()
            .collect();
        if self.held >= self.cfg.in_order_first {
            cands.sort_by_key(|&i| (self.rarity[i as usize], i));
        }
        // Fallbacks only once the view has had nothing to give for a while.
        let view_has = cands.iter().any(|&i| {
            self.peers
                .values()
                .any(|p| !p.fallback && !p.avoided && p.holds[i as usize])
        });
        let fallbacks = if view_has {
            self.view_starved_since = None;
            false
        } else {
            let since = *self.view_starved_since.get_or_insert(now);
            now.saturating_duration_since(since) >= self.cfg.busy_rest
        };
        for i in cands {
            if let Some(p) = self.pick_peer(i, now, None, fallbacks) {
                self.send(i, Source::Peer(p), now, &mut out);
            }
        }
        if std::mem::take(&mut self.peer_progress) || self.peers_active_until.is_none() {
            self.peers_active_until = Some(now + self.cfg.peers_active);
        }
        if self.server_allowed && self.server_resting_until.is_none_or(|t| now >= t) {
            let mut room = self.cfg.server_in_flight.saturating_sub(self.server_busy);
            let peers_taking =
                !self.peers.is_empty() && self.peers_active_until.is_some_and(|t| now < t);
            if peers_taking {
                room = room.min(
                    self.cfg
                        .server_lead
                        .saturating_sub(self.lone + self.server_busy),
                );
            }
            let from_server: Vec<u32> = self
                .wanted
                .iter()
                .take(self.cfg.window)
                .filter(|&&i| self.rarity[i as usize] == 0)
                .take(room)
                .copied()
                .collect();
            for i in from_server {
                self.send(i, Source::Server, now, &mut out);
            }
        }
        let left = self.have.len() - self.held;
        if self.wanted.is_empty() && left <= self.cfg.endgame {
            let mut lone: Vec<(u32, Source<P>)> = self
                .in_flight
                .iter()
                .filter(|(_, v)| v.len() == 1)
                .map(|(i, v)| (*i, v[0].0.clone()))
                .collect();
            lone.sort();
            for (i, first) in lone {
                if let Some(p) = self.pick_peer(i, now, Some(&first), true) {
                    self.send(i, Source::Peer(p), now, &mut out);
                }
            }
        }
        out
    }

    /// Removes one request for `i` from `from`; puts `i` back among the wanted if nothing
    /// else is in flight for it and it is still lacked.
    fn drop_request(&mut self, i: u32, from: &Source<P>) -> bool {
        let Some(v) = self.in_flight.get_mut(&i) else {
            return false;
        };
        let Some(at) = v.iter().position(|(s, _)| s == from) else {
            return false;
        };
        v.swap_remove(at);
        if v.is_empty() {
            self.in_flight.remove(&i);
        }
        match from {
            Source::Peer(p) => {
                if let Some(st) = self.peers.get_mut(p) {
                    st.in_flight = st.in_flight.saturating_sub(1);
                }
            }
            Source::Server => self.server_busy = self.server_busy.saturating_sub(1),
        }
        if !self.have[i as usize] && !self.in_flight.contains_key(&i) {
            self.wanted.insert(i);
            if self.rarity[i as usize] > 0 {
                self.available.insert(i);
            }
        }
        true
    }

    /// A request for chunk `i` from `from` ended with `outcome`. `None` if there was no
    /// such request (it was given up, or its peer left).
    pub fn done(
        &mut self,
        i: u32,
        from: &Source<P>,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Arrival> {
        if (i as usize) >= self.have.len() {
            return None;
        }
        let asked = self.drop_request(i, from);
        match outcome {
            Outcome::Good => {
                if self.have[i as usize] {
                    self.stats.duplicates += 1;
                    return Some(Arrival::Duplicate);
                }
                if !asked {
                    return None;
                }
                self.have[i as usize] = true;
                self.held += 1;
                if self.rarity[i as usize] == 0 {
                    self.lone += 1;
                }
                self.wanted.remove(&i);
                self.available.remove(&i);
                match from {
                    Source::Peer(_) => self.stats.from_peers += 1,
                    Source::Server => self.stats.from_server += 1,
                }
                return Some(Arrival::New);
            }
            Outcome::Corrupt => {
                self.stats.corrupt += 1;
                if let Source::Peer(p) = from
                    && let Some(st) = self.peers.get_mut(p)
                    && !st.avoided
                {
                    st.avoided = true;
                    let holds = std::mem::take(&mut st.holds);
                    self.count_holdings(&holds, false);
                    if let Some(st) = self.peers.get_mut(p) {
                        st.holds = vec![false; holds.len()];
                    }
                }
            }
            Outcome::Busy => {
                self.stats.busy += 1;
                if let Source::Peer(p) = from
                    && let Some(st) = self.peers.get_mut(p)
                {
                    st.resting_until = Some(now + self.cfg.busy_rest);
                }
            }
            Outcome::Missing => {
                if let Source::Peer(p) = from
                    && let Some(st) = self.peers.get_mut(p)
                    && st.holds[i as usize]
                {
                    st.holds[i as usize] = false;
                    let avoided = st.avoided;
                    if !avoided {
                        self.bump(i, false);
                    }
                }
            }
            Outcome::Failed => {
                // The source rests a moment too: a request that fails at once (no link)
                // is not sent again in a loop.
                self.stats.failed += 1;
                match from {
                    Source::Server => {
                        self.stats.server_retries += 1;
                        self.server_resting_until = Some(now + self.cfg.busy_rest);
                    }
                    Source::Peer(p) => {
                        if let Some(st) = self.peers.get_mut(p) {
                            st.resting_until = Some(now + self.cfg.busy_rest);
                        }
                    }
                }
            }
        }
        None
    }

    /// Chunk `i` is held without having been asked for (another chunk of the package with
    /// the same bytes came). A request for it still in flight ends as a duplicate.
    pub fn mark_held(&mut self, i: u32) {
        if (i as usize) < self.have.len() && !self.have[i as usize] {
            self.have[i as usize] = true;
            self.held += 1;
            if self.rarity[i as usize] == 0 {
                self.lone += 1;
            }
            self.wanted.remove(&i);
            self.available.remove(&i);
        }
    }

    /// Gives up requests older than the timeout (they count as failed).
    pub fn expire(&mut self, now: Instant) {
        let old: Vec<(u32, Source<P>)> = self
            .in_flight
            .iter()
            .flat_map(|(i, v)| {
                v.iter()
                    .filter(|(s, at)| {
                        let limit = match s {
                            Source::Server => self.cfg.server_timeout,
                            Source::Peer(_) => self.cfg.timeout,
                        };
                        now.saturating_duration_since(*at) >= limit
                    })
                    .map(|(s, _)| (*i, s.clone()))
            })
            .collect();
        for (i, s) in old {
            self.done(i, &s, Outcome::Failed, now);
        }
    }

    /// Whether `peer` is avoided (it sent a bad chunk).
    pub fn avoids(&self, peer: &P) -> bool {
        self.peers.get(peer).is_some_and(|p| p.avoided)
    }
}
