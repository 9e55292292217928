//! The crate's pieces on their own: chunking, the cache, the fetch plan.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::{CacheError, ChunkStore, FileCache, MemCache, SharedChunks};
use crate::manifest::{CHUNK_SIZE, Manifest, ManifestError, Verified, hash};
use crate::plan::{Arrival, Fetch, FetchConfig, Outcome, Source};

fn data(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

#[test]
fn chunking_round_trips_empty_exact_and_odd_files() {
    let files = vec![
        ("empty".to_string(), Bytes::new()),
        ("exact".to_string(), data(3 * CHUNK_SIZE, 1)),
        ("odd".to_string(), data(CHUNK_SIZE + 17, 2)),
    ];
    let (m, chunks) = Manifest::build(&files).expect("builds");
    assert_eq!(
        m.files.iter().map(|f| f.chunk_count()).collect::<Vec<_>>(),
        [0, 3, 2]
    );
    assert_eq!(m.chunk_count(), 5);
    assert_eq!(chunks.len(), 5);
    assert_eq!(m.size(), (4 * CHUNK_SIZE + 17) as u64);
    assert_eq!(m.files[0].hash(), hash(b""));
    // The last chunk of "odd" is 17 bytes, at offset 64 KiB of file 2.
    let last = m.chunk(4).expect("chunk 4");
    assert_eq!(
        (last.file, last.offset, last.len),
        (2, CHUNK_SIZE as u64, 17)
    );
    assert_eq!(m.chunk(5), None);
    // Encoded and decoded, it is the same manifest with the same id.
    let bytes = rmp_serde::to_vec(&m).expect("encodes");
    let back: Manifest = rmp_serde::from_slice(&bytes).expect("decodes");
    assert_eq!(back, m);
    assert_eq!(back.id(), m.id());
    back.check().expect("checks");
    // Every chunk verifies; the files rebuild from the chunks.
    let cache = MemCache::new(u64::MAX);
    for (i, c) in chunks.iter().enumerate() {
        let v = m.verify(i as u32, c.data().clone()).expect("verifies");
        cache.put(&v).expect("kept");
    }
    crate::endpoint::verify_files(&cache, &m).expect("files match");
    let dir = tempfile::tempdir().expect("tempdir");
    crate::endpoint::write_files(&cache, &m, dir.path()).expect("written");
    for (name, d) in &files {
        assert_eq!(
            std::fs::read(dir.path().join(name)).expect("read"),
            d.to_vec()
        );
    }
}

#[test]
fn a_tampered_chunk_or_manifest_is_refused() {
    let (m, chunks) =
        Manifest::build(&[("f".to_string(), data(2 * CHUNK_SIZE, 3))]).expect("builds");
    let mut bad = chunks[1].data().to_vec();
    bad[100] ^= 1;
    assert_eq!(
        m.verify(1, Bytes::from(bad)).err(),
        Some(ManifestError::BadChunk { index: 1 })
    );
    // A chunk of the right hash but for another index, and a short one.
    assert!(m.verify(0, chunks[1].data().clone()).is_err());
    assert!(m.verify(0, chunks[0].data().slice(..10)).is_err());
    assert_eq!(
        m.verify(9, chunks[0].data().clone()).err(),
        Some(ManifestError::NoSuchChunk(9))
    );
    // A manifest whose size says three chunks but lists two; a path as a name; two names.
    let mut v = rmp_serde::to_vec(&m).expect("encodes");
    let back: Manifest = rmp_serde::from_slice(&v).expect("decodes");
    let mut longer = back.clone();
    longer.files[0].size += CHUNK_SIZE as u64;
    assert!(matches!(
        longer.check(),
        Err(ManifestError::Inconsistent(_))
    ));
    let mut path = back.clone();
    path.files[0].name = "../etc/passwd".into();
    assert!(matches!(path.check(), Err(ManifestError::BadName(_))));
    let mut twice = back.clone();
    twice.files.push(back.files[0].clone());
    assert!(matches!(
        twice.check(),
        Err(ManifestError::DuplicateName(_))
    ));
    // A flipped byte in the encoding changes the id (what the signature covers) or fails.
    let last = v.len() - 1;
    v[last] ^= 0xff;
    if let Ok(changed) = rmp_serde::from_slice::<Manifest>(&v) {
        assert_ne!(changed.id(), m.id());
    }
    // A cache refuses to be handed anything but a verified chunk: `Verified::check` is
    // the only way in.
    assert!(Verified::check(&hash(b"a"), Bytes::from_static(b"b")).is_none());
}

#[test]
fn the_cache_evicts_least_recently_used_and_keeps_pinned() {
    let chunk = |i: u8| Verified::check(&hash(&[i; 100]), Bytes::from(vec![i; 100])).expect("v");
    let c = MemCache::new(300);
    for i in 0..3 {
        c.put(&chunk(i)).expect("fits");
    }
    assert!(c.get(chunk(0).hash()).is_some()); // 0 is now the most recent
    c.put(&chunk(3)).expect("fits after evicting 1");
    assert!(!c.has(chunk(1).hash()));
    assert!(c.has(chunk(0).hash()) && c.has(chunk(2).hash()) && c.has(chunk(3).hash()));
    // Pinned chunks stay; when nothing can go, the put is refused.
    c.pin(
        [9; 32],
        &[*chunk(0).hash(), *chunk(2).hash(), *chunk(3).hash()],
    );
    assert!(matches!(
        c.put(&chunk(4)),
        Err(CacheError::Full {
            used: 300,
            cap: 300
        })
    ));
    c.unpin(&[9; 32]);
    c.put(&chunk(4)).expect("fits once unpinned");
    assert_eq!(c.used(), 300);
    // Shared copies: two caches, one allocation.
    let shared = std::sync::Arc::new(SharedChunks::default());
    let (a, b) = (
        MemCache::sharing(1000, shared.clone()),
        MemCache::sharing(1000, shared),
    );
    a.put(&chunk(7)).expect("a");
    b.put(&chunk(7)).expect("b");
    let (x, y) = (
        a.get(chunk(7).hash()).expect("a"),
        b.get(chunk(7).hash()).expect("b"),
    );
    assert_eq!(x.data().as_ptr(), y.data().as_ptr());
}

#[test]
fn the_file_cache_keeps_chunks_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chunks.redb");
    let (m, chunks) =
        Manifest::build(&[("f".to_string(), data(3 * CHUNK_SIZE, 4))]).expect("builds");
    {
        let c = FileCache::open(&path, 2 * CHUNK_SIZE as u64).expect("opens");
        for ch in &chunks {
            c.put(ch).expect("kept");
        }
        // Capped at two chunks: the first is gone.
        assert!(!c.has(chunks[0].hash()));
    }
    let c = FileCache::open(&path, 2 * CHUNK_SIZE as u64).expect("reopens");
    assert_eq!(c.used(), 2 * CHUNK_SIZE as u64);
    assert!(c.has(chunks[1].hash()) && c.has(chunks[2].hash()));
    let got = c.get(chunks[2].hash()).expect("held");
    m.verify(2, got.data().clone()).expect("still verifies");
}

