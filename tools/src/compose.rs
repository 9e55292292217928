//! The composition root: the one place that puts a server's services and an endpoint's ring
//! member on a node. `rollcall server` and `rollcall endpoint`, the simulated fleet behind
//! `rollcall sim`, `rollcall chaos` and the scenario suite, the loopback test harness and the
//! console all build nodes through it, so what is measured and fault-tested is the code
//! operators run: the member under the node's supervisor, the server's fan-out timed from
//! the ring timing ([`RingServerConfig::for_ring`]), the desk installed the same way.
//!
//! What differs between them is only what they hand in: a transport (QUIC or the in-memory
//! network), a timing preset ([`RingConfig`]'s constructors), a store or none, and what
//! answers questions (a real or simulated host's sensors, or a test's evaluator).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use ractor::ActorRef;
use rollcall_actors::action::Executor;
use rollcall_actors::action::journal::Journal;
use rollcall_actors::action::runner::ActionRunner;
use rollcall_actors::action::{FileSources, PackageFiles};
use rollcall_actors::config::HistorySettings;
use rollcall_actors::desk::{QuestionDesk, SensorEvaluator};
use rollcall_actors::history::linux::ProcSampler;
use rollcall_actors::history::recorder::{Recorder, Recording};
use rollcall_actors::history::store::HistoryStore;
use rollcall_actors::sensors::{HostView, Sensors};
use rollcall_actors::store::ServerStore;
use rollcall_cluster::member::{EvaluatorHandle, MemberConfig, MemberMsg, RingMember};
use rollcall_cluster::membership::Backlog;
use rollcall_cluster::ring::RingConfig;
use rollcall_cluster::shard::{RingServer, RingServerConfig};
use rollcall_patchdist::endpoint::{Neighbourhood, View};
use rollcall_patchdist::{ChunkStore, Manifest, MemCache, Origin, PatchConfig, PatchService};
use rollcall_runtime::node::Node;
use rollcall_runtime::revocation;
use rollcall_runtime::signing::{ServerSigner, ServerTrust};
use rollcall_runtime::supervisor::{ChildSpec, Restart};
use std::path::PathBuf;

/// A server's services, running on its node.
#[derive(Clone)]
pub struct ServerServices {
    /// The ring service (registrations, shards, the fan-out).
    pub rings: RingServer,
    /// The operators' question desk.
    pub desk: Arc<QuestionDesk>,
    /// The origin of packages' files.
    pub origin: Arc<Origin>,
}

/// Starts the ring service and the question desk on a server `node`, keeping results and
/// settings in `store` if given, handing returning machines what `backlog` says they
/// missed, and signing what endpoints act on with `signer` (the key they pinned).
pub async fn start_server_services(
    node: &Node,
    cfg: RingServerConfig,
    store: Option<Arc<ServerStore>>,
    backlog: Option<Arc<dyn Backlog>>,
    signer: Arc<ServerSigner>,
) -> Result<ServerServices> {
    let chunks = Arc::new(MemCache::new(u64::MAX));
    start_server_services_with(node, cfg, store, backlog, signer, chunks).await
}

/// As [`start_server_services`], keeping packages' files in `chunks` (a file beside the
/// server's store, or memory that outlives a simulated server's restarts).
pub async fn start_server_services_with(
    node: &Node,
    cfg: RingServerConfig,
    store: Option<Arc<ServerStore>>,
    backlog: Option<Arc<dyn Backlog>>,
    signer: Arc<ServerSigner>,
    chunks: Arc<dyn ChunkStore>,
) -> Result<ServerServices> {
    let rings = RingServer::start(node, cfg, backlog, signer)
        .await
        .context("starting the ring service")?;
    let origin = Origin::new(chunks);
    origin.install(node);
    let desk = QuestionDesk::new(rings.clone(), store)
        .with_origin(origin.clone())
        .install(node);
    node.set_figures(Arc::new(crate::figures::ServerFigures {
        rings: rings.clone(),
        desk: desk.clone(),
        origin: origin.clone(),
    }));
    Ok(ServerServices {
        rings,
        desk,
        origin,
    })
}

