//! Results out: one event per machine row of a question's answer, with the question, the
//! time and the machine, written as JSON lines, sent to Splunk's HTTP Event Collector (its
//! JSON format, with the `Authorization: Splunk TOKEN` header), or as RFC 5424 syslog
//! messages over UDP or TCP (octet-counted framing, RFC 6587).
//!
//! Network deliveries go through the server's [`queue::ExportQueue`]: a bounded queue on
//! disk, retried with backoff until delivered and reported meanwhile — never dropped
//! silently (a full queue refuses new events, and says so).

pub mod queue;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::time::Duration;

use rollcall_cluster::shard::RingServer;
use serde::{Deserialize, Serialize};

/// One machine row of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The question's id.
    pub question_id: u64,
    /// Its text.
    pub question: String,
    /// When it was asked (ms since the Unix epoch).
    pub time_ms: u64,
    /// The machine's node id.
    pub machine: String,
    /// Its host name.
    pub host: String,
    /// Column → value, in the question's order.
    pub columns: Vec<(String, String)>,
}

impl Event {
    /// The event as a JSON object (what a JSON line holds, and Splunk's `event`).
    pub fn json(&self) -> serde_json::Value {
        let columns: serde_json::Map<String, serde_json::Value> = self
            .columns
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "question_id": self.question_id,
            "question": self.question,
            "time": crate::history::utc(self.time_ms),
            "machine": self.machine,
            "host": self.host,
            "columns": columns,
        })
    }
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sink {
    /// A file of JSON lines (appended).
    Jsonl(std::path::PathBuf),
    /// Splunk's HTTP Event Collector at this URL (e.g.
    /// `https://splunk:8088/services/collector/event`), with this token.
    SplunkHec {
        /// The collector's URL.
        url: String,
        /// Its token.
        token: String,
    },
    /// A syslog receiver.
    Syslog {
        /// TCP (else UDP).
        tcp: bool,
        /// `host:port`.
        addr: String,
    },
}

impl fmt::Display for Sink {
    /// As written with `--to`, without the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Jsonl(p) => write!(f, "jsonl:{}", p.display()),
            Sink::SplunkHec { url, .. } => write!(f, "splunk-hec:{url}"),
            Sink::Syslog { tcp, addr } => {
                write!(f, "syslog:{}://{addr}", if *tcp { "tcp" } else { "udp" })
            }
        }
    }
}

impl Sink {
    /// Reads `jsonl:PATH`, `splunk-hec:URL` (with `token`), `syslog:udp://HOST:PORT` or
    /// `syslog:tcp://HOST:PORT` (`syslog:HOST:PORT` is UDP).
    pub fn parse(to: &str, token: Option<&str>) -> Result<Sink, String> {
        let (kind, rest) = to.split_once(':').ok_or_else(|| {
            format!("{to:?}: write jsonl:PATH, splunk-hec:URL or syslog:udp://HOST:PORT")
        })?;
        match kind {
            "jsonl" if !rest.is_empty() => Ok(Sink::Jsonl(rest.into())),
            "splunk-hec" => {
                if !(rest.starts_with("http://") || rest.starts_with("https://")) {
                    return Err(format!("{rest:?} is not an http:// or https:// URL"));
                }
                let token = token
                    .filter(|t| !t.trim().is_empty())
                    .ok_or("splunk-hec needs the collector's token (--hec-token)")?;
                Ok(Sink::SplunkHec {
                    url: rest.to_string(),
                    token: token.trim().to_string(),
                })
            }
            "syslog" => {
                let (tcp, addr) = match rest.split_once("://") {
                    Some(("tcp", a)) => (true, a),
                    Some(("udp", a)) => (false, a),
                    Some((other, _)) => return Err(format!("syslog over {other}: udp or tcp")),
                    None => (false, rest),
                };
                match addr.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(Sink::Syslog {
                        tcp,
                        addr: addr.to_string(),
                    }),
                    _ => Err(format!("{addr:?} is not HOST:PORT")),
                }
            }
            _ => Err(format!(
                "{to:?}: write jsonl:PATH, splunk-hec:URL or syslog:udp://HOST:PORT"
            )),
        }
    }
}

