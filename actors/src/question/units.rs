//! Sizes and durations in questions (`8 GB`, `10 GiB`, `1 day`, `90 days`) and in tables
//! (`7.8 GiB`, `3 d 4 h`).

use super::ValueKind;

/// Byte units: name and size in bytes. Decimal (`GB`) and binary (`GiB`) as written.
const BYTES: &[(&str, f64)] = &[
    ("b", 1.0),
    ("byte", 1.0),
    ("bytes", 1.0),
    ("kb", 1e3),
    ("mb", 1e6),
    ("gb", 1e9),
    ("tb", 1e12),
    ("kib", 1024.0),
    ("mib", 1024.0 * 1024.0),
    ("gib", 1024.0 * 1024.0 * 1024.0),
    ("tib", 1024.0 * 1024.0 * 1024.0 * 1024.0),
];

/// Duration units, in seconds.
const SECONDS: &[(&str, f64)] = &[
    ("s", 1.0),
    ("sec", 1.0),
    ("secs", 1.0),
    ("second", 1.0),
    ("seconds", 1.0),
    ("m", 60.0),
    ("min", 60.0),
    ("mins", 60.0),
    ("minute", 60.0),
    ("minutes", 60.0),
    ("h", 3600.0),
    ("hr", 3600.0),
    ("hrs", 3600.0),
    ("hour", 3600.0),
    ("hours", 3600.0),
    ("d", 86_400.0),
    ("day", 86_400.0),
    ("days", 86_400.0),
    ("w", 604_800.0),
    ("week", 604_800.0),
    ("weeks", 604_800.0),
];

/// The units a value of `kind` may carry, as text for error messages.
pub(crate) fn unit_names(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Bytes => "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB",
        ValueKind::Seconds => "seconds, minutes, hours, days, weeks (s, min, h, d, w)",
        _ => "none",
    }
}

/// The factor of `unit` for a value of `kind`, or `None` if that unit does not apply.
pub(crate) fn factor(kind: ValueKind, unit: &str) -> Option<f64> {
    let table = match kind {
        ValueKind::Bytes => BYTES,
        ValueKind::Seconds => SECONDS,
        _ => return None,
    };
    let u = unit.to_ascii_lowercase();
    table.iter().find(|(n, _)| *n == u).map(|(_, f)| *f)
}

/// Whether `word` is a unit of any kind (so a parser can say it does not fit the sensor).
pub(crate) fn is_unit(word: &str) -> bool {
    let u = word.to_ascii_lowercase();
    BYTES.iter().chain(SECONDS).any(|(n, _)| *n == u)
}

/// Splits `8GB` into (`8`, `GB`); a plain number gives an empty unit.
pub(crate) fn split_number(word: &str) -> Option<(f64, &str)> {
    let end = word
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || ((*c == '-' || *c == '+') && *i == 0)))
        .map(|(i, _)| i)
        .unwrap_or(word.len());
    let n: f64 = word[..end].parse().ok()?;
    n.is_finite().then_some((n, &word[end..]))
}

/// A value of `kind` as an operator reads it: sizes in binary units, durations in days, hours
/// and minutes. Values that are not numbers are shown as they are.
pub fn readable(kind: ValueKind, raw: &str) -> String {
    let Ok(n) = raw.trim().parse::<f64>() else {
        return raw.to_string();
    };
    match kind {
        ValueKind::Bytes => {
            let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
            let mut v = n;
            let mut i = 0;
            while v.abs() >= 1024.0 && i + 1 < units.len() {
                v /= 1024.0;
                i += 1;
            }
            if i == 0 {
                format!("{n} B")
            } else {
                format!("{v:.1} {}", units[i])
            }
        }
        ValueKind::Seconds => {
            let s = n.max(0.0) as u64;
            let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
            match (d, h, m) {
                (0, 0, 0) => format!("{s} s"),
                (0, 0, m) => format!("{m} min {} s", s % 60),
                (0, h, m) => format!("{h} h {m} min"),
                (d, h, _) => format!("{d} d {h} h"),
            }
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_scale_numbers_and_only_for_their_kind() {
        assert_eq!(factor(ValueKind::Bytes, "GB"), Some(1e9));
        assert_eq!(factor(ValueKind::Bytes, "gib"), Some(1073741824.0));
        assert_eq!(factor(ValueKind::Seconds, "days"), Some(86_400.0));
        assert_eq!(factor(ValueKind::Seconds, "GB"), None);
        assert_eq!(factor(ValueKind::Bytes, "day"), None);
        assert_eq!(factor(ValueKind::Number, "s"), None);
        assert_eq!(split_number("8GB"), Some((8.0, "GB")));
        assert_eq!(split_number("1.5"), Some((1.5, "")));
        assert_eq!(split_number("-3h"), Some((-3.0, "h")));
        assert_eq!(split_number("GB"), None);
        assert_eq!(split_number("6.1.0"), None);
    }

    #[test]
    fn tables_show_sizes_and_durations_readably() {
        let cases = [
            (ValueKind::Bytes, "512", "512 B"),
            (ValueKind::Bytes, "8589934592", "8.0 GiB"),
            (ValueKind::Bytes, "1610612736", "1.5 GiB"),
            (ValueKind::Seconds, "42", "42 s"),
            (ValueKind::Seconds, "125", "2 min 5 s"),
            (ValueKind::Seconds, "7260", "2 h 1 min"),
            (ValueKind::Seconds, "97200", "1 d 3 h"),
            (ValueKind::Seconds, "[error: x]", "[error: x]"),
            (ValueKind::Text, "8589934592", "8589934592"),
        ];
        for (kind, raw, want) in cases {
            assert_eq!(readable(kind, raw), want, "{kind:?} {raw}");
        }
    }
}
