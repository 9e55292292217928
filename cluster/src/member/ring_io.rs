//! The member's side of its ring: registration, the sans-IO [`RingCore`]'s inputs and what
//! it asks for (probes, hellos, suspect reports), links kept and pruned, and leadership of a
//! chain's ends (announced to the server one at a time, resigned before the link closes).

use std::time::Duration;

use ractor::ActorRef;
use rand::Rng;
use rollcall_runtime::NodeId;
use rollcall_runtime::node::{CallError, PeerHandle};

use crate::proto::{
    LeaderSides, MEMBER, MemberInfo, MemberRequest, REGISTRY, Registration, ServerRequest,
};
use crate::ring::{Input, Output, PeerHealth};

/// Answers questions on an endpoint: the bridge to its sensors (which live in
/// `rollcall-actors`; the ring only carries the encoded question and the answers).
use super::*;

impl MemberState {
    /// Closes links that carry nothing: to members no longer among our candidates (the view
    /// moved on, as it does while a ring forms) or past the route target, with no probe under
    /// way and no question waiting on them. Each is a connection held at both ends.
    pub(super) fn prune_links(&mut self) {
        if self.links.len() <= 1 {
            return;
        }
        // Links in use: to the candidates up to the route target (those before it are probed
        // while slow or dead), and on to the first after it known to answer (probed too while
        // the target is untried); and to where a question waits. Links further along carry
        // nothing until the route moves there, and then are dialed again: each costs both
        // ends a connection, and a ring of 10^5 simulated members held two extra apiece.
        let core = &self.core;
        let target = core.route_target().map(|m| &m.id);
        let mut keep: Vec<&NodeId> = Vec::new();
        let mut past_target = target.is_none();
        let mut in_use = true;
        for m in core.candidates() {
            // A probe under way keeps its link whatever the route (closing it would fail a
            // healthy member's probe and mark it dead).
            if in_use || core.probing(&m.id) {
                keep.push(&m.id);
            }
            past_target |= target == Some(&m.id);
            if past_target && core.health(&m.id) == PeerHealth::Ok {
                in_use = false;
            }
        }
        let waited_on: Vec<NodeId> = self
            .questions
            .values()
            .filter_map(|q| lock(q).round.waiting_on().cloned())
            .collect();
        keep.extend(waited_on.iter());
        let stale: Vec<NodeId> = self
            .links
            .keys()
            .filter(|id| !keep.contains(id))
            .cloned()
            .collect();
        for id in stale {
            if let Some(l) = self.links.remove(&id) {
                l.close();
            }
        }
    }

    pub(super) fn registration(&self) -> Registration {
        Registration {
            addr: self.cfg.advertise,
            hostname: self.cfg.hostname.clone(),
            os: std::env::consts::OS.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Feeds the ring core and carries out what it says. Boxed: held inline, its state (and
    /// every output's) would be part of the future of each message the member handles, which
    /// ractor moves and keeps for the member's whole life.
    pub(super) fn feed<'a>(
        &'a mut self,
        myself: &'a ActorRef<MemberMsg>,
        input: Input,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            self.core.handle(input, now());
            while let Some(out) = self.core.poll_output() {
                self.act(myself, out).await;
            }
        })
    }