/// The events of question `id`'s answer: one per machine row (machines that did not match
/// give none). `None` if the server no longer holds the question.
pub async fn events_of(rings: &RingServer, id: u64) -> Option<Vec<Event>> {
    let p = rings.progress(id)?;
    let groups = rings.answers_by_machine(id)?;
    let report = rings.report(None).await;
    let hosts: HashMap<String, String> = report
        .rings
        .iter()
        .flat_map(|r| r.members.iter())
        .chain(report.isolated.iter())
        .map(|m| (m.id.to_string(), m.hostname.to_string()))
        .collect();
    let asked_ms = rollcall_runtime::signing::unix_ms().saturating_sub(p.elapsed_ms);
    let mut out = Vec::new();
    for (answer, machines) in groups {
        for row in answer.rows.iter().flatten() {
            let columns: Vec<(String, String)> =
                p.columns.iter().cloned().zip(row.iter().cloned()).collect();
            for m in &machines {
                let machine = m.to_string();
                out.push(Event {
                    question_id: id,
                    question: p.text.clone(),
                    time_ms: asked_ms,
                    host: hosts.get(&machine).cloned().unwrap_or_default(),
                    machine,
                    columns: columns.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.host, &a.machine).cmp(&(&b.host, &b.machine)));
    Some(out)
}

/// Splunk HEC's body for `events`: one JSON object each, one after another.
pub fn hec_body(events: &[Event]) -> String {
    let mut s = String::new();
    for e in events {
        let o = serde_json::json!({
            "time": e.time_ms as f64 / 1000.0,
            "host": e.host,
            "source": "rollcall",
            "sourcetype": "rollcall:answer",
            "event": e.json(),
        });
        s.push_str(&o.to_string());
        s.push('\n');
    }
    s
}

/// `e` as one RFC 5424 message from `hostname` (facility local0, severity info; the
/// question id as MSGID, the question and machine as structured data, the event's JSON as
/// the message).
pub fn syslog_message(e: &Event, hostname: &str) -> Result<String, String> {
    use syslog::LogFormat;
    let f = syslog::Formatter5424 {
        facility: syslog::Facility::LOG_LOCAL0,
        hostname: Some(hostname.to_string()),
        process: "rollcall".into(),
        pid: std::process::id(),
    };
    let mut sd: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    sd.insert(
        "rollcall@32473".into(),
        BTreeMap::from([
            ("question".to_string(), e.question_id.to_string()),
            ("machine".to_string(), e.machine.clone()),
            ("host".to_string(), e.host.clone()),
        ]),
    );
    let mut out = Vec::new();
    f.format(
        &mut out,
        syslog::Severity::LOG_INFO,
        (
            u32::try_from(e.question_id).unwrap_or(0),
            sd,
            e.json().to_string(),
        ),
    )
    .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Delivers `events` to `sink` now (blocking): all of them, or an error.
pub fn deliver(sink: &Sink, events: &[Event]) -> Result<(), String> {
    match sink {
        Sink::Jsonl(path) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut s = String::new();
            for e in events {
                s.push_str(&e.json().to_string());
                s.push('\n');
            }
            f.write_all(s.as_bytes())
                .and_then(|()| f.sync_data())
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Sink::SplunkHec { url, token } => {
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(DELIVERY_TIMEOUT))
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut resp = agent
                .post(url.as_str())
                .header("Authorization", &format!("Splunk {token}"))
                .header("Content-Type", "application/json")
                .send(hec_body(events))
                .map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                Err(format!(
                    "{url}: HTTP {}: {}",
                    status.as_u16(),
                    crate::action::cut(&body, 200)
                ))
            }
        }
        Sink::Syslog { tcp, addr } => {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "rollcall".into());
            let messages: Vec<String> = events
                .iter()
                .map(|e| syslog_message(e, &hostname))
                .collect::<Result<_, _>>()?;
            if *tcp {
                let target = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
                    .map_err(|e| format!("{addr}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("{addr}: no address"))?;
                let mut s = std::net::TcpStream::connect_timeout(&target, DELIVERY_TIMEOUT)
                    .map_err(|e| format!("{addr}: {e}"))?;
                s.set_write_timeout(Some(DELIVERY_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                let mut buf = Vec::new();
                for m in &messages {
                    // Octet counting (RFC 6587): the length, a space, the message.
                    buf.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
                }
                s.write_all(&buf)
                    .and_then(|()| s.flush())
                    .map_err(|e| format!("{addr}: {e}"))
            } else {
                let sock = std::net::UdpSocket::bind(if addr.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .map_err(|e| e.to_string())?;
                sock.connect(addr.as_str())
                    .map_err(|e| format!("{addr}: {e}"))?;
                for m in &messages {
                    sock.send(m.as_bytes())
                        .map_err(|e| format!("{addr}: {e}"))?;
                }
                Ok(())
            }
        }
    }
}
