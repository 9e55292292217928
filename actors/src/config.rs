//! The `[server]` section of a node's configuration: what the server's desk and store keep.

use rollcall_runtime::config::ConfigError;
use serde::Deserialize;

/// `[server]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// How many questions' results the server keeps (oldest dropped first).
    pub results_kept: Option<usize>,
    /// The longest a question may stay open, in hours (every member holds it that long).
    pub max_question_ttl_hours: Option<u64>,
    /// The longest search text, in bytes.
    pub max_search_bytes: Option<usize>,
}

/// `[server]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// How many questions' results the server keeps.
    pub results_kept: usize,
    /// What the desk takes.
    pub limits: crate::desk::DeskLimits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            results_kept: 1000,
            limits: crate::desk::DeskLimits::default(),
        }
    }
}

impl RawServer {
    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<ServerSettings, ConfigError> {
        let d = ServerSettings::default();
        let s = ServerSettings {
            results_kept: self.results_kept.unwrap_or(d.results_kept),
            limits: crate::desk::DeskLimits {
                max_ttl: self
                    .max_question_ttl_hours
                    .map(|h| std::time::Duration::from_secs(h.saturating_mul(3600)))
                    .unwrap_or(d.limits.max_ttl),
                max_search_bytes: self.max_search_bytes.unwrap_or(d.limits.max_search_bytes),
            },
        };
        if s.limits.max_ttl.is_zero() || s.limits.max_search_bytes == 0 {
            return Err(ConfigError::Invalid(
                "server.max_question_ttl_hours and server.max_search_bytes must be at least 1"
                    .into(),
            ));
        }
        if s.results_kept == 0 {
            return Err(ConfigError::Invalid(
                "server.results_kept must be at least 1".into(),
            ));
        }
        Ok(s)
    }
}

/// `[actions]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActions {
    /// Endpoint: directories under which `delete-file` may act (none: it refuses every
    /// path).
    pub file_roots: Option<Vec<std::path::PathBuf>>,
    /// Endpoint: where `delete-file` moves files (default: `quarantine` in the state
    /// directory).
    pub quarantine_dir: Option<std::path::PathBuf>,
    /// Server: packages that wait for a second admin's approval (default: delete-file,
    /// quarantine, uninstall, run-script, kill-process).
    pub require_approval: Option<Vec<String>>,
    /// Endpoint: the package chunk cache's size cap in MiB (default 2048; chunks an open
    /// action needs are kept past it).
    pub package_cache_mb: Option<u64>,
}

/// `[actions]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSettings {
    /// Where `delete-file` may act.
    pub file_roots: Vec<std::path::PathBuf>,
    /// Where it moves files (`None`: the state directory's `quarantine`).
    pub quarantine_dir: Option<std::path::PathBuf>,
    /// Packages that need approval.
    pub require_approval: Vec<String>,
    /// The package chunk cache's cap, in bytes.
    pub package_cache_bytes: u64,
}

impl Default for ActionSettings {
    fn default() -> Self {
        ActionSettings {
            file_roots: Vec::new(),
            quarantine_dir: None,
            require_approval: crate::action::server::DEFAULT_REQUIRE_APPROVAL
                .iter()
                .map(|s| s.to_string())
                .collect(),
            package_cache_bytes: 2048 << 20,
        }
    }
}

impl RawActions {
    /// Applies defaults; roots must be absolute.
    pub fn validate(self) -> Result<ActionSettings, ConfigError> {
        let d = ActionSettings::default();
        let file_roots = self.file_roots.unwrap_or_default();
        if let Some(r) = file_roots.iter().find(|r| !r.is_absolute()) {
            return Err(ConfigError::Invalid(format!(
                "[actions] file_roots: {} is not an absolute path",
                r.display()
            )));
        }
        Ok(ActionSettings {
            file_roots,
            quarantine_dir: self.quarantine_dir,
            require_approval: self.require_approval.unwrap_or(d.require_approval),
            package_cache_bytes: match self.package_cache_mb {
                None => d.package_cache_bytes,
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "[actions] package_cache_mb must be at least 1".into(),
                    ));
                }
                Some(mb) => mb.saturating_mul(1 << 20),
            },
        })
    }
}

