//! The packages actions may run: the built-ins, admins' commands, and packages with files
//! (their manifests named to the server's origin, which keeps the chunks).

use std::collections::BTreeMap;
use std::sync::Arc;

use rollcall_patchdist::{Egress, Manifest, Origin};
use serde::{Deserialize, Serialize};

use super::super::{BUILTIN_PACKAGES, DEFAULT_OUTPUT_CAP, Package, PackageKind};
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
    /// Bytes that left the server per ring (ring, bytes), of machines still in a ring.
    pub egress_by_ring: Vec<(String, u64)>,
    /// Its actions: (id, machines targeted, machines per status).
    pub actions: Vec<(u64, u64, BTreeMap<String, u64>)>,
}

impl ActionBook {
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
