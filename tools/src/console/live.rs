//! Live views for the page, as server-sent events: the console polls the server and sends
//! a snapshot only when it changed. However many machines answer, the page gets at most a
//! few updates a second (each one the whole grid), never one per answer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use rollcall_actors::desk::{DeskReply, DeskRequest};

use super::App;
use super::api::{call, progress};

/// The shortest time between two polls of the server for one stream.
const FAST: Duration = Duration::from_millis(250);
/// Between polls once nothing is expected to change soon (a question that every machine
/// answered, the rings, the actions).
const SLOW: Duration = Duration::from_secs(1);

/// One poll of the server.
pub(crate) struct Snapshot {
    /// What is sent (JSON).
    data: String,
    /// What must change for it to be sent again (the data without its clocks).
    key: String,
    /// Nothing is expected to change soon: polled at the slow pace.
    settled: bool,
}

impl Snapshot {
    fn of<T: serde::Serialize>(v: &T, settled: bool) -> Result<Snapshot, String> {
        let data = serde_json::to_string(v).map_err(|e| e.to_string())?;
        Ok(Snapshot {
            key: data.clone(),
            data,
            settled,
        })
    }
}

type Poll = Result<Snapshot, String>;

/// A stream of `name` events: `poll` is called at most every [`FAST`] (or every four times
/// as long as it took, when the server is slow to answer, so that a big fleet's grid does
/// not keep the server busy), and each snapshot that differs from the last one sent is
/// sent, with a sequence number as its event id.
fn snapshots<F, Fut>(
    name: &'static str,
    poll: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Poll> + Send,
{
    struct St<F> {
        poll: F,
        last: Option<String>,
        sent: u64,
        wait: Duration,
    }
    let st = St {
        poll,
        last: None,
        sent: 0,
        wait: Duration::ZERO,
    };
    let stream = futures::stream::unfold(st, move |mut st| async move {
        loop {
            tokio::time::sleep(st.wait).await;
            let began = Instant::now();
            let got = (st.poll)().await;
            let took = began.elapsed();
            let (event, snap) = match got {
                Ok(snap) => (name, snap),
                Err(e) => {
                    let data = serde_json::json!({ "error": e }).to_string();
                    let snap = Snapshot {
                        key: data.clone(),
                        data,
                        settled: true,
                    };
                    ("problem", snap)
                }
            };
            st.wait = (if snap.settled { SLOW } else { FAST }).max(took * 4);
            if st.last.as_deref() == Some(snap.key.as_str()) {
                continue;
            }
            st.sent += 1;
            let ev = Event::default()
                .event(event)
                .id(st.sent.to_string())
                .data(snap.data);
            st.last = Some(snap.key);
            return Some((Ok(ev), st));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Question `id`'s progress, every row, until the page goes away.
pub(crate) async fn question(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    snapshots("progress", move || {
        let app = app.clone();
        async move {
            let mut p = progress(&app, id).await.map_err(|e| e.message())?;
            let settled = p.fanned_out && p.answered >= p.expected;
            let mut snap = Snapshot::of(&p, settled)?;
            // The clocks move on every poll: alone, they are no reason to send.
            p.elapsed_ms = 0;
            p.expires_in_ms = 0;
            snap.key = serde_json::to_string(&p).map_err(|e| e.to_string())?;
            Ok(snap)
        }
    })
}

/// The rings as the server sees them.
pub(crate) async fn rings(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    snapshots("rings", move || {
        let app = app.clone();
        async move {
            let r = app.desk.rings().await.map_err(|e| format!("{e:#}"))?;
            Snapshot::of(&r, true)
        }
    })
}

/// The actions, newest first, with their counts.
pub(crate) async fn actions(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    snapshots("actions", move || {
        let app = app.clone();
        async move {
            match call(&app, DeskRequest::Actions).await {
                Ok(DeskReply::Actions(a)) => {
                    let busy = a.iter().any(|r| !r.done && !r.awaiting_approval);
                    let mut snap = Snapshot::of(&a, !busy)?;
                    let mut still = a;
                    for r in &mut still {
                        r.expires_in_ms = 0;
                    }
                    snap.key = serde_json::to_string(&still).map_err(|e| e.to_string())?;
                    Ok(snap)
                }
                Ok(other) => Err(format!("the server answered with {other:?}")),
                Err(e) => Err(e.message()),
            }
        }
    })
}
