//! Debian package versions, ordered exactly as dpkg orders them.
//!
//! In: a version string as dpkg writes it (`[epoch:]upstream[-revision]`). Out: a [`Version`]
//! whose [`Ord`] matches `dpkg --compare-versions`, or a [`VersionError`] naming what is wrong.
//! No state.
//!
//! Equality follows the ordering, not the spelling: `1.0`, `0:1.0`, `1.0-0` and `01.0` are equal,
//! as they are to dpkg. For that reason [`Version`] implements neither `Hash` nor a derived
//! `PartialEq`.

use std::cmp::Ordering;
use std::fmt;

use thiserror::Error;

/// The largest epoch dpkg accepts (it stores epochs in a C `int`).
const MAX_EPOCH: u32 = i32::MAX as u32;

/// Why a string is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VersionError {
    /// The string is empty.
    #[error("version is empty")]
    Empty,
    /// The part before the first `:` is empty.
    #[error("epoch is empty")]
    EmptyEpoch,
    /// The epoch holds something other than ASCII digits.
    #[error("epoch is not a number")]
    BadEpoch,
    /// The epoch is larger than dpkg can store.
    #[error("epoch is too big")]
    EpochTooBig,
    /// Nothing is left between the epoch and the revision.
    #[error("upstream version is empty")]
    EmptyUpstream,
    /// The string ends with `-`.
    #[error("revision is empty")]
    EmptyRevision,
    /// A character outside Debian policy's set for that part.
    #[error("invalid character {found:?} in {part} version")]
    BadCharacter {
        /// `upstream` or `revision`.
        part: &'static str,
        /// The offending character, escaped for display.
        found: String,
    },
}

/// One Debian version: `[epoch:]upstream[-revision]`.
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u32,
    upstream: String,
    revision: String,
}

impl Version {
    /// Parses a version as dpkg writes it.
    ///
    /// The epoch is the number before the first `:`, the revision everything after the last
    /// `-`. Characters follow Debian policy (ASCII letters and digits, `.+~` everywhere, `-` and
    /// `:` in the upstream part); an upstream part that does not start with a digit is accepted,
    /// as dpkg only warns about it and old archives carry such versions.
    ///
    /// # Errors
    ///
    /// Returns a [`VersionError`] for an empty string or part, a bad epoch, or any character
    /// outside policy's set, which includes every whitespace, control and non-ASCII character.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let (epoch, upstream, revision) = split(text)?;
        Ok(Self {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.to_owned(),
        })
    }

    /// Checks that `text` is a valid version without keeping its parts.
    ///
    /// The parser calls this for every version of every line, so it allocates nothing.
    pub fn validate(text: &str) -> Result<(), VersionError> {
        split(text).map(|_| ())
    }
}

/// Splits a version into epoch, upstream and revision, checking every character.
fn split(text: &str) -> Result<(u32, &str, &str), VersionError> {
    if text.is_empty() {
        return Err(VersionError::Empty);
    }

    // ':' and '-' are ASCII, so the byte positions memchr finds are character boundaries.
    let (epoch, rest) = match memchr::memchr(b':', text.as_bytes()) {
        Some(colon) => (parse_epoch(&text[..colon])?, &text[colon + 1..]),
        None => (0, text),
    };

    let (upstream, revision) = match memchr::memrchr(b'-', rest.as_bytes()) {
        Some(dash) if dash + 1 == rest.len() => return Err(VersionError::EmptyRevision),
        Some(dash) => (&rest[..dash], &rest[dash + 1..]),
        None => (rest, ""),
    };
    if upstream.is_empty() {
        return Err(VersionError::EmptyUpstream);
    }

    check_chars(upstream, "upstream", |c| {
        matches!(c, '.' | '+' | '~' | '-' | ':')
    })?;
    check_chars(revision, "revision", |c| matches!(c, '.' | '+' | '~'))?;
    Ok((epoch, upstream, revision))
}

impl Version {
    /// Returns the epoch, 0 when none was written.
    #[must_use]
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Returns the upstream part.
    #[must_use]
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Returns the Debian revision, empty when none was written.
    #[must_use]
    pub fn revision(&self) -> &str {
        &self.revision
    }
}

fn parse_epoch(text: &str) -> Result<u32, VersionError> {
    if text.is_empty() {
        return Err(VersionError::EmptyEpoch);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VersionError::BadEpoch);
    }

    // Only digits are left, so a failure here can only be overflow.
    match text.parse::<u32>() {
        Ok(epoch) if epoch <= MAX_EPOCH => Ok(epoch),
        _ => Err(VersionError::EpochTooBig),
    }
}

fn check_chars(
    text: &str,
    part: &'static str,
    also_allowed: impl Fn(char) -> bool,
) -> Result<(), VersionError> {
    // Every allowed character is ASCII, so a byte scan finds the first bad one; only then is
    // the character there decoded for the message.
    let bad = text
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b.is_ascii() && also_allowed(char::from(b))));
    match bad
        .and_then(|index| text.get(index..))
        .and_then(|tail| tail.chars().next())
    {
        Some(c) => Err(VersionError::BadCharacter {
            part,
            found: c.escape_default().to_string(),
        }),
        None => Ok(()),
    }
}

