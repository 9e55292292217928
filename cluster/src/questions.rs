//! The server's questions: their records, fan-out to each ring's forward leader, merging of
//! the answers that come back (once per machine), late answers, and hand-off of open
//! questions to machines that missed them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use rollcall_runtime::NodeId;
use rollcall_runtime::signing::{Purpose, ServerSigner, Stamp};
use serde::{Deserialize, Serialize};

use crate::proto::{Handoff, IdList, MEMBER, MemberRequest, NodeAnswer, Partial, QuestionEnvelope};

/// The expected machines come from the server's own records: a fast hash will do.
pub(crate) type FastIds = std::hash::BuildHasherDefault<rustc_hash::FxHasher>;

/// The machines a question expects answers from, with their host names.
pub type Expected = HashMap<NodeId, CompactString, FastIds>;

/// Live machines as a question is asked: (machine, host name).
pub type Live = Vec<(NodeId, CompactString)>;

/// A question as the server keeps it.
#[derive(Debug, Clone)]
struct Record {
    text: String,
    columns: Vec<String>,
    body: Vec<u8>,
    /// Issue time and expiry, as signed.
    stamp: Stamp,
    /// The server's signature over the id, the stamp and the body.
    signature: Vec<u8>,
    asked_at: Instant,
    expires_at: Instant,
    /// Live machines when it was asked, with their host names (shared with the questions
    /// before it while the fleet stays the same).
    expected: Arc<Expected>,
    /// Each machine that answered, once, with the index of its answer in `distinct`. Keyed
    /// with the default (keyed) hash: these ids are whatever the machines down a chain wrote.
    answers: HashMap<NodeId, u32>,
    /// Distinct answers (most machines share a few).
    distinct: Vec<NodeAnswer>,
    index: HashMap<NodeAnswer, u32>,
    /// Chains whose answers did not verify: (the member asked, what was found).
    flagged: Vec<(NodeId, String)>,
    /// Answers from machines that had already answered. Always empty: only the deliberately
    /// broken `broken-dedup` build keeps (and counts) them.
    repeats: Vec<u32>,
    /// The fan-out to the rings has finished (machines missing now missed it).
    fanned_out: bool,
    /// Every machine expected has answered (counted once in [`QuestionCounts`]).
    complete: bool,
}

impl Record {
    fn intern(&mut self, answer: &NodeAnswer) -> u32 {
        if let Some(i) = self.index.get(answer) {
            return *i;
        }
        let i = self.distinct.len() as u32;
        self.distinct.push(answer.clone());
        self.index.insert(answer.clone(), i);
        i
    }

    /// Counts `node`'s answer, unless it has answered already.
    fn add_indexed(&mut self, node: &str, i: u32) {
        // Looked up by `&str` first: no allocation for a machine already counted.
        let known = self.answers.contains_key(node);
        if known {
            if cfg!(feature = "broken-dedup") {
                self.repeats.push(i);
            }
            return;
        }
        self.answers.insert(NodeId::new(node), i);
    }

    fn add(&mut self, node: &str, answer: &NodeAnswer) {
        let i = self.intern(answer);
        self.add_indexed(node, i);
    }

    fn has(&self, node: &NodeId) -> bool {
        self.answers.contains_key(node)
    }

    fn answered(&self) -> usize {
        self.answers.len() + self.repeats.len()
    }

    /// Whether this question just reached every expected machine (true once). The full
    /// check runs only once there are as many answers as machines expected.
    fn just_completed(&mut self) -> bool {
        if self.complete || self.answers.len() < self.expected.len() {
            return false;
        }
        self.complete = self.expected.keys().all(|n| self.answers.contains_key(n));
        self.complete
    }
}

/// Upper bounds of the time-to-every-answer histogram, in seconds.
pub const TO_FULL_BOUNDS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// What the server's questions have come to since it started (for its metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuestionCounts {
    /// Questions asked (a question asked again after a restart counts again).
    pub asked: u64,
    /// Answers counted (each machine once per question).
    pub answers: u64,
    /// Questions every expected machine answered.
    pub complete: u64,
    /// Of those, how many took at most each of [`TO_FULL_BOUNDS`] (not cumulative; the
    /// last slot: longer).
    pub to_full: [u64; TO_FULL_BOUNDS.len() + 1],
    /// Their times added up, in seconds.
    pub to_full_sum_s: f64,
}

impl QuestionCounts {
    fn observe_full(&mut self, took: std::time::Duration) {
        let s = took.as_secs_f64();
        let slot = TO_FULL_BOUNDS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(TO_FULL_BOUNDS.len());
        self.to_full[slot] += 1;
        self.to_full_sum_s += s;
        self.complete += 1;
    }
}

