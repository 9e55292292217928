//! The search box: plain words in, complete questions out, best first.
//!
//! The words are read for what an operator means: sensor names (typos forgiven) and their
//! everyday names ("ram", "hostname"), numbers with units and comparison words ("uptime over
//! a day", "less than 10 GB of disk"), qualities ("low disk space", "rebooted recently"),
//! paths (`/etc/passwd`), "version of X", and values of known sensors: operating system and
//! application names, and the values the fleet itself reported in earlier answers (its
//! [`Vocabulary`]). Saved questions whose name or text holds every word rank first. A
//! suggestion built from words it did not understand is marked as a guess and never ranks
//! above one that understood them all.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::question::{SensorSpec, parse, quoted};

mod reading;
#[allow(unused_imports)]
pub use reading::*;
mod requests;
#[allow(unused_imports)]
pub use requests::*;

/// A question an operator saved, optionally reissued on a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedQuestion {
    /// Its name.
    pub name: String,
    /// The question.
    pub text: String,
    /// Reissue it every this many seconds.
    pub every_secs: Option<u64>,
}

/// A ranked suggestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    /// A complete question, ready to ask.
    pub question: String,
    /// Higher is better.
    pub score: f64,
    /// The saved question it comes from, if any.
    pub saved: Option<String>,
    /// Words of the request it did not understand (it is a guess when there are any).
    pub not_understood: Vec<String>,
}

/// Values the fleet reported, by sensor, learned from answers (bounded per sensor).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocabulary {
    values: BTreeMap<String, BTreeSet<String>>,
}

/// Sensors whose reported values the search box learns.
pub const LEARNED_SENSORS: &[&str] = &[
    "Installed Applications",
    "Running Processes",
    "Operating System",
    "Logged In Users",
    "Computer Name",
];

/// Most values learned per sensor.
pub const LEARNED_PER_SENSOR_MAX: usize = 20_000;

impl Vocabulary {
    /// Learns `value` as one `sensor` reported (lower-cased; short values only).
    pub fn learn(&mut self, sensor: &str, value: &str) {
        if !LEARNED_SENSORS.contains(&sensor) || value.len() > 64 || value.starts_with('[') {
            return;
        }
        let set = self.values.entry(sensor.to_string()).or_default();
        if set.len() < LEARNED_PER_SENSOR_MAX {
            set.insert(value.to_lowercase());
        }
    }

    fn knows(&self, sensor: &str, word: &str) -> bool {
        self.values.get(sensor).is_some_and(|s| s.contains(word))
    }
}

/// Ranks complete questions for `query`, best first, at most `limit`.
pub fn search(
    query: &str,
    catalog: &[SensorSpec],
    saved: &[SavedQuestion],
    vocab: &Vocabulary,
    limit: usize,
) -> Vec<Suggestion> {
    // The request is short text: a long one is cut rather than read at length.
    let query: String = query.chars().take(500).collect();
    let ws: Vec<String> = words(&query).into_iter().take(40).collect();
    let content: Vec<&String> = ws.iter().filter(|w| !STOP.contains(&w.as_str())).collect();
    let mut out: Vec<Suggestion> = Vec::new();
    let mut push = |question: String, score: f64, saved: Option<String>, not: &[String]| {
        if parse(&question, catalog).is_ok() && !out.iter().any(|s| s.question == question) {
            out.push(Suggestion {
                question,
                score,
                saved,
                not_understood: not.to_vec(),
            });
        }
    };
    // Saved questions that contain every word.
    for s in saved {
        let hay = format!("{} {}", s.name, s.text).to_lowercase();
        let hits = content.iter().filter(|w| hay.contains(w.as_str())).count();
        if !content.is_empty() && hits == content.len() {
            push(
                s.text.clone(),
                100.0 + hits as f64,
                Some(s.name.clone()),
                &[],
            );
        }
    }
    if content.is_empty() {
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out.truncate(limit);
        return out;
    }
    let r = read(&ws, vocab, catalog);
    let understood = content.len().saturating_sub(r.not_understood.len()) as f64;
    // Guesses rank below anything fully understood.
    let base = if r.not_understood.is_empty() {
        10.0
    } else {
        0.0
    } + understood;
    let not = r.not_understood.clone();

    // The value words, each in its likeliest sensor (the first variant) or the next.
    let value_conditions = |pick: usize| -> Vec<Condition> {
        r.values
            .iter()
            .map(|(v, sensors)| {
                let s = sensors
                    .get(pick)
                    .or(sensors.first())
                    .copied()
                    .unwrap_or("Computer Name");
                Condition {
                    sensor: s.into(),
                    text: format!("{s} contains {}", quoted(v)),
                    show: false,
                }
            })
            .collect()
    };
    let build = |conditions: &[Condition]| -> String {
        let mut select: Vec<String> = r.select.clone();
        for c in conditions {
            if c.show && !select.contains(&c.sensor) {
                select.push(c.sensor.clone());
            }
        }
        if select.is_empty()
            || (!conditions.is_empty()
                && !select.iter().any(|s| s == "Computer Name")
                && select
                    .iter()
                    .all(|s| conditions.iter().any(|c| &c.sensor == s)))
        {
            select.insert(0, "Computer Name".into());
        }
        let mut q = format!("Get {} from all machines", select.join(" and "));
        if !conditions.is_empty() {
            let texts: Vec<&str> = conditions.iter().map(|c| c.text.as_str()).collect();
            q += &format!(" with {}", texts.join(" and "));
        }
        q
    };
    let mut conditions = r.conditions.clone();
    conditions.extend(value_conditions(0));
    if !conditions.is_empty() || !r.select.is_empty() {
        push(build(&conditions), base + 1.0, None, &not);
    }
    // The second sensor for each value (an application that is also a process).
    if !r.values.is_empty() {
        let mut alt = r.conditions.clone();
        alt.extend(value_conditions(1));
        push(build(&alt), base + 0.5, None, &not);
    }
    // Sensors alone, when only sensors were named.
    if conditions.is_empty() {
        for s in &r.select {
            push(format!("Get {s} from all machines"), base, None, &not);
        }
    }
    // Guesses: the words not understood, looked for where values usually are.
    if !r.not_understood.is_empty() {
        let value = r.not_understood.join(" ");
        for (k, s) in [
            "Installed Applications",
            "Running Processes",
            "Computer Name",
        ]
        .iter()
        .enumerate()
        {
            let mut guess = conditions.clone();
            guess.push(Condition {
                sensor: s.to_string(),
                text: format!("{s} contains {}", quoted(&value)),
                show: false,
            });
            push(build(&guess), base - 1.0 - k as f64 * 0.1, None, &not);
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests;
