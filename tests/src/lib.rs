//! Harness for rollcall's cross-crate suites: nodes on loopback QUIC, on the in-memory
//! network and on the deterministic network; a probe actor that echoes, records and holds
//! calls; seed handling for seeded suites.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rollcall_runtime::PeerIdentity;
use rollcall_runtime::identity::{Ca, Credentials, NodeSecret, PeerRole, Validity};
use rollcall_runtime::node::{Incoming, Node, NodeOptions};
use rollcall_runtime::tls::LinkTimeouts;
use rollcall_runtime::transport::mem::MemNetwork;
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Name the probe actor is registered under.
pub const PROBE: &str = "probe";

/// What the probe actor is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    /// Answer with the same text.
    Echo(String),
    /// Record the number (casts); answer with it (calls).
    Record(u32),
    /// Answer with the caller's identity as read from its certificate.
    WhoAmI,
    /// Drop the call without answering.
    Drop,
    /// Answer with something that cannot be encoded.
    Unencodable,
    /// Keep the call and never answer.
    Hold,
    /// Acknowledge the call, then keep it and never answer.
    AckThenHold,
    /// Acknowledge the call, then answer with the same text.
    AckThenEcho(String),
    /// Keep the call and record the number.
    HoldAndTell(u32),
    /// Answer every call kept so far with `Echo("released")`.
    Release,
}

/// An answer whose encoding fails.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this answer cannot be encoded"))
    }
}

/// What the probe actor answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeReply {
    /// Echoed text.
    Echo(String),
    /// Recorded number.
    Recorded(u32),
    /// The caller.
    Caller(PeerIdentity),
}

/// A test actor that echoes, records casts into a channel, and can drop or hold calls.
#[derive(Clone, Copy)]
pub struct ProbeActor;

/// The probe's state.
pub struct ProbeState {
    recorded: mpsc::UnboundedSender<(PeerIdentity, u32)>,
    held: Vec<Incoming>,
}

impl Actor for ProbeActor {
    type Msg = Incoming;
    type State = ProbeState;
    type Arguments = mpsc::UnboundedSender<(PeerIdentity, u32)>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Incoming>,
        recorded: Self::Arguments,
    ) -> Result<ProbeState, ActorProcessingErr> {
        Ok(ProbeState {
            recorded,
            held: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Incoming>,
        mut msg: Incoming,
        state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        let Ok(probe) = msg.decode::<Probe>() else {
            msg.refuse();
            return Ok(());
        };
        match probe {
            Probe::Echo(s) => msg.answer(&ProbeReply::Echo(s))?,
            Probe::Record(n) => {
                let _ = state.recorded.send((msg.from.clone(), n));
                msg.answer(&ProbeReply::Recorded(n))?;
            }
            Probe::WhoAmI => {
                let who = msg.from.clone();
                msg.answer(&ProbeReply::Caller(who))?;
            }
            Probe::Drop => drop(msg),
            Probe::Unencodable => {
                let err = msg.answer(&Unencodable).expect_err("cannot be encoded");
                assert!(err.to_string().contains("cannot be encoded"), "{err}");
            }
            Probe::Hold => state.held.push(msg),
            Probe::AckThenHold => {
                msg.ack();
                state.held.push(msg);
            }
            Probe::AckThenEcho(s) => {
                msg.ack();
                msg.answer(&ProbeReply::Echo(s))?;
            }
            Probe::HoldAndTell(n) => {
                let _ = state.recorded.send((msg.from.clone(), n));
                state.held.push(msg);
            }
            Probe::Release => {
                for mut held in state.held.drain(..) {
                    held.answer(&ProbeReply::Echo("released".into()))?;
                }
                msg.answer(&ProbeReply::Echo("released".into()))?;
            }
        }
        Ok(())
    }
}

/// Starts a probe actor on `node`; returns what it records.
pub async fn start_probe(node: &Node) -> mpsc::UnboundedReceiver<(PeerIdentity, u32)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (probe, _) = Actor::spawn(None, ProbeActor, tx)
        .await
        .expect("spawn probe");
    node.router()
        .register_actor(PROBE, rollcall_runtime::Roles::ANY, probe);
    rx
}

/// A fresh cluster CA.
pub fn ca() -> Arc<Ca> {
    Arc::new(Ca::generate("rollcall test").expect("generate CA"))
}

/// Credentials for a new identity of `role`.
pub fn creds(ca: &Ca, role: PeerRole) -> Credentials {
    ca.issue(role, None, Validity::default()).expect("issue")
}

/// Question `id` with `body`, signed by `signer` and open for `ttl`, as the server sends it.
pub fn signed_question(
    signer: &rollcall_runtime::signing::ServerSigner,
    id: u64,
    body: Vec<u8>,
    ttl: Duration,
) -> rollcall_cluster::proto::QuestionEnvelope {
    use rollcall_runtime::signing::{Purpose, Stamp};
    let stamp = Stamp::now_for(ttl);
    rollcall_cluster::proto::QuestionEnvelope {
        id,
        signature: signer.sign(Purpose::Question, id, stamp, &body),
        body,
        ttl_ms: ttl.as_millis() as u64,
        stamp,
    }
}

/// A question's rows as (first cell, machines), most common first.
pub fn first_cells(p: &rollcall_cluster::questions::Progress) -> Vec<(String, u64)> {
    p.rows
        .iter()
        .map(|r| (r.cells.first().cloned().unwrap_or_default(), r.count))
        .collect()
}