/// How often a server looks at its CA directory's revocation list.
pub const REVOCATION_CHECK: Duration = Duration::from_secs(1);

/// Keeps `services` refusing the identities revoked in the CA directory `ca_dir`: read now,
/// and again whenever the list changes (looked at every [`REVOCATION_CHECK`]). The server
/// node refuses them at once; endpoints learn the list from the signed configuration at
/// their next registration. Stops with the node.
pub fn watch_revocations(
    node: &Node,
    services: &ServerServices,
    ca_dir: std::path::PathBuf,
) -> Result<()> {
    let apply = {
        let (revocations, desk) = (node.revocations().clone(), services.desk.clone());
        move |ids: Vec<rollcall_runtime::NodeId>| {
            if !ids.is_empty() {
                tracing::info!(revoked = ids.len(), "revocation list in force");
            }
            desk.set_revoked(&ids);
            revocations.set(ids);
        }
    };
    apply(revocation::load(&ca_dir).context("reading the revocation list")?);
    let stamp = |dir: &std::path::Path| {
        std::fs::metadata(dir.join(revocation::REVOKED_FILE))
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(&ca_dir);
    let stopped = node.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REVOCATION_CHECK);
        while !stopped.is_shut_down() {
            tick.tick().await;
            let now = stamp(&ca_dir);
            if now == last {
                continue;
            }
            match revocation::load(&ca_dir) {
                Ok(ids) => {
                    last = now;
                    apply(ids);
                }
                Err(e) => tracing::warn!(error = %e, "could not read the revocation list"),
            }
        }
    });
    Ok(())
}

/// What answers an endpoint's questions.
#[derive(Clone)]
pub enum Answering {
    /// The built-in and script sensors over a host (the real machine or a simulated one);
    /// the endpoint takes the server's sensor configuration.
    Sensors(Arc<dyn HostView>),
    /// The sensors, and actions run with `executor` and kept in `journal`.
    Acting {
        /// The host the sensors read.
        host: Arc<dyn HostView>,
        /// Where the actions it takes are kept.
        journal: Arc<dyn Journal>,
        /// What runs them.
        executor: Arc<dyn Executor>,
        /// Where packages' files are kept, if it takes packages with files.
        files: Option<Box<FilesPlan>>,
        /// What it records of its history, if it records (a real machine; a simulated
        /// host answers from its seeded history).
        history: Option<HistoryPlan>,
    },
    /// A test's own evaluator.
    Evaluator(EvaluatorHandle),
    /// Nothing: the endpoint answers with no row.
    Nothing,
}

impl std::fmt::Debug for Answering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Answering::Sensors(_) => "Sensors",
            Answering::Acting { .. } => "Acting",
            Answering::Evaluator(_) => "Evaluator",
            Answering::Nothing => "Nothing",
        })
    }
}

/// How an endpoint keeps packages' files.
#[derive(Clone)]
pub struct FilesPlan {
    /// The chunk cache.
    pub cache: Arc<dyn ChunkStore>,
    /// Pacing and the chunk pool's size.
    pub cfg: PatchConfig,
    /// Where each action's files are written (`work/action-ID` under it); `None` keeps them
    /// in the cache only, checked there (simulated hosts).
    pub work_dir: Option<PathBuf>,
}

/// The ring member's view, for package distribution: its neighbours and whether it leads
/// the forward end. Set once the member runs.
struct MemberHood {
    member: std::sync::OnceLock<ActorRef<MemberMsg>>,
    me: rollcall_runtime::NodeId,
}

/// Successors told of each chunk as it comes.
const NEAR_SUCCESSORS: usize = 2;

