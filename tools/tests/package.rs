//! The Debian packages built by `tools/packaging/deb/build.sh`: their contents, control
//! fields and conffiles; their systemd units pass `systemd-analyze verify` (where it is
//! installed); and the packaged binary runs with the packaged configuration: an endpoint
//! whose config has no server exits with 78 (its unit does not restart on it), and once
//! the admin writes the server and a join token into it, it enrols and joins a ring.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().expect("run");
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(deb: &Path, name: &str) -> String {
    run_ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
        .trim()
        .to_string()
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("port")
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("port")
    }
}

#[test]
fn packages_hold_the_binary_units_and_config_and_the_packaged_endpoint_joins() {
    if !have("dpkg-deb") {
        eprintln!("skipped: dpkg-deb is not installed (not a Debian-like machine)");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/deb/build.sh");
    let out = dir.path().join("debs");
    let built = run_ok(
        Command::new("bash")
            .arg(&script)
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_rollcall"))
            .arg("--out")
            .arg(&out)
            .env("DEB_COMPRESS", "none"),
    );
    let debs: Vec<PathBuf> = built.lines().map(PathBuf::from).collect();
    let names: Vec<String> = debs.iter().map(|d| field(d, "Package")).collect();
    assert_eq!(names, ["rollcall", "rollcall-server", "rollcall-endpoint"]);
    let version = field(&debs[0], "Version");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        field(&debs[2], "Depends"),
        format!("rollcall (= {version})")
    );
    assert_eq!(
        field(&debs[1], "Depends"),
        format!("rollcall (= {version}), passwd")
    );

    // Contents, with owners and modes.
    let listing = |deb: &Path| run_ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    let has = |list: &str, mode: &str, path: &str| {
        assert!(
            list.lines()
                .any(|l| l.starts_with(mode) && l.contains("root/root") && l.ends_with(path)),
            "{mode} {path} not in\n{list}"
        );
    };
    has(&listing(&debs[0]), "-rwxr-xr-x", "./usr/bin/rollcall");
    for (deb, role) in [(&debs[1], "server"), (&debs[2], "endpoint")] {
        let list = listing(deb);
        has(
            &list,
            "-rw-r--r--",
            &format!("./lib/systemd/system/rollcall-{role}.service"),
        );
        has(&list, "-rw-r-----", &format!("./etc/rollcall/{role}.toml"));
        assert!(!list.contains("./usr/bin/rollcall"), "{list}");
        let control = dir.path().join(format!("control-{role}"));
        run_ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
        assert_eq!(
            std::fs::read_to_string(control.join("conffiles")).expect("conffiles"),
            format!("/etc/rollcall/{role}.toml\n")
        );
        for s in ["postinst", "prerm", "postrm"] {
            let out = Command::new("sh")
                .arg("-n")
                .arg(control.join(s))
                .output()
                .expect("sh -n");
            assert!(out.status.success(), "{role}.{s} is not valid sh");
        }
    }

    // Installed into a root of its own.
    let root = dir.path().join("root");
    for d in &debs {
        run_ok(Command::new("dpkg-deb").arg("-x").arg(d).arg(&root));
    }
    let unit = |role: &str| {
        std::fs::read_to_string(root.join(format!("lib/systemd/system/rollcall-{role}.service")))
            .expect("unit")
    };
    let (server_unit, endpoint_unit) = (unit("server"), unit("endpoint"));
    for line in [
        "User=rollcall",
        "ExecStart=/usr/bin/rollcall server --config /etc/rollcall/server.toml",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "StateDirectory=rollcall",
    ] {
        assert!(
            server_unit.lines().any(|l| l == line),
            "server unit: {line}"
        );
    }
    for line in [
        "ExecStart=/usr/bin/rollcall endpoint --config /etc/rollcall/endpoint.toml",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "StateDirectory=rollcall-endpoint",
    ] {
        assert!(
            endpoint_unit.lines().any(|l| l == line),
            "endpoint unit: {line}"
        );
    }
    // The endpoint needs root (nftables, the package manager): no User=, no empty
    // capability set.
    assert!(!endpoint_unit.lines().any(|l| l.starts_with("User=")));
    assert!(!endpoint_unit.contains("CapabilityBoundingSet="));

    if have("systemd-analyze") {
        // The system's own units (targets) beside ours, so that dependencies resolve.
        let system = Path::new("/usr/lib/systemd/system");
        let dest = root.join("usr/lib/systemd/system");
        std::fs::create_dir_all(&dest).expect("units dir");
        for e in std::fs::read_dir(system).expect("system units").flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::copy(e.path(), dest.join(e.file_name()));
            }
        }
        for role in ["server", "endpoint"] {
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(format!("--root={}", root.display()))
                .arg(format!("rollcall-{role}.service"))
                .output()
                .expect("systemd-analyze");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "rollcall-{role}.service: {err}");
            assert!(err.trim().is_empty(), "rollcall-{role}.service: {err}");
        }
    } else {
        eprintln!("systemd-analyze verify skipped: systemd-analyze is not installed");
    }

    // The packaged binary with the packaged config, as installed.
    let bin = root.join("usr/bin/rollcall");
    let etc = root.join("etc/rollcall");
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let ep_state = dir.path().join("ep");
    let unconfigured = Command::new(&bin)
        .args(["endpoint", "--config", &p(&etc.join("endpoint.toml"))])
        .args(["--state-dir", &p(&ep_state)])
        .output()
        .expect("endpoint");
    assert_eq!(unconfigured.status.code(), Some(78));
    let err = String::from_utf8_lossy(&unconfigured.stderr);
    assert!(
        err.contains("not configured: set the server's address: --server, or [node] server"),
        "{err}"
    );

    let ca = dir.path().join("ca");
    let init = Command::new(&bin)
        .args(["ca", "init", "--dir", &p(&ca)])
        .output()
        .expect("ca init");
    assert!(init.status.success());
    let token = token_from(&init);
    let server_addr = format!("127.0.0.1:{}", free_port(true));
    let server = Running::start_program(
        &bin,
        &[
            "server",
            "--config",
            &p(&etc.join("server.toml")),
            "--ca-dir",
            &p(&ca),
            "--state-dir",
            &p(&dir.path().join("server")),
            "--listen",
            &server_addr,
            "--metrics-listen",
            &format!("127.0.0.1:{}", free_port(false)),
        ],
    );
    server.line_starting("server ");

    // The admin writes the server and the token into the packaged file.
    let packaged = std::fs::read_to_string(etc.join("endpoint.toml")).expect("endpoint.toml");
    assert_eq!(packaged.matches("server = \"\"").count(), 1);
    assert_eq!(packaged.matches("join_token = \"\"").count(), 1);
    let written = packaged
        .replace("server = \"\"", &format!("server = \"{server_addr}\""))
        .replace("join_token = \"\"", &format!("join_token = \"{token}\""));
    let cfg = dir.path().join("endpoint.toml");
    std::fs::write(&cfg, written).expect("config");
    let metrics = format!("127.0.0.1:{}", free_port(false));
    let endpoint = Running::start_program(
        &bin,
        &[
            "endpoint",
            "--config",
            &p(&cfg),
            "--state-dir",
            &p(&ep_state),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &metrics,
            "--simulate-host",
            "7",
        ],
    );
    endpoint.line_starting("registered in ring ");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let mut ready = agent
        .get(format!("http://{metrics}/readyz"))
        .call()
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.body_mut().read_to_string().expect("body"), "ready\n");
    drop(endpoint);
    drop(server);
}
