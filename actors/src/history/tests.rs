use std::sync::Arc;
use std::time::Duration;

use super::linux::{LiveKey, ProcSampler, Sampler, parse_sockets};
use super::recorder::Recording;
use super::store::{Batch, HistoryStore, Limits};
use super::*;
use crate::question::SensorRef;
use crate::sensors::sim::{HostProfile, SimulatedHost};

const DAY: u64 = 86_400_000;

fn run(pid: u32, exe: &str, sha: &str, start_ms: u64) -> Record {
    Record::Run(ProcessRun {
        pid,
        ppid: 1,
        exe: exe.into(),
        sha256: sha.into(),
        cmdline: format!("{exe} --flag"),
        user: "root".into(),
        start_ms,
        last_ms: start_ms,
        ended: false,
    })
}

fn ended(mut r: Record, at: u64) -> Record {
    if let Record::Run(p) = &mut r {
        p.last_ms = at;
        p.ended = true;
    }
    r
}

fn sensor(name: &str, arg: &str) -> SensorRef {
    SensorRef {
        name: name.into(),
        args: vec![arg.into()],
    }
}

#[test]
fn the_store_stays_within_its_size_under_a_flood_dropping_the_oldest() {
    let dir = tempfile::tempdir().expect("dir");
    let limits = Limits {
        max_age: Duration::from_secs(365 * 86_400),
        max_bytes: 64 * 1024,
    };
    let t0 = 1_000 * DAY;
    let store = HistoryStore::open(&dir.path().join("h.redb"), limits, t0).expect("open");
    let mut all_ids = Vec::new();
    for round in 0..200u64 {
        let now = t0 + round * 1000;
        // 20 short-lived processes a sample, each started and ended.
        let batch = Batch {
            started: (0..20)
                .map(|i| {
                    run(
                        (round * 20 + i) as u32,
                        &format!("/usr/bin/tool{i}"),
                        &format!("{:064x}", round * 20 + i),
                        now,
                    )
                })
                .collect(),
            ended: Vec::new(),
        };
        let started = batch.started.clone();
        let ids = store.apply(batch, now).expect("apply");
        let ended_batch = Batch {
            started: Vec::new(),
            ended: ids
                .iter()
                .zip(started)
                .map(|(id, r)| (*id, ended(r, now + 500)))
                .collect(),
        };
        store.apply(ended_batch, now + 500).expect("apply");
        all_ids.extend(ids);
        assert!(
            store.bytes() <= limits.max_bytes,
            "round {round}: {} bytes over {}",
            store.bytes(),
            limits.max_bytes
        );
    }
    let kept: Vec<u64> = store
        .records()
        .expect("records")
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert!(
        store.dropped() > 0,
        "a flood of 4,000 records fits no 64 KiB"
    );
    assert_eq!(kept.len() as u64 + store.dropped(), all_ids.len() as u64);
    // What is kept is the newest, in one run to the last id.
    assert_eq!(kept.last(), all_ids.last());
    assert_eq!(kept, all_ids[all_ids.len() - kept.len()..].to_vec());
    // The history no longer claims to cover what it dropped.
    let newest_dropped = t0 + ((all_ids.len() - kept.len() - 1) as u64 / 20) * 1000 + 500;
    assert_eq!(store.since_ms().expect("since"), newest_dropped);
    // A dropped run is gone from the answers, a kept one is there.
    assert_eq!(store.by_hash(&format!("{:064x}", 0)).expect("read"), None);
    let last = format!("{:064x}", all_ids.len() - 1);
    let s = store.by_hash(&last).expect("read").expect("kept");
    assert_eq!((s.count, s.live), (1, false));
}

#[test]
fn records_past_the_age_limit_are_dropped_and_live_ones_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let limits = Limits {
        max_age: Duration::from_secs(7 * 86_400),
        max_bytes: 1 << 20,
    };
    let t0 = 1_000 * DAY;
    let store = HistoryStore::open(&dir.path().join("h.redb"), limits, t0).expect("open");
    let a = run(1, "/usr/bin/old", &"a".repeat(64), t0);
    let b = run(2, "/usr/sbin/daemon", &"b".repeat(64), t0);
    let ids = store
        .apply(
            Batch {
                started: vec![a.clone(), b],
                ended: Vec::new(),
            },
            t0,
        )
        .expect("apply");
    store
        .apply(
            Batch {
                started: Vec::new(),
                ended: vec![(ids[0], ended(a, t0 + 1000))],
            },
            t0 + 1000,
        )
        .expect("apply");
    // Eight days later a new process starts: the old run goes, the daemon (live) stays.
    let later = t0 + 8 * DAY;
    store
        .apply(
            Batch {
                started: vec![run(3, "/usr/bin/new", &"c".repeat(64), later)],
                ended: Vec::new(),
            },
            later,
        )
        .expect("apply");
    assert_eq!(store.by_hash(&"a".repeat(64)).expect("read"), None);
    let d = store.by_hash(&"b".repeat(64)).expect("read").expect("live");
    assert!(d.live);
    assert_eq!(d.last_ms, later, "a live run is seen at the last sample");
    assert_eq!(store.dropped(), 1);
}

