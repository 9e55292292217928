//! Messages of the ring protocol and the names of the actors that receive them.

use std::net::SocketAddr;

use compact_str::CompactString;
use rollcall_runtime::NodeId;
use rollcall_runtime::answer_tags::{TAG_LEN, Tag};
use rollcall_runtime::signing::{Purpose, ServerTrust, SignatureError, Stamp, unix_ms};
use serde::{Deserialize, Serialize};

/// The server actor that takes registrations, suspicions and leader announcements.
pub const REGISTRY: &str = "ring.registry";
/// The endpoint actor that answers probes and splices.
pub const MEMBER: &str = "ring.member";
/// The server actor that answers operators' `ring show`.
pub const RING_ADMIN: &str = "ring.admin";

/// A ring's name: its peering range, such as `127.0.1.0/24`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RingId(pub String);

impl std::fmt::Display for RingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A ring member as its peers know it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id (from its certificate).
    pub id: NodeId,
    /// Where its peers dial it.
    pub addr: SocketAddr,
}

/// What an endpoint tells the server at each registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Where peers can dial this endpoint.
    pub addr: SocketAddr,
    /// Host name.
    pub hostname: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// rollcall version.
    pub version: String,
}

/// Longest host name a registration may carry by default (a DNS name's limit).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Longest operating-system or version text a registration may carry.
pub const MAX_REGISTRATION_FIELD_BYTES: usize = 64;

impl Registration {
    /// Whether its texts are within the limits (what the server keeps for every machine, and
    /// sends in every ring view, is bounded): a host name of at most `max_hostname` bytes.
    pub fn check(&self, max_hostname: usize) -> Result<(), String> {
        if self.hostname.len() > max_hostname {
            return Err(format!(
                "a host name of {} bytes (at most {max_hostname})",
                self.hostname.len()
            ));
        }
        for (what, v) in [("os", &self.os), ("version", &self.version)] {
            if v.len() > MAX_REGISTRATION_FIELD_BYTES {
                return Err(format!(
                    "{what} of {} bytes (at most {MAX_REGISTRATION_FIELD_BYTES})",
                    v.len()
                ));
            }
        }
        Ok(())
    }
}

/// Which ends of its chain an endpoint leads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaderSides {
    /// No live member before it: it leads the forward end.
    pub forward: bool,
    /// No live member after it: it leads the backward end.
    pub backward: bool,
}

impl LeaderSides {
    /// Leads at least one end.
    pub fn any(self) -> bool {
        self.forward || self.backward
    }
}

/// Why a member suspects a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SuspectReason {
    /// Its probes were answered late (past the hop timeout).
    Slow,
    /// It could not be reached or stopped answering.
    Unreachable,
}

/// Requests to [`REGISTRY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerRequest {
    /// Register (answered with [`RegistrationReply`]).
    Register(Registration),
    /// Report a suspect neighbour (answered with `()`).
    Suspect {
        /// Who.
        suspect: NodeId,
        /// Why.
        reason: SuspectReason,
    },
    /// Announce which ends the sender leads, on its persistent server link (answered with `()`).
    Leader(LeaderSides),
    /// A late answer to a question (answered with `()`).
    Answer {
        /// The question.
        id: u64,
        /// The sender's answer.
        answer: NodeAnswer,
    },
}

/// An item an endpoint missed while away, handed over when it registers again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The local actor it is for.
    pub to: String,
    /// Its encoded message.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The server's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationReply {
    /// The endpoint's ring (its peering range), or `None` in an isolated range.
    pub ring: Option<RingId>,
    /// Every live member of the ring, the endpoint included, in ring order.
    pub members: Vec<MemberInfo>,
    /// What the endpoint missed while away.
    pub handoffs: Vec<Handoff>,
    /// The endpoint's answer key (16 bytes; see `rollcall_runtime::answer_tags`): it tags
    /// its answers with it so that no hop can change them unnoticed.
    #[serde(default, with = "serde_bytes")]
    pub answer_key: Vec<u8>,
    /// The server restarted moments ago (within the time after which it holds a silent
    /// member offline) and may not list every member yet: keep those it does not list.
    #[serde(default)]
    pub warming: bool,
}

