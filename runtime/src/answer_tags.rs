//! Tamper-evident answers: each machine tags its own answer with a key only it and the server
//! know; hops combine the tags of each answer group by XOR as they merge; the server
//! recomputes the tags of every machine a group claims and counts the group only if they
//! match.
//!
//! A machine's key is `HMAC-SHA256(answer secret, "rollcall/answer-key/v1" ‖ node id)`, the
//! answer secret kept beside the CA (`answer-mac.key`); the server hands each machine its key
//! in every registration reply, on the machine's own authenticated connection. A tag is the
//! first 16 bytes of `HMAC-SHA256(machine key, question id ‖ encoded answer)`. The XOR of
//! such tags is an aggregate MAC: without a machine's key nobody can add, change or move
//! that machine's answer in a group without the group's tag failing; dropping a whole group
//! is possible, and the machines it held are then simply missing, and asked again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::identity::{IdentityError, create_dir, write_file};

/// The file in a CA directory that holds the answer secret (hex).
pub const ANSWER_SECRET_FILE: &str = "answer-mac.key";
/// Length of a tag.
pub const TAG_LEN: usize = 16;
/// A tag, or the XOR of several.
pub type Tag = [u8; TAG_LEN];
/// Keys the server keeps at most at once (then starts over: they are derived again).
const KEYS_KEPT: usize = 1 << 20;

/// XORs `b` into `a`.
pub fn xor(a: &mut Tag, b: &Tag) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// A machine's tag over its answer to question `question`.
fn tag_with(key: &hmac::Key, question: u64, answer: &[u8]) -> Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&question.to_be_bytes());
    ctx.update(answer);
    let full = ctx.sign();
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&full.as_ref()[..TAG_LEN]);
    t
}

/// A machine's own answer key (handed over by the server at registration).
pub struct AnswerKey(hmac::Key);

impl std::fmt::Debug for AnswerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerKey(…)")
    }
}

impl AnswerKey {
    /// From the 32 bytes the server handed over.
    pub fn new(bytes: &[u8]) -> AnswerKey {
        AnswerKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// This machine's tag over its `answer` to `question`.
    pub fn tag(&self, question: u64, answer: &[u8]) -> Tag {
        tag_with(&self.0, question, answer)
    }
}

/// The server's answer secret, and the machine keys derived from it.
pub struct AnswerSecret {
    secret: hmac::Key,
    keys: RwLock<HashMap<String, hmac::Key>>,
}

impl std::fmt::Debug for AnswerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerSecret(…)")
    }
}

impl AnswerSecret {
    fn from_bytes(b: &[u8]) -> AnswerSecret {
        AnswerSecret {
            secret: hmac::Key::new(hmac::HMAC_SHA256, b),
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// A new secret, kept in memory (simulated fleets and tests).
    pub fn generate() -> Result<AnswerSecret, IdentityError> {
        let mut b = [0u8; 32];
        SystemRandom::new().fill(&mut b).map_err(|_| {
            IdentityError::NotRollcall("no randomness for the answer secret".into())
        })?;
        Ok(AnswerSecret::from_bytes(&b))
    }

    /// The secret in `dir` ([`ANSWER_SECRET_FILE`]), made there on first use.
    pub fn load_or_create(dir: &Path) -> Result<AnswerSecret, IdentityError> {
        let path = dir.join(ANSWER_SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let b = hex::decode(text.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| IdentityError::Pem {
                        path: path.clone(),
                        reason: "not 64 hex digits".into(),
                    })?;
                Ok(AnswerSecret::from_bytes(&b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_dir(dir)?;
                let mut b = [0u8; 32];
                SystemRandom::new().fill(&mut b).map_err(|_| {
                    IdentityError::NotRollcall("no randomness for the answer secret".into())
                })?;
                write_file(&path, &hex::encode(b), true)?;
                Ok(AnswerSecret::from_bytes(&b))
            }
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// Machine `id`'s key, as handed to it.
    pub fn key_for(&self, id: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.secret);
        ctx.update(b"rollcall/answer-key/v1\0");
        ctx.update(id.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(ctx.sign().as_ref());
        k
    }

    /// The tag machine `id` gives its `answer` to `question`.
    pub fn tag(&self, id: &str, question: u64, answer: &[u8]) -> Tag {
        if let Some(k) = crate::sync::read(&self.keys).get(id) {
            return tag_with(k, question, answer);
        }
        let k = hmac::Key::new(hmac::HMAC_SHA256, &self.key_for(id));
        let t = tag_with(&k, question, answer);
        let mut keys = crate::sync::write(&self.keys);
        if keys.len() >= KEYS_KEPT {
            keys.clear();
        }
        keys.insert(id.to_string(), k);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_tag_verifies_only_with_every_member_s_own_answer() {
        let s = AnswerSecret::generate().expect("secret");
        let (a, b) = (
            AnswerKey::new(&s.key_for("aaaa")),
            AnswerKey::new(&s.key_for("bbbb")),
        );
        let answer = b"Debian";
        let mut group = a.tag(7, answer);
        xor(&mut group, &b.tag(7, answer));
        let mut expected = s.tag("aaaa", 7, answer);
        xor(&mut expected, &s.tag("bbbb", 7, answer));
        assert_eq!(group, expected);
        // Another question, another answer, another machine: another tag.
        assert_ne!(a.tag(8, answer), s.tag("aaaa", 7, answer));
        assert_ne!(a.tag(7, b"Ubuntu"), s.tag("aaaa", 7, answer));
        assert_ne!(a.tag(7, answer), s.tag("bbbb", 7, answer));
        // The secret survives a restart.
        let dir = tempfile::tempdir().expect("tmp");
        let one = AnswerSecret::load_or_create(dir.path()).expect("made");
        let two = AnswerSecret::load_or_create(dir.path()).expect("loaded");
        assert_eq!(one.key_for("x"), two.key_for("x"));
    }
}