/// A route that answers every call with `()` (a peer's proof that it is served).
pub struct Echo;

impl rollcall_runtime::node::Deliver for Echo {
    fn deliver(
        &self,
        mut incoming: Incoming,
    ) -> Result<(), rollcall_runtime::node::DestinationGone> {
        let _ = incoming.answer(&());
        Ok(())
    }
}

/// Timeouts short enough for tests: keep-alive 200 ms, idle 1 s.
pub fn fast_timeouts() -> LinkTimeouts {
    LinkTimeouts {
        keep_alive_ms: 200,
        idle_timeout_ms: 1_000,
        ..LinkTimeouts::default()
    }
}

/// A node on real QUIC at `ip` (any free port).
pub async fn quic_node(
    creds: &Credentials,
    ip: &str,
    opts: QuicOptions,
) -> (Node, Arc<QuicTransport>) {
    let addr: SocketAddr = format!("{ip}:0").parse().expect("addr");
    let t = QuicTransport::bind(addr, creds, &NodeSecret::generate(), opts).expect("bind");
    let node = Node::start(t.clone(), NodeOptions::default())
        .await
        .expect("start node");
    (node, t)
}

/// A node on the in-memory network at `addr`.
pub async fn mem_node(net: &MemNetwork, addr: &str, identity: PeerIdentity) -> Node {
    let t = net
        .bind(addr.parse().expect("addr"), identity)
        .expect("bind");
    Node::start(t, NodeOptions::default())
        .await
        .expect("start node")
}

/// The seeds a seeded suite runs: `ROLLCALL_SEED` alone if set, else `ROLLCALL_SEEDS`
/// (default `default_count`) seeds from 1.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(one) = std::env::var("ROLLCALL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![one];
    }
    let n = std::env::var("ROLLCALL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    (1..=n).collect()
}

/// Prints the seed if the test panics while this guard is alive.
#[derive(Debug)]
pub struct SeedGuard(pub &'static str, pub u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {}; rerun with ROLLCALL_SEED={} cargo test -p rollcall-tests --test <suite> {}",
                self.0, self.1, self.1, self.0
            );
        }
    }
}

/// A generous deadline for anything that happens on loopback.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` every 20 ms until it returns `Some`, or panics naming `what` after
/// `deadline`. For state that has no event to await (a ring's shape, a member's view).
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_or(what, deadline, || {
        let f = check();
        async move { f.await.ok_or_else(|| "not yet".to_string()) }
    })
    .await
}

/// Like [`eventually`], with `check` saying what it saw when not yet satisfied, which the
/// panic repeats.
pub async fn eventually_or<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}; last seen:\n{last}");
        }
    }
}

pub mod fleet;
pub mod rings;

/// Polls `check` every 20 ms for `duration` and panics naming `what` the first time it fails.
/// For invariants that must hold over a span (nobody evicted while answering).
pub async fn holds_for<F, Fut>(what: &str, duration: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + duration;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        assert!(check().await, "{what} stopped holding");
    }
}

/// The deterministic network's helpers: a node on turmoil's simulated UDP, and its clock.
pub mod sim {
    use std::sync::Arc;

    use rollcall_runtime::backoff::BackoffConfig;
    use rollcall_runtime::identity::{Credentials, NodeSecret};
    use rollcall_runtime::node::{Node, NodeOptions};
    use rollcall_runtime::tls::LinkTimeouts;
    use rollcall_runtime::transport::deterministic::TurmoilUdpSocket;
    use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};

    /// The port every simulated node binds.
    pub const PORT: u16 = 4433;

    /// Simulated milliseconds since the simulation started.
    pub fn now_ms() -> u128 {
        turmoil::sim_elapsed().unwrap_or_default().as_millis()
    }

    /// A node on the current turmoil host, its QUIC randomness seeded from `seed`, redialing
    /// with backoff from 100 ms to 1 s.
    pub async fn node(
        creds: &Credentials,
        secret: &NodeSecret,
        seed: u64,
        timeouts: LinkTimeouts,
    ) -> Result<Node, Box<dyn std::error::Error>> {
        node_with_faults(creds, secret, seed, timeouts, None).await
    }

    /// Like [`node`], with a fault-injecting socket (loss, duplication, blocking).
    pub async fn node_with_faults(
        creds: &Credentials,
        secret: &NodeSecret,
        seed: u64,
        timeouts: LinkTimeouts,
        faults: Option<Arc<rollcall_runtime::transport::faults::SocketFaults>>,
    ) -> Result<Node, Box<dyn std::error::Error>> {
        let socket = TurmoilUdpSocket::bind(PORT).await?;
        let mut rng_seed = [0u8; 32];
        rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
        let t = QuicTransport::with_socket(
            socket,
            Arc::new(quinn::TokioRuntime),
            creds,
            secret,
            QuicOptions {
                timeouts,
                rng_seed: Some(rng_seed),
                faults,
                ..Default::default()
            },
        )?;
        let opts = NodeOptions {
            reconnect: BackoffConfig {
                base_ms: 100,
                max_ms: 1_000,
            },
            seed,
            ..Default::default()
        };
        Ok(Node::start(t, opts).await?)
    }
}

/// An operator of `role` named after it, as the desk sees a caller.
pub fn as_operator(role: rollcall_runtime::PeerRole) -> rollcall_runtime::PeerIdentity {
    rollcall_runtime::PeerIdentity {
        id: rollcall_runtime::NodeId(format!("test-{role}").into()),
        role,
    }
}