/// Requests to [`MEMBER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRequest {
    /// Are you there? (answered with `()`; the server's direct probe of a suspect)
    Probe,
    /// Are you there, and who follows you? A ring neighbour's probe, answered with the
    /// responder's next successors (`Vec<MemberInfo>`), so successor lists spread along the
    /// chain between registrations.
    Ping,
    /// I am your new neighbour (answered with your view, `Vec<MemberInfo>`).
    Hello(MemberInfo),
    /// Answer this question, with everyone after you (answered with [`Partial`]).
    Ask(QuestionEnvelope),
    /// A question you missed while away: answer it to the server directly (answered with
    /// `()`; arrives as a hand-off at registration).
    Late(QuestionEnvelope),
}

/// A question as it travels along rings. Its body is opaque here (the question language lives
/// in `rollcall-actors`); only its id and time to live matter to the flow. The server signs the
/// id, the stamp and the body ([`Purpose::Question`]); every hop checks the signature before it
/// reads or forwards the question ([`QuestionEnvelope::verify`]).
///
/// [`Purpose::Question`]: rollcall_runtime::signing::Purpose::Question
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionEnvelope {
    /// The server's id for it.
    pub id: u64,
    /// The encoded question.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// How long it stays open from when this hop received it (a hop's own clock; not signed,
    /// and bounded by the signed expiry).
    pub ttl_ms: u64,
    /// When the server issued it and until when it may be answered.
    pub stamp: Stamp,
    /// The server's signature over the id, the stamp and the body.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl QuestionEnvelope {
    /// Checks the server's signature and the stamp against this machine's clock.
    pub fn verify(&self, trust: &ServerTrust) -> Result<(), SignatureError> {
        trust.verify(
            Purpose::Question,
            self.id,
            self.stamp,
            &self.body,
            &self.signature,
            unix_ms(),
        )
    }
}

/// One machine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAnswer {
    /// Its rows, or `None` when it did not match the question's filter. A machine gives one
    /// row per value of a multi-valued sensor (per combination, when several are selected),
    /// and is counted once for each distinct row it gives.
    pub rows: Option<Vec<Vec<String>>>,
    /// Sensors that failed or blew their budget, as text.
    pub problems: Vec<String>,
}

/// One machine's answer as it travels in a chain's [`Partial`]: its rmp-serde encoding
/// (checked when a partial is decoded). A hop copies one buffer per distinct answer and compares
/// answers as bytes, where a decoded row would cost an allocation per cell at every hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncodedAnswer(Vec<u8>);

impl EncodedAnswer {
    /// Encodes `answer`.
    pub fn new(answer: &NodeAnswer) -> EncodedAnswer {
        // Room for a typical row at once, not grown as it is written.
        // (Plain loops: an iterator flattened twice cost a few hundred instructions a
        // machine, on every machine of every question.)
        let mut cells = 0;
        if let Some(rows) = &answer.rows {
            for row in rows {
                for c in row {
                    cells += c.len() + 2;
                }
            }
        }
        let mut out = Vec::with_capacity(16 + cells);
        // A struct of strings always encodes.
        let _ = rmp_serde::encode::write(&mut out, answer);
        EncodedAnswer(out)
    }

    /// From bytes already checked to be one encoded answer (a decoded partial's group).
    #[cfg(feature = "hostile")]
    pub(crate) fn from_bytes(b: &[u8]) -> EncodedAnswer {
        EncodedAnswer(b.to_vec())
    }

    /// The encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The answer (checked when this was decoded or built).
    pub fn decode(&self) -> Result<NodeAnswer, crate::error::ProtoError> {
        rmp_serde::from_slice(&self.0).map_err(|e| crate::error::ProtoError::Answer(e.to_string()))
    }

