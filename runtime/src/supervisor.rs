//! One-for-one supervision with a restart-intensity window and backoff.
//!
//! ractor's default reaction to a child's exit is to stop the parent, even for a normal exit.
//! [`Supervisor`] instead restarts the one child that exited, according to its [`Restart`]
//! policy, waiting a backoff that doubles with each restart inside the window; a child that
//! exits more than `max_restarts` times within `window` makes the supervisor itself fail, so
//! the failure escalates to the supervisor's own parent (Erlang/OTP's intensity and period).
//!
//! The decision is a sans-IO [`RestartTracker`] that takes `now` as an argument; the actor
//! reads the clock (tokio's, so tests can pause it) and drives it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always, whether it failed or stopped normally.
    Permanent,
    /// Only when it failed (error or panic).
    Transient,
    /// Never.
    Temporary,
}

/// How many restarts are tolerated, and how long to wait before each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    /// More restarts than this within `window` escalate.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
    /// Delay before the first restart in the window; doubled for each further one.
    pub backoff_base: Duration,
    /// Largest delay.
    pub backoff_max: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        RestartIntensity {
            max_restarts: 5,
            window: Duration::from_secs(10),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// What to do about a child that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Start it again after this delay.
    RestartAfter(Duration),
    /// Too many restarts in the window: fail upwards.
    Escalate {
        /// Exits counted in the window, this one included.
        exits_in_window: u32,
    },
}

/// The restart-intensity decision for one child, with explicit time.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    intensity: RestartIntensity,
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    /// A tracker with no exits recorded.
    pub fn new(intensity: RestartIntensity) -> RestartTracker {
        RestartTracker {
            intensity,
            recent: VecDeque::new(),
        }
    }

    /// Records an exit at `now` and decides.
    pub fn on_exit(&mut self, now: Instant) -> Verdict {
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) >= self.intensity.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        let n = self.recent.len() as u32;
        if n > self.intensity.max_restarts {
            return Verdict::Escalate { exits_in_window: n };
        }
        Verdict::RestartAfter(crate::backoff::doubled(
            self.intensity.backoff_base,
            n - 1,
            self.intensity.backoff_max,
        ))
    }
}

/// Starts a child linked to the supervisor whose cell it is given.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// How to start and when to restart one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children.
    pub name: String,
    /// Restart policy.
    pub restart: Restart,
    /// Starts the child.
    pub start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChildSpec({}, {:?})", self.name, self.restart)
    }
}

impl ChildSpec {
    /// A child made by spawning `actor` with arguments from `args` at each (re)start.
    pub fn new<A, F>(name: impl Into<String>, restart: Restart, actor: A, args: F) -> ChildSpec
    where
        A: Actor + Clone + Sync,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        let start: StartFn = Arc::new(move |sup: ActorCell| {
            let actor = actor.clone();
            let args = args();
            Box::pin(async move {
                let (r, _) = Actor::spawn_linked(None, actor, args, sup).await?;
                Ok(r.get_cell())
            })
        });
        ChildSpec {
            name: name.into(),
            restart,
            start,
        }
    }

    /// Runs the child (and what it spawns) on `rt`, not on the supervisor's runtime: a
    /// process's background runtime, whose threads yield the CPU to the foreground's (see
    /// `PatchConfig::background`). `None` leaves the child where it was.
    pub fn on(mut self, rt: Option<tokio::runtime::Handle>) -> ChildSpec {
        let Some(rt) = rt else {
            return self;
        };
        let start = self.start.clone();
        self.start = Arc::new(move |sup: ActorCell| {
            let child = start(sup);
            let rt = rt.clone();
            Box::pin(async move {
                rt.spawn(child).await.map_err(|e| {
                    SpawnErr::StartupFailed(format!("the child's runtime stopped: {e}").into())
                })?
            })
        });
        self
    }
}

/// What the supervisor reports about a child.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    /// Its name.
    pub name: String,
    /// Its current actor, if running.
    pub actor: Option<ActorCell>,
    /// How many times it was restarted.
    pub restarts: u32,
}

