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
}

const OSES: &[(&str, &str, &str)] = &[
    ("Ubuntu", "22.04", "5.15.0-{}-generic"),
    ("Ubuntu", "24.04", "6.8.0-{}-generic"),
    ("Debian GNU/Linux", "12", "6.1.0-{}-amd64"),
    ("Rocky Linux", "9.4", "5.14.0-{}.el9_4.x86_64"),
];

/// (package, chance in percent, versions to pick from, processes, ports)
type PackageSpec = (
    &'static str,
    u32,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const PACKAGES: &[PackageSpec] = &[
    (
        "bash",
        100,
        &["5.1-6ubuntu1", "5.2.21-2ubuntu4"],
        &["bash"],
        &[],
    ),
    (
        "coreutils",
        100,
        &["8.32-4.1ubuntu1", "9.4-3ubuntu6"],
        &[],
        &[],
    ),
    (
        "systemd",
        100,
        &["249.11-0ubuntu3.12", "255.4-1ubuntu8"],
        &["systemd", "systemd-journal"],
        &[],
    ),
    (
        "openssh-server",
        90,
        &["1:8.9p1-3ubuntu0.10", "1:9.6p1-3ubuntu13.5"],
        &["sshd"],
        &["tcp/22"],
    ),
    (
        "openssl",
        80,
        &[
            "3.0.2-0ubuntu1.10",
            "3.0.2-0ubuntu1.15",
            "3.0.13-0ubuntu3.4",
        ],
        &[],
        &[],
    ),
    (
        "curl",
        75,
        &["7.81.0-1ubuntu1.16", "8.5.0-2ubuntu10.4"],
        &[],
        &[],
    ),
    (
        "python3",
        70,
        &["3.10.6-1~22.04", "3.12.3-0ubuntu2"],
        &[],
        &[],
    ),
    (
        "vim",
        50,
        &["2:8.2.3995-1ubuntu2.17", "2:9.1.0016-1ubuntu7.2"],
        &[],
        &[],
    ),
    (
        "docker-ce",
        25,
        &["5:24.0.7-1", "5:26.1.3-1"],
        &["dockerd", "containerd"],
        &[],
    ),
    (
        "nginx",
        20,
        &["1.18.0-6ubuntu14.4", "1.24.0-2ubuntu7.1"],
        &["nginx"],
        &["tcp/80", "tcp/443"],
    ),
    (
        "google-chrome-stable",
        15,
        &["124.0.6367.91-1", "126.0.6478.126-1"],
        &["chrome"],
        &[],
    ),
    (
        "postgresql",
        10,
        &["14+238", "16+257build1"],
        &["postgres"],
        &["tcp/5432"],
    ),
    (
        "redis-server",
        10,
        &["5:6.0.16-1ubuntu1", "5:7.0.15-1build2"],
        &["redis-server"],
        &["tcp/6379"],
    ),
];

const USERS: &[&str] = &["alice", "bob", "carol", "dave", "root"];

impl HostProfile {
    /// The profile of simulated machine `seed`, reachable at `ip`.
    pub fn from_seed(seed: u64, ip: Option<IpAddr>) -> HostProfile {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x005e_ed0f_4057);
        let (os, os_version, kernel) = OSES[rng.random_range(0..OSES.len())];
        let kernel = kernel.replace("{}", &rng.random_range(60..120u32).to_string());
        let mut packages = Vec::new();
        let mut processes = vec!["init".to_string()];
        let mut ports = Vec::new();
        for (name, chance, versions, procs, pports) in PACKAGES {
            if rng.random_range(0..100) < *chance {
                let v = versions[rng.random_range(0..versions.len())];
                packages.push((name.to_string(), v.to_string()));
                processes.extend(procs.iter().map(|p| p.to_string()));
                ports.extend(pports.iter().map(|p| p.to_string()));
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
        }
    }
}

/// A simulated machine.
#[derive(Debug, Clone)]
pub struct SimulatedHost(pub HostProfile);

impl HostView for SimulatedHost {
    fn computer_name(&self) -> Result<String, SensorError> {
        Ok(self.0.hostname.clone())
    }
    fn operating_system(&self) -> Result<String, SensorError> {
        Ok(self.0.os.clone())
    }
    fn os_version(&self) -> Result<String, SensorError> {
        Ok(self.0.os_version.clone())
    }
    fn kernel_version(&self) -> Result<String, SensorError> {
        Ok(self.0.kernel.clone())
    }
    fn ip_addresses(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.0.ips.clone())
    }
    fn mac_addresses(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.0.macs.clone())
    }
    fn uptime_secs(&self) -> Result<u64, SensorError> {
        Ok(self.0.uptime_secs)
    }
    fn cpu(&self) -> Result<String, SensorError> {
        Ok(self.0.cpu.clone())
    }
    fn memory_bytes(&self) -> Result<u64, SensorError> {
        Ok(self.0.memory_bytes)
    }
    fn disk_free_bytes(&self) -> Result<u64, SensorError> {
        Ok(self.0.disk_free_bytes)
    }
    fn logged_in_users(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.0.users.clone())
    }
    fn processes(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.0.processes.clone())
    }
    fn listening_ports(&self) -> Result<Vec<String>, SensorError> {
        Ok(self.0.ports.clone())
    }
    fn packages(&self) -> Result<Vec<(String, String)>, SensorError> {
        Ok(self.0.packages.clone())
    }
    fn file_exists(&self, path: &str) -> Result<bool, SensorError> {
        Ok(self.0.files.iter().any(|(p, _)| p == path))
    }
    fn file_sha256(&self, path: &str) -> Result<Option<String>, SensorError> {
        Ok(self
            .0
            .files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone()))
    }
    fn reads_block(&self) -> bool {
        false
    }
}
