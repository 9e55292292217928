use std::sync::Arc;
use std::time::Duration;

use rollcall_runtime::WireStats;
use rollcall_runtime::signing::{ServerSigner, ServerTrust, Stamp};

use super::journal::{FileJournal, Journal, MemJournal};
use super::linux::{LinuxActions, LinuxExecutor, quarantine_rules};
use super::runner::ActionRunner;
use super::sim::{SIM_SCRIPT_OUTPUT, SimExecutor};
use super::*;
use crate::question::parse;
use crate::sensors::sim::{HostProfile, SimulatedHost};
use crate::sensors::{BUILTIN, Sensors, catalog_with};

fn spec(id: u64, package: &str, params: &[&str], target: Target) -> ActionSpec {
    ActionSpec {
        params: params.iter().map(|s| s.to_string()).collect(),
        target,
        ..ActionSpec::new(id, Package::builtin(package).expect("built-in"), "alice")
    }
}

fn keys() -> (ServerSigner, Arc<ServerTrust>) {
    let signer = ServerSigner::generate().expect("key");
    let trust = Arc::new(ServerTrust::new(None, signer.public_key()));
    (signer, trust)
}

#[test]
fn a_signed_action_opens_and_every_change_is_refused() {
    let (signer, trust) = keys();
    let s = spec(7, "uninstall", &["anydesk"], Target::All);
    let signed =
        SignedAction::sign(&s, Stamp::now_for(Duration::from_secs(60)), &signer).expect("sign");
    assert_eq!(*signed.open(&trust, now_ms()).expect("opens"), s);

    // An altered parameter.
    let mut altered = s.clone();
    altered.params = vec!["openssh-server".into()];
    let mut forged = signed.clone();
    forged.body = wire::encode_body(&altered).expect("encode");
    assert!(matches!(
        forged.open(&trust, now_ms()),
        Err(ActionRefusal::Signature(SignatureError::Invalid))
    ));
    // Another key's signature.
    let (other, _) = keys();
    let theirs = SignedAction::sign(&s, signed.stamp, &other).expect("sign");
    assert!(matches!(
        theirs.open(&trust, now_ms()),
        Err(ActionRefusal::Signature(SignatureError::Invalid))
    ));
    // A longer expiry than signed.
    let mut longer = signed.clone();
    longer.stamp.expires_unix_ms += 3_600_000;
    assert!(matches!(
        longer.open(&trust, now_ms()),
        Err(ActionRefusal::Signature(SignatureError::Invalid))
    ));
    // Replayed a second after expiry: refused, with no clock-skew grace.
    let expired_at = signed.stamp.expires_unix_ms;
    assert_eq!(
        signed.open(&trust, expired_at + 1_000),
        Err(ActionRefusal::Expired(1))
    );
    // The body's id must be the signed one.
    let mut moved = signed.clone();
    let mut other_id = s.clone();
    other_id.id = 8;
    moved.body = wire::encode_body(&other_id).expect("encode");
    moved.signature = signer.sign(Purpose::Action, 7, moved.stamp, &moved.body);
    assert_eq!(
        moved.open(&trust, now_ms()),
        Err(ActionRefusal::IdMismatch { outer: 7, inner: 8 })
    );
    // A question's signature over the same bytes is not an action's.
    let mut as_question = signed.clone();
    as_question.signature = signer.sign(Purpose::Question, 7, signed.stamp, &signed.body);
    assert!(as_question.open(&trust, now_ms()).is_err());
}

#[test]
fn statuses_read_back_as_written() {
    for s in [
        Status::NotTargeted,
        Status::Waiting,
        Status::Running,
        Status::Completed,
        Status::Failed("exit 3".into()),
        Status::Refused("bad signature: not signed by the server".into()),
        Status::Expired,
        Status::Interrupted,
        Status::Cancelled,
    ] {
        assert_eq!(Status::parse(&s.to_string()), s);
    }
    assert!(!Status::Waiting.is_terminal());
    assert!(Status::Interrupted.is_terminal());
}