/// Messages to a [`Supervisor`].
pub enum SupervisorMsg {
    /// Adds and starts a child.
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, String>>),
    /// Lists the children.
    Children(RpcReplyPort<Vec<ChildInfo>>),
    /// Internal: the backoff for this child's restart has passed.
    Restart(String),
}

impl std::fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorMsg::StartChild(s, _) => write!(f, "StartChild({})", s.name),
            SupervisorMsg::Children(_) => f.write_str("Children"),
            SupervisorMsg::Restart(n) => write!(f, "Restart({n})"),
        }
    }
}

/// A one-for-one supervisor.
#[derive(Debug, Clone, Copy)]
pub struct Supervisor;

/// Arguments of a [`Supervisor`].
#[derive(Debug)]
pub struct SupervisorArgs {
    /// Restart intensity and backoff, per child.
    pub intensity: RestartIntensity,
    /// Children started with the supervisor, in order.
    pub children: Vec<ChildSpec>,
    /// Stop (normally) once the last child has exited for good: a supervisor started on
    /// demand for short-lived children (a node's redialing links) does not outlive them.
    pub stop_when_idle: bool,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    tracker: RestartTracker,
    restarts: u32,
}

/// The supervisor's state.
pub struct SupervisorState {
    intensity: RestartIntensity,
    stop_when_idle: bool,
    children: HashMap<String, Child>,
    by_id: HashMap<ActorId, String>,
}

/// Why a supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A child exited too often.
    #[error("child {name} exited {exits} times within {window:?}; giving up")]
    IntensityExceeded {
        /// The child.
        name: String,
        /// Exits in the window.
        exits: u32,
        /// The window.
        window: Duration,
    },
    /// A child could not be started.
    #[error("child {name} failed to start: {reason}")]
    StartFailed {
        /// The child.
        name: String,
        /// Why.
        reason: String,
    },
}

impl SupervisorState {
    async fn start(&mut self, me: &ActorCell, spec: ChildSpec) -> Result<ActorCell, SpawnErr> {
        let cell = (spec.start)(me.clone()).await?;
        self.by_id.insert(cell.get_id(), spec.name.clone());
        let name = spec.name.clone();
        let intensity = self.intensity;
        let child = self.children.entry(name).or_insert_with(|| Child {
            spec,
            cell: None,
            tracker: RestartTracker::new(intensity),
            restarts: 0,
        });
        child.cell = Some(cell.clone());
        Ok(cell)
    }

    /// With `stop_when_idle`, stops once no child is left.
    fn stop_if_idle(&self, myself: &ActorRef<SupervisorMsg>) {
        if self.stop_when_idle && self.children.is_empty() {
            myself.stop(Some("no children left".into()));
        }
    }

    fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: String,
        failed: bool,
        why: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(child) = self.children.get_mut(&name) else {
            return Ok(());
        };
        child.cell = None;
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => failed,
            Restart::Temporary => false,
        };
        if !restart {
            tracing::debug!(child = %name, %why, "child exited; not restarted");
            self.children.remove(&name);
            self.stop_if_idle(myself);
            return Ok(());
        }
        let now = tokio::time::Instant::now().into_std();
        match child.tracker.on_exit(now) {
            Verdict::RestartAfter(delay) => {
                tracing::warn!(child = %name, %why, ?delay, "child exited; restarting");
                let n = name.clone();
                myself.send_after(delay, move || SupervisorMsg::Restart(n.clone()));
                Ok(())
            }
            Verdict::Escalate { exits_in_window } => {
                tracing::error!(child = %name, %why, exits_in_window, "restart intensity exceeded; escalating");
                Err(Box::new(SupervisorError::IntensityExceeded {
                    name,
                    exits: exits_in_window,
                    window: self.intensity.window,
                }))
            }
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            intensity: args.intensity,
            stop_when_idle: args.stop_when_idle,
            children: HashMap::new(),
            by_id: HashMap::new(),
        };
        for spec in args.children {
            let name = spec.name.clone();
            state.start(&myself.get_cell(), spec).await.map_err(|e| {
                SupervisorError::StartFailed {
                    name,
                    reason: e.to_string(),
                }
            })?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                if state.children.contains_key(&spec.name) {
                    let _ = reply.send(Err(format!("a child named {} exists", spec.name)));
                    return Ok(());
                }
                let r = state
                    .start(&myself.get_cell(), spec)
                    .await
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
                state.stop_if_idle(&myself);
            }
            SupervisorMsg::Children(reply) => {
                let list = state
                    .children
                    .iter()
                    .map(|(n, c)| ChildInfo {
                        name: n.clone(),
                        actor: c.cell.clone(),
                        restarts: c.restarts,
                    })
                    .collect();
                let _ = reply.send(list);
            }
            SupervisorMsg::Restart(name) => {
                let Some(child) = state.children.get_mut(&name) else {
                    return Ok(());
                };
                if child.cell.is_some() {
                    return Ok(());
                }
                child.restarts += 1;
                let spec = child.spec.clone();
                if let Err(e) = state.start(&myself.get_cell(), spec).await {
                    // A failed start counts as another exit of the child.
                    state.on_child_exit(&myself, name, true, &e.to_string())?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed, why) = match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, false, reason.unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, true, err.to_string()),
            _ => return Ok(()),
        };
        match state.by_id.remove(&cell.get_id()) {
            Some(name) => state.on_child_exit(&myself, name, failed, &why),
            None => Ok(()),
        }
    }
}

