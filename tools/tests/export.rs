//! Results out end to end: a question's answers exported as JSON lines by the CLI, and by
//! the server to a Splunk collector and to syslog receivers the test starts on loopback,
//! with the receiver down and the server restarted meanwhile; and every run of a saved
//! question exported.

mod common;

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use common::cluster::*;
use common::receivers::*;
use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// The export queue's entry for `sink`, once `done` holds for it.
fn sink_until(
    c: &Cluster,
    sink: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let out = run_until(
        &[
            "export",
            "--json",
            "--server",
            &c.addr,
            "--cert-dir",
            &c.p("vera"),
        ],
        400,
        |out| {
            serde_json::from_str::<serde_json::Value>(out).is_ok_and(|v| {
                v.as_array()
                    .and_then(|l| l.iter().find(|s| s["sink"] == sink))
                    .is_some_and(&done)
            })
        },
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v.as_array()
        .and_then(|l| l.iter().find(|s| s["sink"] == sink).cloned())
        .expect("sink")
}

fn udp_messages(rx: &UdpSocket, n: usize) -> Vec<syslog_rfc5424::SyslogMessage> {
    let mut buf = [0u8; 65_536];
    (0..n)
        .map(|_| {
            let len = rx.recv(&mut buf).expect("a datagram");
            syslog_rfc5424::parse_message(std::str::from_utf8(&buf[..len]).expect("utf-8"))
                .expect("RFC 5424")
        })
        .collect()
}

#[test]
fn answers_go_out_as_json_lines_to_splunk_and_to_syslog_none_lost_none_twice() {
    let c = cluster();
    let server = c.server();
    let _e: Vec<Running> = (1..=2).map(|i| c.endpoint(i)).collect();
    c.wait_members(2);
    let asked = c.json(
        "olga",
        &[
            "ask",
            "Get Computer Name and Operating System from all machines",
            "--json",
        ],
    );
    assert_eq!(asked["answered"], 2, "{asked:#}");
    let id = asked["id"].as_u64().expect("id").to_string();
    let hosts: BTreeSet<String> = asked["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["cells"][0].as_str().expect("name").to_string())
        .collect();

    // JSON lines, written by the CLI: one per machine row, matching the answer.
    let path = c.path("out.jsonl");
    let out = c.as_(
        "vera",
        &["export", &id, "--to", &format!("jsonl:{}", path.display())],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .expect("written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    let names: BTreeSet<String> = lines
        .iter()
        .map(|l| {
            l["columns"]["Computer Name"]
                .as_str()
                .expect("cell")
                .to_string()
        })
        .collect();
    assert_eq!(names, hosts);
    for l in &lines {
        assert_eq!(l["question_id"].to_string(), id);
        assert_eq!(
            l["question"],
            "Get Computer Name and Operating System from all machines"
        );
        assert!(l["machine"].as_str().is_some_and(|m| !m.is_empty()), "{l}");
        assert!(
            l["time"].as_str().is_some_and(|t| t.starts_with("20")),
            "{l}"
        );
    }
    // A viewer cannot have the server send anything.
    let out = c.as_("vera", &["export", &id, "--to", "syslog:udp://127.0.0.1:9"]);
    assert_eq!(code(&out), 2);

    // Splunk's HTTP Event Collector: the token header, one event per line above.
    let (url, got) = http_listener(200, 1);
    let out = c.as_(
        "olga",
        &[
            "export",
            &id,
            "--to",
            &format!("splunk-hec:{url}"),
            "--hec-token",
            "hec-tok-1",
            "--wait",
        ],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let (head, body) = got.recv_timeout(WAIT).expect("a request");
    assert!(
        head.contains("authorization: Splunk hec-tok-1\r\n"),
        "{head}"
    );
    let sent: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&body)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("HEC JSON");
    let events: Vec<serde_json::Value> = sent.iter().map(|s| s["event"].clone()).collect();
    assert_eq!(events, lines);
    for s in &sent {
        assert_eq!(s["sourcetype"], "rollcall:answer");
        assert_eq!(s["source"], "rollcall");
    }
    // A collector that refuses the token: the events wait, with its answer.
    let (bad_url, refused) = http_listener(403, 1);
    let out = c.as_(
        "olga",
        &[
            "export",
            &id,
            "--to",
            &format!("splunk-hec:{bad_url}"),
            "--hec-token",
            "nope",
        ],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    refused.recv_timeout(WAIT).expect("the collector was asked");
    let st = sink_until(&c, &format!("splunk-hec:{bad_url}"), |s| {
        s["failures"].as_u64() >= Some(1)
    });
    assert_eq!(st["queued"], 2, "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 403")),
        "{st}"
    );

    // Syslog over UDP: RFC 5424 datagrams carrying the same events.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.set_read_timeout(Some(WAIT)).expect("timeout");
    let udp_sink = format!("syslog:udp://{}", udp.local_addr().expect("addr"));
    let out = c.as_("olga", &["export", &id, "--to", &udp_sink, "--wait"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let mut got_lines: Vec<serde_json::Value> = udp_messages(&udp, 2)
        .into_iter()
        .map(|m| {
            assert_eq!(m.msgid.as_deref(), Some(id.as_str()));
            assert_eq!(m.appname.as_deref(), Some("rollcall"));
            serde_json::from_str(&m.msg).expect("json")
        })
        .collect();
    got_lines.sort_by_key(|v| v["machine"].to_string());
    let mut want = lines.clone();
    want.sort_by_key(|v| v["machine"].to_string());
    assert_eq!(got_lines, want);

    // Syslog over TCP with the receiver down: the events wait, survive a server restart,
    // and arrive once it is back — each once.
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let tcp_sink = format!("syslog:tcp://{addr}");
    let out = c.as_("olga", &["export", &id, "--to", &tcp_sink]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let st = sink_until(&c, &tcp_sink, |s| s["failures"].as_u64() >= Some(1));
    assert_eq!(st["queued"], 2, "{st}");
    drop(server);
    let _server = c.server();
    let st = sink_until(&c, &tcp_sink, |s| s["queued"] == 2);
    assert_eq!(st["delivered"], 0, "{st}");
    let got = tcp_syslog(TcpListener::bind(addr).expect("the same port again"), 1);
    let out = c.as_("olga", &["export", "--retry"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let st = sink_until(&c, &tcp_sink, |s| s["queued"] == 0);
    assert_eq!(st["delivered"], 2, "{st}");
    let mut machines = BTreeSet::new();
    for _ in 0..2 {
        let m = syslog_rfc5424::parse_message(got.recv_timeout(WAIT).expect("a message"))
            .expect("RFC 5424");
        machines.insert(
            m.sd.find_tuple("rollcall@32473", "machine")
                .cloned()
                .expect("sd"),
        );
    }
    assert_eq!(machines.len(), 2);
    assert_eq!(
        got.recv_timeout(WAIT),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "nothing twice"
    );

    // Every run of a saved question, exported once it finishes.
    let out = c.as_(
        "olga",
        &[
            "saved",
            "add",
            "names",
            "Get Computer Name from all machines",
        ],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.as_("olga", &["saved", "export", "names", "--to", &udp_sink]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.as_("olga", &["saved", "run", "names", "--json"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let names: BTreeSet<String> = udp_messages(&udp, 2)
        .into_iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.msg).expect("json");
            assert_eq!(v["question"], "Get Computer Name from all machines");
            v["columns"]["Computer Name"]
                .as_str()
                .expect("cell")
                .to_string()
        })
        .collect();
    assert_eq!(names, hosts);
}
