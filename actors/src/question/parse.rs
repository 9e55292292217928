//! Lexer and recursive-descent parser for the question language. Recursion follows the
//! nesting of parentheses and `not`, and is cut at [`MAX_DEPTH`] with an error at the
//! column where it went too deep; `and`/`or` chains are read in loops into flat lists.

use super::units;
use super::{
    Filter, MAX_CONDITIONS, MAX_DEPTH, MAX_QUESTION_BYTES, MAX_SELECTED, Op, Question, SensorRef,
    SensorSpec, Value, ValueKind,
};

/// Why a question did not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {message}{}", suggestion.as_ref().map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default())]
pub struct ParseError {
    /// 1-based column (in characters) where the problem starts.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The closest known sensor name, for unknown sensors.
    pub suggestion: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Args(Vec<String>),
    LParen,
    RParen,
    Comma,
    Sym(&'static str),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    column: usize,
}

fn err(column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        column,
        message: message.into(),
        suggestion: None,
    }
}

/// At most this many characters of the user's text are repeated in an error.
const SHOWN_CHARS: usize = 40;

/// `s`, cut to [`SHOWN_CHARS`] with a marker.
fn shown(s: &str) -> String {
    if s.chars().count() <= SHOWN_CHARS {
        return s.to_string();
    }
    let cut: String = s.chars().take(SHOWN_CHARS).collect();
    format!("{cut}…")
}

/// The closing quote for an opening one: straight quotes close themselves; typographic
/// quotes (pasted from documents and chat) close with their pair.
fn closing_quote(c: char) -> Option<char> {
    match c {
        '"' => Some('"'),
        '\'' => Some('\''),
        '\u{201c}' => Some('\u{201d}'),
        '\u{2018}' => Some('\u{2019}'),
        _ => None,
    }
}

/// Reads a quoted string starting at `chars[*i]` (the opening quote), with `\` escapes.
fn read_quoted(chars: &[char], i: &mut usize) -> Result<String, ParseError> {
    let column = *i + 1;
    let open = chars[*i];
    let close = closing_quote(open).unwrap_or(open);
    let mut s = String::new();
    *i += 1;
    loop {
        match chars.get(*i) {
            None => return Err(err(column, "unterminated quoted value")),
            Some('\\') if chars.get(*i + 1).is_some() => {
                s.push(chars[*i + 1]);
                *i += 2;
            }
            Some(&q) if q == close => {
                *i += 1;
                return Ok(s);
            }
            Some(&x) => {
                s.push(x);
                *i += 1;
            }
        }
    }
}

/// Reads `[a, "b, c", 'd']` starting at `chars[*i]` (the `[`): parameters split at commas
/// outside quotes, trimmed, quoted ones unquoted.
fn read_args(chars: &[char], i: &mut usize) -> Result<Vec<String>, ParseError> {
    let column = *i + 1;
    *i += 1;
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted_arg = false;
    let mut any_quoted = false;
    loop {
        let Some(&c) = chars.get(*i) else {
            return Err(err(column, "unclosed '[' in sensor parameters"));
        };
        match c {
            ']' | ',' => {
                let a = if quoted_arg {
                    std::mem::take(&mut cur)
                } else {
                    cur.trim().to_string()
                };
                cur.clear();
                args.push(a);
                quoted_arg = false;
                *i += 1;
                if c == ']' {
                    break;
                }
            }
            '[' => return Err(err(*i + 1, "'[' inside sensor parameters (quote it)")),
            c if closing_quote(c).is_some() && cur.trim().is_empty() => {
                cur = read_quoted(chars, i)?;
                quoted_arg = true;
                any_quoted = true;
                // Only blanks may follow the closing quote.
                while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
                    *i += 1;
                }
                if !matches!(chars.get(*i), Some(']' | ',')) {
                    return Err(err(*i + 1, "expected ',' or ']' after a quoted parameter"));
                }
            }
            c => {
                cur.push(c);
                *i += 1;
            }
        }
    }
    // `X[]` is no parameter, not one empty parameter.
    if args.len() == 1 && args[0].is_empty() && !any_quoted {
        args.clear();
    }
    Ok(args)
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            c if closing_quote(c).is_some() => Tok::Quoted(read_quoted(&chars, &mut i)?),
            '[' => Tok::Args(read_args(&chars, &mut i)?),
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '<' | '>' | '=' | '!' => {
                let next = chars.get(i + 1).copied();
                let (sym, n) = match (c, next) {
                    ('<', Some('=')) => ("<=", 2),
                    ('>', Some('=')) => (">=", 2),
                    ('!', Some('=')) => ("!=", 2),
                    ('<', Some('>')) => ("!=", 2),
                    ('=', Some('=')) => ("=", 2),
                    ('<', _) => ("<", 1),
                    ('>', _) => (">", 1),
                    ('=', _) => ("=", 1),
                    _ => return Err(err(column, "'!' must be followed by '=' (not equal)")),
                };
                i += n;
                Tok::Sym(sym)
            }
            ']' => return Err(err(column, "']' without '['")),
            _ => {
                // A word runs to a blank or punctuation; an apostrophe inside it is part of
                // it ("doesn't"), one at its start opens a quote.
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !"\"[](),<>=!\u{201c}\u{201d}\u{2018}".contains(chars[i])
                {
                    i += 1;
                }
                if i == start {
                    // Only a closing typographic quote stops a word before its first
                    // character: without this, the lexer would not move on.
                    return Err(err(column, format!("'{c}' without an opening quote")));
                }
                Tok::Word(chars[start..i].iter().collect())
            }
        };
        out.push(Token { tok, column });
    }
    Ok(out)
}

