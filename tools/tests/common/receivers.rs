//! Receivers the export tests start on loopback: an HTTP collector (as Splunk's HEC
//! answers) and a syslog reader over TCP (octet-counted frames).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

/// An HTTP listener on loopback that answers `status` to each of at most `n` requests and
/// hands over each request's (headers, body). Returns its collector URL.
pub fn http_listener(status: u16, n: usize) -> (String, mpsc::Receiver<(String, String)>) {
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

/// Reads octet-counted syslog frames (RFC 6587) from each of at most `conns` connections
/// to `l`, handing over each message; the channel closes after the last connection ends.
pub fn tcp_syslog(l: TcpListener, conns: usize) -> mpsc::Receiver<String> {
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