/// Adds a child to a running supervisor.
pub async fn start_child(
    sup: &ActorRef<SupervisorMsg>,
    spec: ChildSpec,
) -> Result<ActorCell, String> {
    match sup
        .call(|port| SupervisorMsg::StartChild(spec, port), None)
        .await
    {
        Ok(ractor::rpc::CallResult::Success(r)) => r,
        Ok(_) => Err("supervisor did not answer".into()),
        Err(e) => Err(format!("supervisor is gone: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intensity() -> RestartIntensity {
        RestartIntensity {
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
        }
    }

    #[test]
    fn backoff_doubles_then_escalates_within_the_window() {
        let t0 = Instant::now();
        let mut t = RestartTracker::new(intensity());
        let s = Duration::from_secs;
        assert_eq!(
            t.on_exit(t0),
            Verdict::RestartAfter(Duration::from_millis(100))
        );
        assert_eq!(
            t.on_exit(t0 + s(1)),
            Verdict::RestartAfter(Duration::from_millis(200))
        );
        assert_eq!(
            t.on_exit(t0 + s(2)),
            Verdict::RestartAfter(Duration::from_millis(300))
        );
        assert_eq!(
            t.on_exit(t0 + s(3)),
            Verdict::Escalate { exits_in_window: 4 }
        );
    }

    #[test]
    fn exits_outside_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut t = RestartTracker::new(intensity());
        for i in 0..10u64 {
            // One exit every 4 s: never more than 3 within 10 s.
            let v = t.on_exit(t0 + Duration::from_secs(4 * i));
            assert!(matches!(v, Verdict::RestartAfter(_)), "exit {i}: {v:?}");
        }
    }

    /// Each start of a [`Flaky`] child: the child, and the name of the thread it started on.
    type Started = tokio::sync::mpsc::UnboundedSender<(ActorCell, Option<String>)>;

    /// A child that reports each start (and where) and fails on demand.
    #[derive(Clone)]
    struct Flaky;

    impl Actor for Flaky {
        type Msg = ();
        type State = ();
        type Arguments = Started;

        async fn pre_start(
            &self,
            myself: ActorRef<()>,
            started: Self::Arguments,
        ) -> Result<(), ActorProcessingErr> {
            let name = std::thread::current().name().map(str::to_string);
            let _ = started.send((myself.get_cell(), name));
            Ok(())
        }

        async fn handle(
            &self,
            _myself: ActorRef<()>,
            _msg: (),
            _state: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            Err("told to fail".into())
        }
    }

    #[tokio::test]
    async fn a_child_placed_on_another_runtime_starts_and_restarts_there() {
        let bg = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("elsewhere")
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let spec = ChildSpec::new("where", Restart::Permanent, Flaky, move || tx.clone())
            .on(Some(bg.handle().clone()));
        let (sup, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                intensity: intensity(),
                children: vec![spec],
                stop_when_idle: false,
            },
        )
        .await
        .expect("supervisor");
        let wait = Duration::from_secs(10);
        let (child, name) = tokio::time::timeout(wait, started.recv())
            .await
            .expect("started")
            .expect("open");
        assert_eq!(name.as_deref(), Some("elsewhere"));
        assert_ne!(
            std::thread::current().name(),
            Some("elsewhere"),
            "the test itself runs elsewhere"
        );
        // Failed, and restarted by the supervisor: on the same runtime again.
        child.send_message(()).expect("sent");
        let (again, name) = tokio::time::timeout(wait, started.recv())
            .await
            .expect("restarted")
            .expect("open");
        assert_ne!(again.get_id(), child.get_id());
        assert_eq!(name.as_deref(), Some("elsewhere"));
        sup.stop(None);
        bg.shutdown_background();
    }

    /// Spawns the supervisor under it and reports the supervisor's own exit.
    struct Parent;

    impl Actor for Parent {
        type Msg = ();
        type State = tokio::sync::mpsc::UnboundedSender<String>;
        type Arguments = (tokio::sync::mpsc::UnboundedSender<String>, Started);

        async fn pre_start(
            &self,
            myself: ActorRef<()>,
            (exits, started): Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            let spec = ChildSpec::new("flaky", Restart::Permanent, Flaky, move || started.clone());
            Actor::spawn_linked(
                None,
                Supervisor,
                SupervisorArgs {
                    intensity: intensity(),
                    children: vec![spec],
                    stop_when_idle: false,
                },
                myself.get_cell(),
            )
            .await?;
            Ok(exits)
        }

        async fn handle_supervisor_evt(
            &self,
            _myself: ActorRef<()>,
            evt: SupervisionEvent,
            exits: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            match evt {
                SupervisionEvent::ActorFailed(_, e) => {
                    let _ = exits.send(format!("failed: {e}"));
                }
                SupervisionEvent::ActorTerminated(_, _, why) => {
                    let _ = exits.send(format!("stopped: {why:?}"));
                }
                _ => {}
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_a_failing_child_then_escalates_past_the_intensity_limit() {
        let (exits_tx, mut exits) = tokio::sync::mpsc::unbounded_channel();
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (_parent, _) = Actor::spawn(None, Parent, (exits_tx, started_tx))
            .await
            .expect("spawn parent");
        let wait = Duration::from_secs(5);
        let (mut child, _) = tokio::time::timeout(wait, started.recv())
            .await
            .expect("first start")
            .expect("open");
        let mut restart_times = Vec::new();
        for restart in 1..=3 {
            let t0 = tokio::time::Instant::now();
            child.send_message(()).expect("send");
            let (next, _) = tokio::time::timeout(wait, started.recv())
                .await
                .expect("restarted")
                .expect("open");
            assert_ne!(
                next.get_id(),
                child.get_id(),
                "restart {restart} made a new actor"
            );
            restart_times.push(t0.elapsed());
            child = next;
        }
        // Backoff doubles: 100, 200, 300 (capped) ms, on tokio's paused clock.
        let ms: Vec<u128> = restart_times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 300]);
        assert!(
            exits.try_recv().is_err(),
            "the supervisor must not exit while within its limit"
        );
        // The fourth failure within the window escalates: the supervisor itself fails.
        child.send_message(()).expect("send");
        let exit = tokio::time::timeout(wait, exits.recv())
            .await
            .expect("escalated")
            .expect("open");
        assert_eq!(
            exit,
            "failed: child flaky exited 4 times within 10s; giving up"
        );
        assert!(started.try_recv().is_err(), "no restart after escalation");
    }
}