/// `[history]` as written (endpoints).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHistory {
    /// Whether the endpoint records its history (default true).
    pub enabled: Option<bool>,
    /// How often the process table and sockets are sampled, in ms (default 5000, at least
    /// 100).
    pub interval_ms: Option<u64>,
    /// Records last seen longer ago are dropped, in days (default 90).
    pub max_age_days: Option<u64>,
    /// The history's size cap in MiB (default 64); past it the oldest records go first.
    pub max_mb: Option<u64>,
}

/// `[history]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    /// Whether the endpoint records.
    pub enabled: bool,
    /// The sampling interval.
    pub interval: std::time::Duration,
    /// What it keeps.
    pub limits: crate::history::store::Limits,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            enabled: true,
            interval: std::time::Duration::from_secs(5),
            limits: crate::history::store::Limits::default(),
        }
    }
}

impl RawHistory {
    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<HistorySettings, ConfigError> {
        let d = HistorySettings::default();
        let interval_ms = self.interval_ms.unwrap_or(d.interval.as_millis() as u64);
        if interval_ms < 100 {
            return Err(ConfigError::Invalid(
                "[history] interval_ms must be at least 100".into(),
            ));
        }
        if self.max_age_days == Some(0) || self.max_mb == Some(0) {
            return Err(ConfigError::Invalid(
                "[history] max_age_days and max_mb must be at least 1".into(),
            ));
        }
        Ok(HistorySettings {
            enabled: self.enabled.unwrap_or(d.enabled),
            interval: std::time::Duration::from_millis(interval_ms),
            limits: crate::history::store::Limits {
                max_age: self
                    .max_age_days
                    .map(|d| std::time::Duration::from_secs(d.saturating_mul(86_400)))
                    .unwrap_or(d.limits.max_age),
                max_bytes: self
                    .max_mb
                    .map(|m| m.saturating_mul(1 << 20))
                    .unwrap_or(d.limits.max_bytes),
            },
        })
    }
}

/// `[alerts]` as written (server): the listener detection products post alerts to.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Where to listen for alerts over HTTPS, e.g. `127.0.0.1:8443` (default: off).
    pub listen: Option<std::net::SocketAddr>,
    /// The bearer token products send (at least 16 bytes; or `token_file`).
    pub token: Option<String>,
    /// A file holding the token (its first line).
    pub token_file: Option<std::path::PathBuf>,
    /// A package to run on the machines an alert's case finds (e.g. `quarantine`; it waits
    /// for an admin's approval where the package needs one).
    pub respond_with: Option<String>,
    /// The listener's certificate and key (PEM); default: a certificate the cluster CA
    /// issues for the listen address at start (products trust `ca.pem`).
    pub cert_file: Option<std::path::PathBuf>,
    /// See `cert_file`.
    pub key_file: Option<std::path::PathBuf>,
}

/// `[alerts]` validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertSettings {
    /// Where it listens (`None`: off).
    pub listen: Option<std::net::SocketAddr>,
    /// The token.
    pub token: String,
    /// The response package.
    pub respond_with: Option<String>,
    /// Certificate and key files.
    pub cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl RawAlerts {
    /// Checks that a listener has a token worth the name.
    pub fn validate(self) -> Result<AlertSettings, ConfigError> {
        let Some(listen) = self.listen else {
            return Ok(AlertSettings::default());
        };
        let token = match (self.token, self.token_file) {
            (Some(t), None) => t,
            (None, Some(f)) => std::fs::read_to_string(&f)
                .map_err(|e| {
                    ConfigError::Invalid(format!("[alerts] token_file {}: {e}", f.display()))
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            _ => {
                return Err(ConfigError::Invalid(
                    "[alerts] listen needs exactly one of token and token_file".into(),
                ));
            }
        };
        if token.len() < 16 {
            return Err(ConfigError::Invalid(
                "[alerts] the token must be at least 16 bytes".into(),
            ));
        }
        let cert = match (self.cert_file, self.key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "[alerts] cert_file and key_file go together".into(),
                ));
            }
        };
        Ok(AlertSettings {
            listen: Some(listen),
            token,
            respond_with: self.respond_with,
            cert,
        })
    }
}
