//! The built-in packages on a real Linux machine.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;

use super::{ActionSpec, Executor, Outcome, PackageKind, cut};
use crate::sensors::SCRIPT_PATH;

/// The nftables table quarantine puts in (and release takes out).
pub const QUARANTINE_TABLE: &str = "rollcall_quarantine";

/// File in the state directory that says the machine is quarantined (and to whom it may
/// still talk): the quarantine is put back when the endpoint starts again.
const QUARANTINE_FLAG: &str = "quarantined";

/// The addresses a quarantined machine may still reach: the server's and its ring
/// neighbours', asked when the quarantine goes in.
pub type AllowList = Arc<dyn Fn() -> Vec<IpAddr> + Send + Sync>;

/// Settings of the real executor.
#[derive(Clone)]
pub struct LinuxActions {
    /// `delete-file` acts only under these (canonical) directories.
    pub file_roots: Vec<PathBuf>,
    /// Where `delete-file` moves files (not purged).
    pub quarantine_dir: PathBuf,
    /// The endpoint's state directory (the quarantine flag).
    pub state_dir: PathBuf,
    /// Who a quarantined machine may still reach.
    pub allow: AllowList,
}

impl std::fmt::Debug for LinuxActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxActions")
            .field("file_roots", &self.file_roots)
            .field("quarantine_dir", &self.quarantine_dir)
            .finish()
    }
}

/// Runs packages on this machine.
#[derive(Debug, Clone)]
pub struct LinuxExecutor {
    cfg: Arc<LinuxActions>,
}

impl LinuxExecutor {
    /// An executor with `cfg`.
    pub fn new(cfg: LinuxActions) -> LinuxExecutor {
        LinuxExecutor { cfg: Arc::new(cfg) }
    }

    /// Puts the quarantine back if the machine was quarantined when the endpoint stopped.
    pub async fn reapply_quarantine(&self) -> Option<Outcome> {
        if !self.cfg.state_dir.join(QUARANTINE_FLAG).exists() {
            return None;
        }
        tracing::warn!("this machine is quarantined: putting the rules back");
        Some(quarantine(&self.cfg, false).await)
    }
}

impl Executor for LinuxExecutor {
    fn run(&self, spec: &ActionSpec) -> BoxFuture<'static, Outcome> {
        self.run_in(spec, None)
    }

    fn run_in(&self, spec: &ActionSpec, dir: Option<PathBuf>) -> BoxFuture<'static, Outcome> {
        let cfg = self.cfg.clone();
        let spec = spec.clone();
        Box::pin(async move {
            let param = spec.params.first().cloned().unwrap_or_default();
            let timeout = Duration::from_secs(spec.package.timeout_secs.max(1));
            let cap = spec.package.output_cap;
            match &spec.package.kind {
                PackageKind::DeleteFile => {
                    let cfg = cfg.clone();
                    let (dry, purge) = (spec.dry_run, spec.purge);
                    tokio::task::spawn_blocking(move || delete_file(&cfg, &param, purge, dry))
                        .await
                        .unwrap_or_else(|e| Outcome::failed(e.to_string()))
                }
                PackageKind::KillProcess => {
                    let dry = spec.dry_run;
                    tokio::task::spawn_blocking(move || kill_process(&param, dry))
                        .await
                        .unwrap_or_else(|e| Outcome::failed(e.to_string()))
                }
                PackageKind::Quarantine => quarantine(&cfg, spec.dry_run).await,
                PackageKind::Release => release(&cfg, spec.dry_run).await,
                PackageKind::Uninstall => uninstall(&param, spec.dry_run, timeout, cap).await,
                PackageKind::RunScript => {
                    let script = spec.script.clone().unwrap_or_default();
                    if spec.dry_run {
                        return Outcome::done(format!(
                            "dry run: would run a {}-byte script",
                            script.len()
                        ));
                    }
                    let mut c = clean("sh");
                    c.arg("-c").arg(script);
                    run(c, timeout, cap).await
                }
                PackageKind::Cancel(_) => {
                    Outcome::refused("a cancel is applied by the runner, not run")
                }
                PackageKind::Command(cmd) => {
                    if spec.dry_run {
                        return Outcome::done(format!("dry run: would run {cmd:?}"));
                    }
                    let mut c = clean("sh");
                    c.arg("-c").arg(cmd).arg("rollcall").args(&spec.params);
                    if let Some(d) = &dir {
                        c.current_dir(d);
                    }
                    run(c, timeout, cap).await
                }
            }
        })
    }

    fn quarantined(&self) -> bool {
        self.cfg.state_dir.join(QUARANTINE_FLAG).exists()
    }
}

