//! rpm versions, ordered exactly as rpm orders them.
//!
//! In: version strings as rpm-based logs write them (`[epoch:]version[-release]`, or a single
//! version or release part). Out: an [`Ordering`] equal to rpm's own (`rpmvercmp` for one part,
//! `rpm.vercmp` for a whole `epoch:version-release`). No state.
//!
//! rpm cuts a part into runs of ASCII letters and runs of ASCII digits; every other byte only
//! separates runs, and how many separators stand between two runs does not matter. Runs are
//! compared pairwise: digits as numbers of any length, letters byte by byte, a digit run newer
//! than a letter run. `~` sorts before everything, even the end of the part (`1.0~rc1` is older
//! than `1.0`); `^` sorts after the end of the part but before anything else (`1.0^git1` is newer
//! than `1.0` and older than `1.0.1`). When every run matched, the part with runs left is newer.

use std::cmp::Ordering;

/// Compares two version parts (a version or a release) the way rpm's `rpmvercmp` does.
#[must_use]
pub fn compare_part(a: &str, b: &str) -> Ordering {
    compare_bytes(a.as_bytes(), b.as_bytes())
}

fn compare_bytes(left: &[u8], right: &[u8]) -> Ordering {
    if left == right {
        return Ordering::Equal;
    }
    let (mut i, mut j) = (0, 0);

    loop {
        while left.get(i).is_some_and(|&c| is_separator(c)) {
            i += 1;
        }
        while right.get(j).is_some_and(|&c| is_separator(c)) {
            j += 1;
        }
        let (next_left, next_right) = (left.get(i).copied(), right.get(j).copied());
        if next_left.is_none() && next_right.is_none() {
            return Ordering::Equal;
        }

        // `~` is older than anything, the end of the part included.
        if next_left == Some(b'~') || next_right == Some(b'~') {
            match (next_left, next_right) {
                (Some(b'~'), Some(b'~')) => {
                    i += 1;
                    j += 1;
                    continue;
                }
                (Some(b'~'), _) => return Ordering::Less,
                _ => return Ordering::Greater,
            }
        }

        // `^` is newer than the end of the part but older than any further run.
        if next_left == Some(b'^') || next_right == Some(b'^') {
            match (next_left, next_right) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(b'^'), Some(b'^')) => {
                    i += 1;
                    j += 1;
                    continue;
                }
                (Some(b'^'), _) => return Ordering::Less,
                _ => return Ordering::Greater,
            }
        }

        let (Some(first), Some(_)) = (next_left, next_right) else {
            // One part has runs left after all the other's matched: it is the newer one.
            return if next_left.is_some() {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        };

        let is_number = first.is_ascii_digit();
        let run_a = run(left, i, is_number);
        let run_b = run(right, j, is_number);
        i += run_a.len();
        j += run_b.len();

        // A run of the other kind (or none) where this one has digits or letters.
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
}

/// Bytes that only separate runs: everything but ASCII letters, digits, `~` and `^`.
fn is_separator(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || c == b'~' || c == b'^')
}

/// Returns the run of digits (or of letters) starting at `from`.
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

/// An rpm `[epoch:]version[-release]`, split the way rpm splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evr<'a> {
    /// The digits before `:`; `None` when there is no epoch.
    pub epoch: Option<&'a str>,
    pub version: &'a str,
    /// Everything after the last `-`; `None` when there is none.
    pub release: Option<&'a str>,
}

impl<'a> Evr<'a> {
    /// Splits a version: the epoch is the leading digits when a `:` follows them (empty
    /// digits mean epoch 0), the release everything after the last `-`.
    #[must_use]
    pub fn split(text: &'a str) -> Self {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (epoch, rest) = if text.as_bytes().get(digits) == Some(&b':') {
            let epoch = if digits == 0 { "0" } else { &text[..digits] };
            (Some(epoch), &text[digits + 1..])
        } else {
            (None, text)
        };
        match rest.rfind('-') {
            Some(dash) => Self {
                epoch,
                version: &rest[..dash],
                release: Some(&rest[dash + 1..]),
            },
            None => Self {
                epoch,
                version: rest,
                release: None,
            },
        }
    }
}

