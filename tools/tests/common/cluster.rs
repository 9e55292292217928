//! A cluster of `rollcall` processes on loopback for end-to-end tests: a CA, a server,
//! endpoints and operators.

use std::path::PathBuf;

use super::*;

/// A CA, a server address, a join token and four operators (olga operator, alice and bob
/// admins, vera viewer) in a temporary folder.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub token: String,
    /// Appended to every endpoint's configuration file.
    pub endpoint_config: String,
}

impl Cluster {
    pub fn p(&self, s: &str) -> String {
        self.dir.path().join(s).to_string_lossy().into_owned()
    }

    pub fn path(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }

    pub fn operator(&self, name: &str, role: &str) {
        let out = run(&[
            "ca",
            "issue-operator",
            "--dir",
            &self.p("ca"),
            "--name",
            name,
            "--role",
            role,
            "--out",
            &self.p(name),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server with `server.toml`, its first lines not read yet.
    pub fn start_server(&self) -> Running {
        Running::start(&[
            "server",
            "--ca-dir",
            &self.p("ca"),
            "--listen",
            &self.addr,
            "--config",
            &self.p("server.toml"),
        ])
    }

    /// The server, once it listens.
    pub fn server(&self) -> Running {
        let s = self.start_server();
        s.line_starting("server ");
        s
    }

    /// Endpoint `i` at 127.0.4.i, its `[actions] file_roots` its own folder `root{i}`.
    pub fn endpoint(&self, i: u8) -> Running {
        self.endpoint_with(i, "")
    }

    /// Endpoint `i` with `extra` appended to its configuration file.
    pub fn endpoint_with(&self, i: u8, extra: &str) -> Running {
        let root = self.path(&format!("root{i}"));
        std::fs::create_dir_all(&root).expect("root");
        let cfg = self.path(&format!("ep{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[actions]\nfile_roots = [{:?}]\n{}\n{extra}",
                root.to_string_lossy(),
                self.endpoint_config
            ),
        )
        .expect("config");
        let e = Running::start(&[
            "endpoint",
            "--server",
            &self.addr,
            "--join-token",
            &self.token,
            "--state-dir",
            &self.p(&format!("ep{i}")),
            "--listen",
            &format!("127.0.4.{i}:0"),
            "--register-min-ms",
            "200",
            "--register-max-ms",
            "400",
            "--config",
            &cfg.to_string_lossy(),
        ]);
        e.line_starting("registered in ring ");
        e
    }

    /// `rollcall` with `args` and the server and operator flags.
    pub fn as_(&self, who: &str, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        let dir = self.p(who);
        all.extend(["--server", &self.addr, "--cert-dir", &dir]);
        run(&all)
    }

    pub fn json(&self, who: &str, args: &[&str]) -> serde_json::Value {
        let out = self.as_(who, args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: {e}: {}{}",
                stdout(&out),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Olga runs `script` on every machine (`extra` flags added); the command's output.
    pub fn run_script(&self, script: &str, extra: &[&str]) -> std::process::Output {
        let file = self.path("script.sh");
        std::fs::write(&file, script).expect("script");
        let file = file.to_string_lossy().into_owned();
        let mut args = vec![
            "act",
            "run-script",
            "--all",
            "--script-file",
            &file,
            "--json",
        ];
        args.extend_from_slice(extra);
        self.as_("olga", &args)
    }

    /// Action `id`'s status as the viewer sees it, once `done` holds for it (within the
    /// tries).
    pub fn status_until(
        &self,
        id: &str,
        tries: usize,
        done: impl Fn(&str) -> bool,
    ) -> serde_json::Value {
        let out = run_until(
            &[
                "action",
                "status",
                id,
                "--json",
                "--server",
                &self.addr,
                "--cert-dir",
                &self.p("vera"),
            ],
            tries,
            done,
        );
        serde_json::from_str(&out).expect("json")
    }

    /// Waits until the ring view lists `n` machines that are not offline.
    pub fn wait_members(&self, n: usize) {
        run_until(
            &[
                "ring",
                "show",
                "--server",
                &self.addr,
                "--cert-dir",
                &self.p("vera"),
                "--json",
            ],
            1_000,
            |out| {
                serde_json::from_str::<serde_json::Value>(out).is_ok_and(|v| {
                    v["rings"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .flat_map(|x| x["members"].as_array().cloned().unwrap_or_default())
                                .filter(|m| m["health"] != "Offline")
                                .count()
                        })
                        .unwrap_or(0)
                        == n
                })
            },
        );
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}

pub fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tmp");
    let init = run(&[
        "ca",
        "init",
        "--dir",
        &dir.path().join("ca").to_string_lossy(),
    ]);
    assert!(init.status.success());
    let token = token_from(&init);
    let c = Cluster {
        addr: format!("127.0.0.1:{}", free_port()),
        dir,
        token,
        endpoint_config: String::new(),
    };
    // Scripts need no approval here; every other dangerous package does.
    std::fs::write(
        c.path("server.toml"),
        "[actions]\nrequire_approval = [\"delete-file\", \"quarantine\", \"uninstall\", \"kill-process\"]\n",
    )
    .expect("server config");
    c.operator("olga", "operator");
    c.operator("alice", "admin");
    c.operator("bob", "admin");
    c.operator("vera", "viewer");
    c
}

pub fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}
