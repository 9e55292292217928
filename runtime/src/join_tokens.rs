//! Join tokens: what lets an endpoint enrol (a secret and the CA's fingerprint), with an
//! expiry and a use count, kept in the CA directory, listed, spent and revoked.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rand::RngCore;

use crate::identity::{Ca, IdentityError, JOIN_TOKENS_FILE, write_file};

/// A join token: a shared secret the server accepts for enrolment, plus the fingerprint of
/// the CA, so the enrolling endpoint can verify the server before it has any certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The secret (hex).
    pub secret: String,
    /// SHA-256 of the CA certificate (hex).
    pub ca_fingerprint: String,
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rc1.{}.{}", self.secret, self.ca_fingerprint)
    }
}

impl FromStr for JoinToken {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split('.');
        let (Some("rc1"), Some(secret), Some(fp), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::BadJoinToken);
        };
        let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(secret, 32) || !is_hex(fp, 64) {
            return Err(IdentityError::BadJoinToken);
        }
        Ok(JoinToken {
            secret: secret.to_ascii_lowercase(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }
}

impl Ca {
    /// Creates a new join token with no expiry and no use limit (see
    /// [`Ca::new_join_token_with`]).
    pub fn new_join_token(&self) -> Result<JoinToken, IdentityError> {
        self.new_join_token_with(TokenPolicy::default())
    }

    /// Creates a new join token that `policy` limits, appends it to the CA directory's token
    /// list, and returns it.
    pub fn new_join_token_with(&self, policy: TokenPolicy) -> Result<JoinToken, IdentityError> {
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        let token = JoinToken {
            secret: hex::encode(b),
            ca_fingerprint: self.fingerprint(),
        };
        if let Some(dir) = &self.dir {
            let mut list = read_tokens(dir);
            list.push(StoredToken {
                secret: token.secret.clone(),
                policy,
            });
            write_tokens(dir, &list)?;
        }
        Ok(token)
    }

    /// The join tokens on file, as an operator lists them (by the first 8 characters of
    /// their secret).
    pub fn join_tokens(&self) -> Vec<TokenInfo> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        read_tokens(dir)
            .into_iter()
            .map(|t| TokenInfo {
                id: t.secret.chars().take(8).collect(),
                policy: t.policy,
            })
            .collect()
    }

    /// Revokes the token whose secret starts with `id` (at least 8 characters); returns
    /// whether one was.
    pub fn revoke_join_token(&self, id: &str) -> Result<bool, IdentityError> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        if id.len() < 8 {
            return Ok(false);
        }
        let mut list = read_tokens(dir);
        let before = list.len();
        list.retain(|t| !t.secret.starts_with(id));
        if list.len() == before {
            return Ok(false);
        }
        write_tokens(dir, &list)?;
        Ok(true)
    }

    /// Spends one use of the token with `secret`, if it is on file, unexpired at
    /// `now_unix_secs` and has a use left. Tokens are compared in constant time.
    pub fn spend_join_token(&self, secret: &str, now_unix_secs: u64) -> Result<(), TokenRefusal> {
        let Some(dir) = &self.dir else {
            return Err(TokenRefusal::Unknown);
        };
        let mut list = read_tokens(dir);
        let Some(t) = list
            .iter_mut()
            .find(|t| constant_time_eq(t.secret.as_bytes(), secret.as_bytes()))
        else {
            return Err(TokenRefusal::Unknown);
        };
        if t.policy
            .expires_unix_secs
            .is_some_and(|e| now_unix_secs >= e)
        {
            return Err(TokenRefusal::Expired);
        }
        match &mut t.policy.uses_left {
            Some(0) => return Err(TokenRefusal::UsedUp),
            Some(n) => {
                *n -= 1;
                write_tokens(dir, &list).map_err(|_| TokenRefusal::Unknown)?;
            }
            None => {}
        }
        Ok(())
    }

    /// The join-token secrets accepted by this CA's server (any expiry or use limit aside).
    pub fn join_secrets(&self) -> Vec<String> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        read_tokens(dir).into_iter().map(|t| t.secret).collect()
    }
}

/// What limits a join token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenPolicy {
    /// When it stops being accepted (Unix seconds); never if `None`.
    pub expires_unix_secs: Option<u64>,
    /// How many more enrolments it allows; any number if `None`.
    pub uses_left: Option<u32>,
}