/// Compares two whole versions the way rpm does (`rpm.vercmp`): epoch (absent is 0), then
/// version, then release; a release that is present is newer than one that is absent.
#[must_use]
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (Evr::split(a), Evr::split(b));
    let present_first = |x: Option<&str>, y: Option<&str>| match (x, y) {
        (Some(x), Some(y)) => compare_part(x, y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    };
    compare_part(a.epoch.unwrap_or("0"), b.epoch.unwrap_or("0"))
        .then_with(|| compare_part(a.version, b.version))
        .then_with(|| present_first(a.release, b.release))
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::process::Command;

    use proptest::prelude::*;
    use proptest::strategy::ValueTree as _;

    use super::*;

    #[test]
    fn parts_order_as_rpm_documents() {
        use Ordering::{Equal, Greater, Less};

        // rpm's own documented and tested cases: runs, separators, tilde and caret.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("2.0", "2.0.1", Less),
            ("2.0.1a", "2.0.1", Greater),
            ("5.5p1", "5.5p2", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("8", "xyz.4", Greater),
            ("1.0", "1_0", Equal),
            ("1.0", "1..0", Equal),
            ("2_0", "2_0", Equal),
            ("2.0", "2_0", Equal),
            ("a", "a", Equal),
            ("a+", "a+", Equal),
            ("a+", "a_", Equal),
            ("+a", "_a", Equal),
            ("+_", "_+", Equal),
            ("_+", "+_", Equal),
            ("_+", "_+", Equal),
            ("+", "_", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0~rc1", "1.0arc1", Less),
            ("", "~", Greater),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^git1", "1.01", Less),
            ("1.0^20160101", "1.0.1", Less),
            ("1.0^20160101^git1", "1.0^20160101", Greater),
            ("1.0^20160102", "1.0^20160101^git1", Greater),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("1.0^git1", "1.0^git1~pre", Greater),
            ("1.0^", "1.0^", Equal),
            ("1.0~^", "1.0~", Greater),
            ("001", "1", Equal),
            ("1.001", "1.1", Equal),
            ("9", "10", Less),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567889",
                Greater,
            ),
            ("a", "B", Greater),
            ("1a", "1", Greater),
            ("a1", "1", Less),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare_part(a, b), expected, "{a:?} vs {b:?}");
            assert_eq!(compare_part(b, a), expected.reverse(), "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn whole_versions_order_by_epoch_version_release() {
        use Ordering::{Equal, Greater, Less};

        let cases = [
            ("1:0.9-1", "2.0-1", Greater),
            ("0:1.0-1", "1.0-1", Equal),
            (":1.0-1", "1.0-1", Equal),
            ("1.0-1", "1.0-2", Less),
            ("1.0-1.el8", "1.0-1.el8_3", Less),
            ("1.0-1", "1.0", Greater),
            ("4:20200609-2.el8", "4:20201112-1.el8", Less),
            ("1.12.8-12.el8_3", "1.12.8-11.el8", Greater),
            ("6.0-24.el7_9", "6.0-22.el7_9", Greater),
            ("1.0-1-1", "1.0-1", Greater),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare(a, b), expected, "{a} vs {b}");
            assert_eq!(compare(b, a), expected.reverse(), "{b} vs {a}");
        }

        assert_eq!(
            Evr::split("32:9.11.4-9.P2.el7"),
            Evr {
                epoch: Some("32"),
                version: "9.11.4",
                release: Some("9.P2.el7"),
            }
        );
        assert_eq!(
            Evr::split("1.2"),
            Evr {
                epoch: None,
                version: "1.2",
                release: None,
            }
        );
    }

    /// Versions of rpm's alphabet, weighted towards the characters with special meaning.
    fn version_text() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "0", "1", "2", "9", "10", "01", "a", "b", "z", "rc", "git", "A", "~", "^", ".", "_",
            "+", "-", ":",
        ]);
        prop::collection::vec(piece, 1..10).prop_map(|pieces| pieces.concat())
    }

    /// Asks rpm itself to order `pairs`, all in one run of its Lua interpreter.
    fn rpm_orderings(pairs: &[(String, String)]) -> Option<Vec<Ordering>> {
        let mut script = String::from("%{lua:\n");
        for (a, b) in pairs {
            let _ = writeln!(script, "io.write(rpm.vercmp(\"{a}\", \"{b}\"), \"\\n\")");
        }
        script.push('}');
        let output = Command::new("rpm")
            .arg("--eval")
            .arg(&script)
            .output()
            .ok()?;
        assert!(
            output.status.success(),
            "rpm failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let results: Vec<Ordering> = text
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| match line.trim() {
                "-1" => Ordering::Less,
                "0" => Ordering::Equal,
                "1" => Ordering::Greater,
                other => panic!("rpm printed {other:?}"),
            })
            .collect();
        assert_eq!(results.len(), pairs.len(), "rpm output: {text}");
        Some(results)
    }

    #[test]
    fn ordering_matches_the_real_rpm() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let pairs: Vec<(String, String)> = (0..2000)
            .map(|_| {
                let a = version_text().new_tree(&mut runner).map(|t| t.current());
                let b = version_text().new_tree(&mut runner).map(|t| t.current());
                a.and_then(|a| b.map(|b| (a, b)))
                    .unwrap_or_else(|err| panic!("generator failed: {err}"))
            })
            .collect();
        let Some(expected) = rpm_orderings(&pairs) else {
            println!("skipping: rpm is not installed");
            return;
        };
        for ((a, b), expected) in pairs.iter().zip(expected) {
            assert_eq!(compare(a, b), expected, "{a:?} vs {b:?}");
        }
    }

    proptest! {
        #[test]
        fn ordering_is_antisymmetric(a in version_text(), b in version_text()) {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            prop_assert_eq!(compare_part(&a, &b), compare_part(&b, &a).reverse());
        }

        #[test]
        fn any_text_compares_without_panic(a in "\\PC{0,20}", b in "\\PC{0,20}") {
            let _ = compare(&a, &b);
        }
    }
}
