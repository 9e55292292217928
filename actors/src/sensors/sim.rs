//! Simulated hosts: a deterministic, varied machine profile from a seed, so that thousands of
//! simulated endpoints give realistic answers whose ground truth tests can compute.

use std::net::IpAddr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{HostView, SensorError};

/// Everything a simulated machine reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProfile {
    /// Host name.
    pub hostname: String,
    /// OS name.
    pub os: String,
    /// OS version.
    pub os_version: String,
    /// Kernel release.
    pub kernel: String,
    /// IP addresses.
    pub ips: Vec<String>,
    /// MAC addresses.
    pub macs: Vec<String>,
    /// Seconds since boot.
    pub uptime_secs: u64,
    /// CPU.
    pub cpu: String,
    /// Memory bytes.
    pub memory_bytes: u64,
    /// Free disk bytes.
    pub disk_free_bytes: u64,
    /// Logged-in users.
    pub users: Vec<String>,
    /// Running processes.
    pub processes: Vec<String>,
    /// Listening ports.
    pub ports: Vec<String>,
    /// Installed packages (name, version).
    pub packages: Vec<(String, String)>,
    /// Files that exist, with their SHA-256.
    pub files: Vec<(String, String)>,
    /// The seed it was drawn from (its history is drawn from it too).
    #[serde(default)]
    pub seed: u64,
}

/// (name, version, kernel pattern, family): the family picks package versions.
const OSES: &[(&str, &str, &str, Family)] = &[
    ("Ubuntu", "22.04", "5.15.0-{}-generic", Family::Jammy),
    ("Ubuntu", "24.04", "6.8.0-{}-generic", Family::Noble),
    ("Debian GNU/Linux", "12", "6.1.0-{}-amd64", Family::Bookworm),
    ("Rocky Linux", "9.4", "5.14.0-{}.el9_4.x86_64", Family::El9),
];

/// Which distribution's packages a machine has.
#[derive(Debug, Clone, Copy)]
enum Family {
    Jammy,
    Noble,
    Bookworm,
    El9,
}

/// One package of the simulated fleet: its versions per family (Ubuntu 22.04, Ubuntu
/// 24.04, Debian 12, Rocky 9; each machine picks one of its family's), and what having it
/// brings: processes, listening ports, files.
struct PackageSpec {
    name: &'static str,
    chance_percent: u32,
    versions: [&'static [&'static str]; 4],
    processes: &'static [&'static str],
    ports: &'static [&'static str],
    files: &'static [&'static str],
}

const fn pkg(
    name: &'static str,
    chance_percent: u32,
    versions: [&'static [&'static str]; 4],
    processes: &'static [&'static str],
    ports: &'static [&'static str],
    files: &'static [&'static str],
) -> PackageSpec {
    PackageSpec {
        name,
        chance_percent,
        versions,
        processes,
        ports,
        files,
    }
}