impl Neighbourhood for MemberHood {
    fn view(&self) -> BoxFuture<'static, Option<View>> {
        let member = self.member.get().cloned();
        let me = self.me.clone();
        Box::pin(async move {
            let s = rollcall_cluster::member::status(&member?).await?;
            let at = s.view.iter().position(|m| m.id == me);
            let near = match at {
                Some(at) => s.view[at + 1..]
                    .iter()
                    .take(NEAR_SUCCESSORS)
                    .map(|m| m.id.clone())
                    .collect(),
                None => Vec::new(),
            };
            Some(View {
                peers: s.view.iter().map(|m| (m.id.clone(), m.addr)).collect(),
                // The forward leader, and only while nothing is before it in its view (a
                // member whose predecessor is merely slow to probe it keeps it there); a
                // machine in no ring (an isolated range: hub and spoke) fetches for itself.
                leader: (s.leads.forward && at == Some(0))
                    || (s.ring.is_none() && s.registrations > 0),
                near,
            })
        })
    }
}

/// An endpoint's package files, for its action runner.
struct EndpointFiles {
    svc: PatchService,
    work_dir: Option<PathBuf>,
}

impl PackageFiles for EndpointFiles {
    fn obtain(
        &self,
        action: u64,
        manifest: Arc<Manifest>,
    ) -> BoxFuture<'static, std::result::Result<(Option<PathBuf>, FileSources), String>> {
        let svc = self.svc.clone();
        let dir = self
            .work_dir
            .as_ref()
            .map(|d| d.join(format!("action-{action}")));
        Box::pin(async move {
            let got = svc
                .obtain(manifest.clone())
                .await
                .map_err(|e| e.to_string())?;
            let sources = FileSources {
                from_peers: got.from_peers,
                from_server: got.from_server,
            };
            let dir = match dir {
                Some(d) => tokio::task::spawn_blocking(move || svc.write_files(&manifest, &d))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(Some)
                    .map_err(|e| e.to_string())?,
                None => svc
                    .check_files(manifest)
                    .await
                    .map(|()| None)
                    .map_err(|e| e.to_string())?,
            };
            Ok((dir, sources))
        })
    }

    fn release(&self, _action: u64, manifest: &Manifest) {
        self.svc.release(manifest);
    }

    fn relay(&self, manifest: Arc<Manifest>) {
        let svc = self.svc.clone();
        tokio::spawn(async move {
            if let Err(e) = svc.relay(manifest).await {
                tracing::debug!(error = %e, "relaying a package stopped");
            }
        });
    }
}

/// An endpoint's history: where it is kept, and how often the machine is sampled.
#[derive(Clone)]
pub struct HistoryPlan {
    /// The store (the sensors read it, the recorder writes it).
    pub store: Arc<HistoryStore>,
    /// The sampling interval.
    pub interval: Duration,
}

impl HistoryPlan {
    /// Opens `path` with `settings`' limits.
    pub fn open(path: &std::path::Path, settings: &HistorySettings) -> Result<HistoryPlan> {
        Ok(HistoryPlan {
            store: Arc::new(
                HistoryStore::open(path, settings.limits, rollcall_runtime::signing::unix_ms())
                    .context("opening the history store")?,
            ),
            interval: settings.interval,
        })
    }
}

/// Starts the recorder that samples this machine into `plan`'s store, under `node`'s
/// supervisor (restarted if it fails, carrying on with what it knew was running).
pub async fn start_recorder(node: &Node, plan: &HistoryPlan) -> Result<()> {
    let recording = Arc::new(std::sync::Mutex::new(Recording::new(
        Box::new(ProcSampler::new()),
        plan.store.clone(),
    )));
    let interval = plan.interval;
    let spec = ChildSpec::new(
        "history.recorder",
        Restart::Permanent,
        Recorder,
        move || (recording.clone(), interval),
    );
    node.start_child(spec)
        .await
        .context("starting the history recorder")?;
    Ok(())
}

