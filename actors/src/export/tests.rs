use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use super::queue::{ExportQueue, QueueLimits};
use super::*;

const WAIT: Duration = Duration::from_secs(20);

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            question_id: 42,
            question: "Get Computer Name and Operating System from all machines".into(),
            time_ms: 1_796_000_000_000 + i as u64,
            machine: format!("node-{i:03}"),
            host: format!("sim-{i:06}"),
            columns: vec![
                ("Computer Name".into(), format!("sim-{i:06}")),
                ("Operating System".into(), "Ubuntu \"24.04\" [LTS]".into()),
            ],
        })
        .collect()
}

#[test]
fn sinks_read_as_written_and_refuse_what_is_not_a_sink() {
    assert_eq!(
        Sink::parse("jsonl:/tmp/x.jsonl", None),
        Ok(Sink::Jsonl("/tmp/x.jsonl".into()))
    );
    let hec = Sink::parse(
        "splunk-hec:http://127.0.0.1:8088/services/collector/event",
        Some("t"),
    )
    .expect("hec");
    assert_eq!(
        hec.to_string(),
        "splunk-hec:http://127.0.0.1:8088/services/collector/event"
    );
    assert_eq!(
        Sink::parse("syslog:127.0.0.1:514", None),
        Ok(Sink::Syslog {
            tcp: false,
            addr: "127.0.0.1:514".into()
        })
    );
    assert_eq!(
        Sink::parse("syslog:tcp://[::1]:6514", None),
        Ok(Sink::Syslog {
            tcp: true,
            addr: "[::1]:6514".into()
        })
    );
    for (bad, why) in [
        ("splunk-hec:http://x", "needs the collector's token"),
        ("splunk-hec:ftp://x", "not an http"),
        ("syslog:udp://nohost", "not HOST:PORT"),
        ("syslog:sctp://a:1", "udp or tcp"),
        ("kafka:x", "write jsonl"),
        ("nothing", "write jsonl"),
    ] {
        let e = Sink::parse(bad, None).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn syslog_messages_parse_as_rfc_5424_with_the_event_in_them() {
    let e = &events(1)[0];
    let m = syslog_message(e, "server-1").expect("formats");
    let p = syslog_rfc5424::parse_message(&m).expect("RFC 5424");
    assert_eq!(p.hostname.as_deref(), Some("server-1"));
    assert_eq!(p.appname.as_deref(), Some("rollcall"));
    assert_eq!(p.msgid.as_deref(), Some("42"));
    assert_eq!(p.severity, syslog_rfc5424::SyslogSeverity::SEV_INFO);
    assert_eq!(p.facility, syslog_rfc5424::SyslogFacility::LOG_LOCAL0);
    assert_eq!(
        p.sd.find_tuple("rollcall@32473", "machine")
            .map(String::as_str),
        Some("node-000")
    );
    let body: serde_json::Value = serde_json::from_str(&p.msg).expect("json message");
    assert_eq!(body, e.json());
}

fn queue(dir: &tempfile::TempDir, limits: QueueLimits) -> Arc<ExportQueue> {
    Arc::new(ExportQueue::open(&dir.path().join("export.redb"), limits).expect("open"))
}

// Delivery to Splunk and to syslog over TCP, with the receiver down and the server
// restarted meanwhile, is tested end to end in `tools/tests/export.rs`.

#[tokio::test]
async fn syslog_over_udp_arrives_as_rfc_5424_datagrams() {
    let dir = tempfile::tempdir().expect("dir");
    let q = queue(&dir, QueueLimits::default());
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    rx.set_read_timeout(Some(WAIT)).expect("timeout");
    let sink = Sink::parse(
        &format!("syslog:udp://{}", rx.local_addr().expect("addr")),
        None,
    )
    .expect("sink");
    let evs = events(3);
    q.enqueue(sink, &evs).expect("queued");
    q.pump().await;
    let mut buf = [0u8; 65_536];
    for e in &evs {
        let n = rx.recv(&mut buf).expect("a datagram");
        let m = syslog_rfc5424::parse_message(std::str::from_utf8(&buf[..n]).expect("utf-8"))
            .expect("RFC 5424");
        assert_eq!(m.msgid.as_deref(), Some("42"));
        let body: serde_json::Value = serde_json::from_str(&m.msg).expect("json");
        assert_eq!(body, e.json());
    }
}

#[test]
fn a_full_queue_refuses_a_batch_whole_and_counts_it() {
    let dir = tempfile::tempdir().expect("dir");
    let q = queue(
        &dir,
        QueueLimits {
            max_events: 10,
            max_bytes: 1 << 20,
        },
    );
    let sink = Sink::Jsonl(dir.path().join("out.jsonl"));
    assert_eq!(q.enqueue(sink.clone(), &events(8)), Ok(8));
    let e = q.enqueue(sink, &events(5)).expect_err("full");
    assert!(e.contains("the export queue is full (8 events wait"), "{e}");
    let st = &q.status()[0];
    assert_eq!((st.queued, st.refused), (8, 5), "{st:?}");
}

#[tokio::test]
async fn json_lines_parse_and_match_the_events() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("out.jsonl");
    let q = queue(&dir, QueueLimits::default());
    let evs = events(4);
    q.enqueue(Sink::Jsonl(path.clone()), &evs).expect("queued");
    q.pump().await;
    let text = std::fs::read_to_string(&path).expect("written");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let want: Vec<serde_json::Value> = evs.iter().map(Event::json).collect();
    assert_eq!(lines, want);
    assert_eq!(
        lines[1]["columns"]["Operating System"],
        "Ubuntu \"24.04\" [LTS]"
    );
}
