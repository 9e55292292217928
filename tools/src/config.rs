//! The node configuration file: each crate's section put together (`[link]` from the
//! runtime, `[ring]` and `[peering]` from the cluster, `[server]` from the actors), read as
//! written and then validated. Command-line flags override the file.

use std::path::{Path, PathBuf};

use rollcall_actors::config::{
    ActionSettings, AlertSettings, HistorySettings, RawActions, RawAlerts, RawHistory, RawServer,
    ServerSettings,
};
use rollcall_cluster::config::{PeeringSettings, RawPeering, RawRing, RingSettings};
use rollcall_runtime::config::{ConfigError, LinkConfig, RawLink, read_toml};
use serde::Deserialize;

/// The file as written (every field optional).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[link]` settings.
    #[serde(default)]
    pub link: RawLink,
    /// `[ring]` settings (endpoints).
    #[serde(default)]
    pub ring: RawRing,
    /// `[peering]` settings (server).
    #[serde(default)]
    pub peering: RawPeering,
    /// `[server]` settings.
    #[serde(default)]
    pub server: RawServer,
    /// `[actions]` settings.
    #[serde(default)]
    pub actions: RawActions,
    /// `[history]` settings (endpoints).
    #[serde(default)]
    pub history: RawHistory,
    /// `[alerts]` settings (server).
    #[serde(default)]
    pub alerts: RawAlerts,
    /// `[chaos]` settings (endpoints).
    #[serde(default)]
    pub chaos: RawChaos,
    /// `[runtime]` settings.
    #[serde(default)]
    pub runtime: RawRuntime,
    /// `[metrics]` settings.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[node]` settings.
    #[serde(default)]
    pub node: RawNode,
}

/// `[node]` as written: what `rollcall server` and `rollcall endpoint` otherwise take as
/// flags, so that a service manager runs them with the config file alone (flags override
/// it). An empty string is the same as leaving the key out.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Endpoint: the server's address.
    pub server: Option<String>,
    /// The UDP address to listen on.
    pub listen: Option<String>,
    /// Where the node keeps its key, certificate and stores.
    pub state_dir: Option<PathBuf>,
    /// Server: the CA directory made by `rollcall ca init`.
    pub ca_dir: Option<PathBuf>,
    /// Endpoint: the join token, needed on first start only.
    pub join_token: Option<String>,
    /// Endpoint: a file holding the join token.
    pub join_token_file: Option<PathBuf>,
}

/// `[node]` validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSettings {
    /// See [`RawNode::server`].
    pub server: Option<std::net::SocketAddr>,
    /// See [`RawNode::listen`].
    pub listen: Option<std::net::SocketAddr>,
    /// See [`RawNode::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// See [`RawNode::ca_dir`].
    pub ca_dir: Option<PathBuf>,
    /// See [`RawNode::join_token`].
    pub join_token: Option<String>,
    /// See [`RawNode::join_token_file`].
    pub join_token_file: Option<PathBuf>,
}

fn address(key: &str, v: Option<String>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    v.filter(|a| !a.trim().is_empty())
        .map(|a| {
            a.trim().parse().map_err(|e| {
                ConfigError::Invalid(format!("{key} {a:?} is not an address (IP:PORT): {e}"))
            })
        })
        .transpose()
}

impl RawNode {
    /// Parses the addresses; empty values are unset.
    pub fn validate(self) -> Result<NodeSettings, ConfigError> {
        let path = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        Ok(NodeSettings {
            server: address("[node] server", self.server)?,
            listen: address("[node] listen", self.listen)?,
            state_dir: path(self.state_dir),
            ca_dir: path(self.ca_dir),
            join_token: self.join_token.filter(|t| !t.trim().is_empty()),
            join_token_file: path(self.join_token_file),
        })
    }
}

/// `[metrics]` as written: the metrics and health listener.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address of the plain-HTTP listener serving `/metrics`, `/healthz` and `/readyz`
    /// (default: none). It needs no credentials: keep it on loopback or a management network.
    pub listen: Option<String>,
}

/// `[metrics]` validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where the listener listens (`None`: off).
    pub listen: Option<std::net::SocketAddr>,
}

impl RawMetrics {
    /// Parses the address.
    pub fn validate(self) -> Result<MetricsSettings, ConfigError> {
        let listen = self
            .listen
            .map(|a| {
                a.parse().map_err(|e| {
                    ConfigError::Invalid(format!("[metrics] listen {a:?} is not an address: {e}"))
                })
            })
            .transpose()?;
        Ok(MetricsSettings { listen })
    }
}

/// `[runtime]` as written: the async runtime a node runs on.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// Worker threads (1: everything on the main thread; 0: one per core). Default: 1 for
    /// an endpoint (an agent's work is a few messages a second: one thread wakes less, and
    /// blocking work such as reading /proc or hashing goes to tokio's blocking pool either
    /// way), one per core for a server.
    pub worker_threads: Option<usize>,
}