#[test]
fn runs_open_at_a_crash_are_closed_at_the_last_checkpoint() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("h.redb");
    let t0 = 1_000 * DAY;
    {
        let store = HistoryStore::open(&path, Limits::default(), t0).expect("open");
        store
            .apply(
                Batch {
                    started: vec![run(7, "/usr/bin/x", &"d".repeat(64), t0)],
                    ended: Vec::new(),
                },
                t0,
            )
            .expect("apply");
        store.checkpoint(t0 + 60_000).expect("checkpoint");
    }
    let store = HistoryStore::open(&path, Limits::default(), t0 + DAY).expect("reopen");
    let s = store.by_hash(&"d".repeat(64)).expect("read").expect("kept");
    assert!(!s.live);
    assert_eq!((s.first_ms, s.last_ms), (t0, t0 + 60_000));
    assert_eq!(store.since_ms().expect("since"), t0, "made at t0");
}

#[test]
fn socket_tables_parse_v4_and_v6_and_skip_malformed_rows() {
    let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0 100 0 0 10 0\n\
   1: 0100007F:A1B2 4200710A:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 5678 1 0 20 4 30 10 -1\n\
   garbage line\n";
    let rows = parse_sockets(text);
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].local_port, rows[0].state), (22, 0x0A));
    assert_eq!(rows[1].remote, "10.113.0.66");
    assert_eq!((rows[1].remote_port, rows[1].inode), (443, 5678));
    let v6 = "sl local rem st\n   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:0050 01 0:0 0:0 0 0 0 99 1\n";
    let rows = parse_sockets(v6);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].remote, "127.0.0.1",
        "a v4-mapped address reads as v4"
    );
    assert_eq!(rows[0].local_port, 8080);
}

/// A /proc with no processes, these TCP rows and these counters.
fn fake_proc(root: &std::path::Path, tcp_rows: &[&str], active_opens: u64) {
    std::fs::create_dir_all(root.join("net")).expect("dir");
    let head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    std::fs::write(root.join("net/tcp"), format!("{head}{}", tcp_rows.join(""))).expect("tcp");
    for f in ["net/tcp6", "net/udp", "net/udp6"] {
        std::fs::write(root.join(f), head).expect("table");
    }
    std::fs::write(
        root.join("net/snmp"),
        format!("Tcp: RtoAlgorithm ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab\nTcp: 1 {active_opens} 0 0 0 {}\n", tcp_rows.len()),
    )
    .expect("snmp");
    std::fs::write(
        root.join("net/sockstat"),
        format!(
            "sockets: used 3\nTCP: inuse {} orphan 0 tw 0 alloc 1 mem 1\nUDP: inuse 0 mem 0\n",
            tcp_rows.len()
        ),
    )
    .expect("sockstat");
    std::fs::write(root.join("net/sockstat6"), "TCP6: inuse 0\nUDP6: inuse 0\n")
        .expect("sockstat6");
}

#[test]
fn connections_are_recorded_and_idle_samples_skip_the_socket_tables() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("proc");
    let listen = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11 1 0 100 0 0 10 0\n";
    let conn = "   1: 0100007F:A1B2 4200710A:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 22 1 0 20 4 30 10 -1\n";
    fake_proc(&root, &[listen], 5);
    let store = Arc::new(
        HistoryStore::open(&dir.path().join("h.redb"), Limits::default(), 1).expect("open"),
    );
    let mut rec = Recording::new(Box::new(ProcSampler::at(&root)), store.clone());
    let s = rec.step(1_000).expect("sample");
    assert_eq!((s.started, s.live), (1, 1), "the listening socket");
    // Nothing moved: the tables are not read again (a changed table without moved counters
    // is not seen, which is the point).
    fake_proc(&root, &[listen, conn], 5);
    std::fs::write(root.join("net/snmp"), "Tcp: RtoAlgorithm ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab\nTcp: 1 5 0 0 0 1\n").expect("snmp");
    std::fs::write(
        root.join("net/sockstat"),
        "TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 1\nUDP: inuse 0 mem 0\n",
    )
    .expect("sockstat");
    assert_eq!(rec.step(2_000).expect("sample").started, 0);
    // A connection opened: the counters moved, the tables are read, it is recorded.
    fake_proc(&root, &[listen, conn], 6);
    let s = rec.step(3_000).expect("sample");
    assert_eq!((s.started, s.live), (1, 2), "{s:?}");
    let c = store
        .connections("10.113.0.66")
        .expect("read")
        .expect("recorded");
    assert!(c.live);
    assert_eq!(store.connections("443").expect("read"), Some(c.clone()));
    // It closes.
    fake_proc(&root, &[listen], 6);
    let s = rec.step(4_000).expect("sample");
    assert_eq!(s.ended, 1, "{s:?}");
    let c = store.connections("443").expect("read").expect("kept");
    assert_eq!(
        (c.first_ms, c.last_ms, c.count, c.live),
        (3_000, 4_000, 1, false)
    );
    // A listening socket is not an outbound connection.
    assert_eq!(store.connections("22").expect("read"), None);
}

