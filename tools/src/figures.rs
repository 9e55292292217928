//! The services' figures, added to a node's own by the composition root: a server's rings,
//! questions, actions and package egress; an endpoint's ring place, actions and chunk
//! traffic. The metrics listener and `rollcall status` both show them.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use ractor::ActorRef;
use rollcall_actors::action::journal::Journal;
use rollcall_actors::desk::QuestionDesk;
use rollcall_cluster::member::MemberMsg;
use rollcall_cluster::proto::Health;
use rollcall_cluster::questions::TO_FULL_BOUNDS;
use rollcall_cluster::shard::RingServer;
use rollcall_patchdist::{Origin, PatchService};
use rollcall_runtime::figures::{Figure, FigureKind, FigureSource};

/// A server's figures.
pub struct ServerFigures {
    /// The ring service.
    pub rings: RingServer,
    /// The question desk (its actions).
    pub desk: Arc<QuestionDesk>,
    /// The package origin.
    pub origin: Arc<Origin>,
}

fn health_label(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Slow => "slow",
        Health::Suspect => "suspect",
        Health::Offline => "offline",
    }
}

fn status_label(kind: &str) -> String {
    kind.replace(' ', "_")
}

impl FigureSource for ServerFigures {
    fn figures(&self) -> BoxFuture<'static, Vec<Figure>> {
        let (rings, desk, origin) = (self.rings.clone(), self.desk.clone(), self.origin.clone());
        Box::pin(async move {
            let mut out = Vec::new();
            let report = rings.report(None).await;
            out.push(Figure::gauge(
                "rollcall_rings",
                "Rings the server keeps",
                report.rings.len() as f64,
            ));
            let mut health: BTreeMap<&'static str, u64> = ["ok", "slow", "suspect", "offline"]
                .into_iter()
                .map(|h| (h, 0))
                .collect();
            let mut leaders = 0u64;
            for r in &report.rings {
                // A whole-fleet report may list only a ring's ends: its count is then kept
                // in `members_total`, by health unknown (counted as listed).
                for m in &r.members {
                    *health.entry(health_label(m.health)).or_default() += 1;
                    leaders += u64::from(m.leads.forward) + u64::from(m.leads.backward);
                }
            }
            for m in &report.isolated {
                *health.entry(health_label(m.health)).or_default() += 1;
            }
            for (h, n) in health {
                out.push(
                    Figure::gauge("rollcall_machines", "Machines by health", n as f64)
                        .label("health", h),
                );
            }
            out.push(Figure::gauge(
                "rollcall_ring_leaders",
                "Ring ends with a leader (two per healthy ring)",
                leaders as f64,
            ));
            out.push(Figure::gauge(
                "rollcall_leader_links",
                "Live server links held by rings' leaders",
                report.rings.iter().map(|r| r.leader_links).sum::<usize>() as f64,
            ));
            out.push(Figure::gauge(
                "rollcall_server_connections",
                "Connections the server holds, of every kind",
                report.server_connections as f64,
            ));
            out.push(Figure::counter(
                "rollcall_registrations",
                "Registrations served",
                rings.registrations(),
            ));
            let q = rings.question_counts();
            out.push(Figure::counter(
                "rollcall_questions_asked",
                "Questions asked (asked again after a restart counts again)",
                q.asked,
            ));
            out.push(Figure::counter(
                "rollcall_answers",
                "Answers counted, each machine once per question",
                q.answers,
            ));
            let mut buckets: Vec<(f64, u64)> = TO_FULL_BOUNDS
                .iter()
                .copied()
                .zip(q.to_full.iter().copied())
                .collect();
            buckets.push((f64::MAX, q.to_full[TO_FULL_BOUNDS.len()]));
            out.push(Figure {
                name: "rollcall_question_seconds_to_all_answered".into(),
                help: "Time from asking a question to every expected machine's answer".into(),
                kind: FigureKind::Histogram {
                    buckets,
                    sum: q.to_full_sum_s,
                },
                labels: Vec::new(),
                value: q.complete as f64,
            });
            let (machines, awaiting) = desk.actions().totals();
            for (kind, n) in machines {
                out.push(
                    Figure::gauge(
                        "rollcall_action_machines",
                        "Machines targeted by the actions kept, by status",
                        n as f64,
                    )
                    .label("status", status_label(kind)),
                );
            }
            out.push(Figure::gauge(
                "rollcall_actions_awaiting_approval",
                "Actions waiting for an admin's approval",
                awaiting as f64,
            ));
            let (bytes, chunks) = origin.egress_total();
            out.push(Figure::counter(
                "rollcall_chunk_bytes_from_server",
                "Package chunk bytes the server sent to endpoints",
                bytes,
            ));
            out.push(Figure::counter(
                "rollcall_chunks_from_server",
                "Package chunks the server sent to endpoints",
                chunks,
            ));
            out
        })
    }
}

