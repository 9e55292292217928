//! The question language: a typed AST, its parser, and its evaluation against sensor values.
//!
//! ```text
//! Get Computer Name and Operating System from all machines
//!     with Installed Applications contains "openssl" and Uptime > 1 day
//! ```
//!
//! Sensor names are matched against the catalog the parser is given (longest name first,
//! case-insensitive), so `Installed Application Version[openssl]` and `Installed Applications`
//! can coexist. Parse errors carry the column and, for an unknown sensor, the closest name.
//!
//! **Operators on several values.** Many sensors give several values on one machine
//! (installed applications, processes, ports, users, addresses). A positive comparison
//! (`contains`, `equals`/`is`/`=`, `starts with`, `ends with`, `matches`, `<`, `<=`, `>`,
//! `>=`) holds when *any* value satisfies it; a negative one (`!=`/`is not`/`<>`,
//! `does not contain`/`not contains`) holds when *no* value satisfies the positive form, so
//! `Installed Applications != "vim"` and `not Installed Applications = "vim"` pick the same
//! machines. Text comparisons ignore case, `matches` included (write `(?-i)` in the pattern for
//! a case-sensitive match). `<`, `<=`, `>`, `>=` compare numbers (with units on sizes and
//! durations: `Memory > 8 GB`, `Uptime > 2 days`) or, on version sensors, versions in the
//! Debian manner (`Installed Application Version[openssl] < 3.0.13`); they are refused at ask
//! time on text sensors. A value keeps its text: `Kernel Version starts with 6.10` compares
//! the characters `6.10`.
//!
//! **Unknowns.** A sensor that failed on a machine makes its comparisons unknown there, and
//! an unknown filter does not match (`not` of unknown is unknown): a machine whose package
//! list could not be read is not counted as "without vim". The failure is listed with the
//! answer's problems.
//!
//! **Limits.** Untrusted text never recurses without a bound: a question is at most
//! [`MAX_QUESTION_BYTES`], nests parentheses and `not` at most [`MAX_DEPTH`] deep, and holds at
//! most [`MAX_CONDITIONS`] comparisons. `a or b or c …` is one flat list however long, so a
//! thousand host names are a list of a thousand, not a tree a thousand deep. Endpoints check
//! the same limits on what they decode ([`Question::check`]).

mod eval;
mod parse;
#[cfg(test)]
mod tests;
pub mod units;

pub use eval::Truth;
pub use parse::{ParseError, parse};

use serde::{Deserialize, Serialize};

/// The longest question text accepted, in bytes.
pub const MAX_QUESTION_BYTES: usize = 256 * 1024;
/// How deep parentheses and `not` may nest.
pub const MAX_DEPTH: usize = 32;
/// How many comparisons one question may hold.
pub const MAX_CONDITIONS: usize = 4096;
/// How many sensors one question may select.
pub const MAX_SELECTED: usize = 16;

/// What a sensor's values are, which decides how they compare and print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueKind {
    /// Text: compared as text, case-insensitively.
    Text,
    /// A plain number.
    Number,
    /// A size in bytes (units: `8 GB`, `10 GiB`).
    Bytes,
    /// A duration in seconds (units: `90 s`, `2 hours`, `1 day`).
    Seconds,
    /// A package version (`<` and `>` compare versions).
    Version,
    /// `true` or `false`.
    Bool,
    /// Whatever a script prints: numbers compare as numbers, anything else as text.
    Any,
}

impl ValueKind {
    /// Its name in `rollcall sensor list`.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Text => "text",
            ValueKind::Number => "number",
            ValueKind::Bytes => "size",
            ValueKind::Seconds => "duration",
            ValueKind::Version => "version",
            ValueKind::Bool => "true/false",
            ValueKind::Any => "text or number",
        }
    }

    /// The unit its raw values are in, if any.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            ValueKind::Bytes => Some("bytes"),
            ValueKind::Seconds => Some("seconds"),
            _ => None,
        }
    }

    fn numeric(self) -> bool {
        matches!(
            self,
            ValueKind::Number | ValueKind::Bytes | ValueKind::Seconds | ValueKind::Any
        )
    }
}

/// What the parser (and `rollcall sensor list`) knows of a sensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorSpec {
    /// Its canonical name, e.g. `Installed Application Version`.
    pub name: String,
    /// How many `[...]` parameters it takes, exactly (0 or 1 for the built-ins).
    pub params: usize,
    /// What the parameters are, e.g. `package name` (empty when it takes none).
    pub param_help: String,
    /// What its values are.
    pub kind: ValueKind,
    /// Whether a machine may give several values (each counted as its own row).
    pub multi: bool,
    /// One line on what it reads.
    pub description: String,
}

/// A sensor and its parameters, e.g. `File Exists[/etc/passwd]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SensorRef {
    /// Canonical name.
    pub name: String,
    /// Parameters (empty for plain sensors), unquoted.
    pub args: Vec<String>,
}

/// `s` as a question writes it: bare when that reads back the same, else double-quoted.
fn quote_if_needed(s: &str, bare_ok: impl Fn(char) -> bool) -> String {
    if !s.is_empty() && s.chars().all(bare_ok) {
        return s.to_string();
    }
    quoted(s)
}

