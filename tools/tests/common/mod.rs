//! What the end-to-end tests of the `rollcall` binary share: running it, and children that
//! are killed when a test ends.
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod receivers;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn rollcall() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rollcall"));
    // `ROLLCALL_CHILD_LOG=rollcall_cluster=info` to see more of the processes a test runs.
    c.env(
        "RUST_LOG",
        std::env::var("ROLLCALL_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
    );
    c
}

pub fn run(args: &[&str]) -> Output {
    rollcall().args(args).output().expect("run rollcall")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process that is killed when the test ends, whatever happens.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        Running::spawn(rollcall().args(args))
    }

    /// `program` with `args` (a `rollcall` binary other than the one this test built).
    pub fn start_program(program: &std::path::Path, args: &[&str]) -> Running {
        let mut c = Command::new(program);
        c.env("RUST_LOG", "warn");
        Running::spawn(c.args(args))
    }

    fn spawn(c: &mut Command) -> Running {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rollcall");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// The first line of output that starts with `prefix`, within the deadline.
    pub fn line_starting(&self, prefix: &str) -> String {
        self.line_starting_within(prefix, DEADLINE)
    }

    /// The first line of output that starts with `prefix`, within `deadline`.
    pub fn line_starting_within(&self, prefix: &str, deadline: Duration) -> String {
        let end = std::time::Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?}: {e}"),
            }
        }
    }
}

impl Running {
    /// The operator address a `rollcall sim --serve` prints once its fleet is up.
    pub fn serving_address(&self) -> String {
        self.serving_address_within(DEADLINE)
    }

    /// The same, for a fleet that takes up to `deadline` to come up.
    pub fn serving_address_within(&self, deadline: Duration) -> String {
        let line = self.line_starting_within("serving operators at ", deadline);
        line.trim_start_matches("serving operators at ")
            .trim()
            .to_string()
    }
}

impl Running {
    /// The process's exit code once it exits within `deadline` (`None` if it does not, or
    /// died by a signal). The process is left for `Drop` to reap.
    pub fn exit_code_within(&self, deadline: Duration) -> Option<i32> {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // WNOWAIT: learn of the exit without reaping, so the pid stays ours.
            let _ = tx.send(waitid(
                Id::Pid(pid),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ));
        });
        match rx.recv_timeout(deadline) {
            Ok(Ok(WaitStatus::Exited(_, code))) => Some(code),
            _ => None,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The join token `ca init` printed.
pub fn token_from(out: &Output) -> String {
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix("join token: "))
        .expect("join token line")
        .to_string()
}

/// Runs `rollcall` with `args` until its stdout satisfies `done`, at most `tries` times.
pub fn run_until(args: &[&str], tries: usize, done: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..tries {
        let out = run(args);
        last = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        if out.status.success() && done(&stdout(&out)) {
            return stdout(&out);
        }
    }
    panic!(
        "`rollcall {}` never gave what was expected; last:\n{last}",
        args.join(" ")
    );
}