/// What merging a chain's answers found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Answers for machines outside the chain (not counted).
    pub outside: usize,
    /// Answers in groups whose tags did not verify (not counted).
    pub tampered: usize,
}

/// Distinct rows and how many machines gave each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCount {
    /// The cells.
    pub cells: Vec<String>,
    /// Machines that gave this row.
    pub count: u64,
}

/// Where a question stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The question's id.
    pub id: u64,
    /// Its text.
    pub text: String,
    /// Column headings (the selected sensors).
    pub columns: Vec<String>,
    /// Machines that answered.
    pub answered: usize,
    /// Machines expected to (live at ask time, plus any that answered since).
    pub expected: usize,
    /// Of those that answered, how many matched the filter.
    pub matched: u64,
    /// Distinct rows, most common first (equal counts in natural order of their cells). A
    /// machine is counted once in each distinct row it gave, so with a multi-valued sensor
    /// the counts add up to more than `matched`.
    pub rows: Vec<RowCount>,
    /// Expected machines that have not answered: (id, host name).
    pub not_answered: Vec<(NodeId, String)>,
    /// Sensor trouble: (machine, what).
    pub problems: Vec<(NodeId, String)>,
    /// Milliseconds since it was asked.
    pub elapsed_ms: u64,
    /// Milliseconds until it expires (0 once expired).
    pub expires_in_ms: u64,
    /// The fan-out has finished (late answers may still come until expiry).
    pub fanned_out: bool,
    /// Where the lists were cut to fit one reply (all zero: nothing was cut).
    #[serde(default)]
    pub cut: Cut,
}

/// How long each of a [`Progress`]'s lists was before it was cut to fit one reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// The first row in this reply (rows come in pages).
    pub rows_from: usize,
    /// Distinct rows in all (0: not cut).
    pub rows_total: usize,
    /// Machines not answered in all (0: not cut).
    pub not_answered_total: usize,
    /// Problems in all (0: not cut).
    pub problems_total: usize,
}

/// Bytes of rows one progress reply carries at most (the frame limit is 1 MiB).
const ROW_BYTES_PER_REPLY: usize = 384 * 1024;
/// Bytes of the not-answered list, and of the problems, one reply carries at most.
const LIST_BYTES_PER_REPLY: usize = 64 * 1024;

impl Progress {
    /// This progress as one reply can carry it, whatever the fleet's size: the rows from
    /// `rows_from` on within a budget, and the first machines not answered and problems
    /// within theirs; `cut` says what the whole lists hold.
    pub fn page(mut self, rows_from: usize) -> Progress {
        fn keep<T>(
            list: &mut Vec<T>,
            from: usize,
            budget: usize,
            size: impl Fn(&T) -> usize,
        ) -> usize {
            let total = list.len();
            let from = from.min(total);
            let mut used = 0;
            let n = list[from..]
                .iter()
                .take_while(|x| {
                    used += size(x) + 8;
                    used <= budget
                })
                .count()
                .max(usize::from(from < total));
            list.drain(from + n..);
            list.drain(..from);
            total
        }
        let rows_total = keep(&mut self.rows, rows_from, ROW_BYTES_PER_REPLY, |r| {
            r.cells.iter().map(|c| c.len() + 4).sum::<usize>()
        });
        let not_answered_total = keep(&mut self.not_answered, 0, LIST_BYTES_PER_REPLY, |(n, h)| {
            n.as_str().len() + h.len()
        });
        let problems_total = keep(&mut self.problems, 0, LIST_BYTES_PER_REPLY, |(n, w)| {
            n.as_str().len() + w.len()
        });
        let cut_if = |total: usize, kept: usize| if kept < total { total } else { 0 };
        self.cut = Cut {
            rows_from,
            rows_total: if rows_from > 0 {
                rows_total
            } else {
                cut_if(rows_total, self.rows.len())
            },
            not_answered_total: cut_if(not_answered_total, self.not_answered.len()),
            problems_total: cut_if(problems_total, self.problems.len()),
        };
        self
    }
}

/// A question in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionSummary {
    /// Id.
    pub id: u64,
    /// Text.
    pub text: String,
    /// Answered so far.
    pub answered: usize,
    /// Expected.
    pub expected: usize,
    /// Still open.
    pub open: bool,
}

/// Orders rows cell by cell, numbers by value and other text as text (so `9` comes before
/// `10`, and `2 GiB` is not compared with `10 GiB` letter by letter).
pub fn natural_cells(a: &[String], b: &[String]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| natural(x, y))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// Compares two cells: numerically when both are numbers, else as text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