/// `s` in double quotes, with `\` and `"` escaped.
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl std::fmt::Display for SensorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.args.is_empty() {
            let args: Vec<String> = self
                .args
                .iter()
                .map(|a| {
                    quote_if_needed(a, |c| {
                        !c.is_whitespace()
                            && !"\"'[],\\\u{201c}\u{201d}\u{2018}\u{2019}".contains(c)
                    })
                })
                .collect();
            write!(f, "[{}]", args.join(","))?;
        }
        Ok(())
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Substring, case-insensitive: some value contains it.
    Contains,
    /// No value contains it (`does not contain`, `not contains`).
    NotContains,
    /// Whole value, case-insensitive (also `=`, `is`): some value equals it.
    Equals,
    /// No value equals it (`!=`, `is not`, `<>`).
    NotEquals,
    /// Prefix, case-insensitive.
    StartsWith,
    /// Suffix, case-insensitive.
    EndsWith,
    /// Regular expression, case-insensitive unless the pattern says `(?-i)`.
    Matches,
    /// `<` (numbers, or versions on version sensors).
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Contains => "contains",
            Op::NotContains => "does not contain",
            Op::Equals => "=",
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

    /// Whether it orders values (numbers or versions).
    fn ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }

    /// The positive form of a negative operator.
    fn positive(self) -> Option<Op> {
        match self {
            Op::NotContains => Some(Op::Contains),
            Op::NotEquals => Some(Op::Equals),
            _ => None,
        }
    }
}

/// The right-hand side of a comparison, typed by the parser from the sensor and the operator,
/// so that endpoints compare the same way whatever catalog they have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Text, compared as text.
    Text(String),
    /// A number (units already applied), compared with the values that read as numbers.
    Number(f64),
    /// A version, ordered in the Debian manner.
    Version(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(s) | Value::Version(s) => f.write_str(&quoted(s)),
            Value::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The `with` clause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Filter {
    /// Every one holds.
    And(Vec<Filter>),
    /// At least one holds.
    Or(Vec<Filter>),
    /// Negation.
    Not(Box<Filter>),
    /// `sensor op value` (see the module docs for several values).
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
        let list = |f: &mut std::fmt::Formatter<'_>, items: &[Filter], sep: &str| {
            f.write_str("(")?;
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{x}")?;
            }
            f.write_str(")")
        };
        match self {
            Filter::And(items) => list(f, items, " and "),
            Filter::Or(items) => list(f, items, " or "),
            Filter::Not(a) => write!(f, "not {a}"),
            Filter::Cmp { sensor, op, value } => write!(f, "{sensor} {} {value}", op.text()),
        }
    }
}

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// The sensors whose values make the rows.
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

/// Why a decoded question is refused before it is evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nested more than {MAX_DEPTH} deep")]
    TooDeep,
    /// More than [`MAX_CONDITIONS`] comparisons.
    #[error("more than {MAX_CONDITIONS} conditions")]
    TooManyConditions,
    /// No sensor selected, or more than [`MAX_SELECTED`].
    #[error("selects {0} sensors (1 to {MAX_SELECTED} allowed)")]
    Selection(usize),
    /// An empty `and`/`or` list.
    #[error("an empty list of conditions")]
    EmptyList,
}

/// Adds `s` unless it is there: a question names a handful of sensors, and a linear look
/// for repeats beats a set (this runs once per question on every machine).
fn add_once<'q>(out: &mut Vec<&'q SensorRef>, s: &'q SensorRef) {
    if !out.contains(&s) {
        out.push(s);
    }
}

impl Question {
    /// Every sensor the question reads (selected or filtered on), once each.
    pub fn sensors(&self) -> Vec<&SensorRef> {
        let mut out = Vec::with_capacity(self.select.len() + 2);
        for s in &self.select {
            add_once(&mut out, s);
        }
        self.filter_into(&mut out);
        out
    }

    /// The sensors its filter reads, once each (none without a filter).
    pub fn filter_sensors(&self) -> Vec<&SensorRef> {
        let mut out = Vec::with_capacity(2);
        self.filter_into(&mut out);
        out
    }

    fn filter_into<'q>(&'q self, out: &mut Vec<&'q SensorRef>) {
        fn walk<'q>(f: &'q Filter, out: &mut Vec<&'q SensorRef>) {
            match f {
                Filter::And(items) | Filter::Or(items) => items.iter().for_each(|x| walk(x, out)),
                Filter::Not(a) => walk(a, out),
                Filter::Cmp { sensor, .. } => add_once(out, sensor),
            }
        }
        if let Some(f) = &self.filter {
            walk(f, out);
        }
    }

    /// Checks the limits the parser enforces, on a question that came from elsewhere (an
    /// endpoint checks what it decoded before it walks it).
    pub fn check(&self) -> Result<(), LimitError> {
        fn walk(f: &Filter, depth: usize, conditions: &mut usize) -> Result<(), LimitError> {
            // Each level of parentheses may hold an `or` list of `and` lists: two levels of
            // the tree per level of nesting.
            if depth > 2 * MAX_DEPTH + 4 {
                return Err(LimitError::TooDeep);
            }
            match f {
                Filter::And(items) | Filter::Or(items) => {
                    if items.is_empty() {
                        return Err(LimitError::EmptyList);
                    }
                    items
                        .iter()
                        .try_for_each(|x| walk(x, depth + 1, conditions))
                }
                Filter::Not(a) => walk(a, depth + 1, conditions),
                Filter::Cmp { .. } => {
                    *conditions += 1;
                    if *conditions > MAX_CONDITIONS {
                        return Err(LimitError::TooManyConditions);
                    }
                    Ok(())
                }
            }
        }
        if self.select.is_empty() || self.select.len() > MAX_SELECTED {
            return Err(LimitError::Selection(self.select.len()));
        }
        match &self.filter {
            Some(f) => walk(f, 0, &mut 0),
            None => Ok(()),
        }
    }
}
