//! The metrics listener (`--metrics-listen ADDR`): plain HTTP for a Prometheus scraper and
//! a service manager's probes.
//!
//! - `GET /metrics`: every figure of the node ([`rollcall_runtime::Node::figures`]) in the
//!   OpenMetrics text format, encoded by `prometheus-client`.
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 once the node can do its job (a server: store open and listening;
//!   an endpoint: enrolled and registered in a ring or an isolated range), 503 with the
//!   reason before.
//!
//! It starts before the node (an endpoint may wait minutes for its enrolment): until the
//! node is attached, `/metrics` shows the process alone and `/readyz` says what it waits on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use rollcall_runtime::Node;
use rollcall_runtime::figures::{Figure, FigureKind};

/// Connections served at once (more wait to be accepted).
const MAX_CONNECTIONS: usize = 16;

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Says whether the node can do its job, or why not.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Default)]
struct Shared {
    node: OnceLock<Node>,
    ready: OnceLock<ReadyCheck>,
    waiting_on: Mutex<String>,
}

/// A running metrics listener.
#[derive(Clone)]
pub struct MetricsListener {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl std::fmt::Debug for MetricsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricsListener({})", self.addr)
    }
}

impl MetricsListener {
    /// Listens on `addr` (port 0: any free port).
    pub async fn serve(addr: SocketAddr) -> Result<MetricsListener> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            waiting_on: Mutex::new("starting".into()),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(shared.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let app = app.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(30), conn).await {
                        tracing::debug!(%peer, error = %e, "metrics listener: connection ended");
                    }
                });
            }
        });
        Ok(MetricsListener { shared, addr })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `/readyz` says the node waits on until it is attached.
    pub fn waiting_on(&self, what: &str) {
        *rollcall_runtime::sync::lock(&self.shared.waiting_on) = what.into();
    }

    /// Serves `node`'s figures from now on; `/readyz` asks `ready`.
    pub fn attach(&self, node: &Node, ready: ReadyCheck) {
        let _ = self.shared.node.set(node.clone());
        let _ = self.shared.ready.set(ready);
    }
}

async fn readyz(State(st): State<Arc<Shared>>) -> Response {
    let verdict = match st.ready.get() {
        Some(check) => check().await,
        None => Err(rollcall_runtime::sync::lock(&st.waiting_on).clone()),
    };
    match verdict {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<Arc<Shared>>) -> Response {
    let figures = match st.node.get() {
        Some(n) => n.figures().await,
        None => rollcall_runtime::figures::process(),
    };
    match encode(&figures) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The figures as one scrape collects them (grouped by name, in first-seen order).
#[derive(Debug)]
struct Scrape(Vec<(String, Vec<Figure>)>);

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, samples) in &self.0 {
            let Some(first) = samples.first() else {
                continue;
            };
            let kind = match first.kind {
                FigureKind::Counter => MetricType::Counter,
                FigureKind::Gauge => MetricType::Gauge,
                FigureKind::Histogram { .. } => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(name, &first.help, None, kind)?;
            // One sample without labels: written bare (a family would write `name{}`).
            if let [only] = samples.as_slice()
                && only.labels.is_empty()
            {
                Sample(only).encode(metric)?;
                continue;
            }
            for f in samples {
                let labels: Vec<(&str, &str)> = f
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let one = metric.encode_family(&labels)?;
                Sample(f).encode(one)?;
            }
        }
        Ok(())
    }
}

/// One figure as a metric value.
struct Sample<'a>(&'a Figure);

impl EncodeMetric for Sample<'_> {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let f = self.0;
        match &f.kind {
            FigureKind::Counter if f.value.fract() == 0.0 && f.value >= 0.0 => {
                e.encode_counter::<NoLabelSet, _, u64>(&(f.value as u64), None)
            }
            FigureKind::Counter => e.encode_counter::<NoLabelSet, _, f64>(&f.value, None),
            FigureKind::Gauge if f.value.fract() == 0.0 && f.value.abs() < 9e15 => {
                e.encode_gauge(&(f.value as i64))
            }
            FigureKind::Gauge => e.encode_gauge(&f.value),
            FigureKind::Histogram { buckets, sum } => {
                e.encode_histogram::<NoLabelSet>(*sum, f.value as u64, buckets, None)
            }
        }
    }

    fn metric_type(&self) -> MetricType {
        match self.0.kind {
            FigureKind::Counter => MetricType::Counter,
            FigureKind::Gauge => MetricType::Gauge,
            FigureKind::Histogram { .. } => MetricType::Histogram,
        }
    }
}

/// Encodes `figures` in the OpenMetrics text format.
pub fn encode(figures: &[Figure]) -> Result<String, std::fmt::Error> {
    let mut groups: Vec<(String, Vec<Figure>)> = Vec::new();
    for f in figures {
        match groups.iter_mut().find(|(n, _)| *n == f.name) {
            Some((_, g)) => g.push(f.clone()),
            None => groups.push((f.name.clone(), vec![f.clone()])),
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Scrape(groups)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_encode_as_openmetrics_with_labels_and_histograms() {
        let figures = vec![
            Figure::counter("rollcall_frames_rejected", "refused", 3).label("cause", "garbage"),
            Figure::counter("rollcall_frames_rejected", "refused", 1).label("cause", "spoofed"),
            Figure::gauge("rollcall_rings", "rings", 2.0),
            Figure {
                name: "rollcall_t".into(),
                help: "t".into(),
                kind: FigureKind::Histogram {
                    buckets: vec![(0.5, 1), (1.0, 2), (f64::MAX, 1)],
                    sum: 3.5,
                },
                labels: Vec::new(),
                value: 4.0,
            },
        ];
        let text = encode(&figures).expect("encode");
        for line in [
            "# TYPE rollcall_frames_rejected counter",
            "rollcall_frames_rejected_total{cause=\"garbage\"} 3",
            "rollcall_frames_rejected_total{cause=\"spoofed\"} 1",
            "rollcall_rings 2",
            "rollcall_t_sum 3.5",
            "rollcall_t_bucket{le=\"1.0\"} 3",
            "rollcall_t_bucket{le=\"+Inf\"} 4",
            "rollcall_t_count 4",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // One descriptor per name.
        assert_eq!(text.matches("# TYPE rollcall_frames_rejected ").count(), 1);
    }
}