/// Every question the server keeps (the newest `max_kept`).
#[derive(Debug)]
pub struct QuestionStore {
    signer: Arc<ServerSigner>,
    max_kept: usize,
    state: Mutex<(u64, BTreeMap<u64, Record>)>,
    /// The last question's live machines, as listed and as indexed: a question asked of the
    /// same fleet shares the index instead of hashing every machine again.
    roster: Mutex<Option<(Live, Arc<Expected>)>>,
    /// Since this server started.
    counts: Mutex<QuestionCounts>,
}

impl QuestionStore {
    /// A store that keeps the newest `max_kept` questions, signing each with `signer`.
    pub fn new(max_kept: usize, signer: Arc<ServerSigner>) -> QuestionStore {
        QuestionStore {
            signer,
            max_kept: max_kept.max(1),
            state: Mutex::new((0, BTreeMap::new())),
            roster: Mutex::new(None),
            counts: Mutex::new(QuestionCounts::default()),
        }
    }

    /// What the questions have come to since this server started.
    pub fn counts(&self) -> QuestionCounts {
        rollcall_runtime::sync::lock(&self.counts).clone()
    }

    /// Counts `added` answers to `r`, and its completion if they completed it.
    fn count_answers(&self, r: &mut Record, added: usize) {
        let full = r.just_completed();
        if added == 0 && !full {
            return;
        }
        let mut c = rollcall_runtime::sync::lock(&self.counts);
        c.answers += added as u64;
        if full {
            c.observe_full(tokio::time::Instant::now().into_std() - r.asked_at);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Record>)> {
        rollcall_runtime::sync::lock(&self.state)
    }

    /// Machine `node`'s answer to question `question`, tagged as that machine would.
    #[cfg(test)]
    pub(crate) fn tagged(
        &self,
        node: &NodeId,
        question: u64,
        answer: &NodeAnswer,
    ) -> crate::proto::TaggedAnswer {
        let answer = crate::proto::EncodedAnswer::new(answer);
        crate::proto::TaggedAnswer {
            tag: self
                .signer
                .answers()
                .tag(node.as_str(), question, answer.as_bytes()),
            answer,
        }
    }

    /// Adds a problem about the chain of member `who` to question `id`.
    pub fn flag(&self, id: u64, who: &NodeId, what: String) {
        if let Some(r) = self.lock().1.get_mut(&id)
            && !r.flagged.iter().any(|(w, x)| w == who && *x == what)
        {
            r.flagged.push((who.clone(), what));
        }
    }

    /// Machine `id`'s answer key, handed to it at registration.
    pub fn answer_key_for(&self, id: &NodeId) -> [u8; 16] {
        self.signer.answers().key_for(id.as_str())
    }

    /// New ids start above `last`.
    pub fn resume_ids(&self, last: u64) {
        let mut st = self.lock();
        st.0 = st.0.max(last);
    }

    /// The index of `live` (machine, host name), the last one's if it lists the same (then
    /// nothing is copied: at 10^5 machines, building the list alone took milliseconds).
    fn index<'a, I>(&self, live: I) -> Arc<Expected>
    where
        I: Iterator<Item = (&'a NodeId, &'a CompactString)> + Clone,
    {
        let mut roster = rollcall_runtime::sync::lock(&self.roster);
        let same = |last: &Live| {
            let mut now = live.clone();
            last.iter()
                .all(|(id, host)| now.next().is_some_and(|(i, h)| i == id && h == host))
                && now.next().is_none()
        };
        if let Some((last, index)) = roster.as_ref()
            && same(last)
        {
            return index.clone();
        }
        let n = live.clone().count();
        let mut list = Live::with_capacity(n);
        list.extend(live.map(|(id, host)| (id.clone(), host.clone())));
        let mut index = Expected::with_capacity_and_hasher(n, FastIds::default());
        index.extend(list.iter().cloned());
        let index = Arc::new(index);
        *roster = Some((list, index.clone()));
        index
    }

    /// Records a new question asked of `live` (machine, host name); returns its id.
    pub fn create<'a>(
        &self,
        text: String,
        columns: Vec<String>,
        body: Vec<u8>,
        ttl: Duration,
        live: impl Iterator<Item = (&'a NodeId, &'a CompactString)> + Clone,
    ) -> u64 {
        self.create_as(None, text, columns, body, ttl, live)
    }

