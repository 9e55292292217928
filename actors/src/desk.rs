//! Questions end to end: the endpoint's [`SensorEvaluator`] (a ring member's bridge to its
//! sensors) and the server's [`QuestionDesk`] (operators ask, watch progress, list).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rollcall_cluster::member::Evaluator;
use rollcall_cluster::proto::NodeAnswer;
use rollcall_cluster::questions::{Progress, QuestionSummary};
use rollcall_cluster::shard::RingServer;
use rollcall_runtime::OperatorRole;
use rollcall_runtime::node::{Deliver, DestinationGone, Incoming};
use rollcall_runtime::wire;
use serde::{Deserialize, Serialize};

use crate::question::{Question, SensorSpec, parse};
use crate::sensors::Sensors;

/// Name of the server actor operators ask questions through.
pub const DESK: &str = "question.desk";

/// How long a question stays open unless the operator says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// Answers questions with this endpoint's sensors.
#[derive(Debug, Clone)]
pub struct SensorEvaluator {
    sensors: Sensors,
}

impl SensorEvaluator {
    /// An evaluator over `sensors`.
    pub fn new(sensors: Sensors) -> SensorEvaluator {
        SensorEvaluator { sensors }
    }
}

impl Evaluator for SensorEvaluator {
    fn evaluate(&self, body: &[u8]) -> BoxFuture<'static, NodeAnswer> {
        let question: Result<Question, _> = wire::decode_body(body);
        let sensors = self.sensors.clone();
        Box::pin(async move {
            match question {
                Ok(q) => {
                    let a = sensors.answer(&q).await;
                    NodeAnswer {
                        row: a.row,
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
                    row: None,
                    problems: vec![format!("cannot read the question: {e}")],
                },
            }
        })
    }
}

/// What operators ask the desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeskRequest {
    /// Ask a question (operator role).
    Ask {
        /// The question text.
        text: String,
        /// How long it stays open (default 10 minutes).
        ttl_ms: Option<u64>,
    },
    /// Where a question stands (viewer role).
    Progress {
        /// Its id.
        id: u64,
    },
    /// The kept questions (viewer role).
    List,
}

/// The desk's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeskReply {
    /// The question is out.
    Asked {
        /// Its id.
        id: u64,
        /// Machines expected to answer.
        expected: usize,
        /// The question as understood.
        canonical: String,
    },
    /// Progress.
    Progress(Progress),
    /// The list.
    List(Vec<QuestionSummary>),
    /// The request could not be served (a parse error with its column, an unknown id, a
    /// missing role).
    Error(String),
}

/// The server's question desk.
pub struct QuestionDesk {
    rings: RingServer,
    catalog: Arc<Vec<SensorSpec>>,
}

impl QuestionDesk {
    /// A desk that parses against `catalog` and asks through `rings`.
    pub fn new(rings: RingServer, catalog: Vec<SensorSpec>) -> QuestionDesk {
        QuestionDesk {
            rings,
            catalog: Arc::new(catalog),
        }
    }

    /// Serves one request.
    pub async fn serve(&self, req: DeskRequest, role: rollcall_runtime::PeerRole) -> DeskReply {
        let needed = match req {
            DeskRequest::Ask { .. } => OperatorRole::Operator,
            _ => OperatorRole::Viewer,
        };
        if !role.allows(needed) {
            return DeskReply::Error(format!("this needs the {needed} role; you are {role}"));
        }
        match req {
            DeskRequest::Ask { text, ttl_ms } => {
                let q = match parse(&text, &self.catalog) {
                    Ok(q) => q,
                    Err(e) => return DeskReply::Error(e.to_string()),
                };
                let body = match wire::encode_body(&q) {
                    Ok(b) => b,
                    Err(e) => return DeskReply::Error(e.to_string()),
                };
                let columns = q.select.iter().map(ToString::to_string).collect();
                let ttl = ttl_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TTL);
                let id = self.rings.ask(text, columns, body, ttl).await;
                let expected = self.rings.progress(id).map(|p| p.expected).unwrap_or(0);
                DeskReply::Asked {
                    id,
                    expected,
                    canonical: q.to_string(),
                }
            }
            DeskRequest::Progress { id } => match self.rings.progress(id) {
                Some(p) => DeskReply::Progress(p),
                None => DeskReply::Error(format!(
                    "no question {id} (it may have been dropped from the store)"
                )),
            },
            DeskRequest::List => DeskReply::List(self.rings.questions()),
        }
    }

    /// Registers the desk on the server node as [`DESK`].
    pub fn install(self, node: &rollcall_runtime::Node) {
        node.router()
            .register(DESK, Arc::new(DeskRoute(Arc::new(self))));
    }
}

struct DeskRoute(Arc<QuestionDesk>);

impl Deliver for DeskRoute {
    fn deliver(&self, mut incoming: Incoming) -> Result<(), DestinationGone> {
        let Ok(req) = incoming.decode::<DeskRequest>() else {
            incoming.refuse();
            return Ok(());
        };
        let desk = self.0.clone();
        tokio::spawn(async move {
            let reply = desk.serve(req, incoming.from.role).await;
            let _ = incoming.answer(&reply);
        });
        Ok(())
    }
}