#[test]
fn question_bodies_and_action_bodies_never_mix() {
    let (signer, _) = keys();
    let signed = SignedAction::sign(
        &spec(1, "release", &[], Target::All),
        Stamp::now_for(Duration::from_secs(60)),
        &signer,
    )
    .expect("sign");
    let body = signed.to_question_body().expect("encode");
    assert_eq!(body[0], ACTION_BODY);
    assert_eq!(
        SignedAction::from_question_body(&body)
            .expect("an action")
            .expect("decodes"),
        signed
    );
    let catalog = catalog_with(&[]);
    let q = parse("Get Computer Name from all machines", &catalog).expect("parse");
    let qbody = wire::encode_body(&q).expect("encode");
    assert!(SignedAction::from_question_body(&qbody).is_none());
}

fn journal_keeps_one_run(j: &dyn Journal) {
    let (signer, _) = keys();
    let signed = SignedAction::sign(
        &spec(3, "release", &[], Target::All),
        Stamp::now_for(Duration::from_secs(60)),
        &signer,
    )
    .expect("sign");
    assert_eq!(j.begin(&signed).expect("begin"), None);
    let held = j.begin(&signed).expect("again").expect("held");
    assert_eq!(held.status, Status::Waiting);
    j.set(3, Status::Running, "", 10).expect("running");
    j.set(3, Status::Completed, "0123456789abcdef", 10)
        .expect("done");
    let e = j.get(3).expect("entry");
    assert_eq!(e.status, Status::Completed);
    assert_eq!(e.output, "0123456789");
    assert_eq!(e.runs, 1);
    assert_eq!(j.all().len(), 1);
}

#[test]
fn journals_take_an_action_once() {
    journal_keeps_one_run(&MemJournal::default());
    let dir = tempfile::tempdir().expect("dir");
    journal_keeps_one_run(&FileJournal::open(&dir.path().join("a.redb")).expect("open"));
}

#[test]
fn an_action_running_when_the_endpoint_stopped_is_interrupted_on_start() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("actions.redb");
    let (signer, _) = keys();
    let signed = SignedAction::sign(
        &spec(9, "release", &[], Target::All),
        Stamp::now_for(Duration::from_secs(60)),
        &signer,
    )
    .expect("sign");
    {
        let j = FileJournal::open(&path).expect("open");
        j.begin(&signed).expect("begin");
        j.set(9, Status::Running, "", 100).expect("running");
    }
    let j = FileJournal::open(&path).expect("reopen");
    let e = j.get(9).expect("kept");
    assert_eq!(e.status, Status::Interrupted);
    assert_eq!(e.runs, 1);
    // Delivered again: it is held, so nothing runs.
    assert_eq!(
        j.begin(&signed).expect("again").map(|e| e.status),
        Some(Status::Interrupted)
    );
}

struct Endpoint {
    host: Arc<SimulatedHost>,
    exec: Arc<SimExecutor>,
    runner: Arc<ActionRunner>,
    sensors: Arc<Sensors>,
    stats: Arc<WireStats>,
}

fn endpoint(me: &str, trust: Arc<ServerTrust>, profile: HostProfile) -> Endpoint {
    let host = Arc::new(SimulatedHost::new(profile));
    let exec = Arc::new(SimExecutor::new(host.clone()));
    let stats = Arc::new(WireStats::default());
    let runner = ActionRunner::new(
        me,
        trust,
        Arc::new(MemJournal::default()),
        exec.clone(),
        stats.clone(),
    );
    let sensors = Arc::new(Sensors::new(host.clone()).with_actions(runner.clone()));
    Endpoint {
        host,
        exec,
        runner,
        sensors,
        stats,
    }
}

fn status_of(a: &rollcall_cluster::proto::NodeAnswer) -> Option<String> {
    a.rows.as_ref().map(|r| r[0][0].clone())
}

