//! The question language: a typed AST, its parser, and its evaluation against sensor values.
//!
//! ```text
//! Get Computer Name and Operating System from all machines
//!     with Installed Applications contains "openssl" and Uptime > 86400
//! ```
//!
//! Sensor names are matched against the catalog the parser is given (longest name first,
//! case-insensitive), so `Installed Application Version[openssl]` and `Installed Applications`
//! can coexist. Parse errors carry the column and, for an unknown sensor, the closest name.

mod parse;

pub use parse::{ParseError, parse};

use serde::{Deserialize, Serialize};

/// What the parser needs to know of a sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorSpec {
    /// Its canonical name, e.g. `Installed Application Version`.
    pub name: String,
    /// How many `[...]` arguments it takes (0 or 1).
    pub params: usize,
}

/// A sensor and its arguments, e.g. `File Exists[/etc/passwd]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SensorRef {
    /// Canonical name.
    pub name: String,
    /// Arguments (empty for plain sensors).
    pub args: Vec<String>,
}

impl std::fmt::Display for SensorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.args.is_empty() {
            write!(f, "[{}]", self.args.join(","))?;
        }
        Ok(())
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Substring, case-insensitive.
    Contains,
    /// Whole value, case-insensitive (also `=`, `is`).
    Equals,
    /// Not equal (`!=`).
    NotEquals,
    /// Prefix, case-insensitive.
    StartsWith,
    /// Suffix, case-insensitive.
    EndsWith,
    /// Regular expression.
    Matches,
    /// Numeric `<`.
    Lt,
    /// Numeric `<=`.
    Le,
    /// Numeric `>`.
    Gt,
    /// Numeric `>=`.
    Ge,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Contains => "contains",
            Op::Equals => "equals",
            Op::NotEquals => "!=",
            Op::StartsWith => "starts with",
            Op::EndsWith => "ends with",
            Op::Matches => "matches",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Text (quoted or a bare word).
    Text(String),
    /// A number.
    Number(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The `with` clause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Filter {
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Negation.
    Not(Box<Filter>),
    /// `sensor op value`: true if any of the sensor's values satisfies it.
    Cmp {
        /// The sensor.
        sensor: SensorRef,
        /// The operator.
        op: Op,
        /// The value.
        value: Value,
    },
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filter::And(a, b) => write!(f, "({a} and {b})"),
            Filter::Or(a, b) => write!(f, "({a} or {b})"),
            Filter::Not(a) => write!(f, "not {a}"),
            Filter::Cmp { sensor, op, value } => write!(f, "{sensor} {} {value}", op.text()),
        }
    }
}

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// The sensors whose values make a row.
    pub select: Vec<SensorRef>,
    /// Which machines answer (all when absent).
    pub filter: Option<Filter>,
}

impl std::fmt::Display for Question {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let select: Vec<String> = self.select.iter().map(ToString::to_string).collect();
        write!(f, "Get {} from all machines", select.join(" and "))?;
        if let Some(filter) = &self.filter {
            write!(f, " with {filter}")?;
        }
        Ok(())
    }
}

impl Question {
    /// Every sensor the question reads (selected or filtered on), once each.
    pub fn sensors(&self) -> Vec<&SensorRef> {
        // A question names a handful of sensors: a linear look for repeats beats a set (this
        // runs once per question on every machine).
        fn add<'q>(out: &mut Vec<&'q SensorRef>, s: &'q SensorRef) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        fn walk<'q>(f: &'q Filter, out: &mut Vec<&'q SensorRef>) {
            match f {
                Filter::And(a, b) | Filter::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Filter::Not(a) => walk(a, out),
                Filter::Cmp { sensor, .. } => add(out, sensor),
            }
        }
        let mut out = Vec::with_capacity(self.select.len() + 2);
        for s in &self.select {
            add(&mut out, s);
        }
        if let Some(f) = &self.filter {
            walk(f, &mut out);
        }
        out
    }
}

impl Filter {
    /// Evaluates the filter; `values` gives each sensor's values on this machine.
    pub fn eval(&self, values: &dyn Fn(&SensorRef) -> Vec<String>) -> bool {
        match self {
            Filter::And(a, b) => a.eval(values) && b.eval(values),
            Filter::Or(a, b) => a.eval(values) || b.eval(values),
            Filter::Not(a) => !a.eval(values),
            Filter::Cmp { sensor, op, value } => {
                values(sensor).iter().any(|v| compare(v, *op, value))
            }
        }
    }
}

