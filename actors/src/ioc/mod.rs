//! Indicators of compromise in: a CSV list or a STIX 2.1 bundle read into the indicators
//! endpoints can look for — file SHA-256 hashes (run now or in history), IP addresses and
//! domain names (connections) — with everything else listed as skipped, with its reason.
//!
//! A malformed file is refused whole, with the line or object and what is wrong, so that a
//! half-read feed never passes for a whole one. Untrusted input is bounded: the file's size,
//! the number of indicators, a pattern's length; JSON nesting is bounded by the decoder, and
//! the STIX pattern reader is a loop over tokens, never recursive.

pub mod alert;
mod csv_list;
mod stix;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use csv_list::from_csv;
pub use stix::{from_stix, parse_pattern};

/// The largest indicator file read.
pub const MAX_FILE_BYTES: usize = 16 << 20;
/// The most indicators one file may hold.
pub const MAX_INDICATORS: usize = 10_000;
/// The longest STIX pattern read.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// What endpoints can look for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Indicator {
    /// An executable's SHA-256 (lowercase hex).
    Sha256(String),
    /// An address machines connected to.
    Ip(IpAddr),
    /// A domain name (looked for as the addresses it resolves to when the case opens).
    Domain(String),
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Indicator::Sha256(h) => write!(f, "sha256:{h}"),
            Indicator::Ip(a) => write!(f, "ip:{a}"),
            Indicator::Domain(d) => write!(f, "domain:{d}"),
        }
    }
}

/// One entry that was read but cannot be looked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// What it was (the value, or the STIX object's id).
    pub what: String,
    /// Why it was skipped.
    pub why: String,
}

/// What a file gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// The indicators, each once, in the order first read.
    pub indicators: Vec<Indicator>,
    /// What was skipped.
    pub skipped: Vec<Skipped>,
}

impl Imported {
    fn push(&mut self, i: Indicator) -> Result<(), ImportError> {
        if !self.indicators.contains(&i) {
            if self.indicators.len() >= MAX_INDICATORS {
                return Err(ImportError::TooMany);
            }
            self.indicators.push(i);
        }
        Ok(())
    }

    fn skip(&mut self, what: impl Into<String>, why: impl Into<String>) {
        if self.skipped.len() < MAX_INDICATORS {
            self.skipped.push(Skipped {
                what: what.into(),
                why: why.into(),
            });
        }
    }
}

/// Why a file was refused (nothing of it is imported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("the file is over {} MiB", MAX_FILE_BYTES >> 20)]
    TooLarge,
    /// More than [`MAX_INDICATORS`].
    #[error("more than {MAX_INDICATORS} indicators")]
    TooMany,
    /// Not a STIX bundle, or a bundle whose shape is wrong.
    #[error("not a STIX 2.1 bundle: {0}")]
    Stix(String),
    /// A CSV line that cannot be read.
    #[error("line {line}: {why}")]
    Csv {
        /// 1-based.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Reads `bytes` as a STIX bundle (JSON: it starts with `{` or `[`) or a CSV list.
pub fn import(bytes: &[u8]) -> Result<Imported, ImportError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ImportError::TooLarge);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if matches!(first, Some(b'{' | b'[')) {
        from_stix(bytes)
    } else {
        from_csv(bytes)
    }
}

/// `v` as an indicator of kind `kind` (`sha256`, `ip`, `domain`, or a STIX-like alias):
/// `Ok(None)` for kinds endpoints cannot look for (the reason given), `Err` for a value
/// that is not what its kind says.
pub fn typed(kind: &str, v: &str) -> Result<Result<Indicator, String>, String> {
    let v = v.trim();
    match kind.trim().to_ascii_lowercase().as_str() {
        "sha256" | "sha-256" | "file:sha256" | "file_sha256" | "hash" => {
            if is_sha256(v) {
                Ok(Ok(Indicator::Sha256(v.to_ascii_lowercase())))
            } else {
                Err(format!("{v:?} is not a SHA-256 (64 hex digits)"))
            }
        }
        "ip" | "ipv4" | "ipv6" | "ip-addr" | "ipv4-addr" | "ipv6-addr" | "address" => {
            if v.contains('/') {
                return Ok(Err(
                    "address ranges are not looked for (single addresses only)".into(),
                ));
            }
            v.parse::<IpAddr>()
                .map(|a| Ok(Indicator::Ip(a)))
                .map_err(|_| format!("{v:?} is not an IP address"))
        }
        "domain" | "domain-name" | "hostname" | "fqdn" => {
            if is_domain(v) {
                Ok(Ok(Indicator::Domain(
                    v.trim_end_matches('.').to_ascii_lowercase(),
                )))
            } else {
                Err(format!("{v:?} is not a domain name"))
            }
        }
        "md5" | "sha1" | "sha-1" => Ok(Err(format!(
            "{kind} hashes are not recorded (endpoints keep SHA-256)"
        ))),
        other => Ok(Err(format!("{other:?} indicators are not looked for"))),
    }
}

/// Guesses the kind of a bare value: a SHA-256, an address, or a domain name.
pub fn guess(v: &str) -> Option<Indicator> {
    let v = v.trim();
    if is_sha256(v) {
        Some(Indicator::Sha256(v.to_ascii_lowercase()))
    } else if let Ok(a) = v.parse::<IpAddr>() {
        Some(Indicator::Ip(a))
    } else if is_domain(v) && v.contains('.') {
        Some(Indicator::Domain(
            v.trim_end_matches('.').to_ascii_lowercase(),
        ))
    } else {
        None
    }
}

/// Whether `s` is 64 hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `s` is a domain name: labels of letters, digits and hyphens, 1 to 63 bytes each,
/// at most 253 in all.
pub fn is_domain(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && s.parse::<IpAddr>().is_err()
}
