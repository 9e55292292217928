//! The endpoint's side of questions: the [`SensorEvaluator`] a ring member asks, and the
//! server's signed sensor configuration ([`SignedConfig`]) it takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_cluster::member::Evaluator;
use rollcall_cluster::proto::NodeAnswer;
use rollcall_runtime::WireStats;
use rollcall_runtime::node::{Deliver, DestinationGone, Incoming};
use rollcall_runtime::revocation::Revocations;
use rollcall_runtime::signing::{Purpose, ServerSigner, ServerTrust, Stamp, unix_ms};
use rollcall_runtime::wire::{self, WireError};
use serde::{Deserialize, Serialize};

use crate::action::ACTION_BODY;
use crate::action::runner::ActionRunner;
use crate::question::{Question, SensorSpec};
use crate::sensors::{PatchLevel, ScriptSensor, Sensors};

/// Name of the endpoint actor that takes the sensor configuration the server hands out at
/// every registration.
pub const SENSOR_CONFIG: &str = "sensors.config";

/// What the server distributes to every endpoint: script sensors and the patch baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorConfig {
    /// Admin-registered script sensors (each checked against its hash before use).
    pub scripts: Vec<ScriptSensor>,
    /// Versions `Missing Patches` compares against.
    pub baseline: Vec<PatchLevel>,
    /// Revoked endpoints and operators (node ids and names): refused by every endpoint.
    #[serde(default)]
    pub revoked: Vec<String>,
}

/// The [`SensorConfig`] as the server hands it out: its encoding, signed by the server
/// ([`Purpose::SensorConfig`]). It stays valid until a newer one replaces it (its stamp's
/// expiry is ten years on); an endpoint takes only a configuration issued after the one it
/// holds, so an old one cannot be replayed to bring back a removed script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedConfig {
    /// The encoded [`SensorConfig`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// When the server issued it.
    pub stamp: Stamp,
    /// The server's signature over the stamp and the body.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// How long a signed sensor configuration stays valid: until replaced, in practice.
const CONFIG_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl SignedConfig {
    /// Encodes and signs `cfg`.
    pub fn sign(cfg: &SensorConfig, signer: &ServerSigner) -> Result<SignedConfig, WireError> {
        let body = wire::encode_body(cfg)?;
        let stamp = Stamp::now_for(CONFIG_VALIDITY);
        let signature = signer.sign(Purpose::SensorConfig, 0, stamp, &body);
        Ok(SignedConfig {
            body,
            stamp,
            signature,
        })
    }

    /// The configuration, if the server pinned in `trust` signed it.
    pub fn open(&self, trust: &ServerTrust) -> Result<SensorConfig, String> {
        trust
            .verify(
                Purpose::SensorConfig,
                0,
                self.stamp,
                &self.body,
                &self.signature,
                unix_ms(),
            )
            .map_err(|e| e.to_string())?;
        wire::decode_body(&self.body).map_err(|e| e.to_string())
    }
}

/// Answers questions with this endpoint's sensors.
#[derive(Debug, Clone)]
pub struct SensorEvaluator {
    /// Replaced whole when the server's configuration comes: a question takes a reference,
    /// not a copy of every script.
    sensors: Arc<RwLock<Arc<Sensors>>>,
    /// Runs the actions that come as question bodies (none: this endpoint refuses them).
    actions: Option<Arc<ActionRunner>>,
}

impl SensorEvaluator {
    /// An evaluator over `sensors`.
    pub fn new(sensors: Sensors) -> SensorEvaluator {
        SensorEvaluator {
            sensors: Arc::new(RwLock::new(Arc::new(sensors))),
            actions: None,
        }
    }

    /// An evaluator that also runs actions with `runner` (whose journal and quarantine the
    /// action sensors read).
    pub fn with_actions(sensors: Sensors, runner: Arc<ActionRunner>) -> SensorEvaluator {
        let sensors = sensors.with_actions(runner.clone());
        SensorEvaluator {
            sensors: Arc::new(RwLock::new(Arc::new(sensors))),
            actions: Some(runner),
        }
    }