/// A chain of fetchers stepped in turn: machine 0 leads (it may ask the server), each
/// machine's neighbours are the one before and the one after. Returns each machine's
/// stats and how often the server sent each chunk.
fn chain(
    n: usize,
    chunks: usize,
    corrupt: Option<usize>,
    busy: Option<usize>,
) -> (Vec<Fetch<usize>>, Vec<u32>) {
    let cfg = FetchConfig::default();
    let mut f: Vec<Fetch<usize>> = (0..n)
        .map(|_| Fetch::new(vec![false; chunks], cfg.clone()))
        .collect();
    for (i, x) in f.iter_mut().enumerate() {
        let mut peers = Vec::new();
        if i > 0 {
            peers.push(i - 1);
        }
        if i + 1 < n {
            peers.push(i + 1);
        }
        x.set_peers(&peers);
    }
    f[0].allow_server(true);
    let mut from_server = vec![0u32; chunks];
    let t0 = Instant::now();
    let mut busy_left = 3;
    for step in 0..100_000 {
        if f.iter().all(Fetch::complete) {
            return (f, from_server);
        }
        let now = t0 + Duration::from_millis(step);
        let mut sends = Vec::new();
        for (i, x) in f.iter_mut().enumerate() {
            for (c, s) in x.next(now) {
                sends.push((i, c, s));
            }
        }
        let mut news: HashMap<usize, Vec<u32>> = HashMap::new();
        for (i, c, s) in sends {
            let outcome = match s {
                Source::Server => {
                    from_server[c as usize] += 1;
                    Outcome::Good
                }
                Source::Peer(p) if Some(p) == corrupt => Outcome::Corrupt,
                Source::Peer(p) if Some(p) == busy && busy_left > 0 => {
                    busy_left -= 1;
                    Outcome::Busy
                }
                Source::Peer(p) if f[p].has(c) => Outcome::Good,
                Source::Peer(_) => Outcome::Missing,
            };
            if f[i].done(c, &s, outcome, now) == Some(Arrival::New) {
                news.entry(i).or_default().push(c);
            }
        }
        for (i, got) in news {
            for nb in [i.wrapping_sub(1), i + 1] {
                if nb < n {
                    f[nb].holdings(&i, got.clone());
                }
            }
        }
    }
    panic!("the chain did not finish");
}