#[tokio::test]
async fn an_endpoint_runs_a_delivered_action_once_and_only_if_targeted() {
    let (signer, trust) = keys();
    let mut profile = HostProfile::from_seed(11, None);
    profile.packages.push(("anydesk".into(), "6.3.0".into()));
    let e = endpoint("e1", trust.clone(), profile);
    let catalog = catalog_with(&[]);
    let filter = parse(
        "Get Computer Name from all machines with Installed Applications contains \"anydesk\"",
        &catalog,
    )
    .expect("parse");
    let s = spec(5, "uninstall", &["anydesk"], Target::Where(filter));
    let body = SignedAction::sign(&s, Stamp::now_for(Duration::from_secs(60)), &signer)
        .expect("sign")
        .to_question_body()
        .expect("body");
    let first = e.runner.deliver(&body, e.sensors.clone()).await;
    assert_eq!(status_of(&first).as_deref(), Some("completed"));
    assert!(
        !e.host
            .profile()
            .packages
            .iter()
            .any(|(n, _)| n == "anydesk")
    );
    // Delivered again (a duplicate, a late hand-off): the same status, no second run.
    let again = e.runner.deliver(&body, e.sensors.clone()).await;
    assert_eq!(status_of(&again).as_deref(), Some("completed"));
    assert_eq!(e.exec.runs(), 1);
    // The action sensors read the journal.
    let q = parse(
        "Get Action Status[5] and Action Output[5] and Quarantined from all machines",
        &catalog,
    )
    .expect("parse");
    let a = e.sensors.answer(&q).await;
    assert_eq!(
        a.rows,
        Some(vec![vec![
            "completed".to_string(),
            "removed anydesk".to_string(),
            "false".to_string()
        ]])
    );

    // A machine without anydesk is not targeted: no row, nothing run, nothing journalled.
    let other = endpoint("e2", trust.clone(), HostProfile::from_seed(12, None));
    let none = other.runner.deliver(&body, other.sensors.clone()).await;
    assert_eq!(none.rows, None);
    assert_eq!(other.exec.runs(), 0);
    let a = other.sensors.answer(&q).await;
    assert_eq!(a.rows.expect("row")[0][0], "not targeted");

    // A list of machines: e1 is named, so is not e2.
    let listed = spec(6, "run-script", &[], Target::Machines(vec!["e1".into()]));
    let mut listed = listed;
    listed.script = Some("echo hi".into());
    let body = SignedAction::sign(&listed, Stamp::now_for(Duration::from_secs(60)), &signer)
        .expect("sign")
        .to_question_body()
        .expect("body");
    let a = e.runner.deliver(&body, e.sensors.clone()).await;
    assert_eq!(
        a.rows,
        Some(vec![vec!["completed".into(), SIM_SCRIPT_OUTPUT.into()]])
    );
    assert_eq!(
        other
            .runner
            .deliver(&body, other.sensors.clone())
            .await
            .rows,
        None
    );
}

