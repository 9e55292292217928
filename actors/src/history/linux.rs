//! What the recorder samples on Linux: the process table, listening sockets and outbound TCP
//! connections, from `/proc`.
//!
//! An idle machine stays idle: a sample lists `/proc` only when a task was created or ended
//! since the last (`/proc/loadavg` tells: the last pid handed out and the number of tasks),
//! reads the socket tables only when the kernel's socket counters moved, and reads a
//! process's details only the first time its pid is seen. Executables are hashed once per
//! (device, inode, size, modification time), from `/proc/PID/exe` (the image that actually
//! runs, even if the file was replaced or deleted since).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{MAX_CMDLINE, ProcessRun, Record, SocketSeen};

/// What identifies a live thing between samples.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LiveKey {
    /// A process, by pid.
    Process(u32),
    /// An outbound TCP connection: remote address, port, socket inode.
    Connection(String, u16, u64),
    /// A listening socket: protocol and port.
    Listening(&'static str, u16),
}

/// Samples a machine (the real one, or a test's).
pub trait Sampler: Send + 'static {
    /// Everything live now; for each key not in `known`, its record (keys it cannot read,
    /// such as kernel threads, come with `None` and are not recorded).
    fn sample(
        &mut self,
        now_ms: u64,
        known: &dyn Fn(&LiveKey) -> bool,
    ) -> Vec<(LiveKey, Option<Record>)>;
}

/// The most executables whose hashes are remembered.
const HASH_CACHE: usize = 4096;

/// Samples the machine through `/proc`.
#[derive(Debug)]
pub struct ProcSampler {
    root: PathBuf,
    boot_ms: u64,
    hashes: HashMap<(u64, u64, u64, i64), String>,
    users: HashMap<u32, String>,
    /// Pids that could not be read (kernel threads, other users' without the rights): not
    /// read again while they live.
    unreadable: HashSet<u32>,
    /// Executables hashed (cache misses) since it started.
    pub hashed: u64,
    /// The buffer socket tables are read into.
    table: Vec<u8>,
    /// The socket counters at the last walk of the tables, and the rows it read (shared
    /// with the samples that reuse them).
    sockets_seen: Option<(Vec<u64>, std::sync::Arc<[ProtoRow]>)>,
    /// `/proc/loadavg`'s last pid and task count at the last listing of `/proc`, and the
    /// pids it listed.
    tasks_seen: Option<((u64, u64), Vec<u32>)>,
    /// Listings of `/proc` since it started (idle samples skip them).
    pub listings: u64,
    /// Walks of the socket tables since it started (idle samples skip them).
    pub socket_walks: u64,
}

impl ProcSampler {
    /// A sampler of this machine's `/proc`.
    pub fn new() -> ProcSampler {
        ProcSampler::at("/proc")
    }

    /// A sampler of the proc file system at `root`.
    pub fn at(root: impl Into<PathBuf>) -> ProcSampler {
        let root = root.into();
        let boot_ms = std::fs::read_to_string(root.join("stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1000;
        ProcSampler {
            root,
            boot_ms,
            hashes: HashMap::new(),
            users: HashMap::new(),
            unreadable: HashSet::new(),
            hashed: 0,
            table: Vec::new(),
            sockets_seen: None,
            socket_walks: 0,
            tasks_seen: None,
            listings: 0,
        }
    }

    /// The last pid handed out and the number of tasks (`/proc/loadavg`'s fourth and fifth
    /// fields). Any task created moves the first, any task ended without one created moves
    /// the second: unchanged, the process table is as it was.
    fn task_marks(&self) -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(self.root.join("loadavg")).ok()?;
        let mut f = text.split_whitespace().skip(3);
        let tasks = f.next()?.split_once('/')?.1.parse().ok()?;
        let last_pid = f.next()?.parse().ok()?;
        Some((last_pid, tasks))
    }

    /// The pids in `/proc`, listed again only when a task was created or ended since.
    fn live_pids(&mut self) -> Vec<u32> {
        let marks = self.task_marks();
        if let (Some(now), Some((then, pids))) = (marks, &self.tasks_seen)
            && now == *then
        {
            return pids.clone();
        }
        self.listings += 1;
        let pids = self.pids();
        self.tasks_seen = marks.map(|m| (m, pids.clone()));
        pids
    }

    fn pids(&self) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone()
    }