const PACKAGES: &[PackageSpec] = &[
    pkg(
        "bash",
        100,
        [
            &["5.1-6ubuntu1.1"],
            &["5.2.21-2ubuntu4"],
            &["5.2.15-2+b7"],
            &["5.1.8-9.el9"],
        ],
        &["bash"],
        &[],
        &["/usr/bin/bash", "/etc/bash.bashrc"],
    ),
    pkg(
        "coreutils",
        100,
        [
            &["8.32-4.1ubuntu1.2"],
            &["9.4-3ubuntu6"],
            &["9.1-1"],
            &["8.32-35.el9"],
        ],
        &[],
        &[],
        &["/usr/bin/ls"],
    ),
    pkg(
        "systemd",
        100,
        [
            &["249.11-0ubuntu3.12"],
            &["255.4-1ubuntu8.4"],
            &["252.30-1~deb12u2"],
            &["252-32.el9_4.7"],
        ],
        &["systemd", "systemd-journal"],
        &[],
        &["/etc/systemd/system.conf"],
    ),
    pkg(
        "openssh-server",
        90,
        [
            &["1:8.9p1-3ubuntu0.10"],
            &["1:9.6p1-3ubuntu13.5"],
            &["1:9.2p1-2+deb12u3"],
            &["8.7p1-38.el9_4.4"],
        ],
        &["sshd"],
        &["tcp/22"],
        &["/etc/ssh/sshd_config"],
    ),
    pkg(
        "openssl",
        80,
        [
            &["3.0.2-0ubuntu1.10", "3.0.2-0ubuntu1.15"],
            &["3.0.13-0ubuntu3.4"],
            &["3.0.14-1~deb12u2", "3.0.11-1~deb12u2"],
            &["3.0.7-27.el9", "3.0.7-28.el9_4"],
        ],
        &[],
        &[],
        &["/usr/bin/openssl"],
    ),
    pkg(
        "curl",
        75,
        [
            &["7.81.0-1ubuntu1.16"],
            &["8.5.0-2ubuntu10.4"],
            &["7.88.1-10+deb12u7"],
            &["7.76.1-29.el9_4.1"],
        ],
        &[],
        &[],
        &["/usr/bin/curl"],
    ),
    pkg(
        "python3",
        70,
        [
            &["3.10.6-1~22.04.1"],
            &["3.12.3-0ubuntu2"],
            &["3.11.2-1+b1"],
            &["3.9.18-3.el9_4.5"],
        ],
        &[],
        &[],
        &["/usr/bin/python3"],
    ),
    pkg(
        "vim",
        50,
        [
            &["2:8.2.3995-1ubuntu2.17"],
            &["2:9.1.0016-1ubuntu7.2"],
            &["2:9.0.1378-2"],
            &["2:8.2.2637-20.el9_1"],
        ],
        &[],
        &[],
        &["/usr/bin/vim"],
    ),
    pkg(
        "docker-ce",
        25,
        [
            &["5:24.0.7-1~ubuntu.22.04~jammy"],
            &["5:26.1.3-1~ubuntu.24.04~noble"],
            &["5:26.1.3-1~debian.12~bookworm"],
            &["3:26.1.3-1.el9"],
        ],
        &["dockerd", "containerd"],
        &[],
        &["/etc/docker/daemon.json", "/usr/bin/dockerd"],
    ),
    pkg(
        "nginx",
        20,
        [
            &["1.18.0-6ubuntu14.4"],
            &["1.24.0-2ubuntu7.1"],
            &["1.22.1-9"],
            &["1:1.20.1-14.el9_2.1"],
        ],
        &["nginx"],
        &["tcp/80", "tcp/443"],
        &["/etc/nginx/nginx.conf"],
    ),
    pkg(
        "google-chrome-stable",
        15,
        [
            &["124.0.6367.91-1", "126.0.6478.126-1"],
            &["126.0.6478.126-1"],
            &["124.0.6367.91-1", "126.0.6478.126-1"],
            &["126.0.6478.126-1"],
        ],
        &["chrome"],
        &[],
        &["/opt/google/chrome/chrome"],
    ),
    pkg(
        "postgresql",
        10,
        [
            &["14+238"],
            &["16+257build1"],
            &["15+248"],
            &["13.14-1.el9_3"],
        ],
        &["postgres"],
        &["tcp/5432"],
        &["/etc/postgresql"],
    ),
    pkg(
        "redis-server",
        10,
        [
            &["5:6.0.16-1ubuntu1"],
            &["5:7.0.15-1build2"],
            &["5:7.0.15-1~deb12u1"],
            &["6.2.7-1.el9"],
        ],
        &["redis-server"],
        &["tcp/6379"],
        &["/etc/redis/redis.conf"],
    ),
];

/// Files every simulated machine has, whatever it runs.
const COMMON_FILES: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/os-release",
    "/etc/resolv.conf",
    "/etc/fstab",
    "/etc/shadow",
    "/etc/group",
    "/bin/sh",
];

const USERS: &[&str] = &["alice", "bob", "carol", "dave", "root"];

impl HostProfile {
    /// The profile of simulated machine `seed`, reachable at `ip`.
    pub fn from_seed(seed: u64, ip: Option<IpAddr>) -> HostProfile {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x005e_ed0f_4057);
        let (os, os_version, kernel, family) = OSES[rng.random_range(0..OSES.len())];
        let kernel = kernel.replace("{}", &rng.random_range(60..120u32).to_string());
        let mut packages = Vec::new();
        let mut processes = vec!["init".to_string()];
        let mut ports = Vec::new();
        let mut owned_files: Vec<&str> = COMMON_FILES.to_vec();
        for p in PACKAGES {
            if rng.random_range(0..100) < p.chance_percent {
                let versions = p.versions[family as usize];
                let v = versions[rng.random_range(0..versions.len())];
                packages.push((p.name.to_string(), v.to_string()));
                processes.extend(p.processes.iter().map(|p| p.to_string()));
                ports.extend(p.ports.iter().map(|p| p.to_string()));
                owned_files.extend(p.files);
            }
        }
        let users: Vec<String> = USERS
            .iter()
            .filter(|_| rng.random_range(0..100) < 20)
            .map(|u| u.to_string())
            .collect();
        let mut files = vec![(
            "/etc/passwd".to_string(),
            super::sha256_hex(format!("passwd-{seed}").as_bytes()),
        )];
        // Files a package or the OS brings are the same bytes wherever the same version
        // is installed: hashed from (path, OS, version), so fleets share a few hashes.
        for path in owned_files {
            let h = super::sha256_hex(format!("{path}|{os} {os_version}").as_bytes());
            files.push((path.to_string(), h));
        }
        if rng.random_range(0..100) < 5 {
            files.push(("/etc/nologin".to_string(), super::sha256_hex(b"")));
        }
        let cpus = [2u32, 4, 8, 16][rng.random_range(0..4)];
        let mac: Vec<String> = (0..6)
            .map(|i| format!("{:02x}", if i == 0 { 0x02 } else { rng.random::<u8>() }))
            .collect();
        processes.sort();
        processes.dedup();
        ports.sort();
        HostProfile {
            hostname: format!("sim-{seed:06}"),
            os: os.to_string(),
            os_version: os_version.to_string(),
            kernel,
            ips: ip.map(|i| vec![i.to_string()]).unwrap_or_default(),
            macs: vec![mac.join(":")],
            uptime_secs: rng.random_range(60..30 * 86_400),
            cpu: format!("Simulated CPU x {cpus}"),
            memory_bytes: u64::from(cpus) * 2 * 1024 * 1024 * 1024,
            disk_free_bytes: rng.random_range(1..500) * 1024 * 1024 * 1024,
            users,
            processes,
            ports,
            packages,
            files,
            seed,
        }
    }
}

