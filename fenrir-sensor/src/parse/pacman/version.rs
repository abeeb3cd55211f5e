//! pacman versions, ordered exactly as pacman (libalpm's `alpm_pkg_vercmp`, the `vercmp` tool)
//! orders them.
//!
//! In: `[epoch:]pkgver[-pkgrel]` strings. Out: an [`Ordering`]. No state.
//!
//! pacman inherited an early form of rpm's algorithm and kept it: a version is cut into runs of
//! ASCII digits and runs of ASCII letters, compared pairwise (digits as numbers of any length,
//! letters byte by byte, digits newer than letters). Unlike today's rpm, `~` and `^` are plain
//! separators, a different number of separators before a run decides the comparison (`1..0`
//! is newer than `1.0`), and a version with letters left over is *older* than one that ended
//! (`1.0rc1` before `1.0`), while leftover digits or separators make it newer (`1.0.1` after
//! `1.0`). The epoch defaults to 0, and the pkgrel only counts when both versions have one.

use std::cmp::Ordering;

/// Compares two pacman versions.
#[must_use]
pub fn compare(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (split(a), split(b));
    compare_part(a.0.as_bytes(), b.0.as_bytes())
        .then_with(|| compare_part(a.1.as_bytes(), b.1.as_bytes()))
        .then_with(|| match (a.2, b.2) {
            (Some(x), Some(y)) => compare_part(x.as_bytes(), y.as_bytes()),
            _ => Ordering::Equal,
        })
}

/// Splits into epoch (`"0"` when absent or empty), pkgver and pkgrel (after the last `-`).
fn split(text: &str) -> (&str, &str, Option<&str>) {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (epoch, rest) = if text.as_bytes().get(digits) == Some(&b':') {
        let epoch = if digits == 0 { "0" } else { &text[..digits] };
        (epoch, &text[digits + 1..])
    } else {
        ("0", text)
    };
    match rest.rfind('-') {
        Some(dash) => (epoch, &rest[..dash], Some(&rest[dash + 1..])),
        None => (epoch, rest, None),
    }
}