    pub(super) async fn act(&mut self, myself: &ActorRef<MemberMsg>, out: Output) {
        let timeout = self.cfg.ring.dead_timeout;
        let dial = self.cfg.ring.dial_timeout;
        match out {
            Output::Probe(m) => {
                // Look again right when this attempt's hop timeout runs out, so a late hop is
                // routed past then, not at the next probe tick.
                let look = myself.clone();
                let after = self.cfg.ring.hop_timeout + Duration::from_millis(5);
                self.probe_timers.insert(
                    m.id.clone(),
                    AbortOnDrop(tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = look.send_message(MemberMsg::Tick);
                    })),
                );
                let node = self.node.clone();
                let link = self.links.get(&m.id).filter(|l| l.is_connected()).cloned();
                let me = myself.clone();
                tokio::spawn(async move {
                    // The dial and the call have their own timeouts: never drop a half-made
                    // attempt, whose link would stay open.
                    let attempt = async {
                        let link = match link {
                            Some(l) => l,
                            None => node.connect_once(m.addr, dial).await?,
                        };
                        let _ = me.send_message(MemberMsg::ProbeStarted(m.id.clone()));
                        let r: Result<Vec<MemberInfo>, CallError> =
                            link.call(MEMBER, &MemberRequest::Ping, timeout).await;
                        if let Ok(next) = &r
                            && !next.is_empty()
                        {
                            let _ = me.send_message(MemberMsg::Learned(next.clone()));
                        }
                        let ok = r.is_ok();
                        Ok::<_, CallError>((ok, link))
                    };
                    let msg = match attempt.await {
                        Ok((ok, link)) => MemberMsg::Probed {
                            id: m.id,
                            addr: m.addr,
                            ok,
                            link: Some(link),
                        },
                        _ => MemberMsg::Probed {
                            id: m.id,
                            addr: m.addr,
                            ok: false,
                            link: None,
                        },
                    };
                    let _ = me.send_message(msg);
                });
            }
            Output::Hello(pred) => {
                let node = self.node.clone();
                let hello = MemberRequest::Hello(self.me.clone());
                let me = myself.clone();
                tokio::spawn(async move {
                    let answered = match node.connect_once(pred.addr, dial).await {
                        Ok(l) => {
                            // The answer is the greeted member's view: anyone it knows between
                            // us is our real predecessor, whom we then greet.
                            let r: Result<Vec<MemberInfo>, CallError> =
                                l.call(MEMBER, &hello, timeout).await;
                            l.close();
                            match r {
                                Ok(view) => {
                                    let _ = me.send_message(MemberMsg::Learned(view));
                                    true
                                }
                                Err(e) => {
                                    tracing::debug!(to = %pred.id, error = %e, "hello not answered");
                                    false
                                }
                            }
                        }
                        Err(e) => {
                            tracing::debug!(to = %pred.id, error = %e, "could not reach our predecessor to greet it");
                            false
                        }
                    };
                    if !answered {
                        let _ = me.send_message(MemberMsg::HelloFailed(pred.id));
                    }
                });
            }
            Output::Report { suspect, reason } => {
                // While the server leaves reports unanswered, hold further ones back (the
                // ring core reports again later while the neighbour stays suspect): a server
                // slowed by load must not be buried in reports of the slowness it causes.
                if self.reports_held_until.is_some_and(|t| now() < t) {
                    tracing::debug!(%suspect, ?reason, "report held back: the server is not answering reports");
                    return;
                }
                tracing::info!(%suspect, ?reason, "reporting suspect neighbour");
                // One report at a time: the next waits for this one's answer (or its
                // failure), at most the server timeout.
                self.reports_held_until = Some(now() + self.cfg.server_timeout);
                let node = self.node.clone();
                let link = self.server_link.clone();
                let (server, t) = (self.cfg.server_ref(), self.cfg.server_timeout);
                let me = myself.clone();
                // Warn once per streak of failures: an overloaded server would otherwise get
                // one warning line per member per report interval in every member's log.
                let streak = self.report_failures > 0;
                tokio::spawn(async move {
                    let req = ServerRequest::Suspect { suspect, reason };
                    let r: Result<(), CallError> = server_call(&node, link, server, t, &req).await;
                    match &r {
                        Err(e) if streak => {
                            tracing::debug!(error = %e, "could not report a suspect to the server, again");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not report a suspect to the server")
                        }
                        Ok(()) => {}
                    }
                    let _ = me.send_message(MemberMsg::Reported(r.is_ok()));
                });
            }
            Output::Drop(id) => {
                if let Some(l) = self.links.remove(&id) {
                    l.close();
                }
            }
            // Boxed, as is the announcement below: dialing the server is a large future, and
            // held inline it would be moved with every message the member handles.
            Output::Leader(sides) => Box::pin(self.lead(myself, sides)).await,
        }
    }

    /// Opens or closes the server link as leadership changes, and announces it.
    pub(super) async fn lead(&mut self, myself: &ActorRef<MemberMsg>, sides: LeaderSides) {
        tracing::info!(
            forward = sides.forward,
            backward = sides.backward,
            "leadership changed"
        );
        if !sides.any() {
            self.server_watch = None;
            if let Some(link) = self.server_link.take() {
                self.resign(link);
            }
            return;
        }
        if self.registrations == 0 {
            // The server does not know us yet; the first registration's answer announces.
            return;
        }
        self.announce(myself, sides).await;
    }

    /// Tells the server, on the leader's link, that we lead nothing any more, then closes the
    /// link. The server also drops a leader whose link closed, but only once no connection
    /// to it is left, and it may hold others (a registration's, its own probe or question):
    /// without this word a former leader stayed one in its eyes. In turn with the other
    /// announcements; skipped if a newer one was made meanwhile.
    pub(super) fn resign(&self, link: PeerHandle) {
        let t = self.cfg.server_timeout;
        let seq = self.announce_seq.clone();
        let mine = seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let lock = self.announce_lock.clone();
        tokio::spawn(async move {
            {
                let _one_at_a_time = lock.lock().await;
                if seq.load(std::sync::atomic::Ordering::SeqCst) == mine && link.is_connected() {
                    let r: Result<(), CallError> = link
                        .call(REGISTRY, &ServerRequest::Leader(LeaderSides::default()), t)
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "could not tell the server we stopped leading");
                    }
                }
            }
            link.close();
        });
    }

    pub(super) async fn announce(&mut self, myself: &ActorRef<MemberMsg>, sides: LeaderSides) {
        let (server, t) = (self.cfg.server, self.cfg.server_timeout);
        if self.server_link.is_none() {
            // A redialing link: it survives server restarts. `connect` only starts the link
            // actor; it does not wait for the connection.
            match self.node.connect(server).await {
                Ok(l) => {
                    // When the server comes back after losing us (a restart), register at
                    // once, so it learns its leaders without waiting a whole interval.
                    let (watch, me) = (l.clone(), myself.clone());
                    // Aborted when the link is let go of (`server_watch` with it).
                    self.server_watch = Some(AbortOnDrop(tokio::spawn(async move {
                        loop {
                            watch.wait_reconnected().await;
                            if me.send_message(MemberMsg::RegisterNow).is_err() {
                                return;
                            }
                        }
                    })));
                    self.server_link = Some(l);
                }
                Err(e) => tracing::warn!(error = %e, "could not start the server link"),
            }
        }
        let Some(link) = self.server_link.clone() else {
            return;
        };
        let me = myself.clone();
        let retry = self
            .cfg
            .ring
            .retry_interval
            .mul_f64(self.rng.random_range(0.5..=1.0));
        let seq = self.announce_seq.clone();
        let pinned = self.cfg.trust.server_id.clone();
        let mine = seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let lock = self.announce_lock.clone();
        tokio::spawn(async move {
            if link.wait_connected(t).await.is_ok() {
                if let Err(e) = link.require_peer(PeerRole::Server, pinned.as_ref()) {
                    tracing::warn!(error = %e, retry_in = ?retry, "not announcing leadership to a peer that is not the server");
                    link.close();
                    me.send_after(retry, || MemberMsg::RegisterNow);
                    return;
                }
                let _one_at_a_time = lock.lock().await;
                if seq.load(std::sync::atomic::Ordering::SeqCst) != mine {
                    // A newer announcement was made while this one waited: it alone goes.
                    return;
                }
                let r: Result<(), CallError> =
                    link.call(REGISTRY, &ServerRequest::Leader(sides), t).await;
                match r {
                    Ok(()) => {}
                    // The node is shutting down, or leadership moved on and the link was
                    // closed (a fleet starting at once hands it on quickly).
                    Err(CallError::Transport(
                        rollcall_runtime::TransportError::LocallyClosed
                        | rollcall_runtime::TransportError::ClosedByPeer(_),
                    )) => tracing::debug!("leadership announcement overtaken by a closed link"),
                    // A server that does not know us (it restarted): register, and the
                    // answer's handler announces again.
                    Err(CallError::Transport(rollcall_runtime::TransportError::Refused(_))) => {
                        tracing::info!("the server does not know this leader; registering now");
                        let _ = me.send_message(MemberMsg::RegisterNow);
                    }
                    // Unanswered (a server busy with a fleet starting at once): register
                    // again after a while; the answer's handler announces again. Until
                    // then the server routes questions by what it last heard.
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?retry, "could not announce leadership");
                        me.send_after(retry, || MemberMsg::RegisterNow);
                    }
                }
            }
        });
    }
}
