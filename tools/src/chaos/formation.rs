//! Whether a fleet's rings have formed, as its server reports them.

use rollcall_cluster::proto::{Health, MemberReport, RingsReport};

/// What keeps a fleet from having formed (a fleet's, or a real cluster's as its server reports it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FormationGaps {
    /// Endpoints running.
    pub alive: usize,
    /// Endpoints the server holds online.
    pub registered: usize,
    /// Rings the server holds.
    pub rings: usize,
    /// Online ring members suspected or not yet confirmed by their neighbours.
    pub unhealthy: usize,
    /// Rings whose leaders do not hold exactly their links to the server.
    pub rings_missing_links: usize,
    /// Rings where a member other than the first leads forward or other than the last
    /// backward (a join the ring has not taken in yet), and isolated machines that do not
    /// lead.
    pub rings_misled: usize,
    /// One misled ring, described.
    pub example: Option<String>,
}

impl FormationGaps {
    /// Nothing missing: every running endpoint registered, every chain whole and led from
    /// both ends.
    pub fn formed(&self) -> bool {
        self.registered == self.alive
            && self.unhealthy == 0
            && self.rings_missing_links == 0
            && self.rings_misled == 0
    }
}

impl std::fmt::Display for FormationGaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} registered in {} rings; {} unconfirmed, {} rings missing leader links, {} rings with a misplaced leader",
            self.registered,
            self.alive,
            self.rings,
            self.unhealthy,
            self.rings_missing_links,
            self.rings_misled
        )?;
        if let Some(e) = &self.example {
            write!(f, " (e.g. {e})")?;
        }
        Ok(())
    }
}

impl FormationGaps {
    /// What keeps the rings in `report` from being one chain each, for `alive` running
    /// endpoints: all registered, each ring's online members one chain (first leads forward,
    /// last leads backward, two leader links), nobody suspect.
    pub fn of(report: &RingsReport, alive: usize) -> FormationGaps {
        let mut g = FormationGaps {
            alive,
            rings: report.rings.len(),
            ..FormationGaps::default()
        };
        // An isolated machine is a chain of one: it leads (its health is nobody's report).
        for m in report
            .isolated
            .iter()
            .filter(|m| m.health != Health::Offline)
        {
            g.registered += 1;
            g.rings_misled += usize::from(!m.leads.forward);
        }
        for r in &report.rings {
            let chain: Vec<&MemberReport> = r
                .members
                .iter()
                .filter(|m| m.health != Health::Offline)
                .collect();
            let n = chain.len();
            g.registered += n;
            g.unhealthy += chain
                .iter()
                .filter(|m| !matches!(m.health, Health::Ok | Health::Slow))
                .count();
            g.rings_missing_links += usize::from(r.leader_links != n.min(2));
            let misplaced = |(i, m): &(usize, &&MemberReport)| {
                m.leads.forward != (*i == 0) || m.leads.backward != (i + 1 == n)
            };
            if chain.iter().enumerate().any(|x| misplaced(&x)) {
                g.rings_misled += 1;
                if g.example.is_none() {
                    let who: Vec<String> = chain
                        .iter()
                        .enumerate()
                        .filter(misplaced)
                        .map(|(i, m)| {
                            format!(
                                "#{i} of {n} leads forward {} backward {}",
                                m.leads.forward, m.leads.backward
                            )
                        })
                        .collect();
                    g.example = Some(format!(
                        "ring {} ({} leader links): {}",
                        r.ring.0,
                        r.leader_links,
                        who.join(", ")
                    ));
                }
            }
        }
        g
    }
}