/// A copy of `cat` with bytes of its own at the end (an ELF runs the same with a tail), so
/// that its hash is this test's alone.
fn unique_executable(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let cat = ["/usr/bin/cat", "/bin/cat"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("cat");
    let mut bytes = std::fs::read(cat).expect("read cat");
    bytes.extend_from_slice(format!("rollcall history test {}", std::process::id()).as_bytes());
    let path = dir.join("probe-tool");
    std::fs::write(&path, &bytes).expect("write");
    let mut perm = std::fs::metadata(&path).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).expect("chmod");
    (path, crate::sensors::sha256_hex(&bytes))
}

#[test]
fn the_recorder_keeps_a_process_that_ran_and_exited_with_its_hash() {
    let dir = tempfile::tempdir().expect("dir");
    let (exe, sha) = unique_executable(dir.path());
    let store = Arc::new(
        HistoryStore::open(&dir.path().join("h.redb"), Limits::default(), 1).expect("open"),
    );
    let mut rec = Recording::new(Box::new(ProcSampler::new()), store.clone());
    let t0 = rollcall_runtime::signing::unix_ms();
    rec.step(t0).expect("first sample");
    // Nothing this test started is known yet.
    assert_eq!(store.by_hash(&sha).expect("read"), None);
    let mut child = std::process::Command::new(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let step = rec.step(t0 + 1000).expect("sample");
    assert!(step.started >= 1, "{step:?}");
    let live = store.by_hash(&sha).expect("read").expect("seen running");
    assert!(live.live);
    assert_eq!(live.count, 1);
    assert_eq!(live.paths, vec![exe.to_string_lossy().to_string()]);
    // Its record: who, what, parent, command line.
    let runs = store.records().expect("records");
    let Some((_, Record::Run(p), _)) = runs
        .iter()
        .find(|(_, r, _)| matches!(r, Record::Run(p) if p.sha256 == sha))
    else {
        panic!("no run of {sha}");
    };
    assert_eq!(p.pid, child.id());
    assert_eq!(p.ppid, std::process::id());
    assert_eq!(p.cmdline, exe.to_string_lossy());
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string());
    assert_eq!(p.user, me);
    // It exits (stdin closed); the next sample ends it.
    drop(child.stdin.take());
    child.wait().expect("wait");
    let step = rec.step(t0 + 2000).expect("sample");
    assert!(step.ended >= 1, "{step:?}");
    let gone = store
        .by_hash(&sha)
        .expect("read")
        .expect("still in history");
    assert!(!gone.live);
    assert_eq!(gone.count, 1);
    assert_eq!(gone.last_ms, t0 + 2000);
    // As the sensors answer it, after the process is gone.
    let now = t0 + 62_000;
    let line = read(Some(&*store), &sensor("Process Hash History", &sha), now)
        .expect("a history sensor")
        .expect("read");
    assert_eq!(line.len(), 1);
    assert!(line[0].contains(", 1 run, "), "{line:?}");
    assert!(line[0].contains(&*exe.to_string_lossy()), "{line:?}");
    assert!(line[0].contains(&utc(t0 + 2000)), "{line:?}");
    let since = read(Some(&*store), &sensor("Process Hash Last Seen", &sha), now)
        .expect("a history sensor")
        .expect("read");
    assert_eq!(since, vec!["60".to_string()]);
    let by_name = store.by_name("probe-tool").expect("read").expect("by name");
    assert_eq!(by_name.count, 1);
    // An idle machine's next sample hashes nothing again.
    let mut sampler = ProcSampler::new();
    sampler.sample(now, &|_| false);
    let hashed = sampler.hashed;
    sampler.sample(now, &|k| matches!(k, LiveKey::Process(_)));
    assert_eq!(sampler.hashed, hashed, "known processes are not read again");
}