#[tokio::test]
async fn forged_altered_and_expired_actions_are_refused_counted_and_never_run() {
    let (signer, trust) = keys();
    let e = endpoint("e1", trust.clone(), HostProfile::from_seed(3, None));
    let s = spec(1, "quarantine", &[], Target::All);
    let good =
        SignedAction::sign(&s, Stamp::now_for(Duration::from_secs(60)), &signer).expect("sign");

    let (mallory, _) = keys();
    let forged = SignedAction::sign(&s, good.stamp, &mallory).expect("sign");
    let mut altered = good.clone();
    let mut changed = s.clone();
    changed.package = Package::builtin("release").expect("built-in");
    altered.body = wire::encode_body(&changed).expect("encode");
    let expired = SignedAction::sign(
        &spec(2, "quarantine", &[], Target::All),
        Stamp {
            issued_unix_ms: now_ms() - 120_000,
            expires_unix_ms: now_ms() - 60_000,
        },
        &signer,
    )
    .expect("sign");
    let mut garbage = vec![ACTION_BODY];
    garbage.extend_from_slice(b"\x93\xff\x00");
    for (body, want) in [
        (
            forged.to_question_body().expect("b"),
            "refused: bad signature",
        ),
        (
            altered.to_question_body().expect("b"),
            "refused: bad signature",
        ),
        (expired.to_question_body().expect("b"), "expired"),
        (garbage, "refused: unreadable action"),
    ] {
        let a = e.runner.deliver(&body, e.sensors.clone()).await;
        let got = status_of(&a).expect("a status row");
        assert!(got.starts_with(want), "{got} is not {want}");
    }
    assert_eq!(e.exec.runs(), 0);
    assert!(!e.exec.quarantined());
    assert_eq!(e.stats.snapshot().actions_refused, 4);
    assert!(e.runner.journal().all().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_spread_action_waits_then_runs_once() {
    let (signer, trust) = keys();
    let e = endpoint("e1", trust, HostProfile::from_seed(4, None));
    let mut s = spec(4, "quarantine", &[], Target::All);
    s.spread_secs = 30;
    let body = SignedAction::sign(&s, Stamp::now_for(Duration::from_secs(600)), &signer)
        .expect("sign")
        .to_question_body()
        .expect("body");
    let a = e.runner.deliver(&body, e.sensors.clone()).await;
    assert_eq!(status_of(&a).as_deref(), Some("waiting"));
    assert_eq!(e.exec.runs(), 0);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(e.exec.runs(), 1);
    assert!(e.exec.quarantined());
    let a = e.runner.deliver(&body, e.sensors.clone()).await;
    assert_eq!(status_of(&a).as_deref(), Some("completed"));
    assert_eq!(e.exec.runs(), 1);
}

fn linux(roots: Vec<std::path::PathBuf>, state: &std::path::Path) -> LinuxExecutor {
    LinuxExecutor::new(LinuxActions {
        file_roots: roots,
        quarantine_dir: state.join("quarantine"),
        state_dir: state.to_path_buf(),
        allow: Arc::new(Vec::new),
    })
}

#[tokio::test]
async fn delete_file_acts_only_under_the_roots() {
    let root = tempfile::tempdir().expect("root");
    let outside = tempfile::tempdir().expect("outside");
    let state = tempfile::tempdir().expect("state");
    let exec = linux(vec![root.path().to_path_buf()], state.path());
    let file = root.path().join("dropper.bin");
    std::fs::write(&file, b"bad bytes").expect("write");
    let victim = outside.path().join("keep.txt");
    std::fs::write(&victim, b"keep").expect("write");
    std::fs::create_dir(root.path().join("dir")).expect("dir");
    std::os::unix::fs::symlink(&victim, root.path().join("link")).expect("link");
    let run = |path: &std::path::Path, purge: bool| {
        let mut s = spec(1, "delete-file", &[&path.to_string_lossy()], Target::All);
        s.purge = purge;
        exec.run(&s)
    };
    // Outside the roots, a symlink leading out, a directory, a relative path: refused.
    let o = run(&victim, false).await;
    assert!(
        matches!(&o.status, Status::Refused(w) if w.contains("outside the allowed roots")),
        "{o:?}"
    );
    let o = run(&root.path().join("link"), false).await;
    assert!(
        matches!(&o.status, Status::Refused(w) if w.contains("leads to")),
        "{o:?}"
    );
    let o = run(&root.path().join("dir"), false).await;
    assert!(
        matches!(&o.status, Status::Refused(w) if w.contains("directory")),
        "{o:?}"
    );
    let o = run(std::path::Path::new("relative/x"), false).await;
    assert!(matches!(o.status, Status::Refused(_)), "{o:?}");
    assert!(victim.exists());
    // Inside: moved into the quarantine folder under its hash.
    let o = run(&file, false).await;
    assert_eq!(o.status, Status::Completed, "{o:?}");
    assert!(!file.exists());
    let sha = crate::sensors::sha256_hex(b"bad bytes");
    let kept: Vec<_> = std::fs::read_dir(state.path().join("quarantine"))
        .expect("quarantine dir")
        .flatten()
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].file_name().to_string_lossy(),
        format!("{sha}-dropper.bin")
    );
    assert!(o.output.contains(&format!("sha256 {sha}")), "{}", o.output);
    assert_eq!(std::fs::read(kept[0].path()).expect("read"), b"bad bytes");
    // Purged: gone.
    let again = root.path().join("again.bin");
    std::fs::write(&again, b"x").expect("write");
    let o = run(&again, true).await;
    assert_eq!(o.status, Status::Completed, "{o:?}");
    assert!(!again.exists());
    // Gone already: failed, not completed.
    let o = run(&again, true).await;
    assert!(matches!(o.status, Status::Failed(_)), "{o:?}");
}

