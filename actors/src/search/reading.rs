//! Reading a request: which words name sensors, conditions (numbers with units, comparison words, qualities, paths) and values (OS and application names, what the fleet reported), and which it did not understand.

use crate::question::{SensorSpec, quoted};

#[allow(unused_imports)]
use super::*;

pub(super) fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in s
        .to_lowercase()
        .split(|c: char| {
            !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '<' | '>' | '\''))
        })
        .filter(|w| !w.is_empty())
    {
        let w = w.trim_matches(|c| c == '.' || c == '\'');
        if w.is_empty() {
            continue;
        }
        // "16gb" is a number and a unit.
        let digits = w
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .count();
        let rest = &w[digits..];
        if digits > 0 && !rest.is_empty() && UNIT_WORDS.iter().any(|(u, _)| *u == rest) {
            out.push(w[..digits].to_string());
            out.push(rest.to_string());
        } else {
            out.push(w.to_string());
        }
    }
    out
}

/// How well `w` names `sensor` (best match against the name's words).
pub(super) fn sensor_match(w: &str, sensor: &str) -> f64 {
    sensor
        .to_lowercase()
        .split(' ')
        .map(|sw| strsim::jaro_winkler(w, sw))
        .fold(0.0, f64::max)
}

/// A condition the words asked for, as question text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Condition {
    pub(super) sensor: String,
    pub(super) text: String,
    /// Show the sensor as a column too (sizes, durations: the value is the point).
    pub(super) show: bool,
}