impl fmt::Display for Version {
    /// Writes the version in dpkg's canonical form: the epoch only when it is not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream.as_bytes(), other.upstream.as_bytes()))
            .then_with(|| compare_part(self.revision.as_bytes(), other.revision.as_bytes()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// Compares an upstream version or a revision the way dpkg's `verrevcmp` does.
///
/// The strings are cut into alternating runs of non-digits and digits. Non-digit runs compare
/// character by character with `~` first (even before the end of the string), then the end,
/// then letters, then everything else; digit runs compare as numbers of any length.
fn compare_part(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);

    while i < a.len() || j < b.len() {
        // A missing byte stands for the end of the string, which a non-digit run treats as a
        // character of its own weight.
        while a.get(i).is_some_and(|c| !c.is_ascii_digit())
            || b.get(j).is_some_and(|c| !c.is_ascii_digit())
        {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }

        let digits_a = digit_run(a, &mut i);
        let digits_b = digit_run(b, &mut j);
        let by_value = digits_a
            .len()
            .cmp(&digits_b.len())
            .then_with(|| digits_a.cmp(digits_b));
        if by_value != Ordering::Equal {
            return by_value;
        }
    }

    Ordering::Equal
}

/// Returns the sort weight of one byte of a non-digit run; `None` is the end of the string.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Advances `pos` past a run of digits and returns it without its leading zeros.
fn digit_run<'a>(text: &'a [u8], pos: &mut usize) -> &'a [u8] {
    while text.get(*pos) == Some(&b'0') {
        *pos += 1;
    }
    let start = *pos;
    while text.get(*pos).is_some_and(u8::is_ascii_digit) {
        *pos += 1;
    }
    &text[start..*pos]
}

/// Generators of valid version strings, shared by the parse stage's property tests.
#[cfg(test)]
pub(crate) mod strategy {
    use proptest::prelude::*;