/// Everything an endpoint's ring member needs.
#[derive(Debug, Clone)]
pub struct EndpointPlan {
    /// The server.
    pub server: SocketAddr,
    /// The address peers dial.
    pub advertise: SocketAddr,
    /// The host name it reports.
    pub hostname: String,
    /// Ring timing.
    pub ring: RingConfig,
    /// Registration interval bounds.
    pub register_min: Duration,
    /// See `register_min`.
    pub register_max: Duration,
    /// How long a call to the server may take.
    pub server_timeout: Duration,
    /// Seed of its registration jitter.
    pub seed: u64,
    /// What answers its questions.
    pub answering: Answering,
    /// The server it pinned at enrolment (shared by a simulated fleet's endpoints: see
    /// [`ServerTrust`] on memoised verification).
    pub trust: Arc<ServerTrust>,
}

/// Starts an endpoint's ring member under its node's supervisor (restarted if it fails).
pub async fn start_endpoint(node: &Node, plan: EndpointPlan) -> Result<ActorRef<MemberMsg>> {
    start_endpoint_with(node, plan, |_| {}).await
}

/// Like [`start_endpoint`], with `adjust` applied to the member's settings last (tests that
/// need a member set apart, such as a compromised one).
pub async fn start_endpoint_with(
    node: &Node,
    plan: EndpointPlan,
    adjust: impl FnOnce(&mut MemberConfig),
) -> Result<ActorRef<MemberMsg>> {
    let mut mc = MemberConfig::new(
        plan.server,
        plan.advertise,
        plan.hostname,
        plan.trust.clone(),
    );
    let hood = Arc::new(MemberHood {
        member: std::sync::OnceLock::new(),
        me: node.identity().id.clone(),
    });
    let mut patch = None;
    let mut acting_journal = None;
    mc.evaluator = match plan.answering {
        Answering::Sensors(host) => {
            let evaluator = SensorEvaluator::new(Sensors::new(host));
            evaluator.accept_config_on(node, plan.trust);
            Some(EvaluatorHandle(Arc::new(evaluator)))
        }
        Answering::Acting {
            host,
            journal,
            executor,
            files,
            history,
        } => {
            acting_journal = Some(journal.clone());
            let (me, trust, stats) = (
                node.identity().id.to_string(),
                plan.trust.clone(),
                node.wire_stats().clone(),
            );
            let runner = match files {
                None => ActionRunner::new(me, trust, journal, executor, stats),
                Some(f) => {
                    let svc = PatchService::install(
                        node,
                        f.cache,
                        hood.clone(),
                        plan.advertise,
                        (plan.trust.server_id.clone(), plan.server),
                        f.cfg,
                    );
                    patch = Some(svc.clone());
                    let files = Arc::new(EndpointFiles {
                        svc,
                        work_dir: f.work_dir,
                    });
                    ActionRunner::with_files(me, trust, journal, executor, stats, files)
                }
            };
            runner.resume();
            let mut sensors = Sensors::new(host);
            if let Some(h) = history {
                start_recorder(node, &h).await?;
                sensors = sensors.with_history(h.store);
            }
            let evaluator = SensorEvaluator::with_actions(sensors, runner);
            evaluator.accept_config_on(node, plan.trust);
            Some(EvaluatorHandle(Arc::new(evaluator)))
        }
        Answering::Evaluator(e) => Some(e),
        Answering::Nothing => None,
    };
    mc.ring = plan.ring;
    mc.register_min = plan.register_min;
    mc.register_max = plan.register_max;
    mc.server_timeout = plan.server_timeout;
    mc.seed = plan.seed;
    adjust(&mut mc);
    let n = node.clone();
    let spec = ChildSpec::new("ring.member", Restart::Permanent, RingMember, move || {
        (n.clone(), mc.clone())
    });
    let cell = node
        .start_child(spec)
        .await
        .context("starting the ring member")?;
    let member: ActorRef<MemberMsg> = cell.into();
    let _ = hood.member.set(member.clone());
    node.set_figures(Arc::new(crate::figures::EndpointFigures {
        member: member.clone(),
        patch,
        journal: acting_journal,
    }));
    Ok(member)
}
