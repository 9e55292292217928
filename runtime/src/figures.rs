//! A node's figures: every counter and level an operator watches, as one flat list of
//! samples that the metrics listener (Prometheus exposition) and `rollcall status` both
//! show, so the two never disagree.
//!
//! The runtime knows only its own counters ([`WireStatsSnapshot::figures`]) and the process
//! ([`process`]); the composition root adds the rings', questions', actions' and chunks'
//! figures through a [`FigureSource`] set on the node.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::stats::WireStatsSnapshot;

/// What kind of value a figure is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FigureKind {
    /// Only ever grows (resets with the process).
    Counter,
    /// A level that goes up and down.
    Gauge,
    /// A distribution: `buckets` are (upper bound, observations in that bucket alone), the
    /// figure's value is the count, `sum` the observations' sum.
    Histogram {
        /// (upper bound, observations at or under it and over the previous bound).
        buckets: Vec<(f64, u64)>,
        /// Sum of every observation.
        sum: f64,
    },
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Metric name, `rollcall_` prefixed, without a `_total` suffix.
    pub name: String,
    /// What it counts.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: FigureKind,
    /// Label pairs that tell samples of one name apart (`cause="garbage"`).
    pub labels: Vec<(String, String)>,
    /// The value (a histogram's count).
    pub value: f64,
}

impl Figure {
    /// A counter.
    pub fn counter(name: &str, help: &str, value: u64) -> Figure {
        Figure {
            name: name.into(),
            help: help.into(),
            kind: FigureKind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }

    /// A gauge.
    pub fn gauge(name: &str, help: &str, value: f64) -> Figure {
        Figure {
            name: name.into(),
            help: help.into(),
            kind: FigureKind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    /// This figure with one more label.
    pub fn label(mut self, key: &str, value: impl Into<String>) -> Figure {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// The label `key`'s value.
    pub fn label_value(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Adds figures beyond the node's own (set with [`crate::Node::set_figures`]).
pub trait FigureSource: Send + Sync + 'static {
    /// The figures now.
    fn figures(&self) -> BoxFuture<'static, Vec<Figure>>;
}

impl WireStatsSnapshot {
    /// The link counters as figures: every rejection under one name with its cause as a
    /// label, the rest each under its own name.
    pub fn figures(&self) -> Vec<Figure> {
        self.fields()
            .into_iter()
            .map(|(name, help, v)| match name.strip_prefix("rejected_") {
                Some(cause) => Figure::counter(
                    "rollcall_frames_rejected",
                    "Frames and envelopes refused, by cause",
                    v,
                )
                .label("cause", cause),
                None if name == "frame_bytes_reading" => {
                    Figure::gauge(&format!("rollcall_{name}"), help, v as f64)
                }
                None => Figure::counter(&format!("rollcall_{name}"), help, v),
            })
            .collect()
    }
}

/// This process's CPU time, memory and threads, read from `/proc/self` (nothing where it
/// cannot be read).
pub fn process() -> Vec<Figure> {
    let mut out = Vec::new();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks (100 a second on Linux), threads the 18th.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some((_, rest)) = stat.rsplit_once(')')
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            out.push(Figure {
                kind: FigureKind::Counter,
                ..Figure::gauge(
                    "process_cpu_seconds",
                    "User and system CPU time spent, in seconds",
                    (u + s) as f64 / 100.0,
                )
            });
        }
        if let Some(t) = num(17) {
            out.push(Figure::gauge("process_threads", "OS threads", t as f64));
        }
    }
    let kib = |file: &str, key: &str| {
        std::fs::read_to_string(file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
    };
    if let Some(rss) = kib("/proc/self/status", "VmRSS:") {
        out.push(Figure::gauge(
            "process_resident_memory_bytes",
            "Resident memory, in bytes",
            (rss * 1024) as f64,
        ));
    }
    if let Some(pss) = kib("/proc/self/smaps_rollup", "Pss:") {
        out.push(Figure::gauge(
            "process_proportional_memory_bytes",
            "Proportional set size (shared pages split among their users), in bytes",
            (pss * 1024) as f64,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_counters_become_figures_with_causes() {
        let snap = WireStatsSnapshot {
            rejected_garbage: 3,
            envelopes_received: 7,
            frame_bytes_reading: 12,
            ..WireStatsSnapshot::default()
        };
        let f = snap.figures();
        let garbage = f
            .iter()
            .find(|x| x.label_value("cause") == Some("garbage"))
            .expect("garbage");
        assert_eq!(
            (garbage.name.as_str(), garbage.value),
            ("rollcall_frames_rejected", 3.0)
        );
        let got = f
            .iter()
            .find(|x| x.name == "rollcall_envelopes_received")
            .expect("received");
        assert_eq!((got.value, &got.kind), (7.0, &FigureKind::Counter));
        let reading = f
            .iter()
            .find(|x| x.name == "rollcall_frame_bytes_reading")
            .expect("reading");
        assert_eq!((reading.value, &reading.kind), (12.0, &FigureKind::Gauge));
        // Every counter appears once: one per field.
        assert_eq!(f.len(), snap.fields().len());
    }

    #[test]
    fn the_process_reads_itself() {
        let f = process();
        let rss = f
            .iter()
            .find(|x| x.name == "process_resident_memory_bytes")
            .expect("rss");
        assert!(rss.value > 1024.0 * 1024.0, "{rss:?}");
        let threads = f
            .iter()
            .find(|x| x.name == "process_threads")
            .expect("threads");
        assert!(threads.value >= 1.0);
    }
}
