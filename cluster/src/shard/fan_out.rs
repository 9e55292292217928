//! The server's fan-out of a question: every chain asked at once from its forward leader,
//! each kept going by a [`ChainWalk`] until every member of it has answered, is offline, or
//! the question expired; a chain's answers checked as they come back, and the member that
//! changed another's answer named.

use super::*;

impl RingServer {
    /// Sends question `id` down every chain at once, and keeps each chain going until every
    /// member of it has answered, is offline, or the question expired.
    /// `report` is the server's view as the question was created: each chain's first round
    /// uses it (a full report walks every member; at 100,000 endpoints, once is enough).
    pub(super) async fn fan_out(&self, id: u64, report: RingsReport) {
        let chains = report
            .rings
            .into_iter()
            .map(|r| (Chain::Ring(r.ring), r.members))
            .chain(
                report
                    .isolated
                    .into_iter()
                    .map(|m| (Chain::Alone(m.clone()), vec![m])),
            );
        futures::future::join_all(chains.map(|(c, ms)| self.walk(id, c, ms))).await;
        self.questions.fanned_out(id);
    }

    /// One chain of a question, walked by a [`ChainWalk`]: ask its first member who has not
    /// answered (the forward leader, at first); what comes back covers it and everyone after
    /// it the chain reached. A gap (a split ring, a member routed around) is walked by
    /// asking its first member directly; a failed member is asked again only after the
    /// others, and not within the retry interval of its failure.
    async fn walk(&self, id: u64, chain: Chain, first: Vec<crate::proto::MemberReport>) {
        use futures::StreamExt;
        let mut first = Some(first);
        let mut walk = ChainWalk::new(self.fan.retry, 2).hedged(self.fan.hop, HEDGED_ASKS);
        // Members that took their ask (their chain is at work): told by the asks.
        let (taken_tx, mut taken_rx) = tokio::sync::mpsc::unbounded_channel::<NodeId>();
        let mut asks = futures::stream::FuturesUnordered::new();
        loop {
            let Some(env) = self.questions.envelope(id) else {
                return;
            };
            if env.ttl_ms == 0 {
                return;
            }
            let members = match (first.take(), &chain) {
                (Some(ms), _) => ms,
                (None, Chain::Alone(m)) => vec![m.clone()],
                (None, Chain::Ring(ring)) => self.ring_members(ring).await,
            };
            let online: Vec<&crate::proto::MemberReport> = members
                .iter()
                .filter(|m| m.health != crate::proto::Health::Offline)
                .collect();
            let answered = self
                .questions
                .have_answered(id, online.iter().map(|m| &m.id));
            // The tail past the chain's end first, gaps inside it after (see `asking_order`).
            let suspect: Vec<bool> = online
                .iter()
                .map(|m| m.health == crate::proto::Health::Suspect)
                .collect();
            let missing: Vec<&crate::proto::MemberReport> =
                crate::relay::asking_order(&answered, &suspect)
                    .into_iter()
                    .map(|i| online[i])
                    .collect();
            let ids: Vec<&NodeId> = missing.iter().map(|m| &m.id).collect();
            let until = match walk.next(&ids, now()) {
                Step::Done => return,
                Step::WaitUntil(t) => t,
                Step::Ask(i) => {
                    let target = missing[i].clone();
                    tracing::debug!(question = id, member = %target.id, health = %target.health, "walk asks");
                    walk.asking(&target.id, now());
                    let ttl = Duration::from_millis(env.ttl_ms);
                    let taken = taken_tx.clone();
                    asks.push(async move {
                        let r = self.ask_member(&target, env, ttl, Some(taken)).await;
                        (target, r)
                    });
                    continue;
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                Some(member) = taken_rx.recv() => walk.taken(&member),
                Some((target, r)) = asks.next(), if !asks.is_empty() => {
                    let round = walk.asked() + 1;
                    let outcome = self.finish_ask(id, &target, r, &members, round).await;
                    // When the outcome is known, not when the attempt started: a dead
                    // member's dial takes longer than the retry interval.
                    walk.handle(&target.id, outcome, now());
                }
            }
        }
    }

    /// What asking `target` for question `id` came to, its answers merged (those of
    /// machines of this chain, `members`, only).
    async fn finish_ask(
        &self,
        id: u64,
        target: &crate::proto::MemberReport,
        r: Result<crate::proto::Partial, AskError>,
        members: &[crate::proto::MemberReport],
        round: u32,
    ) -> Outcome {
        match r {
            Ok(p) => {
                let covered = p.contains(&target.id);
                // Counted only for machines of this chain: a member cannot answer for
                // machines elsewhere, or for machines that do not exist.
                let mut chain: std::collections::HashSet<&str, crate::questions::FastIds> =
                    std::collections::HashSet::with_capacity_and_hasher(
                        members.len(),
                        crate::questions::FastIds::default(),
                    );
                chain.extend(members.iter().map(|m| m.id.as_str()));
                let m = self
                    .questions
                    .merge(id, p, &target.id, |n| chain.contains(n));
                let refused = m.outside + m.tampered;
                if refused > 0 {
                    self.node
                        .wire_stats()
                        .add_n(|s| &s.rejected_answers, refused as u64);
                    tracing::warn!(question = id, member = %target.id, outside = m.outside, tampered = m.tampered, "refused answers a chain brought: outside it, or changed on the way");
                }
                if m.tampered > 0 {
                    // Its own answer straight from it, with no hop between; then the
                    // member that changed the answers is looked for (and the machines
                    // after it answer in chains of their own).
                    if let Some(alone) = self.questions.envelope(id) {
                        self.ask_alone(target, alone);
                    }
                    if let Some(from) = members.iter().position(|m| m.id == target.id) {
                        self.name_culprit(id, members, from, &chain).await;
                    }
                }
                let counted = self
                    .questions
                    .have_answered(id, std::iter::once(&target.id))
                    .first()
                    .copied()
                    .unwrap_or(false);
                Outcome::Answered {
                    covered: covered && counted,
                }
            }
            Err(e) => {
                let closed = e.link_closed();
                tracing::info!(question = id, round, member = %target.id, error = %e, link_closed = closed, "chain failed at this member; asking the next");
                Outcome::Failed {
                    link_closed: closed,
                }
            }
        }
    }

    /// The chain from `members[from]` brought answers that did not verify: asks chains from
    /// the members after it until one comes back clean; the first member of the last chain
    /// that came back changed is the one that changed them, and is named in question `id`'s
    /// problems. Every chain asked is counted as usual (its verified answers).
    async fn name_culprit(
        &self,
        id: u64,
        members: &[crate::proto::MemberReport],
        from: usize,
        chain: &std::collections::HashSet<&str, crate::questions::FastIds>,
    ) {
        // Some(true): changed; Some(false): clean; None: not answered.
        let ask = |at: usize| async move {
            let env = self.questions.envelope(id)?;
            let ttl = Duration::from_millis(env.ttl_ms);
            let m = &members[at];
            let p = self.ask_member(m, env, ttl, None).await.ok()?;
            let merged = self.questions.merge(id, p, &m.id, |n| chain.contains(n));
            if merged.tampered > 0 {
                self.node
                    .wire_stats()
                    .add_n(|s| &s.rejected_answers, merged.tampered as u64);
            }
            Some(merged.tampered > 0)
        };
        // Chains from the members after it, until one comes back clean: the last one that
        // came back changed starts with the member that changed them.
        let mut culprit = from;
        for at in from + 1..members.len() {
            match ask(at).await {
                Some(false) => break,
                Some(true) => culprit = at,
                None => {}
            }
        }
        let who = &members[culprit].id;
        tracing::warn!(question = id, member = %who, "this member changed the answers of machines after it in its chain");
        self.questions.flag(
            id,
            who,
            "changed the answers of machines after it in its chain".into(),
        );
    }

    /// Asks `m` alone for its own answer, sent to the server directly (a late question).
    fn ask_alone(&self, m: &crate::proto::MemberReport, env: crate::proto::QuestionEnvelope) {
        let (node, dial, id, addr) = (self.node.clone(), self.fan.dial, m.id.clone(), m.addr);
        tokio::spawn(async move {
            let (link, owned) = match node.peer(&id).filter(|l| l.is_connected()) {
                Some(l) => (l, false),
                None => match node.connect_once(addr, dial).await {
                    Ok(l) => (l, true),
                    Err(e) => {
                        tracing::info!(member = %id, error = %e, "could not ask a member alone");
                        return;
                    }
                },
            };
            let r: Result<(), CallError> = link.call(MEMBER, &MemberRequest::Late(env), dial).await;
            if let Err(e) = r {
                tracing::info!(member = %id, error = %e, "a member asked alone did not take it");
            }
            if owned {
                link.close();
            }
        });
    }

    /// Asks one member (on the leader link if there is one, else on a short-lived
    /// connection): it must acknowledge the question within the hop timeout, and is probed
    /// every watch interval while it works. An error says whether the link closed under the
    /// call, or turned out to be one the member had let go (worth asking again at once, on a
    /// new connection), rather than the member failing to answer.
    async fn ask_member(
        &self,
        m: &crate::proto::MemberReport,
        env: crate::proto::QuestionEnvelope,
        ttl: Duration,
        taken: Option<tokio::sync::mpsc::UnboundedSender<NodeId>>,
    ) -> Result<crate::proto::Partial, AskError> {
        let fan = self.fan;
        let (link, owned) = match self.node.peer(&m.id).filter(|l| l.is_connected()) {
            Some(l) => (l, false),
            None => {
                let dial = tokio::time::timeout(fan.dial, self.node.connect_once(m.addr, fan.dial));
                match dial.await {
                    Ok(Ok(l)) => (l, true),
                    Ok(Err(e)) => return Err(AskError::Dial(e)),
                    Err(_) => return Err(AskError::DialTimedOut),
                }
            }
        };
        // A link dialed for this ask is closed when the ask ends, also when it is dropped
        // unfinished (a walk done while an ask beside others was still under way).
        let _close = owned.then(|| CloseOnDrop(link.clone()));
        let ask = MemberRequest::Ask(env);
        let (acked_tx, acked) = tokio::sync::oneshot::channel();
        let call = link.call_acked::<_, crate::proto::Partial>(MEMBER, &ask, ttl, acked_tx);
        let watchdog = async {
            match tokio::time::timeout(fan.hop, acked).await {
                Ok(Ok(())) => {
                    if let Some(t) = &taken {
                        let _ = t.send(m.id.clone());
                    }
                }
                // The call ended first: its outcome decides.
                Ok(Err(_)) => std::future::pending().await,
                Err(_) => return AskError::NotTaken(fan.hop),
            }
            loop {
                tokio::time::sleep(fan.watch).await;
                let r: Result<(), CallError> =
                    link.call(MEMBER, &MemberRequest::Probe, fan.hop).await;
                if let Err(e) = r {
                    return AskError::Stalled(e);
                }
            }
        };
        tokio::select! {
            r = call => r.map_err(AskError::Call),
            e = watchdog => Err(e),
        }
    }
}
