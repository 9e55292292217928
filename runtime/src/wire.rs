//! The wire envelope and its framing.
//!
//! Every message between nodes is one [`Envelope`], encoded with rmp-serde and sent as one
//! frame: a 4-byte big-endian length followed by that many bytes. One QUIC stream carries one
//! request (a cast, or a call and its reply). A frame longer than the limit is refused before
//! any of it is buffered; bytes that are not an envelope, or an envelope of another wire
//! version, are refused with their own error so that each cause is counted.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The wire version this build speaks.
/// 2: a chain's partial answer travels as its checked encoding (bytes), not as a struct.
/// 3: questions carry the server's signature and stamp; answer groups carry their tags.
pub const WIRE_VERSION: u16 = 3;

/// Default hard limit on one frame.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// What an envelope is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvelopeKind {
    /// One-way message.
    Cast,
    /// A request that expects a [`EnvelopeKind::Reply`] with the same id.
    Call(u64),
    /// The answer to a call.
    Reply(u64),
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Wire version; see [`WIRE_VERSION`].
    pub version: u16,
    /// The sender's node id (checked against its certificate).
    pub from: String,
    /// The name of the actor it is for on the receiving node.
    pub to: String,
    /// Cast, call or reply.
    pub kind: EnvelopeKind,
    /// The actor's own message, rmp-serde encoded.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// An envelope read in place: its strings and body borrow the frame's bytes, so checking and
/// routing a message allocates nothing. Same wire shape as [`Envelope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct EnvelopeRef<'a> {
    /// Wire version; see [`WIRE_VERSION`].
    pub version: u16,
    /// The sender's node id.
    pub from: &'a str,
    /// The name of the actor it is for.
    pub to: &'a str,
    /// Cast, call or reply.
    pub kind: EnvelopeKind,
    /// The actor's own message.
    #[serde(borrow, with = "serde_bytes")]
    pub body: &'a [u8],
}

/// An envelope to encode, from borrowed parts (no copy of the sender, destination or body
/// before they are written). Same wire shape as [`Envelope`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EnvelopeOut<'a> {
    /// Wire version; see [`WIRE_VERSION`].
    pub version: u16,
    /// The sender's node id.
    pub from: &'a str,
    /// The name of the actor it is for.
    pub to: &'a str,
    /// Cast, call or reply.
    pub kind: EnvelopeKind,
    /// The actor's own message, rmp-serde encoded.
    #[serde(with = "serde_bytes")]
    pub body: &'a [u8],
}

impl<'a> From<&'a Envelope> for EnvelopeOut<'a> {
    fn from(e: &'a Envelope) -> Self {
        EnvelopeOut {
            version: e.version,
            from: &e.from,
            to: &e.to,
            kind: e.kind,
            body: &e.body,
        }
    }
}

/// Why a frame or envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame is longer than the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not an envelope (or not the message the actor expects).
    #[error("undecodable frame: {0:?}")]
    Garbage(String),
    /// An envelope of a wire version we do not speak.
    #[error("wire version {got} not supported (this node speaks {WIRE_VERSION})")]
    UnknownVersion {
        /// The version the sender used.
        got: u16,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The envelope claims a sender other than the authenticated peer.
    #[error("envelope claims to be from {claimed:?} but the connection is from {actual}")]
    Spoofed {
        /// What the envelope said.
        claimed: String,
        /// What the certificate says.
        actual: String,
    },
    /// No local actor has that name.
    #[error("no actor named {0:?} on this node")]
    UnknownDestination(String),
    /// The sender's certificate role may not send to that destination.
    #[error("a peer with the {role} role may not send to {to:?}")]
    Forbidden {
        /// The sender's role.
        role: String,
        /// The destination.
        to: String,
    },
    /// An envelope of the wrong kind for where it arrived.
    #[error("protocol violation: {0:?}")]
    Protocol(String),
    /// The sender's certificate has been revoked.
    #[error("the certificate of {0:?} is revoked")]
    Revoked(String),
    /// The frame did not arrive whole in time.
    #[error("frame not received whole within {ms} ms")]
    TooSlow {
        /// The limit.
        ms: u64,
    },
    /// The connection already holds its budget of partial frames.
    #[error("the connection already holds {budget} bytes of partial frames")]
    OverBudget {
        /// The budget.
        budget: usize,
    },
}

/// The largest encoding buffer a thread keeps for its next frame. A package chunk's frame
/// (64 KiB and a header) grows the buffer to 128 KiB: were it dropped after each, every
/// chunk served would allocate and copy its way up to that size again, twice (body, frame).
const KEEP_BUFFER: usize = 256 * 1024;