/// A command with a clean environment (nothing of the agent's reaches it).
fn clean(program: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.env_clear()
        .env("PATH", SCRIPT_PATH)
        .env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs `c` for at most `timeout`, keeping at most `cap` bytes of its output (standard
/// output, then standard error); exit 0 is completed, anything else failed.
async fn run(mut c: tokio::process::Command, timeout: Duration, cap: usize) -> Outcome {
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => return Outcome::failed(format!("cannot start: {e}")),
    };
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Outcome::failed("no output pipes");
    };
    let work = async {
        // Keep the first `cap` bytes of each stream and drain the rest, so a chatty child
        // never blocks on a full pipe.
        async fn keep(
            r: &mut (impl tokio::io::AsyncRead + Unpin),
            cap: usize,
        ) -> std::io::Result<Vec<u8>> {
            let mut kept = Vec::new();
            (&mut *r).take(cap as u64).read_to_end(&mut kept).await?;
            tokio::io::copy(r, &mut tokio::io::sink()).await?;
            Ok(kept)
        }
        let (o, e) = tokio::join!(keep(&mut out, cap), keep(&mut err, cap));
        let (o, e) = (o?, e?);
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, o, e))
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Outcome::failed(format!("timed out after {} s; killed", timeout.as_secs())),
        Ok(Err(e)) => Outcome::failed(e.to_string()),
        Ok(Ok((status, o, e))) => {
            let mut text = String::from_utf8_lossy(&o).into_owned();
            if !e.is_empty() {
                text.push_str(&String::from_utf8_lossy(&e));
            }
            let output = cut(&text, cap).to_string();
            match status.code() {
                Some(0) => Outcome::done(output),
                Some(code) => Outcome {
                    status: super::Status::Failed(format!("exit {code}")),
                    output,
                },
                None => Outcome {
                    status: super::Status::Failed("killed by a signal".into()),
                    output,
                },
            }
        }
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// `delete-file`: only a regular file whose real path (symlinks resolved) is under one of
/// the roots; moved into the quarantine folder with its SHA-256, or deleted with `purge`.
fn delete_file(cfg: &LinuxActions, path: &str, purge: bool, dry: bool) -> Outcome {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Outcome::refused(format!("{path}: not an absolute path"));
    }
    let roots: Vec<PathBuf> = cfg
        .file_roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    let under = |x: &Path| roots.iter().any(|r| x.starts_with(r) && x != r);
    let real = match std::fs::canonicalize(p) {
        Ok(r) => r,
        // Gone (or never there): outside the roots is still a refusal, not a failure.
        Err(_) if !under(p) => {
            return Outcome::refused(format!("{path} is outside the allowed roots"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Outcome::failed(format!("{path}: no such file"));
        }
        Err(e) => return Outcome::failed(format!("{path}: {e}")),
    };
    let under = under(&real);
    if !under {
        return Outcome::refused(if real == p {
            format!("{path} is outside the allowed roots")
        } else {
            format!(
                "{path} leads to {} (outside the allowed roots)",
                real.display()
            )
        });
    }
    let meta = match std::fs::metadata(&real) {
        Ok(m) => m,
        Err(e) => return Outcome::failed(format!("{path}: {e}")),
    };
    if meta.is_dir() {
        return Outcome::refused(format!("{path} is a directory"));
    }
    if !meta.is_file() {
        return Outcome::refused(format!("{path} is not a regular file"));
    }
    let sha = match sha256_file(&real) {
        Ok(s) => s,
        Err(e) => return Outcome::failed(format!("{path}: {e}")),
    };
    if dry {
        return Outcome::done(format!(
            "dry run: would {} {} (sha256 {sha})",
            if purge { "delete" } else { "quarantine" },
            real.display()
        ));
    }
    if purge {
        return match std::fs::remove_file(&real) {
            Ok(()) => Outcome::done(format!("deleted {} (sha256 {sha})", real.display())),
            Err(e) => Outcome::failed(format!("{path}: {e}")),
        };
    }
    if let Err(e) = std::fs::create_dir_all(&cfg.quarantine_dir) {
        return Outcome::failed(format!("quarantine folder: {e}"));
    }
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = cfg.quarantine_dir.join(format!("{sha}-{name}"));
    let moved = std::fs::rename(&real, &dest).or_else(|_| {
        std::fs::copy(&real, &dest)?;
        std::fs::remove_file(&real)
    });
    match moved {
        Ok(()) => Outcome::done(format!(
            "moved {} to {} (sha256 {sha})",
            real.display(),
            dest.display()
        )),
        Err(e) => Outcome::failed(format!("{path}: {e}")),
    }
}

/// `kill-process`: by pid (digits), by the SHA-256 of the executable (64 hex digits) or by
/// name. Never this agent, never pid 1.
fn kill_process(what: &str, dry: bool) -> Outcome {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if what.is_empty() {
        return Outcome::refused("kill-process needs a name, pid or SHA-256");
    }
    let me = std::process::id();
    let by_pid = what.parse::<u32>().ok();
    let by_hash = (what.len() == 64 && what.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| what.to_ascii_lowercase());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Outcome::failed("cannot read /proc");
    };
    let mut hits = Vec::new();
    for d in dir.flatten() {
        let Some(pid) = d.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || pid == 1 {
            continue;
        }
        let hit = if let Some(p) = by_pid {
            p == pid
        } else if let Some(h) = &by_hash {
            sha256_file(&d.path().join("exe")).is_ok_and(|s| s == *h)
        } else {
            std::fs::read_to_string(d.path().join("comm")).is_ok_and(|c| c.trim_end() == what)
        };
        if hit {
            hits.push(pid);
        }
    }
    if hits.is_empty() {
        return Outcome::done(format!("no process matches {what}"));
    }
    if dry {
        return Outcome::done(format!("dry run: would kill {hits:?}"));
    }
    let mut killed = Vec::new();
    let mut failed = Vec::new();
    for pid in hits {
        match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) => killed.push(pid),
            Err(e) => failed.push(format!("{pid}: {e}")),
        }
    }
    if failed.is_empty() {
        Outcome::done(format!("killed {killed:?}"))
    } else {
        Outcome {
            status: super::Status::Failed(format!("could not kill {}", failed.join(", "))),
            output: format!("killed {killed:?}"),
        }
    }
}

