//! The packages actions may run: the built-ins, admins' commands, and packages with files
//! (their manifests named to the server's origin, which keeps the chunks).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rollcall_runtime::NodeId;

use rollcall_patchdist::{Egress, Manifest, Origin};
use serde::{Deserialize, Serialize};

use super::super::{BUILTIN_PACKAGES, DEFAULT_OUTPUT_CAP, FileSources, Package, PackageKind};
use super::{ActionBook, PACKAGES_KEY};

/// Where a package with files stands (what `package status` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageReport {
    /// Its name.
    pub name: String,
    /// Its manifest's id (hex).
    pub id: String,
    /// Its files: (name, bytes).
    pub files: Vec<(String, u64)>,
    /// Bytes in all.
    pub bytes: u64,
    /// Chunks in all.
    pub chunks: u64,
    /// What left the server for it.
    pub egress: Egress,
    /// Each ring's machines and where their copies came from.
    pub rings: Vec<RingFiles>,
    /// Its actions: (id, machines targeted, machines per status).
    pub actions: Vec<(u64, u64, BTreeMap<String, u64>)>,
}

/// One ring's share of a package (what `package status` shows per ring).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingFiles {
    /// The ring (`(not in a listed ring)` for machines that are in none now).
    pub ring: String,
    /// Its machines that any of the package's actions targeted.
    pub machines: u64,
    /// Those that hold every file (verified).
    pub complete: u64,
    /// Bytes those machines say came from their neighbours.
    pub from_peers: u64,
    /// Bytes those machines say came from the server.
    pub from_server: u64,
    /// Bytes the server sent to the ring's machines (its own count: chunks sent again after
    /// a fault included).
    pub egress: u64,
}

/// One machine's share of a package, over all its actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineFiles {
    /// It holds every file (it said where they came from).
    pub complete: bool,
    /// Bytes from neighbours and from the server, summed over the package's actions.
    pub sources: FileSources,
}

impl ActionBook {
    /// The machines the actions of package `name` targeted, and where their copies of the
    /// files came from.
    pub fn package_machines(&self, name: &str) -> HashMap<NodeId, MachineFiles> {
        let b = self.lock();
        let mut out: HashMap<NodeId, MachineFiles> = HashMap::new();
        for r in b.actions.values().filter(|r| r.spec.package.name == name) {
            for m in r.machines.keys() {
                out.entry(m.clone()).or_default();
            }
            for (m, f) in &r.files {
                let e = out.entry(m.clone()).or_default();
                e.complete = true;
                e.sources.from_peers += f.from_peers;
                e.sources.from_server += f.from_server;
            }
        }
        out
    }

    /// The package named `name`: a built-in or an admin's.
    pub fn package(&self, name: &str) -> Option<Package> {
        Package::builtin(name).or_else(|| self.lock().packages.get(name).cloned())
    }

    /// Every package: (name, what it does).
    pub fn packages(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = BUILTIN_PACKAGES
            .iter()
            .map(|(n, p, d)| {
                (
                    if p.is_empty() {
                        n.to_string()
                    } else {
                        format!("{n} {p}")
                    },
                    d.to_string(),
                )
            })
            .collect();
        for p in self.lock().packages.values() {
            if let PackageKind::Command(c) = &p.kind {
                out.push((
                    p.name.clone(),
                    format!("runs {c:?} (timeout {} s)", p.timeout_secs),
                ));
            }
        }
        out
    }

    /// Keeps packages' files in `origin` (once): the manifests of packages loaded from the
    /// store are named to it again (their chunks are in its store).
    pub fn set_origin(&self, origin: Arc<Origin>) {
        let packages: Vec<Package> = self.lock().packages.values().cloned().collect();
        for p in packages {
            if let Some(m) = &p.manifest
                && let Err(e) = origin.add_manifest((**m).clone())
            {
                tracing::error!(package = %p.name, error = %e, "a package's files are not all kept: its actions will not complete");
            }
        }
        let _ = self.origin.set(origin);
    }

    /// The origin of packages' files, if this server has one.
    pub fn origin(&self) -> Option<&Arc<Origin>> {
        self.origin.get()
    }

    /// Registers an admin's package (with `manifest`, files uploaded before).
    pub fn add_package(
        &self,
        name: &str,
        command: &str,
        timeout_secs: u64,
        manifest: Option<Manifest>,
    ) -> Result<String, String> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("a package name is 1 to 64 letters, digits, - or _".into());
        }
        if Package::builtin(name).is_some() {
            return Err(format!("{name} is a built-in package"));
        }
        if command.trim().is_empty() || command.len() > 64 * 1024 {
            return Err("the command must be 1 byte to 64 KiB".into());
        }
        if timeout_secs == 0 || timeout_secs > 24 * 3600 {
            return Err("the timeout is 1 s to 24 h".into());
        }
        let files = match manifest {
            None => None,
            Some(m) => {
                let origin = self
                    .origin
                    .get()
                    .ok_or("this server keeps no package files")?;
                origin.add_manifest(m.clone()).map_err(|e| e.to_string())?;
                Some(Arc::new(m))
            }
        };
        let described = match &files {
            Some(m) => format!(
                "package {name} registered with {} files ({} bytes, {} chunks)",
                m.files.len(),
                m.size(),
                m.chunk_count()
            ),
            None => format!("package {name} registered"),
        };
        let all = {
            let mut b = self.lock();
            b.packages.insert(
                name.to_string(),
                Package {
                    name: name.to_string(),
                    kind: PackageKind::Command(command.to_string()),
                    timeout_secs,
                    output_cap: DEFAULT_OUTPUT_CAP,
                    manifest: files,
                },
            );
            b.packages.values().cloned().collect::<Vec<_>>()
        };
        if let Some(st) = &self.store {
            st.put_setting(PACKAGES_KEY, &all)
                .map_err(|e| e.to_string())?;
        }
        Ok(described)
    }
}