    /// Checks that `bytes` are one encoded [`NodeAnswer`], without building it.
    fn check(bytes: &[u8]) -> Result<(), rmp_serde::decode::Error> {
        if EncodedAnswer::plain(bytes) {
            return Ok(());
        }
        /// A sequence of rows, each a sequence of strings, read in place and dropped.
        struct Rows;
        impl<'de> Deserialize<'de> for Rows {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rows, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Rows;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a sequence of rows")
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut s: A,
                    ) -> Result<Rows, A::Error> {
                        while s.next_element::<Strs>()?.is_some() {}
                        Ok(Rows)
                    }
                }
                d.deserialize_seq(V)
            }
        }
        /// A sequence of strings, read in place and dropped.
        struct Strs;
        impl<'de> Deserialize<'de> for Strs {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strs, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Strs;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a sequence of strings")
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        mut s: A,
                    ) -> Result<Strs, A::Error> {
                        while s.next_element::<&'de str>()?.is_some() {}
                        Ok(Strs)
                    }
                }
                d.deserialize_seq(V)
            }
        }
        #[derive(Deserialize)]
        struct Shape {
            #[serde(rename = "rows")]
            _rows: Option<Rows>,
            #[serde(rename = "problems")]
            _problems: Strs,
        }
        rmp_serde::from_slice::<Shape>(bytes).map(|_| ())
    }

    /// Whether `bytes` are an answer as [`EncodedAnswer::new`] writes it, read by hand: rows
    /// (nil, or arrays of strings) and problems (strings), each string UTF-8, nothing after. Every
    /// hop checks each distinct answer it is given; what this does not recognise goes to
    /// the full decoder, which has the last word (it accepts other encodings of the same
    /// answer, and says what is wrong).
    fn plain(bytes: &[u8]) -> bool {
        fn strs(rd: &mut &[u8]) -> Option<()> {
            let n = rmp::decode::read_array_len(rd).ok()?;
            for _ in 0..n {
                let len = rmp::decode::read_str_len(rd).ok()? as usize;
                let s = rd.get(..len)?;
                if !s.is_ascii() && std::str::from_utf8(s).is_err() {
                    return None;
                }
                *rd = &rd[len..];
            }
            Some(())
        }
        let mut rd = bytes;
        let mut read = || {
            if rmp::decode::read_array_len(&mut rd).ok()? != 2 {
                return None;
            }
            match rd.split_first() {
                Some((&0xc0, rest)) => rd = rest,
                _ => {
                    let rows = rmp::decode::read_array_len(&mut rd).ok()?;
                    for _ in 0..rows {
                        strs(&mut rd)?;
                    }
                }
            }
            strs(&mut rd)?;
            rd.is_empty().then_some(())
        };
        read().is_some()
    }
}

/// One id and the bytes after it, as `IdList::split` cuts them.
type Split<'a> = (&'a [u8], &'a [u8]);

/// Machine ids packed into one byte string: each is a two-byte length and its UTF-8 bytes.
/// A chain's answer carries one such list per distinct answer, so a hop decodes and encodes
/// a few allocations, not several per machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdList {
    #[serde(with = "serde_bytes")]
    packed: Vec<u8>,
}

impl IdList {
    /// Appends `id` (node ids are short hex digests; one over 64 KiB is cut there).
    pub fn push(&mut self, id: &NodeId) {
        let id = IdList::cut(id);
        self.packed
            .extend_from_slice(&(id.len() as u16).to_be_bytes());
        self.packed.extend_from_slice(id.as_bytes());
    }

    /// `id` as listed: whole, or cut at 64 KiB (on a character boundary).
    fn cut(id: &NodeId) -> &str {
        let mut end = id.0.len().min(u16::MAX as usize);
        while !id.0.is_char_boundary(end) {
            end -= 1;
        }
        &id.0[..end]
    }

    fn split(rest: &[u8]) -> Option<Result<Split<'_>, &'static str>> {
        if rest.is_empty() {
            return None;
        }
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return Some(Err("an id list ends inside a length"));
        };
        let len = u16::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Some(Err("an id list ends inside an id"));
        }
        Some(Ok(tail.split_at(len)))
    }

    /// The ids, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        IdList::ids(&self.packed)
    }

    /// The ids in a packed list (checked: see [`IdList::check`]).
    pub fn ids(packed: &[u8]) -> impl Iterator<Item = &str> + '_ {
        let mut rest = packed;
        std::iter::from_fn(move || {
            // Checked when decoded and built by `push`: every list holds whole UTF-8 ids.
            let (id, tail) = IdList::split(rest)?.ok()?;
            rest = tail;
            std::str::from_utf8(id).ok()
        })
    }

    /// Whether `id` is in the list.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.iter().any(|x| x == id.0)
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No ids.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// Checks that `packed` is whole ids, each UTF-8. Every hop checks the list it is given,
    /// which grows along the chain: when the whole list is ASCII (ids are hex digests; their
    /// lengths' two bytes are too, under 128), every id is, and is checked in one pass over
    /// the bytes instead of one UTF-8 decoding per id.
    fn check(packed: &[u8]) -> Result<(), &'static str> {
        let each = !packed.is_ascii();
        let mut rest = packed;
        while let Some(r) = IdList::split(rest) {
            let (id, tail) = r?;
            if each && std::str::from_utf8(id).is_err() {
                return Err("an id in an id list is not UTF-8");
            }
            rest = tail;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for IdList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<IdList, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(with = "serde_bytes")]
            packed: Vec<u8>,
        }
        let raw = Raw::deserialize(d)?;
        IdList::check(&raw.packed).map_err(serde::de::Error::custom)?;
        Ok(IdList { packed: raw.packed })
    }
}

