//! Indicators as CSV: a header naming `type` and `value` columns (others ignored), or no
//! header and one value per line, its kind guessed. Empty lines and lines starting with `#`
//! are skipped.

use super::{ImportError, Imported, guess, typed};

/// Reads a CSV list of indicators.
pub fn from_csv(bytes: &[u8]) -> Result<Imported, ImportError> {
    if bytes.len() > super::MAX_FILE_BYTES {
        return Err(ImportError::TooLarge);
    }
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut out = Imported::default();
    let mut columns: Option<(usize, usize)> = None;
    let mut first = true;
    for rec in r.records() {
        let rec = rec.map_err(|e| ImportError::Csv {
            line: e.position().map(|p| p.line() as usize).unwrap_or(0),
            why: e.to_string(),
        })?;
        let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
        if rec.iter().all(str::is_empty) {
            continue;
        }
        if first {
            first = false;
            let lower: Vec<String> = rec.iter().map(str::to_ascii_lowercase).collect();
            let t = lower.iter().position(|c| c == "type" || c == "kind");
            let v = lower.iter().position(|c| c == "value" || c == "indicator");
            match (t, v) {
                (Some(t), Some(v)) => {
                    columns = Some((t, v));
                    continue;
                }
                (None, None) => {}
                _ => {
                    return Err(ImportError::Csv {
                        line,
                        why: "a header needs both a type and a value column".into(),
                    });
                }
            }
        }
        match columns {
            Some((t, v)) => {
                let (Some(kind), Some(value)) = (rec.get(t), rec.get(v)) else {
                    return Err(ImportError::Csv {
                        line,
                        why: format!("{} fields; the header names {}", rec.len(), t.max(v) + 1),
                    });
                };
                match typed(kind, value).map_err(|why| ImportError::Csv { line, why })? {
                    Ok(i) => out.push(i)?,
                    Err(why) => out.skip(value, why),
                }
            }
            None => {
                if rec.len() != 1 {
                    return Err(ImportError::Csv {
                        line,
                        why: format!(
                            "{} fields without a header: write one value a line, or a header with type and value",
                            rec.len()
                        ),
                    });
                }
                let value = &rec[0];
                match guess(value) {
                    Some(i) => out.push(i)?,
                    None => {
                        return Err(ImportError::Csv {
                            line,
                            why: format!(
                                "{value:?} is not a SHA-256, an IP address or a domain name"
                            ),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}
