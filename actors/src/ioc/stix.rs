//! Indicators from a STIX 2.1 bundle: each `indicator` object whose `pattern_type` is `stix`
//! and whose pattern is one or more `[path = 'value']` comparisons joined by `OR` (inside
//! or between brackets) on a file's SHA-256, an IPv4 or IPv6 address, or a domain name.
//! Anything else — `AND`, `FOLLOWEDBY`, qualifiers such as `WITHIN`, other operators,
//! other objects' properties, other pattern languages — is skipped with its reason: a
//! narrower or broader search than the indicator means would be silently wrong.

use serde_json::Value;

use super::{ImportError, Imported, MAX_PATTERN_BYTES, typed};

/// Reads a STIX 2.1 bundle.
pub fn from_stix(bytes: &[u8]) -> Result<Imported, ImportError> {
    if bytes.len() > super::MAX_FILE_BYTES {
        return Err(ImportError::TooLarge);
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ImportError::Stix(e.to_string()))?;
    let bad = |why: String| ImportError::Stix(why);
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the top level is not an object".into()))?;
    if obj.get("type").and_then(Value::as_str) != Some("bundle") {
        return Err(bad("its \"type\" is not \"bundle\"".into()));
    }
    let objects = obj
        .get("objects")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("it has no \"objects\" array".into()))?;
    let mut out = Imported::default();
    for (n, o) in objects.iter().enumerate() {
        let o = o
            .as_object()
            .ok_or_else(|| bad(format!("object {n} is not an object")))?;
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("object {n} has no \"type\"")))?;
        if kind != "indicator" {
            continue;
        }
        let id = o
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("indicator {n} has no \"id\"")))?;
        let pattern = o
            .get("pattern")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{id} has no \"pattern\"")))?;
        let pattern_type = o
            .get("pattern_type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad(format!(
                    "{id} has no \"pattern_type\" (required in STIX 2.1)"
                ))
            })?;
        if pattern_type != "stix" {
            out.skip(
                id,
                format!("{pattern_type} patterns are not read (stix only)"),
            );
            continue;
        }
        match parse_pattern(pattern) {
            Err(why) => out.skip(id, why),
            Ok(cmps) => {
                for (path, value) in cmps {
                    let kind = match path.as_str() {
                        "file:hashes.SHA-256" | "file:hashes.SHA256" | "file:hashes.sha256" => {
                            "sha256"
                        }
                        "file:hashes.MD5" => "md5",
                        "file:hashes.SHA-1" | "file:hashes.SHA1" => "sha1",
                        "ipv4-addr:value" | "ipv6-addr:value" => "ip",
                        "domain-name:value" => "domain",
                        other => {
                            out.skip(id, format!("{other} is not looked for"));
                            continue;
                        }
                    };
                    match typed(kind, &value).map_err(|why| bad(format!("{id}: {why}")))? {
                        Ok(i) => out.push(i)?,
                        Err(why) => out.skip(format!("{id} {value}"), why),
                    }
                }
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    Word(String),
    Str(String),
    Op(String),
    Other(char),
}

fn tokens(p: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let quoted = |i: &mut usize| -> Result<String, String> {
        // At the opening quote; STIX escapes \' and \\.
        let mut s = String::new();
        *i += 1;
        loop {
            match chars.get(*i) {
                None => return Err("a string is not closed".into()),
                Some('\\') => {
                    match chars.get(*i + 1) {
                        Some(c @ ('\'' | '\\')) => s.push(*c),
                        _ => return Err("a string holds an unknown escape".into()),
                    }
                    *i += 2;
                }
                Some('\'') => {
                    *i += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(*c);
                    *i += 1;
                }
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '[' => {
                out.push(Tok::Open);
                i += 1;
            }
            ']' => {
                out.push(Tok::Close);
                i += 1;
            }
            '\'' => out.push(Tok::Str(quoted(&mut i)?)),
            '=' | '!' | '<' | '>' => {
                let mut op = c.to_string();
                if chars.get(i + 1) == Some(&'=') {
                    op.push('=');
                    i += 1;
                }
                out.push(Tok::Op(op));
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                let mut w = String::new();
                while let Some(&c) = chars.get(i) {
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.') {
                        w.push(c);
                        i += 1;
                    } else if c == '\'' && w.ends_with('.') {
                        // A quoted path step: hashes.'SHA-256'.
                        w.push_str(&quoted(&mut i)?);
                    } else {
                        break;
                    }
                }
                out.push(Tok::Word(w));
            }
            other => {
                out.push(Tok::Other(other));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The `(object path, value)` comparisons of a pattern made only of `[path = 'value']`
/// joined by `OR`; `Err` says why another pattern is not read.
pub fn parse_pattern(p: &str) -> Result<Vec<(String, String)>, String> {
    if p.len() > MAX_PATTERN_BYTES {
        return Err(format!("the pattern is over {MAX_PATTERN_BYTES} bytes"));
    }
    let toks = tokens(p).map_err(|e| format!("the pattern cannot be read: {e}"))?;
    let mut out = Vec::new();
    let mut i = 0;
    // Expecting: '[' (path '=' str) ('OR' path '=' str)* ']' ('OR' '[' ...)*
    let mut inside = false;
    let mut want_cmp = true;
    while i < toks.len() {
        match (&toks[i], inside, want_cmp) {
            (Tok::Open, false, true) => {
                inside = true;
                i += 1;
            }
            (Tok::Word(path), true, true) => match (toks.get(i + 1), toks.get(i + 2)) {
                (Some(Tok::Op(op)), Some(Tok::Str(v))) if op == "=" => {
                    out.push((path.clone(), v.clone()));
                    i += 3;
                    want_cmp = false;
                }
                (Some(Tok::Op(op)), _) => {
                    return Err(format!("the {op} operator is not looked for (= only)"));
                }
                (Some(Tok::Word(w)), _) => {
                    return Err(format!("the {w} operator is not looked for (= only)"));
                }
                _ => return Err("a comparison is not path = 'value'".into()),
            },
            (Tok::Close, true, false) => {
                inside = false;
                i += 1;
            }
            (Tok::Word(w), _, false) if w.eq_ignore_ascii_case("OR") => {
                want_cmp = true;
                i += 1;
            }
            (Tok::Word(w), _, false) => {
                return Err(format!(
                    "{w} is not looked for (comparisons joined by OR only)"
                ));
            }
            (t, _, _) => return Err(format!("unexpected {t:?} in the pattern")),
        }
    }
    if inside || want_cmp || out.is_empty() {
        return Err("the pattern ends early".into());
    }
    Ok(out)
}
