//! Package version comparison in the Debian manner (`epoch:upstream-revision`, `~` sorts
//! before everything, digits compare numerically), which also orders RPM-style versions
//! sensibly.

use std::cmp::Ordering;

fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((up, rev)) => (epoch, up, rev),
        None => (epoch, rest, ""),
    }
}

fn order(c: Option<char>) -> i32 {
    match c {
        Some('~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        // Non-digit prefix.
        let na = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
        let nb = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
        let (sa, sb) = (&a[..na], &b[..nb]);
        let mut ca = sa.chars();
        let mut cb = sb.chars();
        loop {
            let (x, y) = (ca.next(), cb.next());
            if x.is_none() && y.is_none() {
                break;
            }
            let o = order(x).cmp(&order(y));
            if o != Ordering::Equal {
                return o;
            }
        }
        a = &a[na..];
        b = &b[nb..];
        // Digit run.
        let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
        let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
        let xa: u128 = a[..da].parse().unwrap_or(0);
        let xb: u128 = b[..db].parse().unwrap_or(0);
        match xa.cmp(&xb) {
            Ordering::Equal => {}
            o => return o,
        }
        a = &a[da..];
        b = &b[db..];
        if a.is_empty() && b.is_empty() {
            return Ordering::Equal;
        }
    }
}

/// Compares two package versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_like_dpkg() {
        let less = [
            ("1.0", "1.1"),
            ("1.9", "1.10"),
            ("1.0~rc1", "1.0"),
            ("3.0.2-0ubuntu1.10", "3.0.2-0ubuntu1.15"),
            ("3.0.2-0ubuntu1.15", "3.0.13-1"),
            ("2.7", "1:0.1"),
            ("1.2.3", "1.2.3a"),
            ("7.68.0-1ubuntu2.21", "8.5.0-2ubuntu10.1"),
        ];
        for (a, b) in less {
            assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(compare("1.0-1", "1.0-1"), Ordering::Equal);
        assert_eq!(compare("0:1.0", "1.0"), Ordering::Equal);
    }
}
