//! The real machine, read from `/proc`, `/sys`, `/etc/os-release`, utmp and the package
//! databases. On other operating systems every sensor answers "not supported on …".

use std::path::{Path, PathBuf};

use super::{HostView, SensorError};

/// The machine this process runs on. `root` is `/` in production; tests point it at a
/// directory laid out like one.
#[derive(Debug, Clone)]
pub struct LinuxHost {
    root: PathBuf,
}

impl Default for LinuxHost {
    fn default() -> Self {
        LinuxHost {
            root: PathBuf::from("/"),
        }
    }
}

impl LinuxHost {
    /// Reads files under `root` instead of `/`.
    pub fn with_root(root: impl Into<PathBuf>) -> LinuxHost {
        LinuxHost { root: root.into() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Result<String, SensorError> {
        supported()?;
        std::fs::read_to_string(self.path(p)).map_err(|e| SensorError::Failed(format!("{p}: {e}")))
    }

    fn os_release(&self, key: &str) -> Result<String, SensorError> {
        let text = self
            .read("/etc/os-release")
            .or_else(|_| self.read("/usr/lib/os-release"))?;
        parse_os_release(&text, key)
            .ok_or_else(|| SensorError::Failed(format!("os-release has no {key}")))
    }
}

fn supported() -> Result<(), SensorError> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err(SensorError::Unsupported(std::env::consts::OS.to_string()))
    }
}

/// A value from os-release text, unquoted.
pub fn parse_os_release(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// Installed packages from a dpkg status file: (name, version) of those `install ok installed`.
pub fn parse_dpkg_status(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut name, mut version, mut installed) = (None, None, false);
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(n), Some(v), true) = (name, version, installed) {
            out.push((n, v));
        }
    }
    out.sort();
    out
}

/// Listening ports from `/proc/net/{tcp,tcp6,udp,udp6}` text.
pub fn parse_proc_net(text: &str, proto: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, state) = (f.get(1)?, f.get(3)?);
            let listening = match proto {
                "tcp" => *state == "0A",
                _ => *state == "07",
            };
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (listening && port != 0).then(|| format!("{proto}/{port}"))
        })
        .collect()
}

/// User names of USER_PROCESS records in a utmp file.
pub fn parse_utmp(data: &[u8]) -> Vec<String> {
    const RECORD: usize = 384;
    const USER_PROCESS: i32 = 7;
    data.chunks_exact(RECORD)
        .filter(|r| i32::from_ne_bytes([r[0], r[1], r[2], r[3]]) == USER_PROCESS)
        .map(|r| {
            let user = &r[44..76];
            let end = user.iter().position(|&b| b == 0).unwrap_or(user.len());
            String::from_utf8_lossy(&user[..end]).into_owned()
        })
        .filter(|u| !u.is_empty())
        .collect()
}

impl HostView for LinuxHost {
    fn computer_name(&self) -> Result<String, SensorError> {
        Ok(self.read("/proc/sys/kernel/hostname")?.trim().to_string())
    }

    fn operating_system(&self) -> Result<String, SensorError> {
        self.os_release("NAME")
    }

    fn os_version(&self) -> Result<String, SensorError> {
        self.os_release("VERSION_ID")
    }

    fn kernel_version(&self) -> Result<String, SensorError> {
        Ok(self.read("/proc/sys/kernel/osrelease")?.trim().to_string())
    }

    fn ip_addresses(&self) -> Result<Vec<String>, SensorError> {
        supported()?;
        let ifs = if_addrs::get_if_addrs().map_err(|e| SensorError::Failed(e.to_string()))?;
        Ok(ifs
            .into_iter()
            .filter(|i| !i.is_loopback())
            .map(|i| i.ip().to_string())
            .collect())
    }

    fn mac_addresses(&self) -> Result<Vec<String>, SensorError> {
        supported()?;
        let dir = self.path("/sys/class/net");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SensorError::Failed(format!("{}: {e}", dir.display())))?;
        Ok(entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("address")).ok())
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty() && a != "00:00:00:00:00:00")
            .collect())
    }

    fn uptime_secs(&self) -> Result<u64, SensorError> {
        let text = self.read("/proc/uptime")?;
        let first = text.split_whitespace().next().unwrap_or("");
        first
            .parse::<f64>()
            .map(|f| f as u64)
            .map_err(|e| SensorError::Failed(format!("/proc/uptime: {e}")))
    }

    fn cpu(&self) -> Result<String, SensorError> {
        let text = self.read("/proc/cpuinfo")?;
        let count = text.lines().filter(|l| l.starts_with("processor")).count();
        let model = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Ok(format!("{model} x {count}"))
    }

    fn memory_bytes(&self) -> Result<u64, SensorError> {
        let text = self.read("/proc/meminfo")?;
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| SensorError::Failed("/proc/meminfo has no MemTotal".into()))
    }

    fn disk_free_bytes(&self) -> Result<u64, SensorError> {
        supported()?;
        let s = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| SensorError::Failed(e.to_string()))?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    fn logged_in_users(&self) -> Result<Vec<String>, SensorError> {
        supported()?;
        for p in ["/run/utmp", "/var/run/utmp"] {
            if let Ok(data) = std::fs::read(self.path(p)) {
                return Ok(parse_utmp(&data));
            }
        }
        Ok(Vec::new())
    }

    fn processes(&self) -> Result<Vec<String>, SensorError> {
        supported()?;
        let proc_dir = self.path("/proc");
        let entries =
            std::fs::read_dir(&proc_dir).map_err(|e| SensorError::Failed(e.to_string()))?;
        Ok(entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .chars()
                    .all(|c| c.is_ascii_digit())
            })
            .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect())
    }

    fn listening_ports(&self) -> Result<Vec<String>, SensorError> {
        supported()?;
        let mut out = Vec::new();
        for (file, proto) in [
            ("tcp", "tcp"),
            ("tcp6", "tcp"),
            ("udp", "udp"),
            ("udp6", "udp"),
        ] {
            if let Ok(text) = std::fs::read_to_string(self.path(&format!("/proc/net/{file}"))) {
                out.extend(parse_proc_net(&text, proto));
            }
        }
        Ok(out)
    }

    fn packages(&self) -> Result<Vec<(String, String)>, SensorError> {
        supported()?;
        let mut out = Vec::new();
        if let Ok(text) = std::fs::read_to_string(self.path("/var/lib/dpkg/status")) {
            out.extend(parse_dpkg_status(&text));
        }
        if self.root == Path::new("/")
            && (Path::new("/var/lib/rpm").exists() || Path::new("/usr/lib/sysimage/rpm").exists())
            && let Ok(o) = std::process::Command::new("rpm")
                .args(["-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"])
                .output()
        {
            out.extend(String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| {
                let (n, v) = l.split_once('\t')?;
                Some((n.to_string(), v.to_string()))
            }));
        }
        Ok(out)
    }

    fn file_exists(&self, path: &str) -> Result<bool, SensorError> {
        supported()?;
        Ok(self.path(path).exists())
    }

    fn file_sha256(&self, path: &str) -> Result<Option<String>, SensorError> {
        supported()?;
        match std::fs::read(self.path(path)) {
            Ok(data) => Ok(Some(super::sha256_hex(&data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SensorError::Failed(format!("{path}: {e}"))),
        }
    }
}
