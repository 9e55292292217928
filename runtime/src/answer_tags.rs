//! Tamper-evident answers: each machine tags its own answer with a key only it and the server
//! know; hops combine the tags of each answer group by XOR as they merge; the server
//! recomputes the tags of every machine a group claims and counts the group only if they
//! match.
//!
//! The MAC is SipHash-2-4 with its 128-bit output (a keyed pseudo-random function made for
//! short messages: a few hundred instructions for an answer, where HMAC-SHA256 cost about
//! 4,400 on this machine's SHA-256, on every machine and again at the server for every
//! machine of every question). A machine's key is `SipHash128(answer secret, node id)`, the
//! 128-bit answer secret kept beside the CA (`answer-mac.key`); the server hands each machine
//! its key in every registration reply, on the machine's own authenticated connection. A tag
//! is `SipHash128(machine key, question id ‖ encoded answer)`. The XOR of such tags is an
//! aggregate MAC: without a machine's key nobody can add, change or move that machine's
//! answer in a group without the group's tag failing (a guess succeeds with probability
//! 2⁻¹²⁸); dropping a whole group is possible, and the machines it held are then simply
//! missing, and asked again.

use std::hash::Hasher;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};
use siphasher::sip128::{Hasher128, SipHasher24};

use crate::identity::{IdentityError, create_dir, write_file};

/// The file in a CA directory that holds the answer secret (hex).
pub const ANSWER_SECRET_FILE: &str = "answer-mac.key";
/// Length of a tag.
pub const TAG_LEN: usize = 16;
/// A tag, or the XOR of several.
pub type Tag = [u8; TAG_LEN];

/// XORs `b` into `a`.
pub fn xor(a: &mut Tag, b: &Tag) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// SipHash-2-4's 128-bit output under `key` over `parts`.
fn sip128(key: &[u8; 16], parts: &[&[u8]]) -> Tag {
    let mut h = SipHasher24::new_with_key(key);
    for p in parts {
        h.write(p);
    }
    h.finish128().as_bytes()
}

/// A machine's own answer key (handed over by the server at registration).
pub struct AnswerKey([u8; 16]);

impl std::fmt::Debug for AnswerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerKey(…)")
    }
}

impl AnswerKey {
    /// From the bytes the server handed over (`None` unless 16).
    pub fn new(bytes: &[u8]) -> Option<AnswerKey> {
        Some(AnswerKey(bytes.try_into().ok()?))
    }

    /// This machine's tag over its `answer` to `question`.
    pub fn tag(&self, question: u64, answer: &[u8]) -> Tag {
        sip128(&self.0, &[&question.to_be_bytes(), answer])
    }
}

/// The server's answer secret, which machine keys derive from.
pub struct AnswerSecret([u8; 16]);

impl std::fmt::Debug for AnswerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerSecret(…)")
    }
}

impl AnswerSecret {
    fn random() -> Result<[u8; 16], IdentityError> {
        let mut b = [0u8; 16];
        SystemRandom::new().fill(&mut b).map_err(|_| {
            IdentityError::NotRollcall("no randomness for the answer secret".into())
        })?;
        Ok(b)
    }

    /// A new secret, kept in memory (simulated fleets and tests).
    pub fn generate() -> Result<AnswerSecret, IdentityError> {
        Ok(AnswerSecret(AnswerSecret::random()?))
    }

    /// The secret in `dir` ([`ANSWER_SECRET_FILE`], 32 hex digits), made there on first use.
    pub fn load_or_create(dir: &Path) -> Result<AnswerSecret, IdentityError> {
        let path = dir.join(ANSWER_SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let b: [u8; 16] = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| IdentityError::Pem {
                        path: path.clone(),
                        reason: "not 32 hex digits".into(),
                    })?;
                Ok(AnswerSecret(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_dir(dir)?;
                let b = AnswerSecret::random()?;
                write_file(&path, &hex::encode(b), true)?;
                Ok(AnswerSecret(b))
            }
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// Machine `id`'s key, as handed to it.
    pub fn key_for(&self, id: &str) -> [u8; 16] {
        sip128(&self.0, &[b"rollcall/answer-key/v1\0", id.as_bytes()])
    }

    /// The tag machine `id` gives its `answer` to `question`.
    pub fn tag(&self, id: &str, question: u64, answer: &[u8]) -> Tag {
        sip128(&self.key_for(id), &[&question.to_be_bytes(), answer])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_tag_verifies_only_with_every_member_s_own_answer() {
        let s = AnswerSecret::generate().expect("secret");
        let (a, b) = (
            AnswerKey::new(&s.key_for("aaaa")).expect("16 bytes"),
            AnswerKey::new(&s.key_for("bbbb")).expect("16 bytes"),
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