    /// [`Questions::create`] under a given id (`None`: the next one): a question asked
    /// again after a server restart keeps its number, signed anew, so every machine answers
    /// it afresh (a member drops what it held under the same id with another signature).
    pub fn create_as<'a>(
        &self,
        id: Option<u64>,
        text: String,
        columns: Vec<String>,
        body: Vec<u8>,
        ttl: Duration,
        live: impl Iterator<Item = (&'a NodeId, &'a CompactString)> + Clone,
    ) -> u64 {
        let expected = self.index(live);
        // Most expected machines answer: room for them all at once, not rehashing as they do.
        let answers = HashMap::with_capacity(expected.len());
        let now = tokio::time::Instant::now().into_std();
        let mut st = self.lock();
        let id = match id {
            Some(id) => {
                st.0 = st.0.max(id);
                id
            }
            None => {
                st.0 += 1;
                st.0
            }
        };
        let stamp = Stamp::now_for(ttl);
        let signature = self.signer.sign(Purpose::Question, id, stamp, &body);
        st.1.insert(
            id,
            Record {
                text,
                columns,
                body,
                stamp,
                signature,
                asked_at: now,
                expires_at: now + ttl,
                expected,
                answers,
                distinct: Vec::new(),
                index: HashMap::new(),
                repeats: Vec::new(),
                flagged: Vec::new(),
                fanned_out: false,
                complete: false,
            },
        );
        rollcall_runtime::sync::lock(&self.counts).asked += 1;
        while st.1.len() > self.max_kept {
            st.1.pop_first();
        }
        id
    }

    /// The envelope to send for question `id`, with the time it has left.
    pub fn envelope(&self, id: u64) -> Option<QuestionEnvelope> {
        let now = tokio::time::Instant::now().into_std();
        let st = self.lock();
        let r = st.1.get(&id)?;
        let left = r.expires_at.checked_duration_since(now)?;
        Some(QuestionEnvelope {
            id,
            body: r.body.clone(),
            ttl_ms: left.as_millis() as u64,
            stamp: r.stamp,
            signature: r.signature.clone(),
        })
    }

    /// Merges answers that came back along a ring from `through` (the member the server
    /// asked), for the machines `in_chain` says the chain that carried them holds. A group
    /// counts only if its tag is the XOR of the tags its machines give its answer with their
    /// own keys: a group a hop changed, made up or moved machines into counts for none of
    /// them (they stay unanswered and are asked again), and the question's problems name the
    /// member whose chain brought it.
    pub fn merge(
        &self,
        id: u64,
        partial: Partial,
        through: &NodeId,
        in_chain: impl Fn(&str) -> bool,
    ) -> MergeOutcome {
        let mut out = MergeOutcome::default();
        let secret = self.signer.answers();
        // Checked before the store is locked: a tag is two hashes per machine.
        let mut verified = Vec::new();
        for (answer, who, tag) in partial.tagged_groups() {
            let mut expected = [0u8; rollcall_runtime::answer_tags::TAG_LEN];
            for node in IdList::ids(who) {
                rollcall_runtime::answer_tags::xor(&mut expected, &secret.tag(node, id, answer));
            }
            if expected == tag {
                verified.push((answer, who));
            } else {
                out.tampered += IdList::ids(who).count();
            }
        }
        if let Some(r) = self.lock().1.get_mut(&id) {
            let before = r.answers.len();
            for (answer, who) in verified {
                // Checked when the partial was decoded: this cannot fail.
                let Ok(answer) = rmp_serde::from_slice::<NodeAnswer>(answer) else {
                    continue;
                };
                let i = r.intern(&answer);
                for node in IdList::ids(who) {
                    if in_chain(node) {
                        r.add_indexed(node, i);
                    } else {
                        out.outside += 1;
                    }
                }
            }
            if out.tampered > 0 {
                r.flagged.push((
                    through.clone(),
                    format!(
                        "the answers of {} machines through the chain from this member did not verify (changed on the way); not counted, those machines are asked again",
                        out.tampered
                    ),
                ));
            }
            let added = r.answers.len() - before;
            self.count_answers(r, added);
        }
        out
    }

    /// A late answer from `node`, accepted until the question expires.
    pub fn late_answer(&self, id: u64, node: NodeId, answer: NodeAnswer) -> bool {
        let now = tokio::time::Instant::now().into_std();
        let mut st = self.lock();
        match st.1.get_mut(&id) {
            Some(r) if now < r.expires_at => {
                let before = r.answers.len();
                r.add(&node.0, &answer);
                let added = r.answers.len() - before;
                self.count_answers(r, added);
                true
            }
            _ => false,
        }
    }

    /// The fan-out of `id` is over.
    pub fn fanned_out(&self, id: u64) {
        if let Some(r) = self.lock().1.get_mut(&id) {
            r.fanned_out = true;
        }
    }

    /// Whether every expected machine has answered `id`.
    pub fn all_answered(&self, id: u64) -> bool {
        self.lock()
            .1
            .get(&id)
            .is_some_and(|r| r.expected.keys().all(|n| r.has(n)))
    }

    /// Open questions that `node` missed (their fan-out is over and it has not answered),
    /// as hand-offs for its ring actor.
    pub fn missed(&self, node: &NodeId) -> Vec<Handoff> {
        let now = tokio::time::Instant::now().into_std();
        let st = self.lock();
        st.1.iter()
            .filter(|(_, r)| r.fanned_out && now < r.expires_at && !r.has(node))
            .filter_map(|(id, r)| {
                let env = QuestionEnvelope {
                    id: *id,
                    body: r.body.clone(),
                    ttl_ms: r.expires_at.duration_since(now).as_millis() as u64,
                    stamp: r.stamp,
                    signature: r.signature.clone(),
                };
                let body = rollcall_runtime::wire::encode_body(&MemberRequest::Late(env)).ok()?;
                Some(Handoff {
                    to: MEMBER.to_string(),
                    body,
                })
            })
            .collect()
    }

    /// How many machines are expected to answer `id` (cheap: no progress report is built).
    pub fn expected(&self, id: u64) -> Option<usize> {
        self.lock().1.get(&id).map(|r| r.expected.len())
    }

    /// How many machines have answered `id` (cheap, for polling).
    pub fn answered(&self, id: u64) -> Option<usize> {
        self.lock().1.get(&id).map(Record::answered)
    }

    /// Which of `nodes` have answered `id`.
    pub fn have_answered<'a>(&self, id: u64, nodes: impl Iterator<Item = &'a NodeId>) -> Vec<bool> {
        let st = self.lock();
        let r = st.1.get(&id);
        nodes.map(|n| r.is_some_and(|r| r.has(n))).collect()
    }

    /// The machines that have answered `id`.
    pub fn responders(&self, id: u64) -> Option<Vec<NodeId>> {
        self.lock().1.get(&id).map(|r| {
            let mut who: Vec<NodeId> = r.answers.keys().cloned().collect();
            who.sort();
            who
        })
    }

    /// The answers of `id` by machine: for each distinct answer, its rows and the machines
    /// that gave it (`None` while the question is unknown).
    pub fn answers_by_machine(&self, id: u64) -> Option<Vec<(NodeAnswer, Vec<NodeId>)>> {
        let st = self.lock();
        let r = st.1.get(&id)?;
        let mut groups: Vec<(NodeAnswer, Vec<NodeId>)> =
            r.distinct.iter().map(|a| (a.clone(), Vec::new())).collect();
        for (node, &i) in &r.answers {
            groups[i as usize].1.push(node.clone());
        }
        groups.retain(|(_, who)| !who.is_empty());
        Some(groups)
    }

    /// Closes question `id` now: it is handed to no returning machine and takes no late
    /// answer (members that hold it keep it until its signed expiry).
    pub fn close(&self, id: u64) {
        let now = tokio::time::Instant::now().into_std();
        if let Some(r) = self.lock().1.get_mut(&id) {
            r.expires_at = r.expires_at.min(now);
        }
    }

    /// Whether `id`'s fan-out is over and it is still open (late answers may come).
    pub fn is_open(&self, id: u64) -> Option<(bool, bool)> {
        let now = tokio::time::Instant::now().into_std();
        let st = self.lock();
        st.1.get(&id).map(|r| (r.fanned_out, now < r.expires_at))
    }

    /// Where question `id` stands.
    pub fn progress(&self, id: u64) -> Option<Progress> {
        let now = tokio::time::Instant::now().into_std();
        let st = self.lock();
        let r = st.1.get(&id)?;
        let mut per_answer = vec![0u64; r.distinct.len()];
        let mut problems = Vec::new();
        for (node, &i) in &r.answers {
            per_answer[i as usize] += 1;
            let a = &r.distinct[i as usize];
            problems.extend(a.problems.iter().map(|p| (node.clone(), p.clone())));
        }
        for &i in &r.repeats {
            per_answer[i as usize] += 1;
        }
        // Each machine counts once for every distinct row it gave (a machine with vim and
        // curl counts under both); answers that differ only in their problems share rows.
        let mut counts: BTreeMap<&Vec<String>, u64> = BTreeMap::new();
        let mut matched = 0u64;
        for (a, n) in r.distinct.iter().zip(per_answer) {
            if let Some(rows) = &a.rows
                && n > 0
            {
                matched += n;
                let mut seen: Vec<&Vec<String>> = Vec::with_capacity(rows.len());
                for row in rows {
                    if !seen.contains(&row) {
                        seen.push(row);
                        *counts.entry(row).or_default() += n;
                    }
                }
            }
        }
        let mut rows: Vec<RowCount> = counts
            .into_iter()
            .map(|(cells, count)| RowCount {
                cells: cells.clone(),
                count,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| natural_cells(&a.cells, &b.cells))
        });
        // By machine; each machine's problems in sensor order.
        problems.sort_by(|a, b| a.0.cmp(&b.0));
        problems.extend(r.flagged.iter().cloned());
        // Expected: the machines live at ask time, and any that answered since.
        let outside = r
            .answers
            .keys()
            .filter(|n| !r.expected.contains_key(*n))
            .count();
        let expected = r.expected.len() + outside;
        // Once every expected machine has answered (as many answers from expected machines
        // as there are expected), nobody is missing: no machine is looked up. Each lookup
        // hashes an id with the keyed hash, and a finished question's report is built more
        // than once (the search box learns from it, the desk saves it).
        let mut not_answered: Vec<(NodeId, String)> =
            if r.answers.len() - outside == r.expected.len() {
                Vec::new()
            } else {
                r.expected
                    .iter()
                    .filter(|(n, _)| !r.has(n))
                    .map(|(n, h)| (n.clone(), h.to_string()))
                    .collect()
            };
        not_answered.sort();
        Some(Progress {
            cut: Cut::default(),
            id,
            text: r.text.clone(),
            columns: r.columns.clone(),
            answered: r.answered(),
            expected,
            matched,
            rows,
            not_answered,
            problems,
            elapsed_ms: now.saturating_duration_since(r.asked_at).as_millis() as u64,
            expires_in_ms: r.expires_at.saturating_duration_since(now).as_millis() as u64,
            fanned_out: r.fanned_out,
        })
    }

    /// Every kept question, newest first.
    pub fn list(&self) -> Vec<QuestionSummary> {
        let now = tokio::time::Instant::now().into_std();
        let st = self.lock();
        st.1.iter()
            .rev()
            .map(|(id, r)| QuestionSummary {
                id: *id,
                text: r.text.clone(),
                answered: r.answered(),
                expected: r.expected.len(),
                open: now < r.expires_at,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::EncodedAnswer;

    fn answer(os: &str, problems: &[&str]) -> NodeAnswer {
        NodeAnswer {
            rows: Some(vec![vec!["linux".into(), os.into()]]),
            problems: problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn each_machine_counts_once_whatever_route_its_answers_took() {
        let store = QuestionStore::new(
            4,
            std::sync::Arc::new(rollcall_runtime::signing::ServerSigner::generate().expect("key")),
        );
        let expected: Live = ["a", "b", "c", "d"]
            .iter()
            .map(|n| (NodeId::new(*n), format!("host-{n}").into()))
            .collect();
        let id = store.create(
            "q".into(),
            vec!["os".into(), "version".into()],
            vec![],
            Duration::from_secs(60),
            expected.iter().map(|(id, host)| (id, host)),
        );
        let mut p = Partial::default();
        p.add(
            &NodeId::new("a"),
            &store.tagged(&NodeId::new("a"), id, &answer("6.1", &[])),
        );
        p.add(
            &NodeId::new("b"),
            &store.tagged(
                &NodeId::new("b"),
                id,
                &answer("6.1", &["uptime: timed out"]),
            ),
        );
        p.add(
            &NodeId::new("a"),
            &store.tagged(&NodeId::new("a"), id, &answer("6.1", &[])),
        );
        store.merge(id, p.clone(), &NodeId::new("a"), |_| true);
        store.merge(id, p, &NodeId::new("a"), |_| true);
        // A member that lists machines outside its chain (or that do not exist) gets none
        // of them counted.
        let mut forged = Partial::default();
        for n in ["d", "ghost-1", "ghost-2"] {
            forged.add(
                &NodeId::new(n),
                &store.tagged(&NodeId::new(n), id, &answer("FORGED", &[])),
            );
        }
        let m = store.merge(id, forged, &NodeId::new("a"), |n| n == "a" || n == "b");
        assert_eq!((m.outside, m.tampered), (3, 0));
        // A hop that changes an answer, or puts a machine into another's group, breaks the
        // group's tag: none of it counts, and the chain is named.
        let mut changed = Partial::default();
        changed.add(
            &NodeId::new("d"),
            &crate::proto::TaggedAnswer {
                answer: EncodedAnswer::new(&answer("FORGED", &[])),
                tag: store.tagged(&NodeId::new("d"), id, &answer("6.8", &[])).tag,
            },
        );
        changed.add(
            &NodeId::new("c"),
            &EncodedAnswer::new(&answer("FORGED", &[])).into(),
        );
        let m = store.merge(id, changed, &NodeId::new("b"), |_| true);
        assert_eq!((m.outside, m.tampered), (0, 2));
        assert!(store.late_answer(id, NodeId("c".into()), answer("6.8", &[])));
        assert!(store.late_answer(id, NodeId("c".into()), answer("6.8", &[])));
        let pr = store.progress(id).expect("kept");
        assert_eq!(pr.answered, 3);
        assert_eq!(pr.expected, 4);
        assert_eq!(pr.matched, 3);
        let rows: Vec<(String, u64)> = pr
            .rows
            .iter()
            .map(|r| (r.cells[1].clone(), r.count))
            .collect();
        assert_eq!(rows, [("6.1".to_string(), 2), ("6.8".to_string(), 1)]);
        assert_eq!(
            pr.problems,
            [
                (NodeId("b".into()), "uptime: timed out".to_string()),
                (
                    NodeId("b".into()),
                    "the answers of 2 machines through the chain from this member did not verify (changed on the way); not counted, those machines are asked again".to_string()
                )
            ]
        );
        assert_eq!(
            pr.not_answered,
            [(NodeId("d".into()), "host-d".to_string())]
        );
    }

    #[test]
    fn a_machine_counts_once_in_each_distinct_row_it_gives_and_equal_counts_sort_naturally() {
        let store = QuestionStore::new(
            4,
            std::sync::Arc::new(rollcall_runtime::signing::ServerSigner::generate().expect("key")),
        );
        let fleet: Live = ["a", "b", "c", "d"]
            .iter()
            .map(|n| (NodeId::new(*n), format!("host-{n}").into()))
            .collect();
        let id = store.create(
            "Get Installed Applications".into(),
            vec!["Installed Applications".into()],
            vec![],
            Duration::from_secs(60),
            fleet.iter().map(|(id, host)| (id, host)),
        );
        let apps = |names: &[&str]| NodeAnswer {
            rows: Some(names.iter().map(|n| vec![n.to_string()]).collect()),
            problems: vec![],
        };
        let mut p = Partial::default();
        // a repeats a row in its own answer: still one count.
        p.add(
            &NodeId::new("a"),
            &store.tagged(&NodeId::new("a"), id, &apps(&["vim", "curl", "vim"])),
        );
        p.add(
            &NodeId::new("b"),
            &store.tagged(&NodeId::new("b"), id, &apps(&["curl", "10", "9"])),
        );
        p.add(
            &NodeId::new("c"),
            &store.tagged(
                &NodeId::new("c"),
                id,
                &NodeAnswer {
                    rows: None,
                    problems: vec![],
                },
            ),
        );
        p.add(
            &NodeId::new("d"),
            &store.tagged(&NodeId::new("d"), id, &apps(&["curl"])),
        );
        store.merge(id, p, &NodeId::new("a"), |_| true);
        let pr = store.progress(id).expect("kept");
        assert_eq!((pr.answered, pr.matched), (4, 3));
        let rows: Vec<(String, u64)> = pr
            .rows
            .iter()
            .map(|r| (r.cells[0].clone(), r.count))
            .collect();
        assert_eq!(
            rows,
            [
                ("curl".to_string(), 3),
                // Equal counts: numbers by value, before text.
                ("9".into(), 1),
                ("10".into(), 1),
                ("vim".into(), 1),
            ]
        );
    }

    #[test]
    fn questions_asked_of_the_same_fleet_share_its_index_and_a_changed_fleet_gets_its_own() {
        let store = QuestionStore::new(
            8,
            std::sync::Arc::new(rollcall_runtime::signing::ServerSigner::generate().expect("key")),
        );
        let fleet = |names: &[&str]| -> Live {
            names
                .iter()
                .map(|n| (NodeId::new(*n), format!("host-{n}").into()))
                .collect()
        };
        let ask = |names: &[&str]| {
            store.create(
                "q".into(),
                vec!["os".into()],
                vec![],
                Duration::from_secs(60),
                fleet(names).iter().map(|(id, host)| (id, host)),
            )
        };
        let index = |id: u64| store.lock().1.get(&id).map(|r| r.expected.clone());
        let first = ask(&["a", "b"]);
        let second = ask(&["a", "b"]);
        let (i1, i2) = (index(first).expect("kept"), index(second).expect("kept"));
        assert!(Arc::ptr_eq(&i1, &i2), "the same fleet is indexed once");
        // A machine joined, and one was renamed: each a new index; the older questions keep
        // what they were asked of.
        let third = ask(&["a", "b", "c"]);
        let fourth = ask(&["a", "c"]);
        let renamed = store.create(
            "q".into(),
            vec!["os".into()],
            vec![],
            Duration::from_secs(60),
            [
                (NodeId::new("a"), CompactString::from("host-a")),
                (NodeId::new("c"), CompactString::from("other")),
            ]
            .iter()
            .map(|(id, host)| (id, host)),
        );
        let i3 = index(third).expect("kept");
        assert!(!Arc::ptr_eq(&i1, &i3));
        assert_eq!(store.expected(first), Some(2));
        assert_eq!(store.expected(third), Some(3));
        assert_eq!(store.expected(fourth), Some(2));
        let pr = store.progress(renamed).expect("kept");
        assert_eq!(
            pr.not_answered,
            [
                (NodeId("a".into()), "host-a".to_string()),
                (NodeId("c".into()), "other".to_string())
            ]
        );
        let pr = store.progress(fourth).expect("kept");
        assert_eq!(
            pr.not_answered,
            [
                (NodeId("a".into()), "host-a".to_string()),
                (NodeId("c".into()), "host-c".to_string())
            ]
        );
    }

    #[test]
    fn a_progress_of_any_size_comes_in_pages_that_fit_a_reply_and_add_up_to_the_whole() {
        let n = 100_000;
        let whole = Progress {
            cut: Cut::default(),
            id: 1,
            text: "q".into(),
            columns: vec!["Computer Name".into()],
            answered: n,
            expected: 2 * n,
            matched: n as u64,
            rows: (0..n)
                .map(|i| RowCount {
                    cells: vec![format!("host-{i:06}.example.com")],
                    count: 1,
                })
                .collect(),
            not_answered: (0..n)
                .map(|i| (NodeId::new(format!("{i:016x}")), format!("absent-{i}")))
                .collect(),
            problems: (0..n)
                .map(|i| (NodeId::new(format!("{i:016x}")), "uptime: timed out".into()))
                .collect(),
            elapsed_ms: 1,
            expires_in_ms: 1,
            fanned_out: true,
        };
        let mut rows = Vec::new();
        let mut pages = 0;
        loop {
            let page = whole.clone().page(rows.len());
            let bytes = rollcall_runtime::wire::encode_body(&page).expect("encodes");
            assert!(bytes.len() < 900 * 1024, "a page of {} bytes", bytes.len());
            assert_eq!(page.cut.rows_from, rows.len());
            assert_eq!(page.cut.not_answered_total, n);
            assert_eq!(page.cut.problems_total, n);
            assert!(!page.not_answered.is_empty() && page.not_answered.len() < n);
            pages += 1;
            if page.rows.is_empty() {
                break;
            }
            rows.extend(page.rows);
            if rows.len() == n {
                break;
            }
        }
        assert!(pages > 1);
        assert_eq!(rows, whole.rows, "every row once, in order");
        // A small one is not cut.
        let small = Progress {
            rows: whole.rows[..3].to_vec(),
            not_answered: vec![],
            problems: vec![],
            ..whole.clone()
        }
        .page(0);
        assert_eq!(small.cut, Cut::default());
        assert_eq!(small.rows.len(), 3);
    }

    #[test]
    fn a_reply_listing_fifty_thousand_made_up_machines_counts_none_and_keeps_nothing_of_them() {
        let store = QuestionStore::new(
            4,
            std::sync::Arc::new(rollcall_runtime::signing::ServerSigner::generate().expect("key")),
        );
        let real: Live = vec![(NodeId::new("a"), "host-a".into())];
        let id = store.create(
            "q".into(),
            vec!["os".into()],
            vec![],
            Duration::from_secs(60),
            real.iter().map(|(id, host)| (id, host)),
        );
        let mut p = Partial::default();
        p.add(
            &NodeId::new("a"),
            &store.tagged(&NodeId::new("a"), id, &answer("6.1", &[])),
        );
        // Ghosts with tags the server would accept for them, and ghosts with none.
        for i in 0..25_000 {
            let ghost = NodeId::new(format!("g{i:07}"));
            p.add(&ghost, &store.tagged(&ghost, id, &answer("6.1", &[])));
            p.add(
                &NodeId::new(format!("h{i:07}")),
                &EncodedAnswer::new(&answer("FORGED", &[])).into(),
            );
        }
        let m = store.merge(id, p, &NodeId::new("a"), |n| n == "a");
        assert_eq!((m.outside, m.tampered), (25_000, 25_000));
        let pr = store.progress(id).expect("kept");
        assert_eq!((pr.answered, pr.expected), (1, 1));
        assert_eq!(pr.rows.len(), 1);
        assert_eq!(pr.rows[0].count, 1);
    }
}
