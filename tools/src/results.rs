//! How question results and the sensor catalog are shown to an operator: tables with sizes and
//! durations made readable and long cells cut with a marker, CSV with raw values, and the
//! verdict on a question that failed on every machine.

use rollcall_actors::question::units::readable;
use rollcall_actors::question::{SensorSpec, ValueKind};
use rollcall_cluster::questions::Progress;

/// Cells wider than this are cut in tables (with `…`); CSV and JSON keep them whole.
pub const CELL_CHARS_MAX: usize = 60;

/// The kind of each column, from its heading (`Installed Application Version[openssl]` is
/// the sensor `Installed Application Version`); text for a column no sensor names.
pub fn column_kinds(columns: &[String], catalog: &[SensorSpec]) -> Vec<ValueKind> {
    columns
        .iter()
        .map(|c| {
            let name = c.split('[').next().unwrap_or(c).trim();
            catalog
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(name))
                .map(|s| s.kind)
                .unwrap_or(ValueKind::Text)
        })
        .collect()
}

/// `s` cut to `max` characters, the cut marked with `…`.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The results as a table: one line per distinct row with its count and share of the
/// machines that matched, then who has not answered and what went wrong.
pub fn table(p: &Progress, kinds: &[ValueKind]) -> String {
    let cells = |cells: &[String]| -> Vec<String> {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let kind = kinds.get(i).copied().unwrap_or(ValueKind::Text);
                cut(&readable(kind, c), CELL_CHARS_MAX)
            })
            .collect()
    };
    let rows: Vec<(Vec<String>, String)> = p
        .rows
        .iter()
        .map(|r| (cells(&r.cells), r.count.to_string()))
        .collect();
    let heading: Vec<String> = p.columns.iter().map(|c| cut(c, CELL_CHARS_MAX)).collect();
    let mut widths: Vec<usize> = heading.iter().map(|c| c.chars().count()).collect();
    for (r, _) in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String], count: &str| {
        let mut s = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            s += &format!("{c:<w$}  ");
        }
        s + count
    };
    let mut out = String::new();
    out += &line(&heading, "COUNT");
    out.push('\n');
    for (r, count) in &rows {
        out += &line(r, count);
        out.push('\n');
    }
    let several = p.rows.iter().map(|r| r.count).sum::<u64>() > p.matched;
    out += &format!(
        "\nanswered {} of {} in {:.1} s; {} matched",
        p.answered,
        p.expected,
        p.elapsed_ms as f64 / 1000.0,
        p.matched
    );
    if several {
        out += " (a machine with several values is counted in each of their rows)";
    }
    out.push('\n');
    let shown = |total: usize, n: usize| {
        if total > n {
            format!("{total}, the first {n} shown")
        } else {
            n.to_string()
        }
    };
    if !p.not_answered.is_empty() {
        out += &format!(
            "not answered ({}):\n",
            shown(p.cut.not_answered_total, p.not_answered.len())
        );
        for (id, host) in &p.not_answered {
            out += &format!("  {id}  {}\n", cut(host, CELL_CHARS_MAX));
        }
    }
    if !p.problems.is_empty() {
        out += &format!(
            "problems ({}):\n",
            shown(p.cut.problems_total, p.problems.len())
        );
        for (id, what) in &p.problems {
            out += &format!("  {id}  {}\n", cut(what, 200));
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows as CSV: a header, then one line per distinct row with its count; raw values.
pub fn csv(p: &Progress) -> String {
    let mut out = String::new();
    let header: Vec<String> = p
        .columns
        .iter()
        .map(|c| csv_field(c))
        .chain(["Count".to_string()])
        .collect();
    out += &header.join(",");
    out.push('\n');
    for r in &p.rows {
        let cells: Vec<String> = r
            .cells
            .iter()
            .map(|c| csv_field(c))
            .chain([r.count.to_string()])
            .collect();
        out += &cells.join(",");
        out.push('\n');
    }
    out
}

/// Whether the question failed on every machine that answered: some answered, none
/// matched, and each of them reported a problem (an undecodable or refused question, or
/// sensors that failed everywhere). The CLI exits non-zero then.
pub fn failed_everywhere(p: &Progress) -> bool {
    if p.answered == 0 || p.matched > 0 {
        return false;
    }
    let mut troubled: Vec<&rollcall_runtime::NodeId> = p.problems.iter().map(|(n, _)| n).collect();
    troubled.sort();
    troubled.dedup();
    troubled.len() >= p.answered
}

/// The sensor catalog as a table: name (with its parameter), type, unit, whether it gives
/// several values, and what it reads.
pub fn sensor_table(catalog: &[SensorSpec]) -> String {
    let rows: Vec<[String; 5]> = catalog
        .iter()
        .map(|s| {
            let name = if s.params > 0 {
                format!("{}[{}]", s.name, s.param_help)
            } else {
                s.name.clone()
            };
            [
                name,
                s.kind.name().to_string(),
                s.kind.unit().unwrap_or("").to_string(),
                if s.multi { "several" } else { "one" }.to_string(),
                s.description.clone(),
            ]
        })
        .collect();
    let heading = ["SENSOR", "TYPE", "UNIT", "VALUES", "DESCRIPTION"].map(String::from);
    let mut widths = heading.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |r: &[String; 5]| {
        let mut s = String::new();
        for (c, w) in r.iter().zip(&widths) {
            s += &format!("{c:<w$}  ");
        }
        s.trim_end().to_string()
    };
    let mut out = line(&heading) + "\n";
    for r in &rows {
        out += &line(r);
        out.push('\n');
    }
    out
}

/// Where in `text` a parse error points: the part around `column` (1-based, in characters),
/// at most ~70 characters of it, with a caret under the column.
pub fn excerpt(text: &str, column: usize) -> String {
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let at = column.saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(35);
    let end = (at + 35).min(chars.len());
    let mut shown: String = chars[start..end].iter().collect();
    let mut caret = at - start;
    if start > 0 {
        shown = format!("…{shown}");
        caret += 1;
    }
    if end < chars.len() {
        shown.push('…');
    }
    format!("  {shown}\n  {}^", " ".repeat(caret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_cluster::questions::RowCount;
    use rollcall_runtime::NodeId;

    fn progress(columns: &[&str], rows: &[(&[&str], u64)], matched: u64) -> Progress {
        Progress {
            cut: Default::default(),
            id: 1,
            text: "q".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            answered: 3,
            expected: 3,
            matched,
            rows: rows
                .iter()
                .map(|(c, n)| RowCount {
                    cells: c.iter().map(|x| x.to_string()).collect(),
                    count: *n,
                })
                .collect(),
            not_answered: vec![],
            problems: vec![],
            elapsed_ms: 1500,
            expires_in_ms: 0,
            fanned_out: true,
        }
    }

    #[test]
    fn tables_show_units_readably_and_mark_cut_cells() {
        let long = "x".repeat(100);
        let p = progress(
            &["Memory", "Computer Name"],
            &[(&["8589934592", &long], 2), (&["1024", "b"], 1)],
            3,
        );
        let kinds = column_kinds(&p.columns, &rollcall_actors::sensors::catalog_with(&[]));
        assert_eq!(kinds, [ValueKind::Bytes, ValueKind::Text]);
        let t = table(&p, &kinds);
        let lines: Vec<&str> = t.lines().collect();
        let cut_cell = format!("{}…", "x".repeat(59));
        assert_eq!(lines[1], format!("8.0 GiB  {cut_cell}  2"));
        assert_eq!(lines[2], format!("1.0 KiB  b{}  1", " ".repeat(59)));
        assert_eq!(lines[4], "answered 3 of 3 in 1.5 s; 3 matched");
        // CSV keeps the raw values whole.
        assert_eq!(
            csv(&p).lines().nth(1),
            Some(format!("8589934592,{long},2").as_str())
        );
    }

    #[test]
    fn a_question_that_failed_on_every_machine_is_told_apart_from_one_that_matched_nothing() {
        let mut p = progress(&["Computer Name"], &[], 0);
        assert!(!failed_everywhere(&p), "no machine matched, none failed");
        p.problems = (0..3)
            .map(|i| {
                (
                    NodeId::new(format!("n{i}")),
                    "cannot read the question".into(),
                )
            })
            .collect();
        assert!(failed_everywhere(&p));
        p.problems.pop();
        assert!(!failed_everywhere(&p), "one machine answered cleanly");
        let q = progress(&["Computer Name"], &[(&["a"], 1)], 1);
        assert!(!failed_everywhere(&q));
    }

    #[test]
    fn an_excerpt_points_at_the_column_of_a_long_question() {
        let text = format!(
            "Get Computer Name from all machines with {}",
            "(".repeat(200)
        );
        let e = excerpt(&text, 80);
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines[0].chars().count(), 2 + 1 + 70 + 1);
        let caret = lines[1].chars().position(|c| c == '^').expect("caret");
        assert_eq!(lines[0].chars().nth(caret), Some('('));
        assert_eq!(excerpt("Get Uptme", 5), "  Get Uptme\n      ^");
    }
}
