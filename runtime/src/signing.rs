//! The server's signing key, and what endpoints check with it.
//!
//! Everything that makes an endpoint read, run or change anything (a question, the sensor
//! configuration with its script sensors, and the actions to come) is signed by the server
//! with one ed25519 key, kept beside the CA (`server-signing.key`). An endpoint learns the
//! public half at enrolment, together with the server's node id, and keeps both in its state
//! directory (`server.trust`): that pin, not the certificate of whoever it happens to be
//! talking to, decides what it acts on.
//!
//! A signature binds a purpose (so a signed question can never pass for a configuration),
//! an id, the issue time and the expiry, and the body's bytes. An endpoint refuses what does
//! not verify, what has expired (with [`CLOCK_SKEW`] of grace) and what claims to be issued in
//! the future.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{IdentityError, NodeId, create_dir, pem as to_pem, write_file};

/// The file in a CA directory that holds the server's signing key.
pub const SIGNING_KEY_FILE: &str = "server-signing.key";
/// The file in an endpoint's state directory that pins the server.
pub const TRUST_FILE: &str = "server.trust";
/// How far the server's and an endpoint's clocks may disagree.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Length of a signature.
pub const SIGNATURE_LEN: usize = 64;
/// How many verified signatures an endpoint remembers (see [`ServerTrust`]).
const MEMO_ENTRIES: usize = 64;

/// What a signature is for: part of the signed bytes, so one kind cannot pass for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// A question travelling the rings (or handed over late).
    Question,
    /// The sensor configuration: script sensors and the patch baseline.
    SensorConfig,
    /// An action: what an endpoint runs, on which machines, until when.
    Action,
    /// A chaos fault for one endpoint that allows them (`--allow-chaos`).
    Chaos,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Question => b"rollcall/question/v1",
            Purpose::SensorConfig => b"rollcall/sensor-config/v1",
            Purpose::Action => b"rollcall/action/v1",
            Purpose::Chaos => b"rollcall/chaos/v1",
        }
    }
}

/// When a signed item was issued and until when it may be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Issue time, milliseconds since the Unix epoch (server clock).
    pub issued_unix_ms: u64,
    /// Expiry, milliseconds since the Unix epoch (server clock).
    pub expires_unix_ms: u64,
}

impl Stamp {
    /// Issued now, valid for `ttl`.
    pub fn now_for(ttl: Duration) -> Stamp {
        let now = unix_ms();
        Stamp {
            issued_unix_ms: now,
            expires_unix_ms: now.saturating_add(ttl.as_millis() as u64),
        }
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The bytes a signature covers.
fn message(purpose: Purpose, id: u64, stamp: Stamp, body: &[u8]) -> Vec<u8> {
    let tag = purpose.tag();
    let mut m = Vec::with_capacity(tag.len() + 1 + 24 + body.len());
    m.extend_from_slice(tag);
    m.push(0);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&stamp.issued_unix_ms.to_be_bytes());
    m.extend_from_slice(&stamp.expires_unix_ms.to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// The server's public signing key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerKey(pub [u8; 32]);

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerKey({self})")
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for ServerKey {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = hex::decode(s.trim())
            .map_err(|e| IdentityError::NotRollcall(format!("signing key: {e}")))?;
        let k: [u8; 32] = v.try_into().map_err(|_| {
            IdentityError::NotRollcall("signing key: not 32 bytes (64 hex digits)".into())
        })?;
        Ok(ServerKey(k))
    }
}

/// The server's private signing key.
pub struct ServerSigner {
    pair: Ed25519KeyPair,
    /// The secret machines' answer keys derive from (kept beside the signing key).
    answers: crate::answer_tags::AnswerSecret,
}

impl fmt::Debug for ServerSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerSigner({})", self.public_key())
    }
}