#[test]
fn a_history_sensor_refuses_a_malformed_hash_and_a_host_without_history() {
    let store_dir = tempfile::tempdir().expect("dir");
    let store =
        HistoryStore::open(&store_dir.path().join("h.redb"), Limits::default(), 1).expect("open");
    let r = read(Some(&store), &sensor("Process Hash History", "abc"), 0).expect("history");
    assert!(
        matches!(&r, Err(SensorError::Failed(m)) if m.contains("not a SHA-256")),
        "{r:?}"
    );
    let r = read(None, &sensor("Process Hash History", &"a".repeat(64)), 0).expect("history");
    assert!(matches!(r, Err(SensorError::Unsupported(_))), "{r:?}");
    assert!(read(None, &sensor("Computer Name", ""), 0).is_none());
}

#[test]
fn simulated_history_is_deterministic_and_answers_like_a_real_one() {
    let mut miners = 0;
    let mut visio_stale = 0;
    let now = rollcall_runtime::signing::unix_ms();
    for seed in 0..2000u64 {
        let host = SimulatedHost::new(HostProfile::from_seed(seed, None));
        let again = SimulatedHost::new(HostProfile::from_seed(seed, None));
        let a = host.by_hash(sim::miner_sha256()).expect("read");
        assert_eq!(a, again.by_hash(sim::miner_sha256()).expect("read"));
        if let Some(s) = a {
            miners += 1;
            assert_eq!(s.paths, vec![sim::MINER_PATH.to_string()]);
            let c = host
                .connections(sim::MINER_POOL.0)
                .expect("read")
                .expect("the miner called its pool");
            assert_eq!(c.count, 1);
        }
        let v = read(
            host.history(),
            &sensor("Application Last Used", "visio"),
            now,
        )
        .expect("history")
        .expect("read");
        let secs: u64 = v[0].parse().expect("seconds");
        if secs > 90 * 86_400 - 60 {
            visio_stale += 1;
        }
    }
    // One in a hundred ran the miner; most never ran visio (the history's whole length).
    assert!((5..=50).contains(&miners), "{miners} miners in 2,000");
    assert!(
        visio_stale > 1700,
        "{visio_stale} of 2,000 unused for 90 days"
    );
}

use crate::sensors::HostView;

#[tokio::test]
async fn the_unused_application_question_reads_as_written_and_matches_the_histories() {
    let catalog = crate::sensors::catalog_with(&[]);
    let q = crate::question::parse(
        "Get Computer Name from all machines with Application Last Used[\"visio\"] > 90 days",
        &catalog,
    )
    .expect("parses");
    let now = rollcall_runtime::signing::unix_ms();
    let (mut matched, mut want) = (0, 0);
    for seed in 0..300u64 {
        let host = Arc::new(SimulatedHost::new(HostProfile::from_seed(seed, None)));
        let sensors = crate::sensors::Sensors::new(host.clone());
        if sensors.matches(&q).await {
            matched += 1;
        }
        // Unused for 90 days: never ran in the 90 days the simulated history covers, or
        // last ran before that (a minute's margin either way for the clock).
        let last = host.by_name("visio").expect("read").map(|s| s.last_ms);
        if last.is_none_or(|l| now.saturating_sub(l) > 90 * DAY + 60_000) {
            want += 1;
        }
    }
    assert_eq!(matched, want);
    assert!(matched > 250, "{matched} of 300");
}

#[test]
fn idle_samples_list_proc_only_when_a_task_was_created_or_ended() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("proc");
    fake_proc(&root, &[], 5);
    let loadavg = |tasks: u32, last_pid: u32| {
        std::fs::write(
            root.join("loadavg"),
            format!("0.00 0.01 0.05 1/{tasks} {last_pid}\n"),
        )
        .expect("loadavg")
    };
    loadavg(100, 500);
    let mut s = ProcSampler::at(&root);
    let none = |_: &LiveKey| false;
    s.sample(1_000, &none);
    s.sample(2_000, &none);
    assert_eq!(s.listings, 1, "nothing created or ended: not listed again");
    // A task created (a new last pid), then one ended (fewer tasks): listed each time.
    loadavg(101, 501);
    s.sample(3_000, &none);
    loadavg(100, 501);
    s.sample(4_000, &none);
    assert_eq!(s.listings, 3);
    s.sample(5_000, &none);
    assert_eq!(s.listings, 3);
    // With no way to tell, every sample lists.
    std::fs::remove_file(root.join("loadavg")).expect("rm");
    s.sample(6_000, &none);
    s.sample(7_000, &none);
    assert_eq!(s.listings, 5);
}