fn nft_available() -> bool {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// The ruleset that lets through only loopback, established flows' replies and `allow`.
pub fn quarantine_rules(allow: &[IpAddr]) -> String {
    let v4: Vec<String> = allow
        .iter()
        .filter(|a| a.is_ipv4())
        .map(ToString::to_string)
        .collect();
    let v6: Vec<String> = allow
        .iter()
        .filter(|a| a.is_ipv6())
        .map(ToString::to_string)
        .collect();
    let mut input = String::from("    iif \"lo\" accept\n");
    let mut output = String::from("    oif \"lo\" accept\n");
    if !v4.is_empty() {
        input.push_str(&format!("    ip saddr {{ {} }} accept\n", v4.join(", ")));
        output.push_str(&format!("    ip daddr {{ {} }} accept\n", v4.join(", ")));
    }
    if !v6.is_empty() {
        input.push_str(&format!("    ip6 saddr {{ {} }} accept\n", v6.join(", ")));
        output.push_str(&format!("    ip6 daddr {{ {} }} accept\n", v6.join(", ")));
    }
    format!(
        "table inet {QUARANTINE_TABLE} {{}}\n\
         delete table inet {QUARANTINE_TABLE}\n\
         table inet {QUARANTINE_TABLE} {{\n\
         \x20 chain input {{\n    type filter hook input priority -10; policy drop;\n{input}  }}\n\
         \x20 chain output {{\n    type filter hook output priority -10; policy drop;\n{output}  }}\n\
         }}\n"
    )
}

async fn nft(script: Option<String>, args: &[&str]) -> Outcome {
    let mut c = clean("nft");
    c.args(args);
    if script.is_some() {
        c.stdin(std::process::Stdio::piped());
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => return Outcome::failed(format!("cannot run nft: {e}")),
    };
    if let (Some(s), Some(mut stdin)) = (script, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        if let Err(e) = stdin.write_all(s.as_bytes()).await {
            return Outcome::failed(format!("nft: {e}"));
        }
        drop(stdin);
    }
    match tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Err(_) => Outcome::failed("nft timed out"),
        Ok(Err(e)) => Outcome::failed(format!("nft: {e}")),
        Ok(Ok(o)) if o.status.success() => Outcome::done(""),
        Ok(Ok(o)) => Outcome::failed(format!(
            "nft: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

async fn quarantine(cfg: &LinuxActions, dry: bool) -> Outcome {
    if !nft_available() {
        return Outcome::failed("nftables not available");
    }
    let allow = (cfg.allow)();
    let rules = quarantine_rules(&allow);
    if dry {
        return Outcome::done(format!("dry run: would load\n{rules}"));
    }
    // The flag first: a stop between the two puts the rules in at the next start.
    let listed: Vec<String> = allow.iter().map(ToString::to_string).collect();
    if let Err(e) = std::fs::write(cfg.state_dir.join(QUARANTINE_FLAG), listed.join("\n")) {
        return Outcome::failed(format!("cannot record the quarantine: {e}"));
    }
    let o = nft(Some(rules), &["-f", "-"]).await;
    if o.status != super::Status::Completed {
        let _ = std::fs::remove_file(cfg.state_dir.join(QUARANTINE_FLAG));
        return o;
    }
    Outcome::done(format!(
        "quarantined: only {} reachable",
        if listed.is_empty() {
            "loopback".to_string()
        } else {
            listed.join(", ")
        }
    ))
}

async fn release(cfg: &LinuxActions, dry: bool) -> Outcome {
    if !nft_available() {
        return Outcome::failed("nftables not available");
    }
    if dry {
        return Outcome::done(format!(
            "dry run: would delete table inet {QUARANTINE_TABLE}"
        ));
    }
    let _ = std::fs::remove_file(cfg.state_dir.join(QUARANTINE_FLAG));
    // Create-then-delete: released whether or not the table was there.
    let script =
        format!("table inet {QUARANTINE_TABLE} {{}}\ndelete table inet {QUARANTINE_TABLE}\n");
    let o = nft(Some(script), &["-f", "-"]).await;
    if o.status != super::Status::Completed {
        return o;
    }
    Outcome::done("released")
}

fn valid_package_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._:".contains(&b))
}

fn which(program: &str) -> bool {
    SCRIPT_PATH
        .split(':')
        .any(|d| Path::new(d).join(program).exists())
}

/// `uninstall`: dpkg (with apt-get when present), or rpm (with dnf when present).
async fn uninstall(name: &str, dry: bool, timeout: Duration, cap: usize) -> Outcome {
    if !valid_package_name(name) {
        return Outcome::refused(format!("{name:?} is not a package name"));
    }
    let installed = |o: &Outcome| o.status == super::Status::Completed;
    if which("dpkg-query") {
        let mut q = clean("dpkg-query");
        q.args(["-W", "-f=${Status}", name]);
        let o = run(q, timeout, cap).await;
        if installed(&o) && o.output.contains("install ok installed") {
            if dry {
                return Outcome::done(format!("dry run: would remove {name} (dpkg)"));
            }
            let mut c = if which("apt-get") {
                let mut c = clean("apt-get");
                c.args(["remove", "-y", "--", name]);
                c
            } else {
                let mut c = clean("dpkg");
                c.args(["-r", "--", name]);
                c
            };
            c.env("DEBIAN_FRONTEND", "noninteractive");
            return run(c, timeout, cap).await;
        }
    }
    if which("rpm") {
        let mut q = clean("rpm");
        q.args(["-q", "--", name]);
        if installed(&run(q, timeout, cap).await) {
            if dry {
                return Outcome::done(format!("dry run: would remove {name} (rpm)"));
            }
            let c = if which("dnf") {
                let mut c = clean("dnf");
                c.args(["remove", "-y", name]);
                c
            } else {
                let mut c = clean("rpm");
                c.args(["-e", "--", name]);
                c
            };
            return run(c, timeout, cap).await;
        }
    }
    Outcome::failed(format!("{name} is not installed"))
}