/// Encodes an envelope as one frame (length prefix included).
pub fn encode_frame(env: &Envelope, max: usize) -> Result<Bytes, WireError> {
    encode_frame_out(&EnvelopeOut::from(env), max)
}

/// [`encode_frame`] from borrowed parts.
pub fn encode_frame_out(env: &EnvelopeOut<'_>, max: usize) -> Result<Bytes, WireError> {
    thread_local! {
        static FRAME: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // Encoded into a per-thread buffer after a length placeholder, then copied once into a
    // frame of exactly its size: one allocation per frame (a growable buffer frozen into
    // `Bytes` costs a second, for the shared header of a buffer with room to spare).
    let mut buf = FRAME.take();
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    let r = rmp_serde::encode::write(&mut buf, env)
        .map_err(|e| WireError::Garbage(e.to_string()))
        .and_then(|()| {
            let len = buf.len() - 4;
            if len > max {
                return Err(WireError::Oversized { len, max });
            }
            buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
            Ok(Bytes::copy_from_slice(&buf))
        });
    // A rare large frame is not kept for the life of the thread.
    if buf.capacity() <= KEEP_BUFFER {
        FRAME.set(buf);
    }
    r
}

/// Prefixes `payload` with its length, refusing payloads over `max`.
pub fn frame(payload: &[u8], max: usize) -> Result<Bytes, WireError> {
    if payload.len() > max {
        return Err(WireError::Oversized {
            len: payload.len(),
            max,
        });
    }
    let mut out = BytesMut::with_capacity(4 + payload.len());
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    Ok(out.freeze())
}

/// Decodes a frame's payload (without its length prefix) into an envelope, checking the
/// wire version before anything else so a newer peer gets a precise error.
pub fn decode_envelope(payload: &[u8]) -> Result<Envelope, WireError> {
    let e = decode_envelope_ref(payload)?;
    Ok(Envelope {
        version: e.version,
        from: e.from.to_string(),
        to: e.to.to_string(),
        kind: e.kind,
        body: e.body.to_vec(),
    })
}

/// [`decode_envelope`] in place: nothing is copied out of `payload`.
pub fn decode_envelope_ref(payload: &[u8]) -> Result<EnvelopeRef<'_>, WireError> {
    let mut rd = payload;
    let fields = rmp::decode::read_array_len(&mut rd)
        .map_err(|e| WireError::Garbage(format!("not an envelope: {e}")))?;
    if fields == 0 {
        return Err(WireError::Garbage("empty envelope".into()));
    }
    let version: u16 = rmp::decode::read_int(&mut rd)
        .map_err(|e| WireError::Garbage(format!("no version: {e}")))?;
    if version != WIRE_VERSION {
        return Err(WireError::UnknownVersion { got: version });
    }
    if let Some(env) = envelope_as_written(payload) {
        return Ok(env);
    }
    rmp_serde::from_slice(payload).map_err(|e| WireError::Garbage(e.to_string()))
}

/// An envelope in the shape [`encode_frame_out`] writes (five fields, the kind as rmp-serde
/// writes an enum, the body as bytes, nothing after), read by hand: every hop of a question
/// reads one each way, and the generic decoder took ~750 instructions for it. `None` for
/// anything else, which the generic decoder then judges.
fn envelope_as_written(payload: &[u8]) -> Option<EnvelopeRef<'_>> {
    use rmp::decode::{read_array_len, read_bin_len, read_int, read_str_from_slice};
    let mut rd = payload;
    if read_array_len(&mut rd).ok()? != 5 {
        return None;
    }
    let version: u16 = read_int(&mut rd).ok()?;
    let (from, rest) = read_str_from_slice(rd).ok()?;
    let (to, rest) = read_str_from_slice(rest).ok()?;
    rd = rest;
    let kind = match rd.split_first() {
        // A variant with a value: a one-entry map from its name.
        Some((&0x81, rest)) => {
            let (name, mut rest) = read_str_from_slice(rest).ok()?;
            let id: u64 = read_int(&mut rest).ok()?;
            rd = rest;
            match name {
                "Call" => EnvelopeKind::Call(id),
                "Reply" => EnvelopeKind::Reply(id),
                _ => return None,
            }
        }
        _ => {
            let (name, rest) = read_str_from_slice(rd).ok()?;
            rd = rest;
            (name == "Cast").then_some(EnvelopeKind::Cast)?
        }
    };
    let len = read_bin_len(&mut rd).ok()? as usize;
    (rd.len() == len).then_some(EnvelopeRef {
        version,
        from,
        to,
        kind,
        body: rd,
    })
}