/// Answers merged along a ring, in compact form: each distinct answer once, with the
/// machines that gave it. A machine may appear more than once (rerouted rounds); the server
/// counts each machine once.
///
/// Held as its encoding, checked when decoded: a list of groups, each a three-element array
/// of an encoded [`NodeAnswer`] (bytes), an [`IdList`] (bytes) and the XOR of the machines'
/// answer tags (16 bytes; see `rollcall_runtime::answer_tags`). A hop adds its machine by
/// copying the bytes once and folding its tag into its group's, where decoding every group
/// and encoding it again cost an allocation per group at every hop, on answers that grow
/// along the chain.
#[derive(Clone, PartialEq, Eq)]
pub struct Partial {
    raw: Vec<u8>,
}

/// Where one group of a [`Partial`] lies in its encoding.
struct GroupAt {
    answer: std::ops::Range<usize>,
    /// Where the group's id list's length header starts.
    who_header: usize,
    who: std::ops::Range<usize>,
    tag: std::ops::Range<usize>,
}

/// One machine's answer with its tag: what it adds to a [`Partial`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedAnswer {
    /// The answer.
    pub answer: EncodedAnswer,
    /// The machine's tag over it (see `rollcall_runtime::answer_tags`).
    pub tag: Tag,
}

impl From<EncodedAnswer> for TaggedAnswer {
    /// With an empty tag: a machine that has no key yet (its answer will not be counted
    /// from a chain, and it is asked again).
    fn from(answer: EncodedAnswer) -> TaggedAnswer {
        TaggedAnswer {
            answer,
            tag: [0; TAG_LEN],
        }
    }
}

impl Default for Partial {
    fn default() -> Self {
        let mut raw = Vec::with_capacity(64);
        write_array_len(&mut raw, 0);
        Partial { raw }
    }
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.groups().map(|(a, who)| {
                let a = rmp_serde::from_slice::<NodeAnswer>(a).ok();
                (a, IdList::ids(who).collect::<Vec<_>>())
            }))
            .finish()
    }
}

fn write_array_len(out: &mut Vec<u8>, n: u32) {
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(out, n);
}

fn write_bin(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let _ = rmp::encode::write_bin_len(out, len as u32);
    for p in parts {
        out.extend_from_slice(p);
    }
}

