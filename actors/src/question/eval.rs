//! Evaluation of a filter against one machine's sensor values, in three-valued logic: a
//! sensor that failed makes its comparisons unknown, and only a filter that is true matches.

use super::{Filter, Op, SensorRef, Value};
use crate::sensors::version;

/// The outcome of a filter on one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// It holds.
    True,
    /// It does not.
    False,
    /// A sensor it needs failed here.
    Unknown,
}

impl Truth {
    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }

    fn from_bool(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }
}

/// Regular expressions compiled once per evaluation of a filter, not once per value.
struct Patterns<'f>(Vec<(&'f str, Option<regex::Regex>)>);

impl<'f> Patterns<'f> {
    fn get(&mut self, pattern: &'f str) -> Option<&regex::Regex> {
        let at = match self.0.iter().position(|(p, _)| *p == pattern) {
            Some(i) => i,
            None => {
                let re = regex::RegexBuilder::new(pattern)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .ok();
                self.0.push((pattern, re));
                self.0.len() - 1
            }
        };
        self.0[at].1.as_ref()
    }
}

impl Filter {
    /// Evaluates the filter; `values` gives each sensor's values on this machine, or `None`
    /// when the sensor failed there. Recursion is bounded by the question's depth limit
    /// (checked by the parser, and by [`super::Question::check`] on decoded questions).
    /// The values may be lent (`&[String]`) or handed over (`Vec<String>`).
    pub fn eval<V: AsRef<[String]>>(&self, values: &dyn Fn(&SensorRef) -> Option<V>) -> Truth {
        self.eval_with(values, &mut Patterns(Vec::new()))
    }

    fn eval_with<'f, V: AsRef<[String]>>(
        &'f self,
        values: &dyn Fn(&SensorRef) -> Option<V>,
        patterns: &mut Patterns<'f>,
    ) -> Truth {
        match self {
            Filter::And(items) => {
                let mut out = Truth::True;
                for x in items {
                    match x.eval_with(values, patterns) {
                        Truth::False => return Truth::False,
                        Truth::Unknown => out = Truth::Unknown,
                        Truth::True => {}
                    }
                }
                out
            }
            Filter::Or(items) => {
                let mut out = Truth::False;
                for x in items {
                    match x.eval_with(values, patterns) {
                        Truth::True => return Truth::True,
                        Truth::Unknown => out = Truth::Unknown,
                        Truth::False => {}
                    }
                }
                out
            }
            Filter::Not(a) => a.eval_with(values, patterns).not(),
            Filter::Cmp { sensor, op, value } => {
                let Some(have) = values(sensor) else {
                    return Truth::Unknown;
                };
                let have = have.as_ref();
                match op.positive() {
                    // Negative operators: no value satisfies the positive form.
                    Some(pos) => {
                        Truth::from_bool(!have.iter().any(|v| compare(v, pos, value, patterns)))
                    }
                    None => Truth::from_bool(have.iter().any(|v| compare(v, *op, value, patterns))),
                }
            }
        }
    }
}

fn compare<'f>(have: &str, op: Op, want: &'f Value, patterns: &mut Patterns<'f>) -> bool {
    match want {
        Value::Number(w) => {
            let Ok(h) = have.trim().parse::<f64>() else {
                return false;
            };
            match op {
                Op::Lt => h < *w,
                Op::Le => h <= *w,
                Op::Gt => h > *w,
                Op::Ge => h >= *w,
                Op::Equals => h == *w,
                _ => false,
            }
        }
        Value::Version(w) => {
            let o = version::compare(have.trim(), w);
            match op {
                Op::Lt => o.is_lt(),
                Op::Le => o.is_le(),
                Op::Gt => o.is_gt(),
                Op::Ge => o.is_ge(),
                Op::Equals => o.is_eq(),
                _ => false,
            }
        }
        Value::Text(w) => {
            if op == Op::Matches {
                return patterns.get(w).is_some_and(|re| re.is_match(have));
            }
            let (h, w) = (have.to_lowercase(), w.to_lowercase());
            match op {
                Op::Contains => h.contains(&w),
                Op::Equals => h == w,
                Op::StartsWith => h.starts_with(&w),
                Op::EndsWith => h.ends_with(&w),
                _ => false,
            }
        }
    }
}