fn compare(have: &str, op: Op, want: &Value) -> bool {
    if op.numeric() {
        let (Ok(h), Value::Number(w)) = (have.trim().parse::<f64>(), want) else {
            return false;
        };
        return match op {
            Op::Lt => h < *w,
            Op::Le => h <= *w,
            Op::Gt => h > *w,
            _ => h >= *w,
        };
    }
    let want_text = match want {
        Value::Text(s) => s.clone(),
        Value::Number(n) => n.to_string(),
    };
    let (h, w) = (have.to_lowercase(), want_text.to_lowercase());
    match op {
        Op::Contains => h.contains(&w),
        Op::Equals => h == w || numeric_equal(have, want),
        Op::NotEquals => !(h == w || numeric_equal(have, want)),
        Op::StartsWith => h.starts_with(&w),
        Op::EndsWith => h.ends_with(&w),
        Op::Matches => regex::Regex::new(&want_text).is_ok_and(|re| re.is_match(have)),
        _ => false,
    }
}

fn numeric_equal(have: &str, want: &Value) -> bool {
    matches!((have.trim().parse::<f64>(), want), (Ok(h), Value::Number(w)) if h == *w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<SensorSpec> {
        [
            ("Computer Name", 0),
            ("Operating System", 0),
            ("OS Version", 0),
            ("Uptime", 0),
            ("Installed Applications", 0),
            ("Installed Application Version", 1),
            ("File Exists", 1),
            ("IP Address", 0),
        ]
        .into_iter()
        .map(|(n, p)| SensorSpec {
            name: n.into(),
            params: p,
        })
        .collect()
    }

    fn s(name: &str) -> SensorRef {
        SensorRef {
            name: name.into(),
            args: vec![],
        }
    }

    fn cmp(sensor: SensorRef, op: Op, value: Value) -> Filter {
        Filter::Cmp { sensor, op, value }
    }

    fn text(v: &str) -> Value {
        Value::Text(v.into())
    }

    #[test]
    fn questions_parse_to_the_expected_ast() {
        let cases: Vec<(&str, Question)> = vec![
            (
                "Get Computer Name",
                Question {
                    select: vec![s("Computer Name")],
                    filter: None,
                },
            ),
            (
                "get computer name and operating system from all machines",
                Question {
                    select: vec![s("Computer Name"), s("Operating System")],
                    filter: None,
                },
            ),
            (
                r#"Get Computer Name and Operating System from all machines with Installed Applications contains "openssl" and Uptime > 86400"#,
                Question {
                    select: vec![s("Computer Name"), s("Operating System")],
                    filter: Some(Filter::And(
                        Box::new(cmp(
                            s("Installed Applications"),
                            Op::Contains,
                            text("openssl"),
                        )),
                        Box::new(cmp(s("Uptime"), Op::Gt, Value::Number(86400.0))),
                    )),
                },
            ),
            (
                "Get Installed Application Version[openssl], IP Address from all endpoints with (OS Version starts with 22 or OS Version ends with '.04') and not File Exists[/etc/nologin] equals true",
                Question {
                    select: vec![
                        SensorRef {
                            name: "Installed Application Version".into(),
                            args: vec!["openssl".into()],
                        },
                        s("IP Address"),
                    ],
                    filter: Some(Filter::And(
                        Box::new(Filter::Or(
                            Box::new(cmp(s("OS Version"), Op::StartsWith, Value::Number(22.0))),
                            Box::new(cmp(s("OS Version"), Op::EndsWith, text(".04"))),
                        )),
                        Box::new(Filter::Not(Box::new(cmp(
                            SensorRef {
                                name: "File Exists".into(),
                                args: vec!["/etc/nologin".into()],
                            },
                            Op::Equals,
                            text("true"),
                        )))),
                    )),
                },
            ),
            (
                r#"Get Computer Name from all machines with Computer Name matches "^web-[0-9]+$" or Uptime <= 60 and Uptime != 0"#,
                Question {
                    select: vec![s("Computer Name")],
                    // "and" binds tighter than "or".
                    filter: Some(Filter::Or(
                        Box::new(cmp(s("Computer Name"), Op::Matches, text("^web-[0-9]+$"))),
                        Box::new(Filter::And(
                            Box::new(cmp(s("Uptime"), Op::Le, Value::Number(60.0))),
                            Box::new(cmp(s("Uptime"), Op::NotEquals, Value::Number(0.0))),
                        )),
                    )),
                },
            ),
        ];
        for (text, want) in cases {
            let got = parse(text, &catalog()).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            // What it prints parses back to the same question.
            assert_eq!(
                parse(&got.to_string(), &catalog()).expect("reparse"),
                got,
                "{got}"
            );
        }
    }

    #[test]
    fn errors_say_where_and_suggest_the_closest_sensor() {
        let cases: Vec<(&str, usize, &str, Option<&str>)> = vec![
            (
                "Get Computr Name",
                5,
                "unknown sensor \"Computr Name\"",
                Some("Computer Name"),
            ),
            (
                "Get Computer Name from all machines with Uptme > 5",
                42,
                "unknown sensor \"Uptme\"",
                Some("Uptime"),
            ),
            ("Get Bananas", 5, "unknown sensor \"Bananas\"", None),
            (
                "Computer Name",
                1,
                "expected \"Get\" at the start of a question, found \"Computer\"",
                None,
            ),
            (
                "Get",
                4,
                "expected a sensor name, found the end of the question",
                None,
            ),
            (
                "Get Uptime from some machines",
                17,
                "expected \"all\" (as in \"from all machines\"), found \"some\"",
                None,
            ),
            (
                "Get Uptime from all machines with Uptime > lots",
                44,
                "\">\" needs a number",
                None,
            ),
            (
                "Get Uptime from all machines with Uptime",
                41,
                "expected an operator (contains, equals, starts with, ends with, matches, =, !=, <, <=, >, >=), found the end of the question",
                None,
            ),
            (
                "Get Uptime from all machines with (Uptime > 5",
                35,
                "unclosed parenthesis, found the end of the question",
                None,
            ),
            (
                "Get Uptime from all machines with Uptime contains \"x",
                51,
                "unterminated quoted value",
                None,
            ),
            (
                "Get Installed Application Version",
                5,
                "sensor \"Installed Application Version\" needs an argument, as in Installed Application Version[...]",
                None,
            ),
            (
                "Get Uptime[3]",
                5,
                "sensor \"Uptime\" takes no argument",
                None,
            ),
            (
                "Get Uptime from all machines with Computer Name matches \"(\"",
                57,
                "invalid regular expression",
                None,
            ),
            (
                "Get Uptime Uptime",
                12,
                "expected \"and\", \",\" or \"from all machines\", found \"Uptime\"",
                None,
            ),
            (
                "Get Uptime from all machines with Uptime starts 5",
                42,
                "expected \"starts with\"",
                None,
            ),
        ];
        for (text, column, message, suggestion) in cases {
            let e = parse(text, &catalog()).expect_err(text);
            assert_eq!(e.column, column, "{text}: {e}");
            assert!(e.message.starts_with(message), "{text}: {e}");
            assert_eq!(e.suggestion.as_deref(), suggestion, "{text}: {e}");
        }
        let shown = parse("Get Computr Name", &catalog())
            .expect_err("typo")
            .to_string();
        assert_eq!(
            shown,
            "at column 5: unknown sensor \"Computr Name\" (did you mean \"Computer Name\"?)"
        );
    }

    #[test]
    fn filters_evaluate_over_every_value_of_a_sensor() {
        let q = parse(
            r#"Get Computer Name from all machines with Installed Applications contains "SSL" and Uptime > 100 and not Computer Name starts with "db""#,
            &catalog(),
        )
        .expect("parse");
        let f = q.filter.expect("filter");
        let host = |apps: Vec<&str>, up: &str, name: &str| {
            let (apps, up, name): (Vec<String>, String, String) = (
                apps.into_iter().map(String::from).collect(),
                up.into(),
                name.into(),
            );
            move |s: &SensorRef| match s.name.as_str() {
                "Installed Applications" => apps.clone(),
                "Uptime" => vec![up.clone()],
                "Computer Name" => vec![name.clone()],
                _ => vec![],
            }
        };
        assert!(f.eval(&host(vec!["bash", "openssl"], "101", "web-1")));
        assert!(!f.eval(&host(vec!["bash"], "101", "web-1")));
        assert!(!f.eval(&host(vec!["openssl"], "100", "web-1")));
        assert!(!f.eval(&host(vec!["openssl"], "not a number", "web-1")));
        assert!(!f.eval(&host(vec!["openssl"], "500", "DB-7")));
        assert_eq!(q.select, vec![s("Computer Name")],);
    }
}
