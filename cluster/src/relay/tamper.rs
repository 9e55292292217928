//! A compromised member's ways of changing what it passes on (feature `hostile`, tests only):
//! the server must catch each by the answers' tags.

use rollcall_runtime::NodeId;

use crate::proto::{EncodedAnswer, IdList, NodeAnswer, Partial, TaggedAnswer};

/// How a compromised member changes the answers of the machines after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Reports every other machine as "answered, no match" (rows dropped, tags kept).
    NoMatch,
    /// Rewrites every other machine's answer to a row of its own (tags kept).
    Alter,
    /// Adds made-up machines to each group of others (tags kept).
    Invent,
}

/// `merged` as `me`, compromised, passes it on.
pub fn apply(t: Tamper, merged: &Partial, me: &NodeId) -> Partial {
    let mut out = Partial::default();
    for (answer, who, tag) in merged.tagged_groups() {
        let ids: Vec<&str> = IdList::ids(who).collect();
        let mine = ids.contains(&me.as_str());
        let own = EncodedAnswer::from_bytes(answer);
        let changed = match t {
            _ if mine => own.clone(),
            Tamper::NoMatch => EncodedAnswer::new(&NodeAnswer {
                rows: None,
                problems: vec![],
            }),
            Tamper::Alter => EncodedAnswer::new(&NodeAnswer {
                rows: Some(vec![vec!["FORGED".into()]]),
                problems: vec![],
            }),
            Tamper::Invent => own.clone(),
        };
        // The group's tag goes with its first machine; the others add nothing to it.
        for (i, id) in ids.iter().enumerate() {
            let tag = if i == 0 { tag } else { [0; 16] };
            out.add(
                &NodeId::new(*id),
                &TaggedAnswer {
                    answer: changed.clone(),
                    tag,
                },
            );
        }
        if t == Tamper::Invent && !mine {
            out.add(
                &NodeId::new(format!("ghost-of-{}", ids.first().copied().unwrap_or(""))),
                &TaggedAnswer {
                    answer: changed,
                    tag: [0; 16],
                },
            );
        }
    }
    out
}