#[tokio::test]
async fn scripts_and_commands_give_their_exit_code_and_output() {
    let state = tempfile::tempdir().expect("state");
    let exec = linux(Vec::new(), state.path());
    let mut s = spec(1, "run-script", &[], Target::All);
    s.script = Some("echo out; echo err >&2; exit 3".into());
    let o = exec.run(&s).await;
    assert_eq!(o.status, Status::Failed("exit 3".into()));
    assert_eq!(o.output, "out\nerr\n");
    s.script = Some("printf ok".into());
    assert_eq!(exec.run(&s).await, Outcome::done("ok"));
    // Output past the cap is cut.
    s.script = Some("head -c 100000 /dev/zero | tr '\\0' a".into());
    s.package.output_cap = 1000;
    let o = exec.run(&s).await;
    assert_eq!(o.output.len(), 1000);
    // An admin's command: parameters are positional, never pasted in.
    let mut c = spec(
        2,
        "run-script",
        &["a; touch /tmp/rollcall-injected", "b"],
        Target::All,
    );
    c.package = Package {
        name: "echo-args".into(),
        kind: PackageKind::Command("printf '%s|' \"$1\" \"$2\"".into()),
        timeout_secs: 5,
        output_cap: DEFAULT_OUTPUT_CAP,
        manifest: None,
    };
    let o = exec.run(&c).await;
    assert_eq!(o, Outcome::done("a; touch /tmp/rollcall-injected|b|"));
    // A timeout kills it.
    let mut slow = spec(3, "run-script", &[], Target::All);
    slow.script = Some("sleep 30".into());
    slow.package.timeout_secs = 1;
    let o = exec.run(&slow).await;
    assert!(
        matches!(&o.status, Status::Failed(w) if w.contains("timed out")),
        "{o:?}"
    );
}

#[tokio::test]
async fn uninstall_refuses_what_is_not_a_package_name() {
    let state = tempfile::tempdir().expect("state");
    let exec = linux(Vec::new(), state.path());
    for bad in ["-y", "a b", "pkg;rm", ""] {
        let o = exec.run(&spec(1, "uninstall", &[bad], Target::All)).await;
        assert!(matches!(o.status, Status::Refused(_)), "{bad}: {o:?}");
    }
    let o = exec
        .run(&spec(
            1,
            "uninstall",
            &["surely-not-installed-pkg"],
            Target::All,
        ))
        .await;
    assert_eq!(
        o.status,
        Status::Failed("surely-not-installed-pkg is not installed".into())
    );
}

#[test]
fn quarantine_rules_let_only_the_allowed_through() {
    let r = quarantine_rules(&[
        "10.0.0.1".parse().expect("ip"),
        "10.0.0.7".parse().expect("ip"),
        "fd00::1".parse().expect("ip"),
    ]);
    assert!(r.contains("policy drop"), "{r}");
    assert!(r.contains("ip daddr { 10.0.0.1, 10.0.0.7 } accept"), "{r}");
    assert!(r.contains("ip6 daddr { fd00::1 } accept"), "{r}");
    assert!(r.contains("delete table inet rollcall_quarantine"), "{r}");
    let none = quarantine_rules(&[]);
    assert!(!none.contains("daddr"), "{none}");
}

