//! Sensors on this real Linux machine, checked against the system's own tools and files;
//! parsers on fixed inputs; budgets; simulated hosts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_actors::question::{SensorRef, parse};
use rollcall_actors::sensors::linux::{LinuxHost, parse_dpkg_status, parse_proc_net, parse_utmp};
use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
use rollcall_actors::sensors::{Budget, ScriptSensor, SensorError, Sensors};

fn sensor(name: &str, arg: Option<&str>) -> SensorRef {
    SensorRef {
        name: name.into(),
        args: arg.map(|a| vec![a.to_string()]).unwrap_or_default(),
    }
}

async fn read(s: &Sensors, name: &str, arg: Option<&str>) -> Vec<String> {
    s.read(&sensor(name, arg))
        .await
        .0
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn file(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn os_release(key: &str) -> String {
    let text =
        std::fs::read_to_string("/etc/os-release").unwrap_or_else(|_| file("/usr/lib/os-release"));
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}=")))
        .expect("key");
    line[key.len() + 1..].trim_matches('"').to_string()
}

fn command(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn built_in_sensors_read_the_real_machine() {
    let s = Sensors::new(Arc::new(LinuxHost::default()));
    assert_eq!(
        read(&s, "Computer Name", None).await,
        vec![file("/proc/sys/kernel/hostname").trim().to_string()]
    );
    assert_eq!(
        read(&s, "Operating System", None).await,
        vec![os_release("NAME")]
    );
    assert_eq!(
        read(&s, "OS Version", None).await,
        vec![os_release("VERSION_ID")]
    );
    assert_eq!(
        read(&s, "Kernel Version", None).await,
        vec![file("/proc/sys/kernel/osrelease").trim().to_string()]
    );

    let up = |t: &str| {
        t.split_whitespace()
            .next()
            .expect("uptime")
            .parse::<f64>()
            .expect("number")
    };
    let before = up(&file("/proc/uptime"));
    let uptime: f64 = read(&s, "Uptime", None).await[0].parse().expect("number");
    let after = up(&file("/proc/uptime"));
    assert!(
        uptime >= before.floor() && uptime <= after.ceil(),
        "{before} <= {uptime} <= {after}"
    );

    let mem_kb: u64 = file("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    assert_eq!(
        read(&s, "Memory", None).await,
        vec![(mem_kb * 1024).to_string()]
    );

    // Installed applications agree with dpkg's own tool, where there is one.
    if let Some(listing) = command(&[
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Status}\t${Package}\t${Version}\n",
    ]) {
        let installed: BTreeSet<(String, String)> = listing
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (status, name, version) = (f.next()?, f.next()?, f.next()?);
                (status == "installed").then(|| (name.to_string(), version.to_string()))
            })
            .collect();
        let names: BTreeSet<String> = installed.iter().map(|(n, _)| n.clone()).collect();
        let got: BTreeSet<String> = read(&s, "Installed Applications", None)
            .await
            .into_iter()
            .collect();
        assert_eq!(got, names);
        let bash: Vec<String> = installed
            .iter()
            .filter(|(n, _)| n == "bash")
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(
            read(&s, "Installed Application Version", Some("bash")).await,
            bash
        );
    }

    assert_eq!(
        read(&s, "File Exists", Some("/proc/uptime")).await,
        vec!["true"]
    );
    assert_eq!(
        read(&s, "File Exists", Some("/no/such/file/here")).await,
        vec!["false"]
    );
    if let Some(out) = command(&["sha256sum", "/proc/sys/kernel/osrelease"]) {
        let want = out.split_whitespace().next().expect("hash").to_string();
        assert_eq!(
            read(&s, "File Hash", Some("/proc/sys/kernel/osrelease")).await,
            vec![want]
        );
    }
    assert_eq!(
        read(&s, "File Hash", Some("/no/such/file/here")).await,
        vec!["file not found"]
    );

    let me = file("/proc/self/comm").trim().to_string();
    assert!(
        read(&s, "Running Processes", None).await.contains(&me),
        "{me} not listed"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    assert!(
        read(&s, "Listening Ports", None)
            .await
            .contains(&format!("tcp/{port}"))
    );
    for ip in read(&s, "IP Address", None).await {
        let ip: std::net::IpAddr = ip.parse().expect("an address");
        assert!(!ip.is_loopback());
    }
    assert!(read(&s, "CPU", None).await[0].ends_with(
        &format!(" x {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    ));
}

#[test]
fn package_database_utmp_and_socket_tables_parse() {
    let status = "Package: bash\nStatus: install ok installed\nVersion: 5.2-1\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: openssl\nStatus: install ok installed\nPriority: optional\nVersion: 3.0.2-0ubuntu1.15\n";
    assert_eq!(
        parse_dpkg_status(status),
        vec![
            ("bash".into(), "5.2-1".into()),
            ("openssl".into(), "3.0.2-0ubuntu1.15".into())
        ]
    );
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue\n   0: 00000000:0016 00000000:0000 0A 00000000:00000000\n   1: 0100007F:1F90 0100007F:A000 01 00000000:00000000\n";
    assert_eq!(parse_proc_net(tcp, "tcp"), vec!["tcp/22"]);
    let mut utmp = vec![0u8; 384 * 2];
    utmp[0..4].copy_from_slice(&7i32.to_ne_bytes());
    utmp[44..49].copy_from_slice(b"alice");
    utmp[384..388].copy_from_slice(&8i32.to_ne_bytes()); // DEAD_PROCESS
    utmp[384 + 44..384 + 47].copy_from_slice(b"bob");
    assert_eq!(parse_utmp(&utmp), vec!["alice"]);
}

#[tokio::test]
async fn a_hanging_or_flooding_sensor_is_cut_at_its_budget_and_the_question_completes() {
    let mut s = Sensors::new(Arc::new(SimulatedHost::new(HostProfile::from_seed(
        7, None,
    ))))
    .with_budget(Budget {
        time_limit_ms: 300,
        output_limit_bytes: 1024,
    });
    s.set_scripts(vec![
        ScriptSensor::new("Hang", "sleep 30"),
        ScriptSensor::new("Flood", "yes rollcall"),
        ScriptSensor::new("Greeting", "echo hello; echo world"),
    ])
    .expect("scripts");
    let q = parse(
        "Get Computer Name and Hang and Flood and Greeting from all machines",
        &s.catalog(),
    )
    .expect("parse");
    let t0 = Instant::now();
    let a = s.answer(&q).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    // The script's two lines are two values: one row each.
    let rows = a.rows.expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, greeting) in rows.iter().zip(["hello", "world"]) {
        assert_eq!(row[0], "sim-000007");
        assert!(row[1].starts_with("[error: timed out after "), "{}", row[1]);
        assert_eq!(row[2], "[error: output over 1024 bytes; cut]");
        assert_eq!(row[3], greeting);
    }
    let problems: Vec<(&str, &SensorError)> = a
        .problems
        .iter()
        .map(|p| (p.sensor.as_str(), p.error.as_ref().expect("error")))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    match problems[0] {
        (
            "Hang",
            SensorError::TimedOut {
                runtime_ms,
                limit_ms: 300,
            },
        ) => assert!((300..2000).contains(runtime_ms), "{runtime_ms}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        problems[1],
        ("Flood", &SensorError::OutputCapped { limit_bytes: 1024 })
    );
}

#[tokio::test]
async fn a_multi_valued_sensor_answers_one_row_per_value_and_several_give_every_combination() {
    let p = HostProfile::from_seed(11, None);
    let s = Sensors::new(Arc::new(SimulatedHost::new(p.clone())));
    let catalog = s.catalog();
    let q = parse("Get Installed Applications from all machines", &catalog).expect("parse");
    let mut names: Vec<String> = p.packages.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let want: Vec<Vec<String>> = names.iter().map(|n| vec![n.clone()]).collect();
    assert!(want.len() >= 3, "{want:?}");
    assert_eq!(s.answer(&q).await.rows, Some(want));
    // Two multi-valued sensors: every (application, process) pair, in order.
    let q = parse(
        "Get Installed Applications and Running Processes from all machines",
        &catalog,
    )
    .expect("parse");
    let rows = s.answer(&q).await.rows.expect("rows");
    assert_eq!(rows.len(), names.len() * p.processes.len());
    assert_eq!(rows[0], vec![names[0].clone(), p.processes[0].clone()]);
    assert_eq!(
        rows[rows.len() - 1],
        vec![
            names[names.len() - 1].clone(),
            p.processes[p.processes.len() - 1].clone()
        ]
    );
    // Past the per-machine cap the rows are cut, and the answer says so.
    let (rows, total) = rollcall_actors::sensors::combinations(
        &[
            (0..100).map(|i| i.to_string()).collect(),
            (0..100).map(|i| i.to_string()).collect(),
        ],
        rollcall_actors::sensors::MAX_ROWS_PER_MACHINE,
    );
    assert_eq!((rows.len(), total), (1024, 10_000));
    assert_eq!(rows[1023], vec!["10".to_string(), "23".to_string()]);
}

#[tokio::test]
async fn a_failed_sensor_makes_a_negative_filter_unknown_not_true() {
    let mut s = Sensors::new(Arc::new(SimulatedHost::new(HostProfile::from_seed(
        5, None,
    ))));
    s.set_scripts(vec![ScriptSensor::new("Broken", "exit 3")])
        .expect("scripts");
    let q = parse(
        "Get Computer Name from all machines with Broken does not contain \"x\"",
        &s.catalog(),
    )
    .expect("parse");
    let a = s.answer(&q).await;
    assert_eq!(
        a.rows, None,
        "a machine whose sensor failed is not counted as without x"
    );
    assert_eq!(a.problems.len(), 1, "{:?}", a.problems);
    assert_eq!(a.problems[0].sensor, "Broken");
}

#[tokio::test]
async fn a_script_sensor_runs_with_a_clean_environment() {
    // The test process has cargo's variables (as the agent has its join token in
    // ROLLCALL_JOIN_TOKEN): none reaches the script; the usual tools are still found.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    let mut s = Sensors::new(Arc::new(SimulatedHost::new(HostProfile::from_seed(
        2, None,
    ))));
    s.set_scripts(vec![ScriptSensor::new(
        "Env",
        "echo \"${CARGO_MANIFEST_DIR:-clean} ${ROLLCALL_JOIN_TOKEN:-none} $PATH\"; env | wc -l | tr -d ' '",
    )])
    .expect("scripts");
    let q = parse("Get Env from all machines", &s.catalog()).expect("parse");
    let rows = s.answer(&q).await.rows.expect("rows");
    let values: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(
        values.contains(&format!("clean none {}", rollcall_actors::sensors::SCRIPT_PATH).as_str()),
        "{values:?}"
    );
}