/// Compares one part (epoch, pkgver or pkgrel).
fn compare_part(left: &[u8], right: &[u8]) -> Ordering {
    if left == right {
        return Ordering::Equal;
    }
    // `i`/`j` walk the strings; `end_a`/`end_b` mark where the previous run ended, so the
    // separators in between can be counted.
    let (mut i, mut j) = (0, 0);
    let (mut end_a, mut end_b) = (0, 0);

    while i < left.len() && j < right.len() {
        while left.get(i).is_some_and(|c| !c.is_ascii_alphanumeric()) {
            i += 1;
        }
        while right.get(j).is_some_and(|c| !c.is_ascii_alphanumeric()) {
            j += 1;
        }
        if i >= left.len() || j >= right.len() {
            break;
        }
        let (gap_a, gap_b) = (i - end_a, j - end_b);
        if gap_a != gap_b {
            return gap_a.cmp(&gap_b);
        }

        let is_number = left[i].is_ascii_digit();
        let run_a = run(left, i, is_number);
        let run_b = run(right, j, is_number);
        i += run_a.len();
        j += run_b.len();
        end_a = i;
        end_b = j;

        if run_b.is_empty() {
            return if is_number {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let by_run = if is_number {
            let (digits_a, digits_b) = (strip_zeros(run_a), strip_zeros(run_b));
            digits_a
                .len()
                .cmp(&digits_b.len())
                .then_with(|| digits_a.cmp(digits_b))
        } else {
            run_a.cmp(run_b)
        };
        if by_run != Ordering::Equal {
            return by_run;
        }
    }

    let (rest_a, rest_b) = (left.get(i).copied(), right.get(j).copied());
    match (rest_a, rest_b) {
        (None, None) => Ordering::Equal,
        // Letters left over mean left pre-release; the side that ended is newer than them but
        // older than leftover digits or separators.
        (None, Some(c)) if !c.is_ascii_alphabetic() => Ordering::Less,
        (Some(c), _) if c.is_ascii_alphabetic() => Ordering::Less,
        _ => Ordering::Greater,
    }
}

fn run(text: &[u8], from: usize, digits: bool) -> &[u8] {
    let rest = &text[from..];
    let len = rest
        .iter()
        .position(|c| {
            if digits {
                !c.is_ascii_digit()
            } else {
                !c.is_ascii_alphabetic()
            }
        })
        .unwrap_or(rest.len());
    &rest[..len]
}

fn strip_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use proptest::prelude::*;
    use proptest::strategy::ValueTree as _;

    use super::*;

    #[test]
    fn versions_order_as_pacman_documents() {
        use Ordering::{Equal, Greater, Less};

        // The examples of vercmp(8) and of pacman's own version tests.
        let cases = [
            ("1.0a", "1.0b", Less),
            ("1.0b", "1.0beta", Less),
            ("1.0beta", "1.0p", Less),
            ("1.0p", "1.0pre", Less),
            ("1.0pre", "1.0rc", Less),
            ("1.0rc", "1.0", Less),
            ("1.0", "1.0.a", Less),
            ("1.0.a", "1.0.1", Less),
            ("1", "1.0", Less),
            ("1.0", "1.1", Less),
            ("1.1", "1.1.1", Less),
            ("1.1.1", "1.2", Less),
            ("1.2", "2.0", Less),
            ("2.0", "3.0.0", Less),
            ("1.5-1", "1.5", Equal),
            ("1.5-1", "1.5-2", Less),
            ("1.5-2", "1.5.1-1", Less),
            ("1:1.0", "2.0", Greater),
            ("0:1.0", "1.0", Equal),
            ("1.0", "1..0", Less),
            ("1.0", "1.0.0", Less),
            ("1.0~rc1", "1.0", Greater),
            ("1.0rc1", "1.0", Less),
            ("1.2.3-1", "1.2.3-1", Equal),
            ("2014e-1", "2014d-1", Greater),
            ("1.2.13-1", "1.2.12-1", Greater),
            ("r1000.b481c3c", "r37.e481c3c", Greater),
            ("r1000.b481c3c", "1.0", Less),
            ("20141130", "012", Greater),
            ("011", "11", Equal),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare(a, b), expected, "{a} vs {b}");
            assert_eq!(compare(b, a), expected.reverse(), "{b} vs {a}");
        }
    }

    fn version_text() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "0", "1", "2", "10", "01", "a", "b", "rc", "pre", "~", ".", "..", "_", "+", "-", ":",
        ]);
        prop::collection::vec(piece, 1..9).prop_map(|pieces| pieces.concat())
    }

    /// Asks pacman's `vercmp` for the order of `a` and `b`; `None` when it is not installed.
    fn vercmp(a: &str, b: &str) -> Option<Ordering> {
        let output = Command::new("vercmp").args([a, b]).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        Some(match text.trim() {
            "-1" => Ordering::Less,
            "0" => Ordering::Equal,
            "1" => Ordering::Greater,
            other => panic!("vercmp {a} {b} printed {other:?}"),
        })
    }

    #[test]
    fn ordering_matches_the_real_vercmp() {
        if vercmp("1", "2").is_none() {
            println!("skipping: pacman's vercmp is not installed");
            return;
        }
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..400 {
            let pair = (version_text(), version_text())
                .new_tree(&mut runner)
                .map(|tree| tree.current());
            let (a, b) = pair.unwrap_or_else(|err| panic!("generator failed: {err}"));
            assert_eq!(Some(compare(&a, &b)), vercmp(&a, &b), "{a:?} vs {b:?}");
        }
    }

    proptest! {
        #[test]
        fn ordering_is_antisymmetric(a in version_text(), b in version_text()) {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        }

        #[test]
        fn any_text_compares_without_panic(a in "\\PC{0,20}", b in "\\PC{0,20}") {
            let _ = compare(&a, &b);
        }
    }
}