#[test]
fn a_chain_gets_each_chunk_from_the_server_once() {
    let (f, from_server) = chain(20, 50, None, None);
    assert!(from_server.iter().all(|&n| n == 1), "{from_server:?}");
    assert_eq!(f[0].stats().from_server, 50);
    for x in &f[1..] {
        assert_eq!((x.stats().from_server, x.stats().from_peers), (0, 50));
    }
}

#[test]
fn a_peer_that_sends_a_bad_chunk_is_avoided_and_the_chunk_comes_from_another() {
    // Machine 5 corrupts everything it sends. Each machine sees the two before and the two
    // after it, so the chunks flow around 5 once its neighbours avoid it.
    let cfg = FetchConfig::default();
    let n = 8;
    let chunks = 20;
    let mut f: Vec<Fetch<usize>> = (0..n)
        .map(|_| Fetch::new(vec![false; chunks], cfg.clone()))
        .collect();
    for (i, x) in f.iter_mut().enumerate() {
        let peers: Vec<usize> = (i.saturating_sub(2)..(i + 3).min(n))
            .filter(|&p| p != i)
            .collect();
        x.set_peers(&peers);
    }
    f[0].allow_server(true);
    let t0 = Instant::now();
    let mut corrupt_sent = 0;
    for step in 0..10_000u64 {
        if f.iter().all(Fetch::complete) {
            break;
        }
        let now = t0 + Duration::from_millis(step);
        let mut sends = Vec::new();
        for (i, x) in f.iter_mut().enumerate() {
            for (c, s) in x.next(now) {
                sends.push((i, c, s));
            }
        }
        let mut news = Vec::new();
        for (i, c, s) in sends {
            let outcome = match s {
                Source::Server => Outcome::Good,
                Source::Peer(5) => {
                    corrupt_sent += 1;
                    Outcome::Corrupt
                }
                Source::Peer(p) if f[p].has(c) => Outcome::Good,
                Source::Peer(_) => Outcome::Missing,
            };
            if f[i].done(c, &s, outcome, now) == Some(Arrival::New) {
                news.push((i, c));
            }
        }
        for (i, c) in news {
            let lo = i.saturating_sub(2);
            for (nb, x) in f.iter_mut().enumerate().skip(lo).take(i + 3 - lo) {
                if nb != i {
                    x.holdings(&i, [c]);
                }
            }
        }
    }
    assert!(f.iter().all(Fetch::complete));
    // Each machine that asked 5 took at most the requests it had in flight to it when the
    // first bad chunk came, and then avoided it.
    assert!(corrupt_sent >= 1);
    let mut took = 0;
    for (i, x) in f.iter().enumerate() {
        assert!(x.stats().corrupt <= cfg.per_peer as u64, "machine {i}");
        assert_eq!(x.avoids(&5), x.stats().corrupt > 0, "machine {i}");
        took += x.stats().corrupt;
    }
    assert_eq!(took, corrupt_sent);
}

#[test]
fn busy_peers_rest_and_the_download_finishes() {
    let (f, from_server) = chain(5, 30, None, Some(1));
    assert!(from_server.iter().all(|&n| n == 1));
    assert_eq!(f.iter().map(|x| x.stats().busy).sum::<u64>(), 3);
}

#[test]
fn endgame_asks_a_second_peer_and_the_later_copy_is_a_duplicate() {
    let cfg = FetchConfig::default();
    let mut f: Fetch<u8> = Fetch::new(vec![true, true, true, false], cfg);
    f.set_peers(&[1, 2]);
    f.holdings(&1, [3]);
    f.holdings(&2, [3]);
    let now = Instant::now();
    let sent = f.next(now);
    // One request goes out first, then, every lacked chunk being in flight with one left,
    // a second to the other peer.
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_ne!(sent[0].1, sent[1].1);
    assert_eq!(
        f.done(3, &sent[0].1, Outcome::Good, now),
        Some(Arrival::New)
    );
    assert_eq!(
        f.done(3, &sent[1].1, Outcome::Good, now),
        Some(Arrival::Duplicate)
    );
    assert!(f.complete());
    assert_eq!(f.stats().duplicates, 1);
}

#[test]
fn only_the_leader_asks_the_server_and_only_for_what_no_neighbour_holds() {
    let mut f: Fetch<u8> = Fetch::new(vec![false; 10], FetchConfig::default());
    f.set_peers(&[1]);
    f.holdings(&1, [0, 1]);
    let now = Instant::now();
    let sent = f.next(now);
    assert!(sent.iter().all(|(_, s)| *s == Source::Peer(1)), "{sent:?}");
    f.allow_server(true);
    let sent = f.next(now);
    assert!(
        sent.iter().all(|(c, s)| *s == Source::Server && *c >= 2),
        "{sent:?}"
    );
    assert_eq!(sent.len(), FetchConfig::default().server_in_flight);
    // A peer's request times out after 30 s; the server's, the only source, after 300 s.
    f.expire(now + Duration::from_secs(60));
    assert_eq!(f.in_flight(), 8, "only the two to the peer were given up");
    assert_eq!(f.stats().server_retries, 0);
    // A request that times out is asked again, and the retry is counted.
    f.expire(now + Duration::from_secs(400));
    assert_eq!(f.stats().server_retries, 8);
    assert_eq!(f.in_flight(), 0);
}