#[tokio::test]
async fn a_script_whose_hash_does_not_match_is_refused() {
    let mut s = Sensors::new(Arc::new(SimulatedHost::new(HostProfile::from_seed(
        1, None,
    ))));
    let mut tampered = ScriptSensor::new("Who", "id -un");
    tampered.script = "rm -rf /tmp/should-never-run".into();
    let e = s.set_scripts(vec![tampered]).expect_err("refused");
    assert_eq!(
        e,
        SensorError::Failed("script sensor Who does not match its hash; refused".into())
    );
    assert!(!s.catalog().iter().any(|c| c.name == "Who"));
}

#[tokio::test]
async fn simulated_hosts_are_deterministic_and_varied() {
    assert_eq!(
        HostProfile::from_seed(42, None),
        HostProfile::from_seed(42, None)
    );
    let oses: BTreeSet<String> = (0..200)
        .map(|i| HostProfile::from_seed(i, None).os_version)
        .collect();
    assert!(oses.len() >= 3, "{oses:?}");
    let with_openssl = (0..200)
        .filter(|i| {
            HostProfile::from_seed(*i, None)
                .packages
                .iter()
                .any(|(n, _)| n == "openssl")
        })
        .count();
    assert!((100..200).contains(&with_openssl), "{with_openssl}");
    // Answers follow the profile.
    for seed in 0..20 {
        let p = HostProfile::from_seed(seed, None);
        let s = Sensors::new(Arc::new(SimulatedHost::new(p.clone())));
        let q = parse("Get Operating System and OS Version from all machines with Installed Applications contains \"openssl\"", &s.catalog()).expect("parse");
        let a = s.answer(&q).await;
        let has = p.packages.iter().any(|(n, _)| n.contains("openssl"));
        assert_eq!(
            a.rows,
            has.then(|| vec![vec![p.os.clone(), p.os_version.clone()]]),
            "seed {seed}"
        );
    }
}

#[tokio::test]
async fn a_sensor_named_twice_is_read_once_and_fills_both_columns_and_a_filter_sensor_is_not_a_column()
 {
    let p = HostProfile::from_seed(3, None);
    let mut s = Sensors::new(Arc::new(SimulatedHost::new(p.clone())));
    // Counts its runs in its own output: read once per question, whatever names it.
    let runs = tempfile_path("rollcall-sensor-runs");
    s.set_scripts(vec![ScriptSensor::new(
        "Runs",
        format!("echo x >> {runs}; wc -l < {runs}"),
    )])
    .expect("scripts");
    let q = parse(
        "Get Runs and Operating System and Runs from all machines with Runs contains \"1\" and OS Version contains \"\"",
        &s.catalog(),
    )
    .expect("parse");
    let a = s.answer(&q).await;
    assert_eq!(
        a.rows,
        Some(vec![vec!["1".to_string(), p.os.clone(), "1".to_string()]])
    );
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    let _ = std::fs::remove_file(&runs);
}

/// A fresh path under the system's temporary directory (the file is not created).
fn tempfile_path(stem: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir()
        .join(format!("{stem}-{}-{n}", std::process::id()))
        .display()
        .to_string()
}
