use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, mpsc};
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

/// An HTTP listener on loopback that answers `status` to every request and hands over
/// (headers, body) of each, for at most `n` requests.
fn http_listener(status: u16, n: usize) -> (String, mpsc::Receiver<(String, String)>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/services/collector/event",
        l.local_addr().expect("addr")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming().take(n) {
            let Ok(mut c) = conn else { return };
            let mut r = BufReader::new(c.try_clone().expect("clone"));
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{{\"text\":\"done\"}}"
            );
            let _ = c.write_all(reply.as_bytes());
            if tx
                .send((head, String::from_utf8_lossy(&body).into_owned()))
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

fn queue(dir: &tempfile::TempDir, limits: QueueLimits) -> Arc<ExportQueue> {
    Arc::new(ExportQueue::open(&dir.path().join("export.redb"), limits).expect("open"))
}

#[tokio::test]
async fn splunk_hec_gets_every_event_with_the_token_and_the_fields() {
    let dir = tempfile::tempdir().expect("dir");
    let q = queue(&dir, QueueLimits::default());
    let (url, got) = http_listener(200, 1);
    let sink = Sink::parse(&format!("splunk-hec:{url}"), Some("hec-token-1")).expect("sink");
    let evs = events(3);
    assert_eq!(q.enqueue(sink, &evs), Ok(3));
    q.pump().await;
    let (head, body) = got.recv_timeout(WAIT).expect("a request");
    assert!(
        head.starts_with("POST /services/collector/event "),
        "{head}"
    );
    assert!(
        head.contains("authorization: Splunk hec-token-1\r\n"),
        "{head}"
    );
    let sent: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&body)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("concatenated JSON objects");
    assert_eq!(sent.len(), 3);
    for (s, e) in sent.iter().zip(&evs) {
        assert_eq!(s["event"], e.json());
        assert_eq!(s["host"], e.host);
        assert_eq!(s["sourcetype"], "rollcall:answer");
        assert_eq!(s["time"].as_f64(), Some(e.time_ms as f64 / 1000.0));
    }
    let st = &q.status()[0];
    assert_eq!((st.queued, st.delivered, st.failures), (0, 3, 0), "{st:?}");
}

#[tokio::test]
async fn a_collector_that_refuses_keeps_the_events_queued_with_its_error() {
    let dir = tempfile::tempdir().expect("dir");
    let q = queue(&dir, QueueLimits::default());
    let (url, got) = http_listener(403, 1);
    let sink = Sink::parse(&format!("splunk-hec:{url}"), Some("wrong")).expect("sink");
    q.enqueue(sink, &events(2)).expect("queued");
    q.pump().await;
    got.recv_timeout(WAIT).expect("a request");
    let st = &q.status()[0];
    assert_eq!((st.queued, st.delivered, st.failures), (2, 0, 1), "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 403")),
        "{st:?}"
    );
    assert!(st.retry_in_ms > 0, "{st:?}");
}

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

/// Reads octet-counted syslog frames from every connection to `l`, for at most
/// `conns` connections, handing over each message.
fn tcp_syslog(l: TcpListener, conns: usize) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().take(conns) {
            let Ok(c) = c else { return };
            let mut r = BufReader::new(c);
            loop {
                let mut len = Vec::new();
                if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
                    break;
                }
                let Ok(n) = String::from_utf8_lossy(&len).trim().parse::<usize>() else {
                    break;
                };
                let mut m = vec![0u8; n];
                if r.read_exact(&mut m).is_err() {
                    break;
                }
                if tx.send(String::from_utf8_lossy(&m).into_owned()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[tokio::test]
async fn with_the_receiver_down_events_wait_across_a_restart_and_arrive_once() {
    let dir = tempfile::tempdir().expect("dir");
    // A port with nothing listening (bound, then let go).
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let sink = Sink::parse(&format!("syslog:tcp://{addr}"), None).expect("sink");
    let evs = events(250);
    {
        let q = queue(&dir, QueueLimits::default());
        q.enqueue(sink.clone(), &evs[..100]).expect("queued");
        q.pump().await;
        q.enqueue(sink.clone(), &evs[100..]).expect("queued");
        let st = &q.status()[0];
        assert_eq!(
            (st.queued, st.delivered, st.failures),
            (250, 0, 1),
            "{st:?}"
        );
        assert!(
            st.last_error
                .as_deref()
                .is_some_and(|e| e.contains("refused")),
            "{st:?}"
        );
    }
    // The server restarts; the receiver comes back.
    let q = queue(&dir, QueueLimits::default());
    assert_eq!(q.status()[0].queued, 250);
    let got = tcp_syslog(TcpListener::bind(addr).expect("the same port again"), 2);
    q.pump().await;
    q.pump().await;
    let mut seen = Vec::new();
    for _ in 0..250 {
        let m = got.recv_timeout(WAIT).expect("a message");
        let p = syslog_rfc5424::parse_message(&m).expect("RFC 5424");
        seen.push(
            p.sd.find_tuple("rollcall@32473", "machine")
                .cloned()
                .expect("machine"),
        );
    }
    let want: Vec<String> = evs.iter().map(|e| e.machine.clone()).collect();
    assert_eq!(seen, want, "every event once, in order");
    // Two batches, two connections, each read to its end: the listener is done, and
    // nothing more came.
    assert_eq!(
        got.recv_timeout(WAIT),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "nothing twice"
    );
    let st = &q.status()[0];
    assert_eq!((st.queued, st.delivered), (0, 250), "{st:?}");
    assert_eq!(st.last_error, None);
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