impl ServerSigner {
    /// A new key, kept in memory (simulated fleets and tests).
    pub fn generate() -> Result<ServerSigner, IdentityError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::NotRollcall("could not generate a signing key".into()))?;
        ServerSigner::from_pkcs8(doc.as_ref(), crate::answer_tags::AnswerSecret::generate()?)
    }

    fn from_pkcs8(
        der: &[u8],
        answers: crate::answer_tags::AnswerSecret,
    ) -> Result<ServerSigner, IdentityError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|e| IdentityError::NotRollcall(format!("signing key: {e}")))?;
        Ok(ServerSigner { pair, answers })
    }

    /// The secret machines' answer keys derive from.
    pub fn answers(&self) -> &crate::answer_tags::AnswerSecret {
        &self.answers
    }

    /// The key in `dir` ([`SIGNING_KEY_FILE`], PEM) and the answer secret beside it
    /// ([`ANSWER_SECRET_FILE`](crate::answer_tags::ANSWER_SECRET_FILE)), made there on
    /// first use.
    pub fn load_or_create(dir: &Path) -> Result<ServerSigner, IdentityError> {
        let answers = crate::answer_tags::AnswerSecret::load_or_create(dir)?;
        let path = dir.join(SIGNING_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let p = pem::parse(text.as_bytes()).map_err(|e| IdentityError::Pem {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                ServerSigner::from_pkcs8(p.contents(), answers)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_dir(dir)?;
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| {
                    IdentityError::NotRollcall("could not generate a signing key".into())
                })?;
                write_file(&path, &to_pem("PRIVATE KEY", doc.as_ref()), true)?;
                ServerSigner::from_pkcs8(doc.as_ref(), answers)
            }
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// The public half, which endpoints pin.
    pub fn public_key(&self) -> ServerKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        ServerKey(k)
    }

    /// Signs `body` for `purpose`, binding `id` and `stamp`.
    pub fn sign(&self, purpose: Purpose, id: u64, stamp: Stamp, body: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&message(purpose, id, stamp, body))
            .as_ref()
            .to_vec()
    }
}

/// Why a signed item was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature is not the server's over these bytes.
    #[error("not signed by the server")]
    Invalid,
    /// It expired (beyond the allowed clock skew).
    #[error("expired {ago_s} s ago")]
    Expired {
        /// Seconds since it expired.
        ago_s: u64,
    },
    /// It claims an issue time in the future (beyond the allowed clock skew).
    #[error("issued {ahead_s} s in the future")]
    FromTheFuture {
        /// Seconds ahead of this machine's clock.
        ahead_s: u64,
    },
}

/// What an endpoint trusts: the server's node id and public signing key, pinned at enrolment.
///
/// Verification is memoised: the last [`MEMO_ENTRIES`] signatures that verified are kept with
/// what they covered (the body itself, or its SHA-256 when large), and the same signature over
/// the same bytes is not verified again. A real endpoint verifies each question once either way (the memo only
/// spares it re-asks); a simulated fleet shares one `ServerTrust` among all its endpoints in
/// one process, so a question is verified once per process there, not once per simulated
/// machine. Expiry is checked on every call.
pub struct ServerTrust {
    /// The server's node id (`None`: any server-role certificate of the CA, for fleets whose
    /// server is made afresh in the same process).
    pub server_id: Option<NodeId>,
    /// The server's public signing key.
    pub key: ServerKey,
    memo: RwLock<Memo>,
    /// This trust's number among all made in the process (for [`LAST_HIT`]).
    instance: u64,
}

/// Numbers each [`ServerTrust`] made in this process.
static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Signatures that verified, with exactly what they covered.
#[derive(Default)]
struct Memo {
    entries: Vec<Arc<Verified>>,
    /// The slot the next entry takes once full (the oldest).
    next: usize,
    /// The slot of the newest entry (looked at first: the question of the moment).
    newest: usize,
}

struct Verified {
    signature: Vec<u8>,
    purpose: Purpose,
    id: u64,
    stamp: Stamp,
    body: MemoBody,
}