/// A simulated machine: its profile, which actions change (uninstall removes a package,
/// delete-file a file), as they would change a real machine.
#[derive(Debug)]
pub struct SimulatedHost {
    profile: std::sync::RwLock<HostProfile>,
    /// Its history as last drawn from the profile (drawn again after a change).
    history: std::sync::Mutex<Option<HistoryRuns>>,
}

/// A simulated machine's history, drawn once.
pub type HistoryRuns = std::sync::Arc<Vec<crate::history::sim::SimRun>>;

impl SimulatedHost {
    /// A machine with `profile`.
    pub fn new(profile: HostProfile) -> SimulatedHost {
        SimulatedHost {
            profile: std::sync::RwLock::new(profile),
            history: std::sync::Mutex::new(None),
        }
    }

    /// Its profile now.
    pub fn profile(&self) -> std::sync::RwLockReadGuard<'_, HostProfile> {
        rollcall_runtime::sync::read(&self.profile)
    }

    /// Changes its profile.
    pub fn change<R>(&self, f: impl FnOnce(&mut HostProfile) -> R) -> R {
        let r = f(&mut rollcall_runtime::sync::write(&self.profile));
        *rollcall_runtime::sync::lock(&self.history) = None;
        r
    }

    /// Its history, drawn from its profile at the first ask after a change.
    pub fn history_runs(&self) -> HistoryRuns {
        let mut h = rollcall_runtime::sync::lock(&self.history);
        h.get_or_insert_with(|| std::sync::Arc::new(crate::history::sim::runs(&self.profile())))
            .clone()
    }
}

impl HostView for SimulatedHost {
    fn computer_name(&self) -> Result<String, SensorError> {
        Ok(self.profile().hostname.clone())
    }
    fn operating_system(&self) -> Result<String, SensorError> {
        Ok(self.profile().os.clone())
    }
    fn os_version(&self) -> Result<String, SensorError> {
        Ok(self.profile().os_version.clone())
    }
    fn kernel_version(&self) -> Result<String, SensorError> {
        Ok(self.profile().kernel.clone())
    }
    fn ip_addresses(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.profile().ips.clone())
    }
    fn mac_addresses(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.profile().macs.clone())
    }
    fn uptime_secs(&self) -> Result<u64, SensorError> {
        Ok(self.profile().uptime_secs)
    }
    fn cpu(&self) -> Result<String, SensorError> {
        Ok(self.profile().cpu.clone())
    }
    fn memory_bytes(&self) -> Result<u64, SensorError> {
        Ok(self.profile().memory_bytes)
    }
    fn disk_free_bytes(&self) -> Result<u64, SensorError> {
        Ok(self.profile().disk_free_bytes)
    }
    fn logged_in_users(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.profile().users.clone())
    }
    fn processes(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.profile().processes.clone())
    }
    fn listening_ports(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.profile().ports.clone())
    }
    fn history(&self) -> Option<&dyn crate::history::HistoryView> {
        Some(self)
    }
    fn packages(&self) -> Result<Vec<(String, String)>, SensorError> {
        Ok(self.profile().packages.clone())
    }
    fn file_exists(&self, path: &str) -> Result<bool, SensorError> {
        Ok(self.profile().files.iter().any(|(p, _)| p == path))
    }
    fn file_sha256(&self, path: &str) -> Result<Option<String>, SensorError> {
        Ok(self
            .profile()
            .files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone()))
    }
    fn reads_block(&self) -> bool {
        false
    }
}