/// Reads one length-prefixed frame's payload from `rd`, refusing it before reading the body
/// if it is longer than `max`.
pub async fn read_frame<R>(rd: &mut R, max: usize) -> Result<Bytes, WireError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    rd.read_exact(&mut len)
        .await
        .map_err(|_| WireError::Truncated)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::Oversized { len, max });
    }
    let mut buf = vec![0u8; len];
    rd.read_exact(&mut buf)
        .await
        .map_err(|_| WireError::Truncated)?;
    Ok(Bytes::from(buf))
}

/// Encodes `msg` as an envelope body and hands it to `f` (which frames it): the body is
/// written to a buffer kept per thread, so it is copied once, into the frame, and never
/// allocated on its own.
pub fn with_body<T: Serialize, R>(
    msg: &T,
    f: impl FnOnce(&[u8]) -> Result<R, WireError>,
) -> Result<R, WireError> {
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = SCRATCH.take();
    buf.clear();
    let r = rmp_serde::encode::write(&mut buf, msg)
        .map_err(|e| WireError::Garbage(e.to_string()))
        .and_then(|()| f(&buf));
    // A rare large body is not kept for the life of the thread.
    if buf.capacity() <= KEEP_BUFFER {
        SCRATCH.set(buf);
    }
    r
}

/// Encodes an actor's message as an envelope body.
pub fn encode_body<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(128);
    rmp_serde::encode::write(&mut out, msg).map_err(|e| WireError::Garbage(e.to_string()))?;
    Ok(out)
}

/// Decodes an envelope body into an actor's message.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    rmp_serde::from_slice(body).map_err(|e| WireError::Garbage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            version: WIRE_VERSION,
            from: "a".into(),
            to: "echo".into(),
            kind: EnvelopeKind::Call(7),
            body: vec![1, 2, 3],
        }
    }

    #[test]
    fn envelopes_as_written_are_read_by_hand_exactly_as_the_decoder_reads_them() {
        let long = "n".repeat(300);
        for kind in [
            EnvelopeKind::Cast,
            EnvelopeKind::Call(0),
            EnvelopeKind::Call(7),
            EnvelopeKind::Reply(300),
            EnvelopeKind::Reply(u64::MAX),
        ] {
            for (from, to, body) in [
                ("a", "echo", vec![1u8, 2, 3]),
                ("e0001", "member", Vec::new()),
                (long.as_str(), "ümlaut", vec![7u8; 70_000]),
            ] {
                let out = EnvelopeOut {
                    version: WIRE_VERSION,
                    from,
                    to,
                    kind,
                    body: &body,
                };
                let payload = encode_frame_out(&out, 1 << 20).expect("encodes");
                let payload = &payload[4..];
                let generic: EnvelopeRef<'_> =
                    rmp_serde::from_slice(payload).expect("the decoder reads it");
                assert_eq!(envelope_as_written(payload), Some(generic), "{kind:?} {to}");
                assert_eq!(decode_envelope_ref(payload).expect("decodes"), generic);
            }
        }
        // A body written as a string: not as written, read by the decoder.
        let mut other = Vec::new();
        rmp::encode::write_array_len(&mut other, 5).expect("writes");
        rmp::encode::write_uint(&mut other, u64::from(WIRE_VERSION)).expect("writes");
        rmp::encode::write_str(&mut other, "a").expect("writes");
        rmp::encode::write_str(&mut other, "echo").expect("writes");
        rmp::encode::write_map_len(&mut other, 1).expect("writes");
        rmp::encode::write_str(&mut other, "Call").expect("writes");
        rmp::encode::write_uint(&mut other, 7).expect("writes");
        rmp::encode::write_str(&mut other, "abc").expect("writes");
        assert_eq!(envelope_as_written(&other), None);
        let r = decode_envelope_ref(&other).expect("the decoder reads a string body");
        assert_eq!(
            (r.from, r.to, r.kind, r.body),
            ("a", "echo", EnvelopeKind::Call(7), &b"abc"[..])
        );
        // A stray byte after the body, a kind that is not one, a cut body: not by hand.
        let good = rmp_serde::to_vec(&env()).expect("encodes");
        assert!(envelope_as_written(&good).is_some());
        assert_eq!(envelope_as_written(&[&good[..], &[0xc0]].concat()), None);
        assert_eq!(envelope_as_written(&good[..good.len() - 1]), None);
        let odd = EnvelopeOut {
            version: WIRE_VERSION,
            from: "a",
            to: "echo",
            kind: EnvelopeKind::Cast,
            body: &[],
        };
        let mut bytes = rmp_serde::to_vec(&odd).expect("encodes");
        let at = bytes
            .windows(4)
            .position(|w| w == b"Cast")
            .expect("the kind's name");
        bytes[at..at + 4].copy_from_slice(b"Cast".map(|c| c.to_ascii_lowercase()).as_slice());
        assert_eq!(envelope_as_written(&bytes), None);
        assert!(decode_envelope_ref(&bytes).is_err(), "no such kind");
    }

    #[tokio::test]
    async fn a_frame_round_trips() {
        let f = encode_frame(&env(), 1024).expect("encode");
        let mut rd = &f[..];
        let payload = read_frame(&mut rd, 1024).await.expect("read");
        assert_eq!(decode_envelope(&payload).expect("decode"), env());
        let e = env();
        let r = decode_envelope_ref(&payload).expect("decode in place");
        assert_eq!(
            (r.version, r.from, r.to, r.kind, r.body),
            (e.version, &e.from[..], &e.to[..], e.kind, &e.body[..])
        );
        // Borrowed and owned encodings are the same bytes.
        let out = EnvelopeOut {
            version: WIRE_VERSION,
            from: "a",
            to: "echo",
            kind: EnvelopeKind::Call(7),
            body: &[1, 2, 3],
        };
        assert_eq!(encode_frame_out(&out, 1024).expect("encode"), f);
    }

    #[tokio::test]
    async fn each_bad_frame_has_its_own_error() {
        // Oversized: refused from the prefix alone.
        let mut rd = &[0xff, 0xff, 0xff, 0xff, 0][..];
        assert_eq!(
            read_frame(&mut rd, 1024).await,
            Err(WireError::Oversized {
                len: 0xffff_ffff,
                max: 1024
            })
        );
        // Truncated.
        let mut rd = &[0, 0, 0, 9, 1, 2][..];
        assert_eq!(read_frame(&mut rd, 1024).await, Err(WireError::Truncated));
        // Garbage.
        assert!(matches!(
            decode_envelope(b"\xc1\xc1 hello"),
            Err(WireError::Garbage(_))
        ));
        assert!(matches!(decode_envelope(&[]), Err(WireError::Garbage(_))));
        // A future version with a different shape is named as such, not as garbage.
        let future = rmp_serde::to_vec(&(WIRE_VERSION + 1, "x", 1.5f64, ["y"])).expect("enc");
        assert_eq!(
            decode_envelope(&future),
            Err(WireError::UnknownVersion {
                got: WIRE_VERSION + 1
            })
        );
        // Encoding refuses what the peer would refuse.
        let mut big = env();
        big.body = vec![0; 2048];
        assert!(matches!(
            encode_frame(&big, 1024),
            Err(WireError::Oversized { .. })
        ));
    }
}