/// A body kept whole when small (compared byte for byte, no hashing on a hit), else its
/// SHA-256.
enum MemoBody {
    Bytes(Vec<u8>),
    Digest([u8; 32]),
}

thread_local! {
    /// The item this thread last found in a memo, and whose memo (a `ServerTrust`'s
    /// instance number, never reused: an item is only ever taken as verified by the trust
    /// that verified it).
    static LAST_HIT: std::cell::RefCell<Option<(u64, Arc<Verified>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Largest body the memo keeps whole.
const MEMO_BODY_BYTES: usize = 16 * 1024;

impl MemoBody {
    fn of(body: &[u8]) -> MemoBody {
        if body.len() <= MEMO_BODY_BYTES {
            MemoBody::Bytes(body.to_vec())
        } else {
            MemoBody::Digest(Sha256::digest(body).into())
        }
    }

    fn is(&self, body: &[u8]) -> bool {
        match self {
            MemoBody::Bytes(b) => b.as_slice() == body,
            MemoBody::Digest(d) => {
                body.len() > MEMO_BODY_BYTES && *d == <[u8; 32]>::from(Sha256::digest(body))
            }
        }
    }
}

impl Verified {
    fn covers(&self, purpose: Purpose, id: u64, stamp: Stamp, body: &[u8], sig: &[u8]) -> bool {
        self.signature == sig
            && self.purpose == purpose
            && self.id == id
            && self.stamp == stamp
            && self.body.is(body)
    }
}

impl fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerTrust({:?}, {})", self.server_id, self.key)
    }
}

#[derive(Serialize, Deserialize)]
struct TrustFile {
    server_id: String,
    signing_key: String,
}