impl Partial {
    /// The groups' places, checking the shape (not the contents) as it goes.
    fn walk(raw: &[u8]) -> impl Iterator<Item = Result<GroupAt, String>> + '_ {
        let mut rd = raw;
        let at = |rd: &[u8]| raw.len() - rd.len();
        let mut left = match rmp::decode::read_array_len(&mut rd) {
            Ok(n) => Ok(n),
            Err(e) => Err(format!("not a list of answers: {e}")),
        };
        std::iter::from_fn(move || {
            let n = match &mut left {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) => {
                    let e = std::mem::take(e);
                    left = Ok(0);
                    return Some(Err(e));
                }
            };
            *n -= 1;
            let mut group = || -> Result<GroupAt, String> {
                let fields = rmp::decode::read_array_len(&mut rd).map_err(|e| e.to_string())?;
                if fields != 3 {
                    return Err(format!("a group has {fields} fields, not 3"));
                }
                let bin = |rd: &mut &[u8]| -> Result<(usize, std::ops::Range<usize>), String> {
                    let header = at(rd);
                    let len = rmp::decode::read_bin_len(rd).map_err(|e| e.to_string())? as usize;
                    if rd.len() < len {
                        return Err("a group ends early".into());
                    }
                    let start = at(rd);
                    *rd = &rd[len..];
                    Ok((header, start..start + len))
                };
                let (_, answer) = bin(&mut rd)?;
                let (who_header, who) = bin(&mut rd)?;
                let (_, tag) = bin(&mut rd)?;
                if tag.len() != TAG_LEN {
                    return Err(format!("a tag of {} bytes, not {TAG_LEN}", tag.len()));
                }
                Ok(GroupAt {
                    answer,
                    who_header,
                    who,
                    tag,
                })
            };
            match group() {
                Ok(g) => Some(Ok(g)),
                Err(e) => {
                    left = Ok(0);
                    Some(Err(format!("malformed answers: {e}")))
                }
            }
        })
    }

    /// Checks every group: an answer, then a list of ids, and nothing after the last.
    fn check(raw: &[u8]) -> Result<(), String> {
        let mut end = None;
        for g in Partial::walk(raw) {
            let g = g?;
            EncodedAnswer::check(&raw[g.answer.clone()])
                .map_err(|e| format!("not an answer: {e}"))?;
            IdList::check(&raw[g.who.clone()]).map_err(str::to_string)?;
            end = Some(g.tag.end);
        }
        let end = match end {
            Some(e) => e,
            None => {
                let mut rd = raw;
                rmp::decode::read_array_len(&mut rd).map_err(|e| e.to_string())?;
                raw.len() - rd.len()
            }
        };
        if end != raw.len() {
            return Err("bytes after the last group".into());
        }
        Ok(())
    }

    /// Each distinct answer's encoding, with the packed ids of the machines that gave it.
    pub fn groups(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.tagged_groups().map(|(a, who, _)| (a, who))
    }

    /// Like [`Partial::groups`], with each group's tag (the XOR of its machines' tags).
    pub fn tagged_groups(&self) -> impl Iterator<Item = (&[u8], &[u8], Tag)> + '_ {
        // Checked when built or decoded: every group is whole, every tag 16 bytes.
        Partial::walk(&self.raw).map_while(Result::ok).map(|g| {
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(&self.raw[g.tag]);
            (&self.raw[g.answer], &self.raw[g.who], tag)
        })
    }

    /// Adds one machine's answer and folds its tag into its group's.
    pub fn add(&mut self, id: &NodeId, tagged: &TaggedAnswer) {
        let answer = &tagged.answer;
        let id = IdList::cut(id);
        let head = (id.len() as u16).to_be_bytes();
        let entry: &[&[u8]] = &[&head, id.as_bytes()];
        let found = Partial::walk(&self.raw)
            .map_while(Result::ok)
            .find(|g| self.raw[g.answer.clone()] == answer.0[..]);
        if let Some(g) = &found {
            // The group's tag takes this machine's in.
            for (x, y) in self.raw[g.tag.clone()].iter_mut().zip(&tagged.tag) {
                *x ^= y;
            }
            // The id joins its answer's list in place when the list's header keeps its
            // length (it does until the list passes 255 bytes, then 65,535): the header is
            // rewritten and the rest moved up by the entry, within the room a decoded
            // answer is given.
            let mut header = [0u8; 5];
            let mut w = &mut header[..];
            let grown = g.who.len() + head.len() + id.len();
            let _ = rmp::encode::write_bin_len(&mut w, grown as u32);
            let header_len = 5 - w.len();
            if header_len == g.who.start - g.who_header {
                self.raw[g.who_header..g.who.start].copy_from_slice(&header[..header_len]);
                let (at, n, end) = (g.who.end, head.len() + id.len(), self.raw.len());
                self.raw.resize(end + n, 0);
                self.raw.copy_within(at..end, at + n);
                self.raw[at..at + head.len()].copy_from_slice(&head);
                self.raw[at + head.len()..at + n].copy_from_slice(id.as_bytes());
                return;
            }
        }
        let mut out = Vec::with_capacity(self.raw.len() + answer.0.len() + entry.len() + 16);
        match found {
            Some(g) => {
                // The id joins its answer's list: the list's header is written anew (it may
                // grow), the rest is copied.
                out.extend_from_slice(&self.raw[..g.who_header]);
                write_bin(&mut out, &[&self.raw[g.who.clone()], entry[0], entry[1]]);
                out.extend_from_slice(&self.raw[g.who.end..]);
            }
            None => {
                let mut rd = &self.raw[..];
                let n = rmp::decode::read_array_len(&mut rd).unwrap_or(0);
                write_array_len(&mut out, n + 1);
                out.extend_from_slice(rd);
                write_array_len(&mut out, 3);
                write_bin(&mut out, &[&answer.0]);
                write_bin(&mut out, entry);
                write_bin(&mut out, &[&tagged.tag]);
            }
        }
        self.raw = out;
    }

    /// Whether `id` answered.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.groups()
            .any(|(_, who)| IdList::ids(who).any(|x| x == id.as_str()))
    }

    /// Every (machine, encoded answer), repeats included.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.groups()
            .flat_map(|(a, who)| IdList::ids(who).map(move |id| (id, a)))
    }

    /// How many answers, repeats included.
    pub fn len(&self) -> usize {
        self.groups().map(|(_, who)| IdList::ids(who).count()).sum()
    }

    /// No answers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Serialize for Partial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Partial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Partial, D::Error> {
        /// Copies the bytes with room for the receiving hop's own machine, which it adds
        /// before passing the answer on (an id and, at most, a short group of its own).
        struct Raw;
        impl<'de> serde::de::Visitor<'de> for Raw {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a chain's answers as bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                let mut raw = Vec::with_capacity(v.len() + 64);
                raw.extend_from_slice(v);
                Ok(raw)
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        let raw = d.deserialize_bytes(Raw)?;
        Partial::check(&raw).map_err(serde::de::Error::custom)?;
        Ok(Partial { raw })
    }
}