    /// The SHA-256 of the image process `pid` runs (cached by file identity).
    fn hash(&mut self, pid: u32) -> Option<String> {
        let exe = self.root.join(pid.to_string()).join("exe");
        let m = std::fs::metadata(&exe).ok()?;
        let key = (m.dev(), m.ino(), m.size(), m.mtime());
        if let Some(h) = self.hashes.get(&key) {
            return Some(h.clone());
        }
        let mut f = std::fs::File::open(&exe).ok()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => return None,
            }
        }
        let hex = hex::encode(h.finalize());
        if self.hashes.len() >= HASH_CACHE {
            self.hashes.clear();
        }
        self.hashes.insert(key, hex.clone());
        self.hashed += 1;
        Some(hex)
    }

    fn process(&mut self, pid: u32, now_ms: u64) -> Option<ProcessRun> {
        let dir = self.root.join(pid.to_string());
        let exe = std::fs::read_link(dir.join("exe")).ok()?;
        let exe = exe.to_string_lossy().into_owned();
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the command name (which may hold spaces and parentheses).
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = fields.get(1)?.parse().ok()?;
        // Field 22 of the line, in clock ticks (100 a second for user space) since boot.
        let ticks: u64 = fields.get(19)?.parse().ok()?;
        let start_ms = if self.boot_ms > 0 {
            self.boot_ms + ticks * 10
        } else {
            now_ms
        };
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(u32::MAX);
        let user = self.user(uid);
        let mut cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        cmdline.truncate(MAX_CMDLINE);
        let cmdline = String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ");
        let sha256 = self.hash(pid)?;
        Some(ProcessRun {
            pid,
            ppid,
            exe,
            sha256,
            cmdline,
            user,
            start_ms,
            last_ms: now_ms,
            ended: false,
        })
    }

    /// Socket inode → the executable holding it (a scan of every process's descriptors,
    /// made only when new connections appeared).
    fn socket_owners(&self, wanted: &HashSet<u64>) -> HashMap<u64, String> {
        let mut out = HashMap::new();
        for pid in self.pids() {
            let dir = self.root.join(pid.to_string());
            let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let t = target.to_string_lossy();
                if let Some(ino) = t
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
                    && wanted.contains(&ino)
                    && let Ok(exe) = std::fs::read_link(dir.join("exe"))
                {
                    out.insert(ino, exe.to_string_lossy().into_owned());
                }
            }
            if out.len() == wanted.len() {
                break;
            }
        }
        out
    }
}

impl ProcSampler {
    /// The kernel's socket counters: TCP opens (active, passive), failed attempts, resets
    /// and established connections (`/proc/net/snmp`), and sockets in use per protocol
    /// (`/proc/net/sockstat`, `sockstat6`). Any socket opened, closed or set listening
    /// moves one of them.
    fn socket_counters(&self) -> Option<Vec<u64>> {
        let snmp = std::fs::read_to_string(self.root.join("net/snmp")).ok()?;
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next()?, tcp.next()?);
        let mut out: Vec<u64> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter(|(n, _)| {
                matches!(
                    *n,
                    "ActiveOpens" | "PassiveOpens" | "AttemptFails" | "EstabResets" | "CurrEstab"
                )
            })
            .filter_map(|(_, v)| v.parse().ok())
            .collect();
        for f in ["net/sockstat", "net/sockstat6"] {
            let text = std::fs::read_to_string(self.root.join(f)).ok()?;
            for l in text.lines() {
                let mut w = l.split_whitespace();
                let proto = w.next().unwrap_or_default();
                if !matches!(proto, "TCP:" | "UDP:" | "TCP6:" | "UDP6:") {
                    continue;
                }
                let fields: Vec<&str> = w.collect();
                for pair in fields.chunks(2) {
                    if let [k, v] = pair
                        && matches!(*k, "inuse" | "alloc" | "tw")
                    {
                        out.push(v.parse().ok()?);
                    }
                }
            }
        }
        (out.len() >= 5).then_some(out)
    }

    /// Every row of the TCP and UDP tables: read again only when the socket counters
    /// moved since the last read. (Each read walks the kernel's whole connection table —
    /// 262,144 buckets on a machine with 24 GiB, milliseconds when cold — so an idle
    /// machine's samples skip it.)
    fn socket_rows(&mut self) -> std::sync::Arc<[ProtoRow]> {
        let counters = self.socket_counters();
        if let (Some(now), Some((then, rows))) = (&counters, &self.sockets_seen)
            && now == then
        {
            return rows.clone();
        }
        self.socket_walks += 1;
        let mut rows = Vec::new();
        for (proto, file) in [
            ("tcp", "net/tcp"),
            ("tcp", "net/tcp6"),
            ("udp", "net/udp"),
            ("udp", "net/udp6"),
        ] {
            let Ok(text) = read_table(&self.root.join(file), &mut self.table) else {
                continue;
            };
            for r in parse_sockets(text) {
                rows.push((proto, r));
            }
        }
        let rows: std::sync::Arc<[ProtoRow]> = rows.into();
        self.sockets_seen = counters.map(|c| (c, rows.clone()));
        rows
    }
}

impl Default for ProcSampler {
    fn default() -> ProcSampler {
        ProcSampler::new()
    }
}

/// Reads a `/proc/net` socket table in one `read` where it fits.
///
/// Each read of such a file makes the kernel walk its whole connection hash table from the
/// start (on a machine with much memory, hundreds of thousands of mostly empty buckets), so
/// the usual small first read, growing reads and the read that finds the end cost several
/// walks. One large read returns the table whole; a read that comes back well short of the
/// buffer has reached the end.
/// `buf` is kept between samples (grown when a table outgrows it), so that an idle sample
/// neither allocates nor clears memory.
fn read_table<'b>(path: &std::path::Path, buf: &'b mut Vec<u8>) -> std::io::Result<&'b str> {
    const SLACK: usize = 16 * 1024;
    if buf.len() < 4 * SLACK {
        buf.resize(4 * SLACK, 0);
    }
    let mut f = std::fs::File::open(path)?;
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..])?;
        len += n;
        if n == 0 || len + SLACK < buf.len() {
            break;
        }
        let grown = buf.len() * 2;
        buf.resize(grown, 0);
    }
    std::str::from_utf8(&buf[..len])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A socket table row with its protocol (`tcp` or `udp`).