impl ServerTrust {
    /// Trusts `key`, and the server named `server_id` if given.
    pub fn new(server_id: Option<NodeId>, key: ServerKey) -> ServerTrust {
        ServerTrust {
            server_id,
            key,
            memo: RwLock::new(Memo::default()),
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Writes the pin into `dir` ([`TRUST_FILE`]).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        create_dir(dir)?;
        let f = TrustFile {
            server_id: self
                .server_id
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_default(),
            signing_key: self.key.to_string(),
        };
        let text = toml::to_string(&f).map_err(|e| IdentityError::NotRollcall(e.to_string()))?;
        write_file(&dir.join(TRUST_FILE), &text, false)
    }

    /// Reads the pin kept in `dir`.
    pub fn load(dir: &Path) -> Result<ServerTrust, IdentityError> {
        let path = dir.join(TRUST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| IdentityError::Io {
            path: path.clone(),
            source,
        })?;
        let f: TrustFile = toml::from_str(&text).map_err(|e| IdentityError::Pem {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let id = (!f.server_id.is_empty()).then(|| NodeId::new(f.server_id));
        Ok(ServerTrust::new(id, f.signing_key.parse()?))
    }

    /// Whether `dir` holds a pin.
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(TRUST_FILE).exists()
    }

    /// Checks `signature` over `body` for `purpose`, `id` and `stamp`, and that the stamp is
    /// current at `now_unix_ms`.
    pub fn verify(
        &self,
        purpose: Purpose,
        id: u64,
        stamp: Stamp,
        body: &[u8],
        signature: &[u8],
        now_unix_ms: u64,
    ) -> Result<(), SignatureError> {
        let skew = CLOCK_SKEW.as_millis() as u64;
        if stamp.issued_unix_ms > now_unix_ms.saturating_add(skew) {
            return Err(SignatureError::FromTheFuture {
                ahead_s: (stamp.issued_unix_ms - now_unix_ms) / 1000,
            });
        }
        if now_unix_ms > stamp.expires_unix_ms.saturating_add(skew) {
            return Err(SignatureError::Expired {
                ago_s: (now_unix_ms - stamp.expires_unix_ms) / 1000,
            });
        }
        if signature.len() != SIGNATURE_LEN {
            return Err(SignatureError::Invalid);
        }
        // This thread's last hit first, without a lock: a simulated fleet's members on one
        // worker thread all check the question of the moment.
        let me = self.instance;
        let hit = LAST_HIT.with(|last| {
            last.borrow().as_ref().is_some_and(|(trust, v)| {
                *trust == me && v.covers(purpose, id, stamp, body, signature)
            })
        });
        if hit {
            return Ok(());
        }
        {
            let memo = crate::sync::read(&self.memo);
            let n = memo.entries.len();
            // Newest first, for the same reason.
            if let Some(v) = (0..n)
                .map(|k| &memo.entries[(memo.newest + n - k) % n])
                .find(|v| v.covers(purpose, id, stamp, body, signature))
            {
                let v = v.clone();
                LAST_HIT.with(|last| *last.borrow_mut() = Some((me, v)));
                return Ok(());
            }
        }
        let msg = message(purpose, id, stamp, body);
        UnparsedPublicKey::new(&ED25519, &self.key.0)
            .verify(&msg, signature)
            .map_err(|_| SignatureError::Invalid)?;
        let entry = Arc::new(Verified {
            signature: signature.to_vec(),
            purpose,
            id,
            stamp,
            body: MemoBody::of(body),
        });
        let mut memo = crate::sync::write(&self.memo);
        let slot = if memo.entries.len() < MEMO_ENTRIES {
            memo.entries.push(entry);
            memo.entries.len() - 1
        } else {
            let i = memo.next;
            memo.entries[i] = entry;
            memo.next = (i + 1) % MEMO_ENTRIES;
            i
        };
        memo.newest = slot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(now: u64) -> Stamp {
        Stamp {
            issued_unix_ms: now,
            expires_unix_ms: now + 60_000,
        }
    }

    #[test]
    fn a_signature_binds_purpose_id_stamp_and_body() {
        let signer = ServerSigner::generate().expect("key");
        let trust = ServerTrust::new(None, signer.public_key());
        let now = 1_800_000_000_000;
        let s = stamp(now);
        let sig = signer.sign(Purpose::Question, 7, s, b"body");
        assert_eq!(
            trust.verify(Purpose::Question, 7, s, b"body", &sig, now),
            Ok(())
        );
        // Twice: the memo answers the same way.
        assert_eq!(
            trust.verify(Purpose::Question, 7, s, b"body", &sig, now),
            Ok(())
        );
        let bad = SignatureError::Invalid;
        assert_eq!(
            trust.verify(Purpose::SensorConfig, 7, s, b"body", &sig, now),
            Err(bad.clone())
        );
        assert_eq!(
            trust.verify(Purpose::Question, 8, s, b"body", &sig, now),
            Err(bad.clone())
        );
        let longer = Stamp {
            expires_unix_ms: s.expires_unix_ms + 1,
            ..s
        };
        assert_eq!(
            trust.verify(Purpose::Question, 7, longer, b"body", &sig, now),
            Err(bad.clone())
        );
        assert_eq!(
            trust.verify(Purpose::Question, 7, s, b"bodY", &sig, now),
            Err(bad.clone())
        );
        assert_eq!(
            trust.verify(Purpose::Question, 7, s, b"body", &sig[..63], now),
            Err(bad.clone())
        );
        let other = ServerSigner::generate().expect("key");
        let forged = other.sign(Purpose::Question, 7, s, b"body");
        assert_eq!(
            trust.verify(Purpose::Question, 7, s, b"body", &forged, now),
            Err(bad)
        );
    }

    #[test]
    fn the_memo_never_lets_through_what_was_not_signed() {
        let signer = ServerSigner::generate().expect("key");
        let trust = ServerTrust::new(None, signer.public_key());
        let now = 1_800_000_000_000;
        let s = stamp(now);
        // Many items, more than the memo holds, each checked twice.
        for id in 0..(MEMO_ENTRIES as u64 + 10) {
            let body = id.to_be_bytes();
            let sig = signer.sign(Purpose::Question, id, s, &body);
            for _ in 0..2 {
                assert_eq!(
                    trust.verify(Purpose::Question, id, s, &body, &sig, now),
                    Ok(())
                );
            }
            let mut other = body;
            other[0] ^= 1;
            assert_eq!(
                trust.verify(Purpose::Question, id, s, &other, &sig, now),
                Err(SignatureError::Invalid)
            );
        }
        // A large body is remembered by its digest.
        let big = vec![7u8; MEMO_BODY_BYTES + 1];
        let sig = signer.sign(Purpose::SensorConfig, 0, s, &big);
        for _ in 0..2 {
            assert_eq!(
                trust.verify(Purpose::SensorConfig, 0, s, &big, &sig, now),
                Ok(())
            );
        }
        let mut changed = big.clone();
        changed[MEMO_BODY_BYTES] = 8;
        assert_eq!(
            trust.verify(Purpose::SensorConfig, 0, s, &changed, &sig, now),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            trust.verify(
                Purpose::SensorConfig,
                0,
                s,
                &big[..MEMO_BODY_BYTES],
                &sig,
                now
            ),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn what_one_trust_verified_is_never_taken_as_verified_by_another() {
        let now = 1_800_000_000_000;
        let s = stamp(now);
        let a = ServerSigner::generate().expect("key");
        let item = a.sign(Purpose::Question, 1, s, b"q");
        for _ in 0..3 {
            let trusts_a = ServerTrust::new(None, a.public_key());
            assert_eq!(
                trusts_a.verify(Purpose::Question, 1, s, b"q", &item, now),
                Ok(())
            );
            assert_eq!(
                trusts_a.verify(Purpose::Question, 1, s, b"q", &item, now),
                Ok(())
            );
            drop(trusts_a);
            // Made right after, perhaps where the other one was: its own memo, its own key.
            let trusts_b =
                ServerTrust::new(None, ServerSigner::generate().expect("key").public_key());
            assert_eq!(
                trusts_b.verify(Purpose::Question, 1, s, b"q", &item, now),
                Err(SignatureError::Invalid)
            );
        }
    }

    #[test]
    fn expired_and_future_items_are_refused_beyond_the_clock_skew() {
        let signer = ServerSigner::generate().expect("key");
        let trust = ServerTrust::new(None, signer.public_key());
        let now = 1_800_000_000_000;
        let s = stamp(now);
        let sig = signer.sign(Purpose::Question, 1, s, b"q");
        let skew = CLOCK_SKEW.as_millis() as u64;
        let at = |t| trust.verify(Purpose::Question, 1, s, b"q", &sig, t);
        assert_eq!(at(s.expires_unix_ms + skew), Ok(()));
        assert_eq!(
            at(s.expires_unix_ms + skew + 1000),
            Err(SignatureError::Expired {
                ago_s: skew / 1000 + 1
            })
        );
        assert_eq!(at(now - skew), Ok(()));
        assert_eq!(
            at(now - skew - 2000),
            Err(SignatureError::FromTheFuture {
                ahead_s: skew / 1000 + 2
            })
        );
    }

    #[test]
    fn the_key_and_the_pin_survive_a_restart() {
        let dir = tempfile::tempdir().expect("ok");
        let a = ServerSigner::load_or_create(dir.path()).expect("ok");
        let b = ServerSigner::load_or_create(dir.path()).expect("ok");
        assert_eq!(a.public_key(), b.public_key());
        let trust = ServerTrust::new(Some(NodeId::new("0123456789abcdef")), a.public_key());
        trust.save(dir.path()).expect("ok");
        let back = ServerTrust::load(dir.path()).expect("ok");
        assert_eq!(back.server_id, trust.server_id);
        assert_eq!(back.key, trust.key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the signing key is private");
        }
    }
}
