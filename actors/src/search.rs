//! The search box: plain words in, complete questions out, best first. Words close to sensor
//! names (typos forgiven) pick sensors; other words become the value a machine must have;
//! saved questions whose name or text contains the words rank highest.

use serde::{Deserialize, Serialize};

use crate::question::{SensorSpec, parse};

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
}

const STOP: &[&str] = &[
    "get",
    "from",
    "all",
    "machines",
    "machine",
    "computers",
    "endpoints",
    "hosts",
    "with",
    "the",
    "a",
    "an",
    "that",
    "which",
    "on",
    "of",
    "show",
    "me",
    "find",
    "list",
    "where",
    "and",
    "or",
    "named",
    "called",
    "have",
    "has",
    "having",
    "is",
    "are",
    "what",
    "who",
    "whose",
];

/// Sensors a value is looked for in, with how likely an operator means each.
const FILTERABLE: &[(&str, f64)] = &[
    ("Installed Applications", 1.0),
    ("Running Processes", 0.8),
    ("Computer Name", 0.6),
    ("Operating System", 0.5),
    ("Logged In Users", 0.4),
    ("Listening Ports", 0.3),
];

/// How close a word must be to a sensor-name word to count as naming it.
const SENSOR_WORD: f64 = 0.88;

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '-' || c == '_' || c == '/'))
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

/// How well `w` names `sensor` (best match against the name's words).
fn sensor_match(w: &str, sensor: &str) -> f64 {
    words(sensor)
        .iter()
        .map(|sw| strsim::jaro_winkler(w, sw))
        .fold(0.0, f64::max)
}

/// Ranks complete questions for `query`, best first, at most `limit`.
pub fn search(
    query: &str,
    catalog: &[SensorSpec],
    saved: &[SavedQuestion],
    limit: usize,
) -> Vec<Suggestion> {
    let all: Vec<String> = words(query);
    let ws: Vec<String> = all
        .iter()
        .filter(|w| !STOP.contains(&w.as_str()))
        .cloned()
        .collect();
    let plain: Vec<&SensorSpec> = catalog.iter().filter(|s| s.params == 0).collect();
    // Which sensors the words name, and how well.
    // Each named sensor, its score, and which words name it.
    let mut named: Vec<(&SensorSpec, f64, Vec<usize>)> = Vec::new();
    let mut values: Vec<String> = Vec::new();
    for (wi, w) in ws.iter().enumerate() {
        let best = plain
            .iter()
            .map(|s| (*s, sensor_match(w, &s.name)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((s, score)) if score >= SENSOR_WORD => {
                // Every sensor this word names about as well (e.g. "version").
                for s2 in &plain {
                    let sc = sensor_match(w, &s2.name);
                    if sc >= score - 0.01 {
                        match named.iter_mut().find(|(n, _, _)| n.name == s2.name) {
                            Some((_, total, by)) => {
                                *total += sc;
                                by.push(wi);
                            }
                            None => named.push((s2, sc, vec![wi])),
                        }
                    }
                }
                let _ = s;
            }
            _ => values.push(w.clone()),
        }
    }
    named.sort_by(|a, b| b.1.total_cmp(&a.1));
    // Sensors for a combined question: each must be named by a word no better-ranked one
    // already took ("kernel version" is one sensor, not Kernel Version and OS Version).
    let mut used = std::collections::BTreeSet::new();
    let combo: Vec<(&SensorSpec, f64)> = named
        .iter()
        .filter(|(_, _, by)| {
            let fresh = by.iter().any(|w| !used.contains(w));
            used.extend(by.iter().copied());
            fresh
        })
        .map(|(s, sc, _)| (*s, *sc))
        .collect();
    let mut out: Vec<Suggestion> = Vec::new();
    let mut push = |question: String, score: f64, saved: Option<String>| {
        if parse(&question, catalog).is_ok() && !out.iter().any(|s| s.question == question) {
            out.push(Suggestion {
                question,
                score,
                saved,
            });
        }
    };
    // Saved questions that contain every word.
    for s in saved {
        let hay = format!("{} {}", s.name, s.text).to_lowercase();
        let hits = ws.iter().filter(|w| hay.contains(w.as_str())).count();
        if !ws.is_empty() && hits == ws.len() {
            push(s.text.clone(), 3.0 + hits as f64, Some(s.name.clone()));
        }
    }
    let value = values.join(" ");
    if value.is_empty() {
        // Only sensors: get them.
        let top: Vec<&str> = combo.iter().take(3).map(|(s, _)| s.name.as_str()).collect();
        if top.len() > 1 {
            let score = combo.iter().take(3).map(|(_, sc)| sc).sum::<f64>();
            push(
                format!("Get {} from all machines", top.join(" and ")),
                score,
                None,
            );
        }
        for (s, sc, _) in &named {
            push(format!("Get {} from all machines", s.name), *sc, None);
        }
    } else {
        // A value to look for: in the sensor the words name, else in the likely ones.
        let shown = named
            .iter()
            .find(|(s, _, _)| !FILTERABLE.iter().any(|(f, _)| *f == s.name))
            .map(|(s, _, _)| s.name.clone())
            .unwrap_or_else(|| "Computer Name".into());
        for (f, prior) in FILTERABLE {
            let boost = named
                .iter()
                .find(|(s, _, _)| s.name == *f)
                .map(|(_, sc, _)| sc * 2.0)
                .unwrap_or(0.0);
            push(
                format!("Get {shown} from all machines with {f} contains \"{value}\""),
                prior + boost,
                None,
            );
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::catalog_with;

    fn top(q: &str, saved: &[SavedQuestion]) -> String {
        search(q, &catalog_with(&[]), saved, 5)
            .first()
            .map(|s| s.question.clone())
            .unwrap_or_default()
    }

    #[test]
    fn plain_words_become_ranked_questions() {
        let cases = [
            (
                "machines with chrome",
                r#"Get Computer Name from all machines with Installed Applications contains "chrome""#,
            ),
            (
                "instaled aplications",
                "Get Installed Applications from all machines",
            ),
            (
                "computer name and operating system",
                "Get Computer Name and Operating System from all machines",
            ),
            (
                "processes named nginx",
                r#"Get Computer Name from all machines with Running Processes contains "nginx""#,
            ),
            ("uptime", "Get Uptime from all machines"),
            ("kernal version", "Get Kernel Version from all machines"),
        ];
        for (q, want) in cases {
            assert_eq!(
                top(q, &[]),
                want,
                "{q}: {:#?}",
                search(q, &catalog_with(&[]), &[], 5)
            );
        }
    }

    #[test]
    fn saved_questions_rank_first_and_every_suggestion_parses() {
        let saved = vec![SavedQuestion {
            name: "openssl hosts".into(),
            text: r#"Get Computer Name and OS Version from all machines with Installed Applications contains "openssl""#.into(),
            every_secs: None,
        }];
        let s = search("openssl", &catalog_with(&[]), &saved, 5);
        assert_eq!(s[0].saved.as_deref(), Some("openssl hosts"));
        assert!(s.len() > 1);
        for x in &s {
            assert!(
                parse(&x.question, &catalog_with(&[])).is_ok(),
                "{}",
                x.question
            );
        }
        assert!(search("", &catalog_with(&[]), &saved, 5).is_empty());
    }
}
