//! A question's row expanded to the machines that gave it (the console's grid).

use std::collections::HashMap;

use rollcall_cluster::shard::RingServer;

/// Machines in one page, at most (a reply must fit a frame: ids and host names are short).
pub(super) const PAGE: usize = 5000;

/// The machines that gave the row `cells` in question `id`'s answers, as (node id, host
/// name) ordered by host name then id; `None` if the server no longer holds its answers.
pub(super) async fn machines_of_row(
    rings: &RingServer,
    id: u64,
    cells: &[String],
) -> Option<Vec<(String, String)>> {
    let groups = rings.answers_by_machine(id)?;
    let mut who: Vec<String> = groups
        .into_iter()
        .filter(|(answer, _)| {
            answer
                .rows
                .iter()
                .flatten()
                .any(|row| row.as_slice() == cells)
        })
        .flat_map(|(_, machines)| machines.into_iter().map(|m| m.to_string()))
        .collect();
    if who.is_empty() {
        return Some(Vec::new());
    }
    who.sort();
    who.dedup();
    let report = rings.report(None).await;
    let hosts: HashMap<String, String> = report
        .machines()
        .map(|m| (m.id.to_string(), m.hostname.to_string()))
        .collect();
    let mut out: Vec<(String, String)> = who
        .into_iter()
        .map(|m| {
            let host = hosts.get(&m).cloned().unwrap_or_default();
            (m, host)
        })
        .collect();
    out.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    Some(out)
}