/// An endpoint's figures.
pub struct EndpointFigures {
    /// Its ring member.
    pub member: ActorRef<MemberMsg>,
    /// Its package distribution, if it takes packages with files.
    pub patch: Option<PatchService>,
    /// Its action journal, if it acts.
    pub journal: Option<Arc<dyn Journal>>,
}

impl FigureSource for EndpointFigures {
    fn figures(&self) -> BoxFuture<'static, Vec<Figure>> {
        let member = self.member.clone();
        let journal = self.journal.clone();
        let mut out = Vec::new();
        if let Some(p) = &self.patch {
            use std::sync::atomic::Ordering::Relaxed;
            let s = p.stats();
            for (name, help, v) in [
                (
                    "rollcall_chunk_bytes_from_peers",
                    "Package chunk bytes received from ring neighbours (verified)",
                    &s.bytes_from_peers,
                ),
                (
                    "rollcall_chunk_bytes_from_server",
                    "Package chunk bytes received from the server (verified)",
                    &s.bytes_from_server,
                ),
                (
                    "rollcall_chunks_served",
                    "Package chunks served to neighbours",
                    &s.chunks_served,
                ),
                (
                    "rollcall_chunk_server_retries",
                    "Chunk requests to the server asked again after a failure",
                    &s.server_retries,
                ),
            ] {
                out.push(Figure::counter(name, help, v.load(Relaxed)));
            }
        }
        Box::pin(async move {
            if let Some(j) = journal {
                let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
                for (_, e) in j.all() {
                    if !e.before_arrival {
                        *kinds.entry(e.status.kind()).or_default() += 1;
                    }
                }
                for (kind, n) in kinds {
                    out.push(
                        Figure::gauge(
                            "rollcall_actions",
                            "Actions in this endpoint's journal, by status",
                            n as f64,
                        )
                        .label("status", status_label(kind)),
                    );
                }
            }
            if let Some(s) = rollcall_cluster::member::status(&member).await {
                out.push(Figure::gauge(
                    "rollcall_in_ring",
                    "1 once registered in a ring (0: not yet, or an isolated range)",
                    f64::from(u8::from(s.ring.is_some())),
                ));
                out.push(Figure::gauge(
                    "rollcall_ring_members",
                    "Members in the server's last list of this machine's ring",
                    s.ring_members as f64,
                ));
                for (end, leads) in [("forward", s.leads.forward), ("backward", s.leads.backward)] {
                    out.push(
                        Figure::gauge(
                            "rollcall_leads",
                            "1 while this machine leads that end of its ring",
                            f64::from(u8::from(leads)),
                        )
                        .label("end", end),
                    );
                }
                out.push(Figure::counter(
                    "rollcall_registrations",
                    "Registrations the server answered",
                    s.registrations,
                ));
                out.push(Figure::gauge(
                    "rollcall_server_link_up",
                    "1 while the link to the server is up",
                    f64::from(u8::from(s.server_link_up)),
                ));
                out.push(Figure::gauge(
                    "rollcall_questions_pending",
                    "Questions held and not answered yet",
                    s.questions_pending as f64,
                ));
            }
            out
        })
    }
}
