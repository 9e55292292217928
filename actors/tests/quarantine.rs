//! Quarantine for real: nftables rules in a network namespace the test makes. Needs root
//! (CI runs as root), `ip` and `nft`; otherwise the test says why it skipped.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rollcall_actors::action::linux::{LinuxActions, LinuxExecutor, QUARANTINE_TABLE};
use rollcall_actors::action::{ActionSpec, Executor, Package, Status};

fn sh(cmd: &[&str]) -> std::process::Output {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &[&str]) {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Why this machine cannot run the test, if it cannot.
fn cannot() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root (network namespaces and nftables need it)".into());
    }
    for tool in ["ip", "nft"] {
        if !["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists())
        {
            return Some(format!("{tool} is not installed (.ci/run installs it)"));
        }
    }
    None
}

/// A namespace with one veth to the host: the host side holds the "server" (.1), a "ring
/// neighbour" (.3) and "another machine" (.4); the namespace is the quarantined machine (.2).
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn new(tag: u8) -> Netns {
        let name = format!("rcq{}-{tag}", std::process::id());
        let host_if = format!("rqh{}{tag}", std::process::id() % 10_000);
        let peer_if = format!("rqp{}{tag}", std::process::id() % 10_000);
        let net = format!("10.231.{tag}");
        ok(&["ip", "netns", "add", &name]);
        let n = Netns { name, host_if };
        ok(&[
            "ip", "link", "add", &n.host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ok(&["ip", "link", "set", &peer_if, "netns", &n.name]);
        for last in [1, 3, 4] {
            ok(&[
                "ip",
                "addr",
                "add",
                &format!("{net}.{last}/24"),
                "dev",
                &n.host_if,
            ]);
        }
        ok(&["ip", "link", "set", &n.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &n.name];
            all.extend_from_slice(args);
            ok(&all);
        };
        inside(&["ip", "addr", "add", &format!("{net}.2/24"), "dev", &peer_if]);
        inside(&["ip", "link", "set", &peer_if, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        n
    }

    /// Runs `f` on a thread inside the namespace (children it starts are inside too).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("namespace file");
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

fn reachable(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok()
}

fn spec(package: &str) -> ActionSpec {
    ActionSpec::new(1, Package::builtin(package).expect("built-in"), "test")
}

fn executor(state: &Path, allow: Vec<IpAddr>) -> LinuxExecutor {
    LinuxExecutor::new(LinuxActions {
        file_roots: Vec::new(),
        quarantine_dir: state.join("quarantine"),
        state_dir: state.to_path_buf(),
        allow: Arc::new(move || allow.clone()),
    })
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn quarantine_keeps_only_the_server_and_neighbours_and_release_lifts_it() {
    if let Some(why) = cannot() {
        eprintln!("skipped: {why}");
        return;
    }
    let ns = Netns::new(7);
    // Listeners on the host side: the server, a ring neighbour, another machine.
    let listen = |ip: &str| TcpListener::bind(format!("{ip}:0")).expect("listen");
    let (server, neighbour, other) = (
        listen("10.231.7.1"),
        listen("10.231.7.3"),
        listen("10.231.7.4"),
    );
    let addrs: Vec<SocketAddr> = [&server, &neighbour, &other]
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let state = tempfile::tempdir().expect("state");
    let dir = state.path().to_path_buf();
    let allow: Vec<IpAddr> = vec![addrs[0].ip(), addrs[1].ip()];

    let a = addrs.clone();
    let before = ns.run(move || a.iter().map(|x| reachable(*x)).collect::<Vec<_>>());
    assert_eq!(
        before,
        vec![true, true, true],
        "the namespace reaches all three"
    );

    let (a, d, al) = (addrs.clone(), dir.clone(), allow.clone());
    let (outcome, during, tables) = ns.run(move || {
        let exec = executor(&d, al);
        let o = block_on(exec.run(&spec("quarantine")));
        let during: Vec<bool> = a.iter().map(|x| reachable(*x)).collect();
        let tables = String::from_utf8_lossy(&sh(&["nft", "list", "tables"]).stdout).into_owned();
        (o, during, tables)
    });
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert!(outcome.output.contains("10.231.7.1"), "{}", outcome.output);
    assert!(tables.contains(QUARANTINE_TABLE), "{tables}");
    assert_eq!(
        during,
        vec![true, true, false],
        "server and neighbour reachable, the other machine not"
    );
    assert!(executor(&dir, Vec::new()).quarantined());

    // The endpoint restarts after the rules were lost (a reboot): they are put back.
    let (d, al) = (dir.clone(), allow.clone());
    let a = addrs.clone();
    let (reapplied, after_restart) = ns.run(move || {
        ok(&["nft", "flush", "ruleset"]);
        let cut_off_lost = reachable(a[2]);
        let o = block_on(executor(&d, al).reapply_quarantine());
        (o.map(|o| (o.status, cut_off_lost)), reachable(a[2]))
    });
    assert_eq!(reapplied, Some((Status::Completed, true)));
    assert!(!after_restart, "the quarantine is back after a restart");

    // Release: the table goes, everything is reachable again.
    let (a, d) = (addrs.clone(), dir.clone());
    let (released, after, tables) = ns.run(move || {
        let o = block_on(executor(&d, Vec::new()).run(&spec("release")));
        let after: Vec<bool> = a.iter().map(|x| reachable(*x)).collect();
        let tables = String::from_utf8_lossy(&sh(&["nft", "list", "tables"]).stdout).into_owned();
        (o, after, tables)
    });
    assert_eq!(released.status, Status::Completed, "{released:?}");
    assert_eq!(after, vec![true, true, true]);
    assert!(!tables.contains(QUARANTINE_TABLE), "{tables}");
    assert!(!executor(&dir, Vec::new()).quarantined());
}