#[test]
fn file_sources_read_back_as_the_sensor_writes_them() {
    let f = FileSources {
        from_peers: 600_020,
        from_server: 300_010,
    };
    assert_eq!(f.cell(), "peers=600020 server=300010");
    assert_eq!(FileSources::parse(&f.cell()), Some(f));
    for bad in [
        "",
        "peers=1",
        "peers=x server=2",
        "server=2 peers=1",
        "peers=-1 server=0",
    ] {
        assert_eq!(FileSources::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn the_action_sensors_are_in_the_catalog() {
    for name in [
        "Action Status",
        "Action Output",
        "Action Files",
        "Quarantined",
    ] {
        assert!(BUILTIN.iter().any(|b| b.name == name), "{name}");
    }
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever bytes come as an action body: a clear refusal, never a panic, and
        /// never an action the pinned key did not sign.
        #[test]
        fn any_action_body_is_refused_or_opens_only_if_signed(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (_, trust) = keys();
            let mut body = vec![ACTION_BODY];
            body.extend_from_slice(&bytes);
            if let Some(Ok(signed)) = SignedAction::from_question_body(&body) {
                prop_assert!(signed.open(&trust, now_ms()).is_err());
            }
        }

        /// A signed action with its bytes flipped anywhere never opens.
        #[test]
        fn a_flipped_byte_never_opens(at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (signer, trust) = keys();
            let s = spec(3, "uninstall", &["anydesk"], Target::Machines(vec!["e1".into()]));
            let mut signed = SignedAction::sign(&s, Stamp::now_for(Duration::from_secs(60)), &signer)
                .expect("sign");
            let i = at.index(signed.body.len());
            signed.body[i] ^= 1 << bit;
            prop_assert!(signed.open(&trust, now_ms()).is_err());
        }

        /// Any status text reads as some status, and a written status reads back the same.
        #[test]
        fn any_status_text_reads(text in ".{0,80}") {
            let s = Status::parse(&text);
            prop_assert_eq!(Status::parse(&s.to_string()), s);
        }
    }
}

#[tokio::test]
async fn kill_process_kills_by_pid_and_never_the_agent() {
    let state = tempfile::tempdir().expect("state");
    let exec = linux(Vec::new(), state.path());
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let pid = child.id().to_string();
    let dry = exec
        .run(&ActionSpec {
            dry_run: true,
            ..spec(1, "kill-process", &[&pid], Target::All)
        })
        .await;
    assert_eq!(dry.status, Status::Completed);
    assert!(dry.output.starts_with("dry run: would kill"), "{dry:?}");
    assert_eq!(
        child.try_wait().expect("wait"),
        None,
        "a dry run kills nothing"
    );
    let o = exec
        .run(&spec(1, "kill-process", &[&pid], Target::All))
        .await;
    assert_eq!(o, Outcome::done(format!("killed [{pid}]")));
    let status = child.wait().expect("reaped");
    assert!(!status.success());
    // The agent itself is never a target.
    let me = std::process::id().to_string();
    let o = exec
        .run(&spec(2, "kill-process", &[&me], Target::All))
        .await;
    assert_eq!(o, Outcome::done(format!("no process matches {me}")));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_stops_what_has_not_started_and_what_has_not_arrived() {
    let (signer, trust) = keys();
    let stamp = || Stamp::now_for(Duration::from_secs(600));
    let e = endpoint("e1", trust.clone(), HostProfile::from_seed(4, None));
    let mut s = spec(10, "quarantine", &[], Target::All);
    s.spread_secs = 30;
    let action = SignedAction::sign(&s, stamp(), &signer)
        .expect("sign")
        .to_question_body()
        .expect("body");
    let mut c = spec(11, "release", &[], Target::All);
    c.package = Package::cancel(10);
    let cancel = SignedAction::sign(&c, stamp(), &signer)
        .expect("sign")
        .to_question_body()
        .expect("body");

    // Waiting for its share of the spread: cancelled, and it never runs.
    let a = e.runner.deliver(&action, e.sensors.clone()).await;
    assert_eq!(status_of(&a).as_deref(), Some("waiting"));
    let a = e.runner.deliver(&cancel, e.sensors.clone()).await;
    assert_eq!(
        a.rows,
        Some(vec![vec![
            "completed".to_string(),
            "action 10 cancelled before it started".to_string()
        ]])
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(e.exec.runs(), 0);
    assert!(!e.exec.quarantined());
    let a = e.runner.deliver(&action, e.sensors.clone()).await;
    assert_eq!(status_of(&a).as_deref(), Some("cancelled"));

    // The cancel came first (the machine was away): the action never runs when it comes,
    // and a machine it does not target still says so.
    let late = endpoint("e2", trust.clone(), HostProfile::from_seed(5, None));
    late.runner.deliver(&cancel, late.sensors.clone()).await;
    let catalog = catalog_with(&[]);
    let q = parse("Get Action Status[10] from all machines", &catalog).expect("parse");
    assert_eq!(
        late.sensors.answer(&q).await.rows,
        Some(vec![vec!["not targeted".to_string()]])
    );
    let a = late.runner.deliver(&action, late.sensors.clone()).await;
    assert_eq!(status_of(&a).as_deref(), Some("cancelled"));
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(late.exec.runs(), 0);

    // Already done: a cancel changes nothing.
    let done = endpoint("e3", trust, HostProfile::from_seed(6, None));
    let now = SignedAction::sign(&spec(12, "quarantine", &[], Target::All), stamp(), &signer)
        .expect("sign")
        .to_question_body()
        .expect("body");
    done.runner.deliver(&now, done.sensors.clone()).await;
    let mut c = spec(13, "release", &[], Target::All);
    c.package = Package::cancel(12);
    let cancel = SignedAction::sign(&c, stamp(), &signer)
        .expect("sign")
        .to_question_body()
        .expect("body");
    let a = done.runner.deliver(&cancel, done.sensors.clone()).await;
    assert_eq!(
        a.rows.expect("row")[0][1],
        "action 12 was already completed"
    );
    assert_eq!(done.exec.runs_of(12), 1);
}