    /// Valid Debian versions: optional epoch, upstream starting with a digit, optional revision.
    pub(crate) fn version_text() -> impl Strategy<Value = String> {
        (
            prop::option::of(0u32..100),
            "[0-9][0-9A-Za-z.+~]{0,12}",
            prop::option::of("[0-9A-Za-z.+~]{1,8}"),
        )
            .prop_map(|(epoch, upstream, revision)| {
                let mut text = epoch.map(|e| format!("{e}:")).unwrap_or_default();
                text.push_str(&upstream);
                if let Some(revision) = revision {
                    text.push('-');
                    text.push_str(&revision);
                }
                text
            })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::process::Command;

    use proptest::prelude::*;

    use super::*;
    use crate::parse::dpkg::corpus;

    fn v(text: &str) -> Version {
        match Version::parse(text) {
            Ok(version) => version,
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    #[test]
    fn parts_are_split_at_first_colon_and_last_hyphen() {
        let version = v("2:1.2-3-4ubuntu1");
        assert_eq!(version.epoch(), 2);
        assert_eq!(version.upstream(), "1.2-3");
        assert_eq!(version.revision(), "4ubuntu1");

        let version = v("1:2.3:4");
        assert_eq!(
            (version.epoch(), version.upstream(), version.revision()),
            (1, "2.3:4", "")
        );

        assert_eq!(v("0:1.0-1").to_string(), "1.0-1");
        assert_eq!(v("7:4.4.1-1~bpo10+1").to_string(), "7:4.4.1-1~bpo10+1");
    }

    #[test]
    fn malformed_versions_are_rejected() {
        let cases: &[(&str, VersionError)] = &[
            ("", VersionError::Empty),
            (":1.0", VersionError::EmptyEpoch),
            ("a:1.0", VersionError::BadEpoch),
            ("-1:1.0", VersionError::BadEpoch),
            ("2147483648:1.0", VersionError::EpochTooBig),
            ("99999999999999999999:1", VersionError::EpochTooBig),
            ("1:", VersionError::EmptyUpstream),
            ("-1", VersionError::EmptyUpstream),
            ("1.0-", VersionError::EmptyRevision),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Version::parse(text).as_ref().err(),
                Some(expected),
                "{text:?}"
            );
        }

        for text in [
            "1.0 beta",
            "1.0\t",
            "1.0\n",
            "1.0\u{1b}[31m",
            "1.0_2",
            "1.0-1_b",
            "1.0é",
        ] {
            assert!(
                matches!(Version::parse(text), Err(VersionError::BadCharacter { .. })),
                "{text:?} should be rejected"
            );
        }

        assert_eq!(
            Version::parse("2147483647:1").map(|v| v.epoch()),
            Ok(2_147_483_647)
        );
    }

    #[test]
    fn real_versions_order_as_dpkg_orders_them() {
        use Ordering::{Equal, Greater, Less};

        let cases = [
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc1~", Greater),
            ("1.0~~", "1.0~", Less),
            ("1:0.1", "9.9", Greater),
            ("1.0-1", "1.0-1+b1", Less),
            ("2.30-1ubuntu1", "2.30-1", Greater),
            ("1.2.3", "1.2.3-0", Equal),
            ("1.2.3", "0:1.2.3", Equal),
            ("1.01", "1.1", Equal),
            ("1.0", "1.0.0", Less),
            ("1.0a", "1.0+", Less),
            ("1.0a", "1.0", Greater),
            ("1.0+dfsg", "1.0.1", Less),
            ("2:4.3.2+dfsg-2", "4.3.2+dfsg-2", Greater),
            ("4.1.ESV-R4-0ubuntu5.5", "4.1.ESV-R4-0ubuntu5.4", Greater),
            ("1.4.14b-stable-1", "1.4.14-stable-1", Less),
            ("1.2.0~git20080616-1", "1.2.0-1", Less),
            ("0.9.8o-7", "0.9.8-7", Greater),
            ("7.4.052-1ubuntu3", "2:7.4.052-1ubuntu3", Less),
            ("1.0-1~bpo10+1", "1.0-1", Less),
            ("20211016ubuntu0.20.04.1", "20210119~20.04.2", Greater),
            ("5.0.0-2", "5.0.0-10", Less),
            ("00000000000000000000000000000000000000001", "1", Equal),
            (
                "99999999999999999999999999999999999999999",
                "99999999999999999999999999999999999999998",
                Greater,
            ),
            (
                "1.99999999999999999999999999",
                "1.100000000000000000000000000",
                Less,
            ),
        ];
        for (a, b, expected) in cases {
            assert_eq!(v(a).cmp(&v(b)), expected, "{a} vs {b}");
            assert_eq!(v(b).cmp(&v(a)), expected.reverse(), "{b} vs {a}");
        }
    }

    /// Every distinct version written in the corpus logs, or `None` without a corpus.
    fn corpus_versions() -> Option<Vec<String>> {
        let mut versions = BTreeSet::new();
        for (_, bytes) in corpus::files()? {
            for line in corpus::lines(&bytes) {
                let text = String::from_utf8_lossy(line);
                let fields: Vec<&str> = text.split(' ').collect();
                let written = match (fields.len(), fields.get(2)) {
                    (6, Some(&"status")) => &fields[5..],
                    (6, Some(&("startup" | "conffile"))) => &[][..],
                    (6, _) => &fields[4..],
                    _ => &[][..],
                };
                let written = written.iter().filter(|f| **f != "<none>");
                versions.extend(written.map(|f| (*f).to_owned()));
            }
        }
        Some(versions.into_iter().collect())
    }

    #[test]
    fn every_corpus_version_parses() {
        let Some(versions) = corpus_versions() else {
            return;
        };
        assert!(
            versions.len() > 1000,
            "only {} distinct versions",
            versions.len()
        );
        for text in &versions {
            assert!(Version::parse(text).is_ok(), "{text:?} should parse");
        }
    }

    #[test]
    fn ordering_matches_dpkg_compare_versions_on_corpus_pairs() {
        let Some(versions) = corpus_versions() else {
            return;
        };
        if Command::new("dpkg").arg("--version").output().is_err() {
            println!("skipping: dpkg is not installed");
            return;
        }

        // Neighbours in a sorted list share long prefixes, which exercises the fine points;
        // the stride pairs add unrelated versions.
        let n = versions.len();
        let step = n / 250 + 1;
        let neighbours = (0..n - 1)
            .step_by(step)
            .map(|i| (&*versions[i], &*versions[i + 1]));
        let unrelated = (0..150).map(|i| (&*versions[i * 7 % n], &*versions[(i * 13 + n / 2) % n]));
        let pairs: Vec<(&str, &str)> = neighbours.chain(unrelated).collect();
        assert!(pairs.len() >= 300, "only {} pairs", pairs.len());

        for (a, b) in pairs {
            let dpkg_says_less = dpkg_compare(a, "lt", b);
            let dpkg_says_equal = dpkg_compare(a, "eq", b);
            let ours = v(a).cmp(&v(b));
            assert_eq!(ours == Ordering::Less, dpkg_says_less, "{a} lt {b}");
            assert_eq!(ours == Ordering::Equal, dpkg_says_equal, "{a} eq {b}");
        }
    }

    fn dpkg_compare(a: &str, op: &str, b: &str) -> bool {
        match Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
        {
            Ok(status) => status.success(),
            Err(err) => panic!("failed to run dpkg: {err}"),
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = Version::parse(&text);
        }

        #[test]
        fn ordering_is_a_total_order(
            a in strategy::version_text(),
            b in strategy::version_text(),
            c in strategy::version_text(),
        ) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }

        #[test]
        fn display_round_trips(text in strategy::version_text()) {
            let version = v(&text);
            prop_assert_eq!(v(&version.to_string()).cmp(&version), Ordering::Equal);
        }
    }
}
