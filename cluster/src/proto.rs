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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAnswer {
    /// Its row, or `None` when it did not match the question's filter.
    pub row: Option<Vec<String>>,
    /// Sensors that failed or blew their budget, as text.
    pub problems: Vec<String>,
}

/// Answers merged along a ring: one per machine, whatever route it took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// Each machine's answer.
    pub answers: std::collections::BTreeMap<NodeId, NodeAnswer>,
}

impl Partial {
    /// Adds `other`'s answers; a machine already present keeps its first answer.
    pub fn merge(&mut self, other: Partial) {
        for (id, a) in other.answers {
            self.answers.entry(id).or_insert(a);
        }
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