/// A join token as an operator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The first 8 characters of its secret (what `revoke` takes).
    pub id: String,
    /// Its limits now.
    pub policy: TokenPolicy,
}

/// Why a join token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// No such token (never made, or revoked).
    #[error("unknown join token")]
    Unknown,
    /// Past its expiry.
    #[error("join token expired")]
    Expired,
    /// No use left.
    #[error("join token used up")]
    UsedUp,
}

/// A token on file: `secret [expires-unix-secs|-] [uses-left|-]` a line (a line with the
/// secret alone, as earlier versions wrote, has no limits).
struct StoredToken {
    secret: String,
    policy: TokenPolicy,
}

fn read_tokens(dir: &Path) -> Vec<StoredToken> {
    std::fs::read_to_string(dir.join(JOIN_TOKENS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let secret = f.next()?.to_string();
            let num = |s: Option<&str>| s.filter(|s| *s != "-").and_then(|s| s.parse().ok());
            let expires_unix_secs = num(f.next());
            let uses_left = num(f.next()).map(|n: u64| n.min(u64::from(u32::MAX)) as u32);
            Some(StoredToken {
                secret,
                policy: TokenPolicy {
                    expires_unix_secs,
                    uses_left,
                },
            })
        })
        .collect()
}

fn write_tokens(dir: &Path, list: &[StoredToken]) -> Result<(), IdentityError> {
    let show = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let text: String = list
        .iter()
        .map(|t| {
            format!(
                "{} {} {}\n",
                t.secret,
                show(t.policy.expires_unix_secs),
                show(t.policy.uses_left.map(u64::from))
            )
        })
        .collect();
    // Written whole to a temporary file and renamed over the list, so a reader never sees
    // half a list.
    let path = dir.join(JOIN_TOKENS_FILE);
    let tmp = dir.join(format!("{JOIN_TOKENS_FILE}.tmp"));
    write_file(&tmp, &text, true)?;
    std::fs::rename(&tmp, &path).map_err(|source| IdentityError::Io { path, source })
}

/// Compares two byte strings in time that depends on their lengths only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn join_tokens_expire_run_out_of_uses_and_can_be_revoked() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = Ca::init(&dir.path().join("ca"), "test").expect("init");
        let now = 1_000_000;
        let twice = ca
            .new_join_token_with(TokenPolicy {
                expires_unix_secs: None,
                uses_left: Some(2),
            })
            .expect("token");
        let until = ca
            .new_join_token_with(TokenPolicy {
                expires_unix_secs: Some(now + 60),
                uses_left: None,
            })
            .expect("token");
        let forever = ca.new_join_token().expect("token");
        // A second handle on the same directory (the server, while the CLI adds tokens)
        // sees them all.
        let server = Ca::load(&dir.path().join("ca")).expect("load");
        assert_eq!(server.spend_join_token(&twice.secret, now), Ok(()));
        assert_eq!(server.spend_join_token(&twice.secret, now), Ok(()));
        assert_eq!(
            server.spend_join_token(&twice.secret, now),
            Err(TokenRefusal::UsedUp)
        );
        assert_eq!(server.spend_join_token(&until.secret, now + 59), Ok(()));
        assert_eq!(
            server.spend_join_token(&until.secret, now + 60),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(server.spend_join_token(&forever.secret, now), Ok(()));
        assert_eq!(
            server.spend_join_token(&"0".repeat(32), now),
            Err(TokenRefusal::Unknown)
        );
        let listed = ca.join_tokens();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].policy.uses_left, Some(0));
        assert_eq!(listed[0].id, twice.secret[..8]);
        // Revoked: refused at once by the server's handle; a short id is not enough.
        assert!(!ca.revoke_join_token("abc").expect("revoke"));
        assert!(ca.revoke_join_token(&forever.secret[..8]).expect("revoke"));
        assert_eq!(
            server.spend_join_token(&forever.secret, now),
            Err(TokenRefusal::Unknown)
        );
        // A list written by an earlier version (secrets alone) has no limits.
        std::fs::write(
            dir.path().join("ca").join(JOIN_TOKENS_FILE),
            "abcdef0123456789\n",
        )
        .expect("write");
        assert_eq!(server.spend_join_token("abcdef0123456789", now), Ok(()));
        assert_eq!(server.spend_join_token("abcdef0123456789", now), Ok(()));
    }
}
