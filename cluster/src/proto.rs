//! Messages of the ring protocol and the names of the actors that receive them.

use std::net::SocketAddr;

use rollcall_runtime::NodeId;
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
/// in `rollcall-actors`); only its id and time to live matter to the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionEnvelope {
    /// The server's id for it.
    pub id: u64,
    /// The encoded question.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// How long it stays open from when this hop received it.
    pub ttl_ms: u64,
}

/// One machine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAnswer {
    /// Its row, or `None` when it did not match the question's filter.
    pub row: Option<Vec<String>>,
    /// Sensors that failed or blew their budget, as text.
    pub problems: Vec<String>,
}

/// One machine's answer as it travels in a chain's [`Partial`]: its rmp-serde encoding,
/// checked to be one when decoded. A hop copies one buffer per distinct answer and compares
/// answers as bytes, where a decoded row would cost an allocation per cell at every hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct EncodedAnswer(#[serde(with = "serde_bytes")] Vec<u8>);

impl EncodedAnswer {
    /// Encodes `answer`.
    pub fn new(answer: &NodeAnswer) -> EncodedAnswer {
        // A struct of strings always encodes.
        EncodedAnswer(rmp_serde::to_vec(answer).unwrap_or_default())
    }

    /// The answer (checked when this was decoded or built).
    pub fn decode(&self) -> Result<NodeAnswer, String> {
        rmp_serde::from_slice(&self.0).map_err(|e| format!("undecodable answer: {e}"))
    }

    /// Checks that `bytes` are one encoded [`NodeAnswer`], without building it.
    fn check(bytes: &[u8]) -> Result<(), rmp_serde::decode::Error> {
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
            #[serde(rename = "row")]
            _row: Option<Strs>,
            #[serde(rename = "problems")]
            _problems: Strs,
        }
        rmp_serde::from_slice::<Shape>(bytes).map(|_| ())
    }
}

impl<'de> Deserialize<'de> for EncodedAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EncodedAnswer, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?.into_vec();
        EncodedAnswer::check(&bytes)
            .map_err(|e| serde::de::Error::custom(format!("not an answer: {e}")))?;
        Ok(EncodedAnswer(bytes))
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
        let mut end = id.0.len().min(u16::MAX as usize);
        while !id.0.is_char_boundary(end) {
            end -= 1;
        }
        self.packed.extend_from_slice(&(end as u16).to_be_bytes());
        self.packed.extend_from_slice(&id.0.as_bytes()[..end]);
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
        let mut rest = &self.packed[..];
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

    fn check(packed: &[u8]) -> Result<(), &'static str> {
        let mut rest = packed;
        while let Some(r) = IdList::split(rest) {
            let (id, tail) = r?;
            std::str::from_utf8(id).map_err(|_| "an id in an id list is not UTF-8")?;
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

/// One distinct answer and the machines that gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerGroup {
    /// The answer.
    pub answer: EncodedAnswer,
    /// Who gave it.
    pub who: IdList,
}

/// Answers merged along a ring, in compact form: each distinct answer once, with the
/// machines that gave it. A machine may appear more than once (rerouted rounds); the server
/// counts each machine once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// Distinct answers.
    pub groups: Vec<AnswerGroup>,
}

impl Partial {
    /// Adds one machine's answer.
    pub fn add(&mut self, id: &NodeId, answer: &EncodedAnswer) {
        match self.groups.iter_mut().find(|g| &g.answer == answer) {
            Some(g) => {
                g.who.push(id);
            }
            None => {
                let mut who = IdList::default();
                who.push(id);
                self.groups.push(AnswerGroup {
                    answer: answer.clone(),
                    who,
                });
            }
        }
    }

    /// Adds `other`'s answers.
    pub fn merge(&mut self, other: Partial) {
        for g in other.groups {
            match self.groups.iter_mut().find(|x| x.answer == g.answer) {
                Some(x) => x.who.packed.extend_from_slice(&g.who.packed),
                None => self.groups.push(g),
            }
        }
    }

    /// Whether `id` answered.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.groups.iter().any(|g| g.who.contains(id))
    }

    /// Every (machine, answer), repeats included.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &EncodedAnswer)> + '_ {
        self.groups
            .iter()
            .flat_map(|g| g.who.iter().map(move |id| (id, &g.answer)))
    }

    /// How many answers, repeats included.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.who.len()).sum()
    }

    /// No answers.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.who.is_empty())
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
    pub hostname: String,
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
}