    /// Takes the server's [`SignedConfig`] on `node` as [`SENSOR_CONFIG`], if the server
    /// `trust` pins signed it.
    pub fn accept_config_on(&self, node: &rollcall_runtime::Node, trust: Arc<ServerTrust>) {
        node.router().register(
            SENSOR_CONFIG,
            rollcall_runtime::Roles::SERVER,
            Arc::new(ConfigRoute {
                sensors: self.sensors.clone(),
                revocations: node.revocations().clone(),
                trust,
                stats: node.wire_stats().clone(),
                issued: AtomicU64::new(0),
            }),
        );
    }

    /// The sensor names this endpoint knows now.
    pub fn catalog(&self) -> Vec<SensorSpec> {
        Some(rollcall_runtime::sync::read(&self.sensors))
            .map(|s| s.catalog())
            .unwrap_or_default()
    }
}

struct ConfigRoute {
    sensors: Arc<RwLock<Arc<Sensors>>>,
    revocations: Arc<Revocations>,
    trust: Arc<ServerTrust>,
    stats: Arc<WireStats>,
    /// Issue time of the configuration in use (0: none yet).
    issued: AtomicU64,
}

impl Deliver for ConfigRoute {
    fn deliver(&self, incoming: Incoming) -> Result<(), DestinationGone> {
        if incoming.from.role != rollcall_runtime::PeerRole::Server {
            return Ok(());
        }
        let signed = match incoming.decode::<SignedConfig>() {
            Ok(s) => s,
            Err(e) => {
                self.stats.incr(|s| &s.rejected_protocol);
                tracing::warn!(error = %e, "refused a sensor configuration that does not decode");
                return Ok(());
            }
        };
        let issued = signed.stamp.issued_unix_ms;
        let current = self.issued.load(Ordering::Acquire);
        if issued == current {
            // The same one again (handed over at every registration).
            return Ok(());
        }
        let cfg = match signed.open(&self.trust) {
            Ok(c) if issued > current => c,
            Ok(_) => {
                self.stats.incr(|s| &s.rejected_unsigned);
                tracing::warn!(
                    issued,
                    current,
                    "refused a sensor configuration older than the one in use"
                );
                return Ok(());
            }
            Err(e) => {
                self.stats.incr(|s| &s.rejected_unsigned);
                tracing::warn!(error = %e, "refused a sensor configuration the server did not sign");
                return Ok(());
            }
        };
        {
            let mut s = rollcall_runtime::sync::write(&self.sensors);
            let mut next = Sensors::clone(&s);
            if let Err(e) = next.set_scripts(cfg.scripts) {
                tracing::warn!(error = %e, "refused the server's script sensors");
            }
            next.set_baseline(cfg.baseline);
            *s = Arc::new(next);
            self.revocations
                .set(cfg.revoked.into_iter().map(rollcall_runtime::NodeId::new));
            self.issued.store(issued, Ordering::Release);
        }
        Ok(())
    }
}

impl Evaluator for SensorEvaluator {
    fn evaluate(&self, body: &[u8]) -> BoxFuture<'static, NodeAnswer> {
        if body.first() == Some(&ACTION_BODY) {
            let sensors = Arc::clone(&rollcall_runtime::sync::read(&self.sensors));
            return match &self.actions {
                Some(runner) => runner.deliver(body, sensors),
                None => Box::pin(std::future::ready(NodeAnswer {
                    rows: None,
                    problems: vec!["this endpoint runs no actions".into()],
                })),
            };
        }
        let question: Result<Question, _> = wire::decode_body(body);
        let sensors = Arc::clone(&rollcall_runtime::sync::read(&self.sensors));
        Box::pin(async move {
            match question {
                Ok(q) if q.check().is_err() => NodeAnswer {
                    rows: None,
                    problems: vec![format!(
                        "question refused: {}",
                        q.check().err().map(|e| e.to_string()).unwrap_or_default()
                    )],
                },
                Ok(q) => {
                    let a = sensors.answer(&q).await;
                    NodeAnswer {
                        rows: a.rows,
                        problems: a
                            .problems
                            .iter()
                            .map(|p| {
                                let e = p
                                    .error
                                    .as_ref()
                                    .map(ToString::to_string)
                                    .unwrap_or_default();
                                format!("{}: {e} ({} ms)", p.sensor, p.runtime_ms)
                            })
                            .collect(),
                    }
                }
                Err(e) => NodeAnswer {
                    rows: None,
                    problems: vec![format!("cannot read the question: {e}")],
                },
            }
        })
    }
}