/// Property targets for the envelope decoders, run briefly with the tests and longer by hand
/// (`PROPTEST_CASES=200000 cargo test -p rollcall-runtime wire::fuzz`): on any bytes, the
/// hand reader either declines or reads exactly what the generic decoder reads, and
/// decoding never panics.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = EnvelopeKind> {
        prop_oneof![
            Just(EnvelopeKind::Cast),
            any::<u64>().prop_map(EnvelopeKind::Call),
            any::<u64>().prop_map(EnvelopeKind::Reply),
        ]
    }

    /// A written envelope, then bent: a byte changed, cut short, or a byte added.
    fn bent() -> impl Strategy<Value = Vec<u8>> {
        (
            ".{0,40}",
            ".{0,40}",
            kind(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<usize>(),
            any::<u8>(),
            0..4u8,
        )
            .prop_map(|(from, to, kind, body, at, byte, how)| {
                let env = Envelope {
                    version: WIRE_VERSION,
                    from,
                    to,
                    kind,
                    body,
                };
                let mut b = rmp_serde::to_vec(&env).unwrap_or_default();
                if b.is_empty() {
                    return b;
                }
                let at = at % b.len();
                match how {
                    0 => b[at] = byte,
                    1 => b.truncate(at),
                    2 => b.insert(at, byte),
                    _ => {}
                }
                b
            })
    }

    fn same_verdict(bytes: &[u8]) -> Result<(), TestCaseError> {
        // Never panics, whatever it is given.
        let _ = decode_envelope_ref(bytes);
        if let Some(by_hand) = envelope_as_written(bytes) {
            let generic = rmp_serde::from_slice::<EnvelopeRef<'_>>(bytes);
            prop_assert_eq!(generic.ok(), Some(by_hand));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            same_verdict(&bytes)?;
        }

        #[test]
        fn bent_envelopes(bytes in bent()) {
            same_verdict(&bytes)?;
        }
    }
}