/// The answer to [`AdminRequest::Show`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingsReport {
    /// Rings in id order.
    pub rings: Vec<RingReport>,
    /// Endpoints registered from isolated ranges (no ring).
    pub isolated: Vec<MemberReport>,
    /// Connections the server holds now, of every kind.
    pub server_connections: usize,
    /// Of those, leaders' ring links.
    pub ring_connections: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(os: &str) -> EncodedAnswer {
        EncodedAnswer::new(&NodeAnswer {
            row: Some(vec!["linux".into(), os.into()]),
            problems: vec![],
        })
    }

    fn id(s: &str) -> NodeId {
        NodeId(s.into())
    }

    #[test]
    fn a_partial_keeps_each_distinct_answer_once_and_survives_the_wire() {
        let mut p = Partial::default();
        p.add(&id("a1"), &answer("6.1"));
        p.add(&id("b22"), &answer("6.8"));
        p.add(&id("c333"), &answer("6.1"));
        let mut down = Partial::default();
        down.add(&id("d4"), &answer("6.8"));
        down.add(&id("a1"), &answer("6.1")); // a repeat from a rerouted round
        p.merge(down);
        assert_eq!(p.groups.len(), 2);
        assert_eq!(p.len(), 5);
        assert!(p.contains(&id("d4")) && !p.contains(&id("e5")));
        let bytes = rollcall_runtime::wire::encode_body(&p).expect("encodes");
        let back: Partial = rollcall_runtime::wire::decode_body(&bytes).expect("decodes");
        assert_eq!(back, p);
        let mut entries: Vec<(String, String)> = back
            .entries()
            .map(|(n, a)| {
                let a = a.decode().expect("an answer");
                (n.to_string(), a.row.expect("row")[1].clone())
            })
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                ("a1".to_string(), "6.1".to_string()),
                ("a1".into(), "6.1".into()),
                ("b22".into(), "6.8".into()),
                ("c333".into(), "6.1".into()),
                ("d4".into(), "6.8".into()),
            ]
        );
    }

    #[test]
    fn a_partial_whose_answer_is_not_an_answer_is_refused_when_decoded() {
        #[derive(Serialize)]
        struct Group {
            #[serde(with = "serde_bytes")]
            answer: Vec<u8>,
            who: IdList,
        }
        #[derive(Serialize)]
        struct Raw {
            groups: Vec<Group>,
        }
        let mut who = IdList::default();
        who.push(&id("a1"));
        let good = rollcall_runtime::wire::encode_body(&NodeAnswer {
            row: None,
            problems: vec!["uptime: timed out".into()],
        })
        .expect("encodes");
        for (answer, ok) in [
            (good, true),
            (
                rollcall_runtime::wire::encode_body(&(1u8, "x")).expect("enc"),
                false,
            ),
            (
                rollcall_runtime::wire::encode_body(&(None::<u8>, [7u8])).expect("enc"),
                false,
            ),
            (vec![0x92, 0xc0, 0x91, 0xa2, 0xff, 0xfe], false), // a row cell not UTF-8
            (vec![0x92, 0xc0], false),                         // ends inside
        ] {
            let bytes = rollcall_runtime::wire::encode_body(&Raw {
                groups: vec![Group {
                    answer,
                    who: who.clone(),
                }],
            })
            .expect("encodes");
            let got = rollcall_runtime::wire::decode_body::<Partial>(&bytes);
            match (got, ok) {
                (Ok(p), true) => {
                    let (n, a) = p.entries().next().expect("one entry");
                    assert_eq!(n, "a1");
                    assert_eq!(a.decode().expect("answer").problems, ["uptime: timed out"]);
                }
                (Err(e), false) => assert!(e.to_string().contains("not an answer"), "{e}"),
                (got, _) => panic!("expected ok={ok}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_truncated_or_non_utf8_id_list_is_refused_when_decoded() {
        #[derive(Serialize)]
        struct Raw {
            #[serde(with = "serde_bytes")]
            packed: Vec<u8>,
        }
        for (packed, why) in [
            (vec![0u8, 5, b'a', b'b'], "ends inside an id"),
            (vec![0u8, 2, b'a', b'b', 0], "ends inside a length"),
            (vec![0u8, 2, 0xff, 0xfe], "not UTF-8"),
        ] {
            let bytes = rollcall_runtime::wire::encode_body(&Raw { packed }).expect("encodes");
            let err = rollcall_runtime::wire::decode_body::<IdList>(&bytes)
                .expect_err("a malformed list must not decode");
            assert!(err.to_string().contains(why), "{err} should say {why}");
        }
    }
}