/// Requests to [`RING_ADMIN`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Every ring, or the one named (answered with [`RingsReport`]).
    Show {
        /// A ring id such as `127.0.1.0/24`, or an address inside one.
        subnet: Option<String>,
    },
}

/// A member's health as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Registered and unsuspected.
    Ok,
    /// Answers, but late: neighbours route around it.
    Slow,
    /// Reported unreachable; not yet confirmed.
    Suspect,
    /// Evicted or gone silent.
    Offline,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Ok => "ok",
            Health::Slow => "slow",
            Health::Suspect => "suspect",
            Health::Offline => "offline",
        })
    }
}

/// One member in a ring report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Who.
    pub id: NodeId,
    /// Where.
    pub addr: SocketAddr,
    /// Host name.
    pub hostname: CompactString,
    /// Health.
    pub health: Health,
    /// Which ends it leads (by its own announcement on a live server link).
    pub leads: LeaderSides,
}

/// One ring in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingReport {
    /// The ring.
    pub ring: RingId,
    /// Members in ring order, offline ones included.
    pub members: Vec<MemberReport>,
    /// Live server links held by this ring's leaders.
    pub leader_links: usize,
    /// Members in all when `members` was left empty to keep a whole-fleet view within one
    /// reply (0: every member is listed). Ask for the ring alone to list them.
    #[serde(default)]
    pub members_total: usize,
}

/// Members a whole-fleet ring view lists at most; past that, rings are summarised (each ring
/// alone is at most a few hundred members, listed in full when asked for).
pub const MEMBERS_LISTED_MAX: usize = 2_000;

impl RingsReport {
    /// Every machine in the report (ring members, then isolated ones).
    pub fn machines(&self) -> impl Iterator<Item = &MemberReport> + Clone {
        self.rings
            .iter()
            .flat_map(|r| r.members.iter())
            .chain(self.isolated.iter())
    }

    /// The machines the server does not hold offline.
    pub fn online(&self) -> impl Iterator<Item = &MemberReport> + Clone {
        self.machines().filter(|m| m.health != Health::Offline)
    }

    /// Keeps the report within one reply: past [`MEMBERS_LISTED_MAX`] members in all, each
    /// ring keeps its count, leaders' links and first and last member, not every member;
    /// isolated machines are cut the same way.
    pub fn within_one_reply(mut self) -> RingsReport {
        let listed: usize =
            self.rings.iter().map(|r| r.members.len()).sum::<usize>() + self.isolated.len();
        if listed <= MEMBERS_LISTED_MAX {
            return self;
        }
        for r in &mut self.rings {
            let n = r.members.len();
            if n > 2 {
                r.members_total = n;
                let last = r.members.pop();
                r.members.truncate(1);
                r.members.extend(last);
            }
        }
        self.isolated_total = self.isolated.len();
        self.isolated.truncate(MEMBERS_LISTED_MAX / 2);
        self
    }
}

/// The answer to [`AdminRequest::Show`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingsReport {
    /// Rings in id order.
    pub rings: Vec<RingReport>,
    /// Endpoints registered from isolated ranges (no ring).
    pub isolated: Vec<MemberReport>,
    /// Isolated endpoints in all when `isolated` was cut (0: all listed).
    #[serde(default)]
    pub isolated_total: usize,
    /// Connections the server holds now, of every kind.
    pub server_connections: usize,
    /// Of those, leaders' ring links.
    pub ring_connections: usize,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