/// Words that end a sensor name.
const STOP: &[&str] = &[
    "and", "or", "not", "from", "with", "contains", "contain", "equals", "is", "matches", "starts",
    "ends", "does", "doesn't",
];

/// Words that are never a bare value (quote them to compare with the word).
const KEYWORDS: &[&str] = &["and", "or", "not", "from", "with"];

struct Parser<'a> {
    toks: Vec<Token>,
    at: usize,
    catalog: &'a [SensorSpec],
    end_column: usize,
    depth: usize,
    conditions: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.toks.get(self.at + ahead)
    }

    fn column(&self) -> usize {
        self.peek().map(|t| t.column).unwrap_or(self.end_column)
    }

    fn word_at(&self, ahead: usize, w: &str) -> bool {
        matches!(self.peek_at(ahead), Some(Token { tok: Tok::Word(x), .. }) if x.eq_ignore_ascii_case(w))
    }

    fn peek_word(&self, w: &str) -> bool {
        self.word_at(0, w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.peek_word(w);
        if yes {
            self.at += 1;
        }
        yes
    }

    fn expect_word(&mut self, w: &str, what: &str) -> Result<(), ParseError> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(err(
                self.column(),
                format!("expected {what}{}", self.found()),
            ))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => ", found the end of the question".into(),
            Some(t) => format!(", found {}", describe(&t.tok)),
        }
    }

    fn sensor(&mut self) -> Result<(SensorRef, &'a SensorSpec), ParseError> {
        let column = self.column();
        let mut words = Vec::new();
        while let Some(Token {
            tok: Tok::Word(w), ..
        }) = self.toks.get(self.at + words.len())
        {
            if STOP.iter().any(|s| w.eq_ignore_ascii_case(s)) || words.len() == 8 {
                break;
            }
            words.push(w.clone());
        }
        if words.is_empty() {
            return Err(err(
                column,
                format!("expected a sensor name{}", self.found()),
            ));
        }
        let catalog = self.catalog;
        for n in (1..=words.len()).rev() {
            let phrase = words[..n].join(" ");
            let Some(spec) = catalog
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(&phrase))
            else {
                continue;
            };
            self.at += n;
            let args = match self.peek() {
                Some(Token {
                    tok: Tok::Args(a), ..
                }) => {
                    let a = a.clone();
                    self.at += 1;
                    a
                }
                _ => Vec::new(),
            };
            if args.len() != spec.params {
                let what = if spec.param_help.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", spec.param_help)
                };
                let message = match (spec.params, args.len()) {
                    (0, _) => format!("sensor \"{}\" takes no parameter", spec.name),
                    (p, 0) => format!(
                        "sensor \"{0}\" needs {p} parameter{1}{what}, as in {0}[...]",
                        spec.name,
                        if p == 1 { "" } else { "s" }
                    ),
                    (p, n) => format!(
                        "sensor \"{}\" takes {p} parameter{}{what}, given {n} (quote a parameter that holds a comma)",
                        spec.name,
                        if p == 1 { "" } else { "s" }
                    ),
                };
                return Err(err(column, message));
            }
            if let Some(i) = args.iter().position(String::is_empty) {
                return Err(err(
                    column,
                    format!("sensor \"{}\": parameter {} is empty", spec.name, i + 1),
                ));
            }
            return Ok((
                SensorRef {
                    name: spec.name.clone(),
                    args,
                },
                spec,
            ));
        }
        let phrase = shown(&words.join(" "));
        Err(ParseError {
            column,
            message: format!("unknown sensor \"{phrase}\""),
            suggestion: closest(&phrase, self.catalog),
        })
    }

    fn op(&mut self) -> Result<Op, ParseError> {
        let column = self.column();
        let word = |p: &Self, ahead: usize| match p.peek_at(ahead) {
            Some(Token {
                tok: Tok::Word(w), ..
            }) => w.to_ascii_lowercase(),
            _ => String::new(),
        };
        let (op, n) = match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Sym(s)) => (
                match s {
                    "=" => Op::Equals,
                    "!=" => Op::NotEquals,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    ">" => Op::Gt,
                    _ => Op::Ge,
                },
                1,
            ),
            Some(Tok::Word(_)) => {
                let w0 = word(self, 0);
                let w1 = word(self, 1);
                match (w0.as_str(), w1.as_str()) {
                    ("contains", _) => (Op::Contains, 1),
                    ("equals", _) => (Op::Equals, 1),
                    ("is", "not") => (Op::NotEquals, 2),
                    ("is", _) => (Op::Equals, 1),
                    ("matches", _) => (Op::Matches, 1),
                    ("not", "contains") => (Op::NotContains, 2),
                    ("not", "equals") => (Op::NotEquals, 2),
                    ("does" | "doesn't", _) => {
                        let (neg, verb) = if w0 == "does" {
                            (w1 == "not", word(self, 2))
                        } else {
                            (true, w1.clone())
                        };
                        let n = if w0 == "does" { 3 } else { 2 };
                        match (neg, verb.as_str()) {
                            (true, "contain") => (Op::NotContains, n),
                            (true, "equal") => (Op::NotEquals, n),
                            _ => {
                                return Err(err(
                                    column,
                                    "expected \"does not contain\" or \"does not equal\"",
                                ));
                            }
                        }
                    }
                    ("starts" | "ends", _) => {
                        if w1 != "with" {
                            return Err(err(column, format!("expected \"{w0} with\"")));
                        }
                        let op = if w0 == "starts" {
                            Op::StartsWith
                        } else {
                            Op::EndsWith
                        };
                        (op, 2)
                    }
                    _ => return Err(self.op_error(column)),
                }
            }
            _ => return Err(self.op_error(column)),
        };
        self.at += n;
        Ok(op)
    }

    fn op_error(&self, column: usize) -> ParseError {
        err(
            column,
            format!(
                "expected an operator (contains, does not contain, =, !=, starts with, ends with, matches, <, <=, >, >=){}",
                self.found()
            ),
        )
    }

    /// The value's text as written (a quoted string or a bare word).
    fn value_text(&mut self) -> Result<(String, bool, usize), ParseError> {
        let column = self.column();
        let v = match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Quoted(s)) => (s, true, column),
            Some(Tok::Word(w)) if KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                return Err(err(
                    column,
                    format!("expected a value, found \"{w}\" (quote it to compare with the word)"),
                ));
            }
            Some(Tok::Word(w)) => (w, false, column),
            _ => return Err(err(column, format!("expected a value{}", self.found()))),
        };
        self.at += 1;
        Ok(v)
    }

    /// A number with an optional unit fitting `kind`: `8 GB`, `8GB`, `"8 GB"`, `90 days`.
    fn number(&mut self, spec: &SensorSpec, op: Op) -> Result<f64, ParseError> {
        let (text, quoted, column) = self.value_text()?;
        let needs = || {
            let units = match spec.kind.unit() {
                Some(_) => format!(" (units: {})", units::unit_names(spec.kind)),
                None => String::new(),
            };
            err(
                column,
                format!(
                    "\"{}\" on {} needs a number{units}, found \"{}\"",
                    op.text(),
                    spec.name,
                    shown(&text)
                ),
            )
        };
        let (n, mut unit) = match units::split_number(text.trim()) {
            Some((n, u)) => (n, u.trim().to_string()),
            None if quoted => {
                // "8 GB" in quotes.
                let mut parts = text.split_whitespace();
                match (
                    parts.next().and_then(units::split_number),
                    parts.next(),
                    parts.next(),
                ) {
                    (Some((n, "")), Some(u), None) => (n, u.to_string()),
                    _ => return Err(needs()),
                }
            }
            None => return Err(needs()),
        };
        // A unit written as the next word.
        if unit.is_empty()
            && !quoted
            && let Some(Token {
                tok: Tok::Word(w), ..
            }) = self.peek()
            && units::is_unit(w)
        {
            unit = w.clone();
            self.at += 1;
        }
        if unit.is_empty() {
            return Ok(n);
        }
        match units::factor(spec.kind, &unit) {
            Some(f) => Ok(n * f),
            None if spec.kind.unit().is_none() => Err(err(
                column,
                format!("{} takes no unit, found \"{}\"", spec.name, shown(&unit)),
            )),
            None => Err(err(
                column,
                format!(
                    "\"{}\" is not a unit of {} (a {}; units: {})",
                    shown(&unit),
                    spec.name,
                    spec.kind.name(),
                    units::unit_names(spec.kind)
                ),
            )),
        }
    }

    fn value(&mut self, spec: &SensorSpec, op: Op, op_column: usize) -> Result<Value, ParseError> {
        if op.ordering() {
            return match spec.kind {
                ValueKind::Version => Ok(Value::Version(self.value_text()?.0)),
                k if k.numeric() => Ok(Value::Number(self.number(spec, op)?)),
                _ => Err(err(
                    op_column,
                    format!(
                        "\"{}\" compares numbers and versions, and {} is {}; use =, !=, contains, starts with, ends with or matches",
                        op.text(),
                        spec.name,
                        spec.kind.name()
                    ),
                )),
            };
        }
        match (op, spec.kind) {
            (
                Op::Equals | Op::NotEquals,
                ValueKind::Number | ValueKind::Bytes | ValueKind::Seconds,
            ) => Ok(Value::Number(self.number(spec, op)?)),
            (Op::Equals | Op::NotEquals, ValueKind::Bool) => {
                let (text, _, column) = self.value_text()?;
                match text.to_ascii_lowercase().as_str() {
                    "true" | "yes" => Ok(Value::Text("true".into())),
                    "false" | "no" => Ok(Value::Text("false".into())),
                    _ => Err(err(
                        column,
                        format!("{} is true or false, found \"{}\"", spec.name, shown(&text)),
                    )),
                }
            }
            (Op::Matches, _) => {
                let (text, _, column) = self.value_text()?;
                if let Err(e) = regex::RegexBuilder::new(&text)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                {
                    let e = e.to_string();
                    return Err(err(
                        column,
                        format!("invalid regular expression: {}", shown(&e)),
                    ));
                }
                Ok(Value::Text(text))
            }
            _ => Ok(Value::Text(self.value_text()?.0)),
        }
    }

    fn enter(&mut self, column: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err(
                column,
                format!(
                    "parentheses and \"not\" nest more than {MAX_DEPTH} deep here; simplify the condition"
                ),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Filter, ParseError> {
        let mut items = vec![self.and()?];
        while self.eat_word("or") {
            items.push(self.and()?);
        }
        Ok(flatten(items, true))
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        let mut items = vec![self.unary()?];
        while self.eat_word("and") {
            items.push(self.unary()?);
        }
        Ok(flatten(items, false))
    }

    fn unary(&mut self) -> Result<Filter, ParseError> {
        let column = self.column();
        if self.eat_word("not") {
            self.enter(column)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if let Some(Token {
            tok: Tok::LParen, ..
        }) = self.peek()
        {
            self.at += 1;
            self.enter(column)?;
            let inner = self.or()?;
            if !matches!(
                self.peek(),
                Some(Token {
                    tok: Tok::RParen,
                    ..
                })
            ) {
                return Err(err(column, format!("unclosed parenthesis{}", self.found())));
            }
            self.at += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        let (sensor, spec) = self.sensor()?;
        let op_column = self.column();
        let op = self.op()?;
        let value = self.value(spec, op, op_column)?;
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(err(
                column,
                format!("more than {MAX_CONDITIONS} conditions in one question"),
            ));
        }
        Ok(Filter::Cmp { sensor, op, value })
    }
}

/// One `and` or `or` list from `items`, with lists of the same kind inside it spliced in
/// (`(a or b) or c` is one list of three), and a single item as itself.
fn flatten(items: Vec<Filter>, or: bool) -> Filter {
    if items.len() == 1 {
        return items.into_iter().next().unwrap_or(Filter::And(Vec::new()));
    }
    let mut out = Vec::with_capacity(items.len());
    for x in items {
        match x {
            Filter::Or(inner) if or => out.extend(inner),
            Filter::And(inner) if !or => out.extend(inner),
            other => out.push(other),
        }
    }
    if or {
        Filter::Or(out)
    } else {
        Filter::And(out)
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("\"{}\"", shown(w)),
        Tok::Quoted(s) => format!("the value \"{}\"", shown(s)),
        Tok::Args(a) => format!("\"[{}]\"", shown(&a.join(","))),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Sym(s) => format!("\"{s}\""),
    }
}

/// The catalog name closest to `phrase`, if any is close enough to be a likely typo.
pub(crate) fn closest(phrase: &str, catalog: &[SensorSpec]) -> Option<String> {
    let p = phrase.to_lowercase();
    catalog
        .iter()
        .map(|s| (strsim::jaro_winkler(&p, &s.name.to_lowercase()), &s.name))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n.clone())
}

/// Parses `text` against the sensors in `catalog`.
pub fn parse(text: &str, catalog: &[SensorSpec]) -> Result<Question, ParseError> {
    if text.len() > MAX_QUESTION_BYTES {
        let column = text
            .char_indices()
            .take_while(|(i, _)| *i < MAX_QUESTION_BYTES)
            .count()
            + 1;
        return Err(err(
            column,
            format!(
                "the question is {} bytes; at most {MAX_QUESTION_BYTES} are accepted",
                text.len()
            ),
        ));
    }
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        at: 0,
        catalog,
        end_column: text.chars().count() + 1,
        depth: 0,
        conditions: 0,
    };
    p.expect_word("get", "\"Get\" at the start of a question")?;
    let mut select = vec![p.sensor()?.0];
    loop {
        let comma = matches!(
            p.peek(),
            Some(Token {
                tok: Tok::Comma,
                ..
            })
        );
        if comma || p.peek_word("and") {
            let column = p.column();
            p.at += 1;
            select.push(p.sensor()?.0);
            if select.len() > MAX_SELECTED {
                return Err(err(
                    column,
                    format!("more than {MAX_SELECTED} sensors selected"),
                ));
            }
        } else {
            break;
        }
    }
    let mut filter = None;
    if p.peek().is_some() {
        p.expect_word("from", "\"and\", \",\" or \"from all machines\"")?;
        p.expect_word("all", "\"all\" (as in \"from all machines\")")?;
        if !(p.eat_word("machines") || p.eat_word("endpoints") || p.eat_word("computers")) {
            return Err(err(
                p.column(),
                format!("expected \"machines\"{}", p.found()),
            ));
        }
        if p.peek().is_some() {
            p.expect_word("with", "\"with\" and a condition")?;
            filter = Some(p.or()?);
        }
    }
    if let Some(t) = p.peek() {
        let after_bare_value = p.at > 0
            && matches!(p.toks[p.at - 1].tok, Tok::Word(_))
            && matches!(t.tok, Tok::Word(_))
            && filter.is_some();
        let hint = if after_bare_value {
            " (quote a value that has spaces: \"Rocky Linux\")"
        } else {
            ""
        };
        return Err(err(
            t.column,
            format!("unexpected {}{hint}", describe(&t.tok)),
        ));
    }
    Ok(Question { select, filter })
}
