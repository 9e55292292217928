//! The chunk pool: serving neighbours' chunk requests and checking and storing fetched
//! chunks, in a bounded pool of supervised workers (ractor's `factory`). When its queue is
//! full a request is shed at once: a neighbour's gets "busy" (and asks someone else), a
//! fetched chunk is given up (and asked again).

use std::sync::Arc;

use bytes::Bytes;
use ractor::factory::queues::DefaultQueue;
use ractor::factory::routing::QueuerRouting;
use ractor::factory::{
    DiscardHandler, DiscardMode, DiscardReason, DiscardSettings, Factory, FactoryArguments,
    FactoryMessage, Job, JobOptions, Worker, WorkerBuilder, WorkerId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rollcall_runtime::NodeId;
use rollcall_runtime::node::Incoming;

use crate::endpoint::{DistMsg, Shared};
use crate::manifest::Hash;
use crate::plan::{Outcome, Source};
use crate::proto::ChunkReply;

/// Work for the pool.
pub enum PoolJob {
    /// Answer a neighbour's request for chunk `index` of `package`.
    Serve {
        /// The request (its reply port answers).
        req: Incoming,
        /// The package.
        package: Hash,
        /// The chunk.
        index: u32,
    },
    /// Check a fetched chunk, keep it, and tell the package's distributor.
    Store {
        /// The package.
        package: Hash,
        /// The chunk.
        index: u32,
        /// Who sent it.
        from: Source<NodeId>,
        /// Its bytes.
        data: Bytes,
        /// The distributor to tell.
        to: ActorRef<DistMsg>,
    },
}

/// A handle on a node's pool.
pub type PoolRef = ActorRef<FactoryMessage<(), PoolJob>>;

/// One worker.
pub struct PoolWorker;

impl Worker for PoolWorker {
    type Key = ();
    type Message = PoolJob;
    type Arguments = Arc<Shared>;
    type State = Arc<Shared>;

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<(), PoolJob>>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<(), PoolJob>>,
        job: Job<(), PoolJob>,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        match job.msg {
            PoolJob::Serve {
                mut req,
                package,
                index,
            } => {
                let reply = match shared.chunk(&package, index) {
                    Some(c) => {
                        shared.count_served(c.len());
                        ChunkReply::Data(c)
                    }
                    None => ChunkReply::Missing,
                };
                let r = req.answer(&reply);
                tracing::trace!(index, ok = r.is_ok(), "served");
            }
            PoolJob::Store {
                package,
                index,
                from,
                data,
                to,
            } => {
                let outcome = shared.store(&package, index, &from, data);
                let _ = to.send_message(DistMsg::Fetched {
                    index,
                    from,
                    outcome,
                });
            }
        }
        Ok(())
    }
}

struct Builder(Arc<Shared>);

impl WorkerBuilder<PoolWorker, Arc<Shared>> for Builder {
    fn build(&mut self, _wid: WorkerId) -> (PoolWorker, Arc<Shared>) {
        (PoolWorker, self.0.clone())
    }
}

/// Answers what the full pool sheds.
struct Shed(Arc<Shared>);

impl DiscardHandler<(), PoolJob> for Shed {
    fn discard(&self, reason: DiscardReason, job: &mut Job<(), PoolJob>) {
        match &mut job.msg {
            PoolJob::Serve { req, .. } => {
                tracing::trace!(?reason, "shed");
                if reason != DiscardReason::Shutdown {
                    self.0.count_shed();
                }
                let _ = req.answer(&ChunkReply::Busy);
            }
            PoolJob::Store {
                index, from, to, ..
            } => {
                let _ = to.send_message(DistMsg::Fetched {
                    index: *index,
                    from: from.clone(),
                    outcome: Outcome::Failed,
                });
            }
        }
    }
}

type PoolFactory = Factory<
    (),
    PoolJob,
    Arc<Shared>,
    PoolWorker,
    QueuerRouting<(), PoolJob>,
    DefaultQueue<(), PoolJob>,
>;

/// Starts a pool of `workers` with room for `queue` waiting jobs, linked to `parent` (the
/// node's supervisor: it stops with the node).
pub async fn start(
    shared: Arc<Shared>,
    workers: usize,
    queue: usize,
    parent: ractor::ActorCell,
) -> Result<PoolRef, ractor::SpawnErr> {
    let args = FactoryArguments::builder()
        .worker_builder(
            Box::new(Builder(shared.clone())) as Box<dyn WorkerBuilder<PoolWorker, Arc<Shared>>>
        )
        .router(QueuerRouting::default())
        .queue(DefaultQueue::default())
        .num_initial_workers(workers.max(1))
        .discard_handler(Arc::new(Shed(shared)) as Arc<dyn DiscardHandler<(), PoolJob>>)
        .discard_settings(DiscardSettings::Static {
            limit: queue,
            mode: DiscardMode::Newest,
        })
        .build();
    let (r, _) = Actor::spawn_linked(None, PoolFactory::default(), args, parent).await?;
    Ok(r)
}

/// Hands `msg` to the pool (shed by its discard handler if the queue is full).
pub fn dispatch(pool: &PoolRef, msg: PoolJob) -> bool {
    pool.cast(FactoryMessage::Dispatch(Job {
        key: (),
        msg,
        options: JobOptions::default(),
        accepted: None,
    }))
    .is_ok()
}
