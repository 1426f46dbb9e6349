//! Ordering of bundle versions (as [`check_version`](crate::manifest::check_version)
//! accepts them: dot-separated numbers with an optional `-suffix`), with semantic
//! versioning's precedence: numbers compare numerically (a missing one counts as 0), a
//! version with a suffix (a pre-release) comes before the same version without one, and
//! suffixes compare identifier by identifier (numeric ones numerically, below alphanumeric
//! ones). Used wherever a downgrade is recognised: the API's validation and the agent.

use std::cmp::Ordering;

/// Compares two versions; text that is not a version compares as its bytes, after every
/// number (callers validate first).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a_core, a_pre) = split(a);
    let (b_core, b_pre) = split(b);
    let numbers = |core: &str| -> Vec<u64> {
        core.split('.')
            .map(|n| n.parse::<u64>().unwrap_or(u64::MAX))
            .collect()
    };
    let (a_nums, b_nums) = (numbers(a_core), numbers(b_core));
    let len = a_nums.len().max(b_nums.len());
    for i in 0..len {
        let x = a_nums.get(i).copied().unwrap_or(0);
        let y = b_nums.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => compare_pre(x, y),
    }
}

/// Whether moving from `from` to `to` is a downgrade.
pub fn is_downgrade(from: &str, to: &str) -> bool {
    compare(to, from) == Ordering::Less
}

fn split(version: &str) -> (&str, Option<&str>) {
    match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    }
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_semantic_versions() {
        // Ascending, each strictly before the next (semver.org's own example among them).
        let ascending = [
            "0.9.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2",
            "1.10.0",
            "2.0.0",
            "10.0.0",
        ];
        for (i, a) in ascending.iter().enumerate() {
            for (j, b) in ascending.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(compare("1.2", "1.2.0"), Ordering::Equal);
    }

    #[test]
    fn a_downgrade_is_a_move_to_a_lower_version() {
        assert!(is_downgrade("2.0.0", "1.0.0"));
        assert!(is_downgrade("2.0.0", "2.0.0-rc.1"));
        assert!(!is_downgrade("1.0.0", "2.0.0"));
        assert!(!is_downgrade("2.0.0", "2.0.0"));
    }
}