#[test]
fn a_chunk_reply_is_written_as_before_and_read_back_without_a_copy() {
    use crate::proto::ChunkReply;
    let chunk = data(70_000, 9);
    let body = Bytes::from(rmp_serde::to_vec(&ChunkReply::Data(chunk.clone())).expect("encodes"));
    // A one-entry map from the variant's name to the bytes as a msgpack bin 32: the shape
    // written when the chunk was a `ByteBuf`, so older peers read it.
    let mut expected = vec![0x81, 0xa4, b'D', b'a', b't', b'a', 0xc6];
    expected.extend_from_slice(&70_000u32.to_be_bytes());
    expected.extend_from_slice(&chunk);
    assert_eq!(&body[..], &expected[..]);
    match ChunkReply::decode(&body).expect("decodes") {
        ChunkReply::Data(d) => {
            assert_eq!(d, chunk);
            let start = body.as_ptr() as usize + 11;
            assert_eq!(
                d.as_ptr() as usize,
                start,
                "the chunk is a slice of the frame"
            );
        }
        other => panic!("decoded {other:?}"),
    }
    for r in [ChunkReply::Busy, ChunkReply::Missing] {
        let b = Bytes::from(rmp_serde::to_vec(&r).expect("encodes"));
        assert_eq!(ChunkReply::decode(&b).expect("decodes"), r);
    }
    let cut = body.slice(..body.len() - 1);
    assert!(ChunkReply::decode(&cut).is_err(), "a cut chunk is an error");
}

/// Property targets for what peers send (run briefly with the tests, longer by hand:
/// `PROPTEST_CASES=200000 cargo test -p rollcall-patchdist fuzz`): decoding a manifest, a
/// message or a bitmap from any bytes never panics, and a manifest that passes its check
/// answers for every chunk it counts and for no other.
mod fuzz {
    use proptest::prelude::*;

    use crate::manifest::{CHUNK_SIZE, Manifest};
    use crate::proto::{ChunkReply, HoldingsReply, PatchMsg, unpack};

    fn bend(mut b: Vec<u8>, at: usize, byte: u8, how: u8) -> Vec<u8> {
        if b.is_empty() {
            return b;
        }
        let at = at % b.len();
        match how % 3 {
            0 => b[at] = byte,
            1 => b.truncate(at),
            _ => b.insert(at, byte),
        }
        b
    }

    fn sound(m: &Manifest) -> Result<(), TestCaseError> {
        if m.check().is_err() {
            return Ok(());
        }
        let n = m.chunk_count();
        prop_assert_eq!(m.chunk_hashes().len(), n);
        for i in 0..n as u32 {
            let c = m.chunk(i).expect("a counted chunk");
            prop_assert!(c.len <= CHUNK_SIZE && c.len > 0);
        }
        prop_assert!(m.chunk(n as u32).is_none());
        Ok(())
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = rmp_serde::from_slice::<Manifest>(&bytes) {
                sound(&m)?;
            }
            let _ = rmp_serde::from_slice::<PatchMsg>(&bytes);
            // The borrowing decoder the fetcher uses agrees with the owning one on every input.
            let owned = rmp_serde::from_slice::<ChunkReply>(&bytes).ok();
            let borrowed = ChunkReply::decode(&bytes::Bytes::from(bytes.clone())).ok();
            prop_assert_eq!(owned, borrowed);
            if let Ok(HoldingsReply(Some(bits))) = rmp_serde::from_slice::<HoldingsReply>(&bytes) {
                prop_assert_eq!(unpack(&bits, 100).len(), 100);
            }
        }

        #[test]
        fn bent_manifests_are_refused_or_sound(
            sizes in proptest::collection::vec(0usize..200_000, 1..4),
            at in any::<usize>(), byte in any::<u8>(), how in any::<u8>(),
        ) {
            let files: Vec<(String, bytes::Bytes)> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (format!("f{i}"), bytes::Bytes::from(vec![i as u8; n])))
                .collect();
            let (m, _) = Manifest::build(&files).expect("builds");
            let bent = bend(rmp_serde::to_vec(&m).expect("encodes"), at, byte, how);
            if let Ok(d) = rmp_serde::from_slice::<Manifest>(&bent) {
                sound(&d)?;
            }
        }
    }
}