type ProtoRow = (&'static str, SocketRow);

/// One row of `/proc/net/tcp*` or `/proc/net/udp*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRow {
    /// Local port.
    pub local_port: u16,
    /// Remote address (text) and port.
    pub remote: String,
    /// See `remote`.
    pub remote_port: u16,
    /// The kernel's state code (`0A` listen, `01` established, `07` unconnected UDP).
    pub state: u8,
    /// The socket's inode.
    pub inode: u64,
}

/// Parses the rows of a `/proc/net/{tcp,tcp6,udp,udp6}` table (malformed rows skipped).
pub fn parse_sockets(text: &str) -> Vec<SocketRow> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (_, lport) = f.get(1)?.split_once(':')?;
            let (raddr, rport) = f.get(2)?.split_once(':')?;
            Some(SocketRow {
                local_port: u16::from_str_radix(lport, 16).ok()?,
                remote: hex_addr(raddr)?,
                remote_port: u16::from_str_radix(rport, 16).ok()?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// An address as `/proc/net` writes it (32-bit words in host order) as text.
fn hex_addr(h: &str) -> Option<String> {
    let words: Vec<u32> = (0..h.len() / 8)
        .map(|i| u32::from_str_radix(h.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    match words.as_slice() {
        [w] => Some(std::net::Ipv4Addr::from(w.to_ne_bytes()).to_string()),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = std::net::Ipv6Addr::from(bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            })
        }
        _ => None,
    }
}

const LISTEN: u8 = 0x0A;
const ESTABLISHED: u8 = 0x01;
const UDP_UNCONNECTED: u8 = 0x07;

impl Sampler for ProcSampler {
    fn sample(
        &mut self,
        now_ms: u64,
        known: &dyn Fn(&LiveKey) -> bool,
    ) -> Vec<(LiveKey, Option<Record>)> {
        let mut out = Vec::new();
        let pids = self.live_pids();
        let alive: HashSet<u32> = pids.iter().copied().collect();
        self.unreadable.retain(|p| alive.contains(p));
        for pid in pids {
            let key = LiveKey::Process(pid);
            if known(&key) || self.unreadable.contains(&pid) {
                out.push((key, None));
                continue;
            }
            match self.process(pid, now_ms) {
                Some(run) => out.push((key, Some(Record::Run(run)))),
                None => {
                    self.unreadable.insert(pid);
                }
            }
        }
        // Sockets: listening ones, then outbound connections (established, to a port
        // this machine does not listen on).
        let mut listening: HashSet<u16> = HashSet::new();
        let mut listed: HashSet<(&'static str, u16)> = HashSet::new();
        let rows = self.socket_rows();
        for (proto, r) in rows.iter() {
            let listens = (*proto == "tcp" && r.state == LISTEN)
                || (*proto == "udp" && r.state == UDP_UNCONNECTED && r.remote_port == 0);
            if listens {
                listening.insert(r.local_port);
                // A port listened on over IPv4 and IPv6 is one record.
                if !listed.insert((proto, r.local_port)) {
                    continue;
                }
                let key = LiveKey::Listening(proto, r.local_port);
                let rec = (!known(&key)).then(|| {
                    Record::Socket(SocketSeen {
                        proto: proto.to_string(),
                        remote: String::new(),
                        port: r.local_port,
                        exe: String::new(),
                        first_ms: now_ms,
                        last_ms: now_ms,
                        ended: false,
                        listening: true,
                    })
                });
                out.push((key, rec));
            }
        }
        let mut new_conns = Vec::new();
        for (proto, r) in rows.iter() {
            if *proto != "tcp" || r.state != ESTABLISHED || listening.contains(&r.local_port) {
                continue;
            }
            let key = LiveKey::Connection(r.remote.clone(), r.remote_port, r.inode);
            if known(&key) {
                out.push((key, None));
            } else {
                new_conns.push((key, r.clone()));
            }
        }
        if !new_conns.is_empty() {
            let wanted: HashSet<u64> = new_conns.iter().map(|(_, r)| r.inode).collect();
            let owners = self.socket_owners(&wanted);
            for (key, r) in new_conns {
                out.push((
                    key,
                    Some(Record::Socket(SocketSeen {
                        proto: "tcp".into(),
                        remote: r.remote.clone(),
                        port: r.remote_port,
                        exe: owners.get(&r.inode).cloned().unwrap_or_default(),
                        first_ms: now_ms,
                        last_ms: now_ms,
                        ended: false,
                        listening: false,
                    })),
                ));
            }
        }
        out
    }
}