/// `[runtime]` validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// As written (`None`: the role's default).
    pub worker_threads: Option<usize>,
}

impl RawRuntime {
    /// Checks ranges.
    pub fn validate(self) -> Result<RuntimeSettings, ConfigError> {
        if self.worker_threads.is_some_and(|n| n > 1024) {
            return Err(ConfigError::Invalid(
                "[runtime] worker_threads must be at most 1024".into(),
            ));
        }
        Ok(RuntimeSettings {
            worker_threads: self.worker_threads,
        })
    }
}

/// `[chaos]` as written (endpoints): whether this machine's chaos agent applies the faults
/// an admin's `rollcall chaos` relays through the server. For test clusters only.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChaos {
    /// Apply relayed faults (default false: they are refused, and the server audits it).
    pub allow: Option<bool>,
    /// Every fault but a kill ends by itself after this many seconds (default 300, 1 to
    /// 86400), so a machine cut off from the server heals.
    pub fault_limit_secs: Option<u64>,
}

/// `[chaos]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosSettings {
    /// Whether faults are applied.
    pub allow: bool,
    /// How long a fault lasts at most.
    pub fault_limit: std::time::Duration,
}

impl Default for ChaosSettings {
    fn default() -> Self {
        ChaosSettings {
            allow: false,
            fault_limit: std::time::Duration::from_secs(300),
        }
    }
}

impl RawChaos {
    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<ChaosSettings, ConfigError> {
        let secs = self.fault_limit_secs.unwrap_or(300);
        if !(1..=86_400).contains(&secs) {
            return Err(ConfigError::Invalid(
                "[chaos] fault_limit_secs must be from 1 to 86400".into(),
            ));
        }
        Ok(ChaosSettings {
            allow: self.allow.unwrap_or(false),
            fault_limit: std::time::Duration::from_secs(secs),
        })
    }
}

/// Validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Links.
    pub link: LinkConfig,
    /// Ring membership (endpoints).
    pub ring: RingSettings,
    /// Peering ranges (server).
    pub peering: PeeringSettings,
    /// What the server keeps.
    pub server: ServerSettings,
    /// Actions (endpoint: where delete-file may act; server: what needs approval).
    pub actions: ActionSettings,
    /// What an endpoint records of its history.
    pub history: HistorySettings,
    /// The alert listener (server).
    pub alerts: AlertSettings,
    /// The chaos agent (endpoints).
    pub chaos: ChaosSettings,
    /// The async runtime.
    pub runtime: RuntimeSettings,
    /// The metrics listener.
    pub metrics: MetricsSettings,
    /// Where the node runs (flags override it).
    pub node: NodeSettings,
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        read_toml(path)
    }

    /// Applies defaults and checks ranges, section by section.
    pub fn validate(self) -> Result<Config, ConfigError> {
        Ok(Config {
            link: self.link.validate()?,
            ring: self.ring.validate()?,
            peering: self.peering.validate()?,
            server: self.server.validate()?,
            actions: self.actions.validate()?,
            history: self.history.validate()?,
            alerts: self.alerts.validate()?,
            chaos: self.chaos.validate()?,
            runtime: self.runtime.validate()?,
            metrics: self.metrics.validate()?,
            node: self.node.validate()?,
        })
    }
}

impl Config {
    /// Loads `path` if given (defaults otherwise) and validates it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => RawConfig::from_file(p)?.validate(),
            None => RawConfig::default().validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_file_values_override() {
        assert_eq!(Config::load(None).expect("defaults"), Config::default());
        let raw: RawConfig = toml::from_str("[link]\nidle_timeout_ms = 9000\n").expect("toml");
        assert_eq!(
            raw.validate().expect("valid").link.timeouts.idle_timeout_ms,
            9000
        );
    }

    #[test]
    fn bad_values_are_named_with_their_section() {
        for (text, needle) in [
            ("[link]\nkeep_alive_ms = 12000\n", "link.keep_alive_ms"),
            ("[link]\nmax_frame_bytes = 10\n", "link.max_frame_bytes"),
            ("[link]\nreconnect_base_ms = 0\n", "link.reconnect_base_ms"),
            (
                "[ring]\nregister_min_ms = 5000\nregister_max_ms = 10\n",
                "ring.register_min_ms",
            ),
            ("[peering]\nmask_v4 = 40\n", "peering.mask_v4"),
            ("[server]\nresults_kept = 0\n", "server.results_kept"),
            ("[metrics]\nlisten = \"nowhere\"\n", "[metrics] listen"),
            ("[node]\nserver = \"10.0.0.5\"\n", "[node] server"),
        ] {
            let raw: RawConfig = toml::from_str(text).expect("toml");
            let err = raw.validate().expect_err(text).to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(toml::from_str::<RawConfig>("[link]\nbogus = 1\n").is_err());
        assert!(toml::from_str::<RawConfig>("[nonsense]\n").is_err());
    }
}
