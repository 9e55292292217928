//! Lexer and recursive-descent parser for the question language.

use super::{Filter, Op, Question, SensorRef, SensorSpec, Value};

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
            '"' | '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(column, "unterminated quoted value")),
                        Some('\\') if chars.get(i + 1).is_some() => {
                            s.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&x) => {
                            s.push(x);
                            i += 1;
                        }
                    }
                }
                Tok::Quoted(s)
            }
            '[' => {
                let Some(end) = chars[i..].iter().position(|&x| x == ']') else {
                    return Err(err(column, "unclosed '[' in sensor arguments"));
                };
                let inner: String = chars[i + 1..i + end].iter().collect();
                i += end + 1;
                Tok::Args(inner.split(',').map(|a| a.trim().to_string()).collect())
            }
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
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !"\"'[](),<>=!".contains(chars[i])
                {
                    i += 1;
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
    "and", "or", "not", "from", "with", "contains", "equals", "is", "matches", "starts", "ends",
];

struct Parser<'a> {
    toks: Vec<Token>,
    at: usize,
    catalog: &'a [SensorSpec],
    end_column: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }

    fn column(&self) -> usize {
        self.peek().map(|t| t.column).unwrap_or(self.end_column)
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(x), .. }) if x.eq_ignore_ascii_case(w))
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

    fn sensor(&mut self) -> Result<SensorRef, ParseError> {
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
        for n in (1..=words.len()).rev() {
            let phrase = words[..n].join(" ");
            if let Some(spec) = self
                .catalog
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(&phrase))
            {
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
                if spec.params > 0 && (args.is_empty() || args.iter().all(String::is_empty)) {
                    return Err(err(
                        column,
                        format!(
                            "sensor \"{0}\" needs an argument, as in {0}[...]",
                            spec.name
                        ),
                    ));
                }
                if spec.params == 0 && !args.is_empty() {
                    return Err(err(
                        column,
                        format!("sensor \"{}\" takes no argument", spec.name),
                    ));
                }
                return Ok(SensorRef {
                    name: spec.name.clone(),
                    args,
                });
            }
        }
        let phrase = words.join(" ");
        Err(ParseError {
            column,
            message: format!("unknown sensor \"{phrase}\""),
            suggestion: closest(&phrase, self.catalog),
        })
    }

    fn op(&mut self) -> Result<Op, ParseError> {
        let column = self.column();
        let op = match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Sym(s)) => match s {
                "=" => Op::Equals,
                "!=" => Op::NotEquals,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                _ => Op::Ge,
            },
            Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "contains" => Op::Contains,
                "equals" | "is" => Op::Equals,
                "matches" => Op::Matches,
                "starts" | "ends" => {
                    let starts = w.eq_ignore_ascii_case("starts");
                    self.at += 1;
                    if !self.peek_word("with") {
                        return Err(err(column, format!("expected \"{w} with\"")));
                    }
                    if starts { Op::StartsWith } else { Op::EndsWith }
                }
                _ => return Err(self.op_error(column)),
            },
            _ => return Err(self.op_error(column)),
        };
        self.at += 1;
        Ok(op)
    }

    fn op_error(&self, column: usize) -> ParseError {
        err(
            column,
            format!(
                "expected an operator (contains, equals, starts with, ends with, matches, =, !=, <, <=, >, >=){}",
                self.found()
            ),
        )
    }

    fn value(&mut self, op: Op) -> Result<Value, ParseError> {
        let column = self.column();
        let v = match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Quoted(s)) => Value::Text(s),
            Some(Tok::Word(w)) => match w.parse::<f64>() {
                Ok(n) => Value::Number(n),
                Err(_) => Value::Text(w),
            },
            _ => return Err(err(column, format!("expected a value{}", self.found()))),
        };
        self.at += 1;
        if op.numeric() && !matches!(v, Value::Number(_)) {
            return Err(err(column, format!("\"{}\" needs a number", op.text())));
        }
        if let (Op::Matches, Value::Text(re)) = (op, &v)
            && let Err(e) = regex::Regex::new(re)
        {
            return Err(err(column, format!("invalid regular expression: {e}")));
        }
        Ok(v)
    }

    fn or(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ParseError> {
        let mut left = self.unary()?;
        while self.eat_word("and") {
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ParseError> {
        if self.eat_word("not") {
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if let Some(Token {
            tok: Tok::LParen,
            column,
        }) = self.peek().cloned()
        {
            self.at += 1;
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
            return Ok(inner);
        }
        let sensor = self.sensor()?;
        let op = self.op()?;
        let value = self.value(op)?;
        Ok(Filter::Cmp { sensor, op, value })
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("\"{w}\""),
        Tok::Quoted(s) => format!("the value \"{s}\""),
        Tok::Args(a) => format!("\"[{}]\"", a.join(",")),
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
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        at: 0,
        catalog,
        end_column: text.chars().count() + 1,
    };
    p.expect_word("get", "\"Get\" at the start of a question")?;
    let mut select = vec![p.sensor()?];
    loop {
        let comma = matches!(
            p.peek(),
            Some(Token {
                tok: Tok::Comma,
                ..
            })
        );
        if comma || p.peek_word("and") {
            p.at += 1;
            select.push(p.sensor()?);
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
        return Err(err(t.column, format!("unexpected {}", describe(&t.tok))));
    }
    Ok(Question { select, filter })
}
