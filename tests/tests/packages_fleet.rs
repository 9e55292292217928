//! Packages with files on a simulated fleet (in-memory network, paused time): each ring's
//! leader fetches each chunk from the server once, everyone else from ring neighbours;
//! every machine verifies the files and runs the command once.

use std::time::Duration;

use bytes::Bytes;
use rollcall::fleet::{Fleet, FleetConfig, SimTransport};
use rollcall_actors::action::server::ActRequest;
use rollcall_patchdist::{ChunkStore, Manifest, endpoint::verify_files};
use rollcall_tests::eventually_or;

/// A fleet of `n` endpoints in rings of `ring`, formed.
async fn formed(n: usize, ring: u16, seed: u64) -> Fleet {
    rollcall_runtime::telemetry::init("off");
    let fleet = Fleet::start(FleetConfig::chaos(n, ring, SimTransport::Mem, seed), |_| {})
        .await
        .expect("fleet");
    fleet
        .wait_formed(Duration::from_secs(120), Duration::from_millis(100))
        .await
        .expect("formed");
    fleet
}

/// `len` bytes that differ chunk to chunk.
fn payload(len: usize, seed: u32) -> Bytes {
    Bytes::from(
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect::<Vec<u8>>(),
    )
}

async fn wait_done(fleet: &Fleet, id: u64, within: Duration) {
    eventually_or("every targeted machine done", within, || {
        let r = fleet.action(id);
        let done = fleet.desk().actions().is_done(id);
        async move { if done { Ok(()) } else { Err(format!("{r:?}")) } }
    })
    .await;
}

fn holds_all(cache: &dyn ChunkStore, m: &Manifest) -> bool {
    m.chunk_hashes().iter().all(|h| cache.has(h))
}

#[tokio::test(start_paused = true)]
async fn a_package_reaches_three_rings_with_one_server_copy_per_ring() {
    let fleet = formed(60, 20, 11).await;
    let files = vec![
        ("fix.bin".to_string(), payload(1_500_000, 1)),
        ("notes.txt".to_string(), payload(70_000, 2)),
        ("empty".to_string(), Bytes::new()),
    ];
    let m = fleet
        .add_package("fix", &files, "sh install.sh")
        .await
        .expect("package added");
    assert_eq!(m.chunk_count(), 23 + 2);
    let id = fleet.act(ActRequest::all("fix", &[])).await.expect("act");
    wait_done(&fleet, id, Duration::from_secs(120)).await;
    let r = fleet.action(id).expect("report");
    assert_eq!((r.targeted, r.count("completed")), (60, 60), "{r:?}");
    for e in &fleet.endpoints {
        assert_eq!(e.executor.runs_of(id), 1, "{}", e.id);
        assert!(holds_all(e.chunks.as_ref(), &m), "{} lacks chunks", e.id);
        verify_files(e.chunks.as_ref(), &m).expect("every file matches its hash");
    }
    let egress = fleet.egress(&m);
    let size = m.size();
    assert!(
        egress.bytes as f64 <= 1.05 * size as f64 * 3.0,
        "server egress {} for 3 rings of a {size}-byte package",
        egress.bytes
    );
    assert!(
        egress.bytes >= 3 * size,
        "each ring needs each chunk once: {egress:?}"
    );
    assert_eq!(egress.repeats, 0, "{egress:?}");
    // Only leaders asked: at most one machine per ring (no leader changed here).
    assert!(egress.by_machine.len() <= 3, "{egress:?}");
}