/// What a request was read as.
#[derive(Debug, Default)]
pub(super) struct Reading {
    /// Sensors to show, in the order named.
    pub(super) select: Vec<String>,
    pub(super) conditions: Vec<Condition>,
    /// A value the words named whose sensor is unclear: candidates, most likely first.
    pub(super) values: Vec<(String, Vec<&'static str>)>,
    pub(super) not_understood: Vec<String>,
}

impl Reading {
    pub(super) fn show(&mut self, sensor: impl Into<String>) {
        let s = sensor.into();
        if !self.select.contains(&s) {
            self.select.push(s);
        }
    }
}

/// A number and its unit starting at `ws[i]`: (value text with unit, unit kind, words used).
pub(super) fn quantity(ws: &[String], i: usize) -> Option<(String, &'static str, usize)> {
    let w = ws[i].as_str();
    let n: f64 = match w {
        "a" | "an" | "one" => 1.0,
        "two" => 2.0,
        "three" => 3.0,
        "few" => 3.0,
        _ => w.parse().ok()?,
    };
    let unit = ws.get(i + 1).and_then(|u| {
        UNIT_WORDS
            .iter()
            .find(|(name, _)| *name == u.as_str())
            .map(|(_, canonical)| *canonical)
    });
    match unit {
        Some(u) if u.contains('*') || u.chars().next().is_some_and(char::is_lowercase) => {
            let (unit, factor) = match u.split_once('*') {
                Some((unit, f)) => (unit, f.parse::<f64>().unwrap_or(1.0)),
                None => (u, 1.0),
            };
            let n = n * factor;
            // "1 day", not "1 days".
            let unit = if n == 1.0 {
                unit.trim_end_matches('s')
            } else {
                unit
            };
            Some((format!("{n} {unit}"), "duration", 2))
        }
        Some(u) => Some((format!("{n} {u}"), "size", 2)),
        None if matches!(w, "a" | "an" | "one" | "two" | "three" | "few") => None,
        None => Some((format!("{n}"), "plain", 1)),
    }
}

/// Reads `ws` for sensors, conditions and values.
pub(super) fn read(ws: &[String], vocab: &Vocabulary, catalog: &[SensorSpec]) -> Reading {
    let mut r = Reading::default();
    let mut used = vec![false; ws.len()];
    let has = |w: &str| ws.iter().any(|x| x == w);
    let plain: Vec<&SensorSpec> = catalog.iter().filter(|s| s.params == 0).collect();

    // Paths: a file's existence, or its hash.
    for (i, w) in ws.iter().enumerate() {
        if w.starts_with('/') && w.len() > 1 {
            let hash = ["hash", "sha256", "sha", "checksum", "sha-256", "digest"]
                .iter()
                .any(|h| has(h));
            let sensor = if hash { "File Hash" } else { "File Exists" };
            r.show(format!("{sensor}[{w}]"));
            used[i] = true;
            for (j, x) in ws.iter().enumerate() {
                if [
                    "exist", "exists", "file", "files", "present", "hash", "sha256", "sha",
                    "checksum", "sha-256", "digest",
                ]
                .contains(&x.as_str())
                {
                    used[j] = true;
                }
            }
        }
    }

    // "version of X", "X version": an application's installed versions.
    for (i, w) in ws.iter().enumerate() {
        if w != "version" && w != "versions" {
            continue;
        }
        let after = (ws.get(i + 1).map(String::as_str) == Some("of"))
            .then(|| ws.get(i + 2))
            .flatten();
        let app = after
            .filter(|a| is_app(a, vocab))
            .map(|a| (a.clone(), i + 2))
            .or_else(|| {
                i.checked_sub(1)
                    .and_then(|j| ws.get(j))
                    .filter(|a| is_app(a, vocab))
                    .map(|a| (a.clone(), i - 1))
            });
        if let Some((app, at)) = app {
            r.show(format!("Installed Application Version[{app}]"));
            used[i] = true;
            used[at] = true;
            if at == i + 2 {
                used[i + 1] = true;
            }
        }
    }

    // Qualities.
    let phrase = ws.join(" ");
    let qualities: &[(&[&str], &str, &str)] = &[
        (
            &[
                "low disk",
                "disk space low",
                "low on disk",
                "out of disk",
                "disk full",
                "full disk",
                "low free disk",
                "little disk",
            ],
            "Disk Free",
            "Disk Free < 10 GiB",
        ),
        (
            &["low memory", "little memory", "low ram", "little ram"],
            "Memory",
            "Memory < 4 GiB",
        ),
        (
            &[
                "rebooted recently",
                "recently rebooted",
                "recent reboot",
                "recently restarted",
                "restarted recently",
                "just rebooted",
                "booted recently",
                "recently booted",
            ],
            "Uptime",
            "Uptime < 1 day",
        ),
        (
            &[
                "not rebooted",
                "long uptime",
                "never rebooted",
                "haven't rebooted",
                "havent rebooted",
                "not been rebooted",
                "not restarted",
                "without reboot",
                "without a reboot",
                "without rebooting",
            ],
            "Uptime",
            "Uptime > 30 days",
        ),
    ];
    let mut quality_sensor = None;
    for (phrases, sensor, condition) in qualities {
        if let Some(p) = phrases.iter().find(|p| phrase.contains(*p)) {
            // A number given with it wins over the default ("not rebooted in 60 days").
            let counted = ws.iter().any(|w| w.parse::<f64>().is_ok());
            if !counted {
                r.conditions.push(Condition {
                    sensor: sensor.to_string(),
                    text: condition.to_string(),
                    show: true,
                });
            }
            let long = ["not", "never", "long", "haven", "without"]
                .iter()
                .any(|x| p.starts_with(x));
            quality_sensor = Some((*sensor, long));
            for pw in p.split(' ') {
                if let Some(j) = ws.iter().position(|w| w == pw) {
                    used[j] = true;
                }
            }
        }
    }

    // Numbers with units, and the comparison before them.
    let mut i = 0;
    while i < ws.len() {
        if used[i] {
            i += 1;
            continue;
        }
        let Some((value, kind, n)) = quantity(ws, i) else {
            i += 1;
            continue;
        };
        // "port 443"
        if kind == "plain" && i > 0 && matches!(ws[i - 1].as_str(), "port" | "ports") {
            r.conditions.push(Condition {
                sensor: "Listening Ports".into(),
                text: format!("Listening Ports ends with {}", quoted(&format!("/{value}"))),
                show: false,
            });
            used[i] = true;
            used[i - 1] = true;
            for (j, w) in ws.iter().enumerate() {
                if matches!(w.as_str(), "listening" | "listen" | "open") {
                    used[j] = true;
                }
            }
            i += 1;
            continue;
        }
        let back = i.saturating_sub(3);
        let cmp = (back..i).rev().find_map(|j| {
            COMPARE
                .iter()
                .find(|(c, _)| *c == ws[j])
                .map(|(_, gt)| (j, *gt))
        });
        let sensor = match kind {
            "duration" => Some("Uptime"),
            "size" if has("memory") || has("ram") => Some("Memory"),
            "size" => Some("Disk Free"),
            _ => ["uptime", "memory", "ram", "disk"]
                .iter()
                .find(|w| has(w))
                .map(|w| match *w {
                    "uptime" => "Uptime",
                    "memory" | "ram" => "Memory",
                    _ => "Disk Free",
                }),
        };
        let (Some(sensor), Some((j, gt))) = (
            sensor.or(quality_sensor.map(|q| q.0)),
            cmp.or_else(|| {
                // "not rebooted in 60 days", "rebooted in the last 2 days"
                quality_sensor.map(|(_, long)| (i, long))
            }),
        ) else {
            i += n;
            continue;
        };
        let gt = if sensor == "Uptime"
            && (has("rebooted") || has("restarted") || has("booted"))
            && cmp.is_none()
        {
            quality_sensor.is_some_and(|(_, long)| long)
        } else {
            gt
        };
        let op = if gt { ">" } else { "<" };
        r.conditions.retain(|c| c.sensor != sensor);
        r.conditions.push(Condition {
            sensor: sensor.into(),
            text: format!("{sensor} {op} {value}"),
            show: true,
        });
        used[j..i + n].iter_mut().for_each(|u| *u = true);
        if j > 0 && ws[j - 1] == "at" {
            used[j - 1] = true;
        }
        for (k, w) in ws.iter().enumerate() {
            if w == "than"
                || (sensor == "Uptime"
                    && matches!(
                        w.as_str(),
                        "up" | "uptime" | "rebooted" | "restarted" | "booted" | "not"
                    ))
                || (sensor == "Memory" && matches!(w.as_str(), "memory" | "ram"))
                || (sensor == "Disk Free"
                    && matches!(w.as_str(), "disk" | "free" | "space" | "storage"))
            {
                used[k] = true;
            }
        }
        i += n;
    }

    // Operating systems, applications, processes, users, host names.
    for (i, w) in ws.iter().enumerate() {
        if used[i] || STOP.contains(&w.as_str()) {
            continue;
        }
        if let Some((_, os)) = KNOWN_OS.iter().find(|(o, _)| *o == w) {
            // "red hat" is one name.
            r.conditions.push(Condition {
                sensor: "Operating System".into(),
                text: format!("Operating System contains {}", quoted(os)),
                show: false,
            });
            used[i] = true;
            continue;
        }
        if vocab.knows("Operating System", w) {
            r.conditions.push(Condition {
                sensor: "Operating System".into(),
                text: format!("Operating System contains {}", quoted(w)),
                show: false,
            });
            used[i] = true;
            continue;
        }
        // "running X", "processes named X", "X process".
        let near = |j: usize| j + 2 >= i && j <= i + 1 && j != i;
        let running = ws
            .iter()
            .enumerate()
            .any(|(j, x)| near(j) && matches!(x.as_str(), "running" | "process" | "processes"));
        let app = is_app(w, vocab);
        let process = vocab.knows("Running Processes", w);
        let user = vocab.knows("Logged In Users", w)
            || (i > 0 && matches!(ws[i - 1].as_str(), "user" | "users"));
        let host = vocab.knows("Computer Name", w)
            || (w.contains('-') && w.chars().any(|c| c.is_ascii_digit()));
        let candidates: Vec<&'static str> =
            if running && (app || process || !is_sensor_word(w, &plain)) {
                vec!["Running Processes", "Installed Applications"]
            } else if user && !app {
                vec!["Logged In Users"]
            } else if app {
                vec!["Installed Applications", "Running Processes"]
            } else if process {
                vec!["Running Processes", "Installed Applications"]
            } else if host {
                vec!["Computer Name"]
            } else {
                continue;
            };
        used[i] = true;
        for (j, x) in ws.iter().enumerate() {
            if matches!(
                x.as_str(),
                "running" | "process" | "processes" | "user" | "users"
            ) && near(j)
            {
                used[j] = true;
            }
        }
        r.values.push((w.clone(), candidates));
    }

    // Sensor names and their everyday words.
    let mut named: Vec<(String, f64, usize)> = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        if used[i] || STOP.contains(&w.as_str()) {
            continue;
        }
        if let Some((_, s)) = SYNONYMS.iter().find(|(syn, _)| *syn == w) {
            // "mac address" is one sensor.
            let s = if s.starts_with("IP") && has("mac") {
                "MAC Address"
            } else {
                s
            };
            named.push((s.to_string(), 1.0, i));
            used[i] = true;
            continue;
        }
        let best = plain
            .iter()
            .map(|s| (s, sensor_match(w, &s.name)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((s, score)) = best
            && score >= SENSOR_WORD
            && w.len() > 2
        {
            named.push((s.name.clone(), score, i));
            used[i] = true;
        }
    }
    // Two words naming one sensor ("kernel version", "operating system") name it once; a
    // word that names several equally ("version") goes with its neighbour's sensor.
    named.sort_by_key(|(_, _, i)| *i);
    for (s, _, _) in &named {
        if !r.select.contains(s) {
            r.select.push(s.clone());
        }
    }
    // "version" after "kernel" or "os": only that sensor.
    if r.select.iter().any(|s| s == "Kernel Version") {
        r.select.retain(|s| s != "OS Version" || has("os"));
    }
    if has("os") && has("version") {
        r.select
            .retain(|s| s != "Operating System" && s != "Kernel Version" || has("kernel"));
        if !r.select.iter().any(|s| s == "OS Version") {
            r.select.push("OS Version".into());
        }
    }
    for (i, w) in ws.iter().enumerate() {
        if !used[i] && !STOP.contains(&w.as_str()) && !IGNORED.contains(&w.as_str()) {
            r.not_understood.push(w.clone());
        }
    }
    r
}

pub(super) fn is_app(w: &str, vocab: &Vocabulary) -> bool {
    KNOWN_APPS.contains(&w) || vocab.knows("Installed Applications", w)
}

pub(super) fn is_sensor_word(w: &str, plain: &[&SensorSpec]) -> bool {
    SYNONYMS.iter().any(|(s, _)| *s == w)
        || plain
            .iter()
            .any(|s| sensor_match(w, &s.name) >= SENSOR_WORD)
}

/// Application names known without asking the fleet.
pub(super) const KNOWN_APPS: &[&str] = &[
    "anydesk",
    "apache2",
    "bash",
    "chrome",
    "chromium",
    "code",
    "containerd",
    "coreutils",
    "curl",
    "docker",
    "docker-ce",
    "dropbox",
    "firefox",
    "git",
    "google-chrome-stable",
    "httpd",
    "java",
    "kubectl",
    "mariadb",
    "mysql",
    "nginx",
    "node",
    "nodejs",
    "openjdk",
    "openssh",
    "openssh-server",
    "openssl",
    "openvpn",
    "php",
    "postgresql",
    "python",
    "python3",
    "redis",
    "redis-server",
    "ruby",
    "slack",
    "sudo",
    "systemd",
    "teamviewer",
    "telnet",
    "thunderbird",
    "vim",
    "vlc",
    "wget",
    "wireshark",
    "zoom",
];

/// Operating system names: (word, value to look for).
pub(super) const KNOWN_OS: &[(&str, &str)] = &[
    ("ubuntu", "Ubuntu"),
    ("debian", "Debian"),
    ("rocky", "Rocky"),
    ("centos", "CentOS"),
    ("rhel", "Red Hat"),
    ("redhat", "Red Hat"),
    ("fedora", "Fedora"),
    ("alma", "AlmaLinux"),
    ("almalinux", "AlmaLinux"),
    ("suse", "SUSE"),
    ("opensuse", "openSUSE"),
    ("amazon", "Amazon Linux"),
];

/// Words that carry no meaning of their own here.
pub(super) const STOP: &[&str] = &[
    "get",
    "from",
    "all",
    "machines",
    "machine",
    "computers",
    "computer",
    "endpoints",
    "endpoint",
    "hosts",
    "host",
    "servers",
    "server",
    "boxes",
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
    "in",
    "for",
    "any",
    "every",
    "each",
    "do",
    "does",
    "been",
    "there",
    "installed",
    "by",
    "to",
    "it",
    "its",
    "their",
    "how",
    "many",
    "much",
    "please",
    "i",
    "we",
    "our",
    "my",
    "at",
    "as",
    "be",
    "since",
    "last",
    "past",
    "was",
    "were",
    "them",
    "this",
    "these",
    "those",
    "some",
    "see",
];

/// Words understood as filler when nothing else takes them.
pub(super) const IGNORED: &[&str] = &[
    "than",
    "not",
    "no",
    "free",
    "open",
    "running",
    "up",
    "currently",
    "now",
];

/// Everyday names of sensors: word → sensor.
pub(super) const SYNONYMS: &[(&str, &str)] = &[
    ("hostname", "Computer Name"),
    ("hostnames", "Computer Name"),
    ("names", "Computer Name"),
    ("name", "Computer Name"),
    ("os", "Operating System"),
    ("distro", "Operating System"),
    ("distribution", "Operating System"),
    ("linux", "Operating System"),
    ("kernel", "Kernel Version"),
    ("ip", "IP Address"),
    ("ips", "IP Address"),
    ("address", "IP Address"),
    ("addresses", "IP Address"),
    ("mac", "MAC Address"),
    ("ram", "Memory"),
    ("memory", "Memory"),
    ("disk", "Disk Free"),
    ("storage", "Disk Free"),
    ("space", "Disk Free"),
    ("processor", "CPU"),
    ("cpus", "CPU"),
    ("users", "Logged In Users"),
    ("user", "Logged In Users"),
    ("logged", "Logged In Users"),
    ("processes", "Running Processes"),
    ("process", "Running Processes"),
    ("ports", "Listening Ports"),
    ("listening", "Listening Ports"),
    ("apps", "Installed Applications"),
    ("applications", "Installed Applications"),
    ("software", "Installed Applications"),
    ("packages", "Installed Applications"),
    ("patches", "Missing Patches"),
    ("patch", "Missing Patches"),
    ("updates", "Missing Patches"),
    ("unpatched", "Missing Patches"),
    ("uptime", "Uptime"),
];

/// Comparison words: word → whether it means "more than".
pub(super) const COMPARE: &[(&str, bool)] = &[
    ("over", true),
    ("above", true),
    ("more", true),
    ("greater", true),
    ("bigger", true),
    ("larger", true),
    ("longer", true),
    ("exceeding", true),
    ("least", true),
    (">", true),
    ("under", false),
    ("below", false),
    ("less", false),
    ("fewer", false),
    ("smaller", false),
    ("within", false),
    ("last", false),
    ("past", false),
    ("most", false),
    ("<", false),
];

/// Words of time and size units, and number words.
pub(super) const UNIT_WORDS: &[(&str, &str)] = &[
    ("second", "seconds"),
    ("seconds", "seconds"),
    ("secs", "seconds"),
    ("s", "seconds"),
    ("minute", "minutes"),
    ("minutes", "minutes"),
    ("mins", "minutes"),
    ("min", "minutes"),
    ("hour", "hours"),
    ("hours", "hours"),
    ("h", "hours"),
    ("day", "days"),
    ("days", "days"),
    ("d", "days"),
    ("week", "weeks"),
    ("weeks", "weeks"),
    ("month", "days*30"),
    ("months", "days*30"),
    ("year", "days*365"),
    ("years", "days*365"),
    ("b", "B"),
    ("kb", "KB"),
    ("mb", "MB"),
    ("gb", "GB"),
    ("tb", "TB"),
    ("kib", "KiB"),
    ("mib", "MiB"),
    ("gib", "GiB"),
    ("tib", "TiB"),
    ("gig", "GB"),
    ("gigs", "GB"),
];

/// How close a word must be to a sensor-name word to count as naming it.
pub(super) const SENSOR_WORD: f64 = 0.88;
