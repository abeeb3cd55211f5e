//! Alpine package versions, ordered exactly as apk orders them.
//!
//! In: version strings of the form `number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}`
//! (`1.2.3b_rc1_p2~1a2b-r4`). Out: an [`Ordering`] and a validity check matching apk-tools 3.
//! No state.
//!
//! A version is read as a sequence of tokens, each kind allowed only after the kinds before
//! it in the pattern above. Two versions are compared token by token while both have a token
//! of the same kind: the first number and `-r` revisions as integers; later numbers as
//! integers too unless either starts with `0`, which makes both compare as text (`1.01` is
//! older than `1.1`, as in Gentoo, where the scheme comes from); the letter by its byte;
//! suffixes in the order `alpha`, `beta`, `pre`, `rc`, (none), `cvs`, `svn`, `git`, `hg`, `p`;
//! a commit hash as text. When the kinds differ, a pre-release suffix makes its version the
//! older one; otherwise the version whose next token comes later in the pattern (or that
//! ended) is the older one, so `1.0` < `1.0-r1` < `1.0a` < `1.0.1`. Anything that breaks the
//! pattern ends a version as *invalid*, which sorts below everything at that point.

use std::cmp::Ordering;

/// Token kinds in pattern order; the order is what the comparison relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    FirstNumber,
    Number,
    Letter,
    Suffix,
    SuffixNumber,
    CommitHash,
    Revision,
    End,
    Invalid,
}

/// Suffixes in their sort order; `NO_SUFFIX` stands where a version without one sorts.
const SUFFIXES: [&str; 9] = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"];
/// Index of the first suffix that marks a release after the plain version.
const FIRST_POST_RELEASE: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    /// The token's text: digits, the letter, the suffix word or the hash.
    text: &'a [u8],
    /// For number kinds, the digits' value (wrapping like apk's 64-bit parse).
    number: u64,
    /// For suffixes, the rank in sort order with the plain version between pre and post.
    rank: usize,
}

/// Reads the tokens of one version.
struct Tokens<'a> {
    rest: &'a [u8],
    token: Token<'a>,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a [u8]) -> Self {
        let mut tokens = Self {
            rest: text,
            token: Token {
                kind: Kind::FirstNumber,
                text: &[],
                number: 0,
                rank: 0,
            },
        };
        tokens.digits(Kind::FirstNumber);
        tokens
    }

    /// Takes a run of digits as a token of `kind`; no digits make the version invalid.
    fn digits(&mut self, kind: Kind) {
        let len = self.rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let (digits, rest) = self.rest.split_at(len);
        self.rest = rest;
        let number = digits.iter().fold(0_u64, |n, &c| {
            n.wrapping_mul(10).wrapping_add(u64::from(c - b'0'))
        });
        self.token = Token {
            kind: if digits.is_empty() {
                Kind::Invalid
            } else {
                kind
            },
            text: digits,
            number,
            rank: 0,
        };
    }

    /// Moves to the next token; after `End` or `Invalid` nothing changes.
    fn advance(&mut self) {
        let previous = self.token.kind;
        let Some(&first) = self.rest.first() else {
            self.token.kind = Kind::End;
            return;
        };
        match first {
            b'a'..=b'z' if previous <= Kind::Number => {
                self.token = Token {
                    kind: Kind::Letter,
                    text: &self.rest[..1],
                    number: 0,
                    rank: 0,
                };
                self.rest = &self.rest[1..];
            }
            b'.' if previous <= Kind::Number => {
                self.rest = &self.rest[1..];
                self.digits(Kind::Number);
            }
            b'0'..=b'9' if previous == Kind::Suffix => self.digits(Kind::SuffixNumber),
            b'_' if previous <= Kind::SuffixNumber => {
                let word_len = self.rest[1..]
                    .iter()
                    .take_while(|c| c.is_ascii_lowercase())
                    .count();
                let word = &self.rest[1..=word_len];
                self.rest = &self.rest[1 + word_len..];
                self.token = match SUFFIXES.iter().position(|s| s.as_bytes() == word) {
                    Some(index) => Token {
                        kind: Kind::Suffix,
                        text: word,
                        number: 0,
                        rank: if index < FIRST_POST_RELEASE {
                            index
                        } else {
                            index + 1
                        },
                    },
                    None => Token::invalid(),
                };
            }
            b'~' if previous < Kind::CommitHash => {
                let hash_len = self.rest[1..]
                    .iter()
                    .take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                    .count();
                let hash = &self.rest[1..=hash_len];
                self.rest = &self.rest[1 + hash_len..];
                self.token = if hash.is_empty() {
                    Token::invalid()
                } else {
                    Token {
                        kind: Kind::CommitHash,
                        text: hash,
                        number: 0,
                        rank: 0,
                    }
                };
            }
            b'-' if previous < Kind::Revision && self.rest.get(1) == Some(&b'r') => {
                self.rest = &self.rest[2..];
                self.digits(Kind::Revision);
            }
            _ => self.token = Token::invalid(),
        }
    }
}

impl Token<'_> {
    fn invalid() -> Self {
        Token {
            kind: Kind::Invalid,
            text: &[],
            number: 0,
            rank: 0,
        }
    }
}

/// The rank the plain version (no suffix) has among suffixes.
const NO_SUFFIX_RANK: usize = FIRST_POST_RELEASE;

/// Compares two tokens of the same kind.
fn compare_tokens(a: &Token<'_>, b: &Token<'_>) -> Ordering {
    match a.kind {
        Kind::Number if a.text.first() == Some(&b'0') || b.text.first() == Some(&b'0') => {
            a.text.cmp(b.text)
        }
        Kind::FirstNumber | Kind::Number | Kind::SuffixNumber | Kind::Revision => {
            a.number.cmp(&b.number)
        }
        Kind::Suffix => a.rank.cmp(&b.rank),
        Kind::Letter | Kind::CommitHash | Kind::End | Kind::Invalid => a.text.cmp(b.text),
    }
}

/// Compares two apk versions.
#[must_use]
pub fn compare(a: &str, b: &str) -> Ordering {
    let mut x = Tokens::new(a.as_bytes());
    let mut y = Tokens::new(b.as_bytes());

    while x.token.kind == y.token.kind && x.token.kind < Kind::End {
        let by_token = compare_tokens(&x.token, &y.token);
        if by_token != Ordering::Equal {
            return by_token;
        }
        x.advance();
        y.advance();
    }

    let (kind_a, kind_b) = (x.token.kind, y.token.kind);
    if kind_a == kind_b {
        return Ordering::Equal;
    }
    if kind_a == Kind::Suffix && x.token.rank < NO_SUFFIX_RANK {
        return Ordering::Less;
    }
    if kind_b == Kind::Suffix && y.token.rank < NO_SUFFIX_RANK {
        return Ordering::Greater;
    }
    // The kind later in the pattern (or the end) is the older version.
    kind_b.cmp(&kind_a)
}

/// Tells whether `text` follows apk's version pattern.
#[must_use]
pub fn is_valid(text: &str) -> bool {
    let mut tokens = Tokens::new(text.as_bytes());
    while tokens.token.kind < Kind::End {
        tokens.advance();
    }
    tokens.token.kind == Kind::End
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn versions_order_as_apk_documents() {
        use Ordering::{Equal, Greater, Less};

        // Cases from apk-tools' own version test data.
        let cases = [
            ("2.34", "0.1.0_alpha", Greater),
            ("23_foo", "4_beta", Greater),
            ("1.0", "1.0bc", Less),
            ("0.1.0_alpha", "0.1.0_alpha", Equal),
            ("0.1.0_alpha2", "0.1.0_alpha", Greater),
            ("1.0.4-r3", "1.0.4-r4", Less),
            ("1.1", "1.1_alpha1", Greater),
            ("1.2.1", "1.2", Greater),
            ("1.3_alpha2", "1.3_alpha3", Less),
            ("0.8_beta4", "4.8-r1", Less),
            ("3.10.18-r1", "2.3.0b-r1", Greater),
            ("2.3.0b-r3", "2.3.0b-r4", Less),
            ("3.1_p17", "1.06-r6", Greater),
            ("1.2.2-r1", "1.2.2", Greater),
            ("2.59", "20050718-r1", Less),
            ("2.01.01_alpha10", "0.94", Greater),
            ("1.02", "1.03-r1", Less),
            ("2.11-r1", "2.11", Greater),
            ("20060720", "3.0.20060720", Greater),
            ("0.7.18-r2", "0.17-r6", Less),
            ("4.1.4-r3", "4.1.4-r3", Equal),
            ("2.6.15.20060110", "2.6.16.20060323", Less),
            ("021109-r3", "20060512", Less),
            ("3.9_pre20060124", "0.01", Greater),
            ("6b-r7", "1.12-r7", Greater),
            ("1.2.07.8", "1.2.12.04", Less),
            ("1.07-r1", "1.07.5", Less),
            ("0.1_pre20060810", "0.1_pre20060817", Less),
            ("4.4_p1-r6", "4.5_p1-r1", Less),
            ("4.5_p1", "0.9.8c-r1", Greater),
            ("2.2.3-r2", "013", Less),
            ("1.3-r0", "1.3.1-r0", Less),
            ("1.3_pre1-r1", "1.3.2", Less),
            ("1.0_p10-r0", "1.0_p9-r0", Greater),
            ("0.1.0_alpha_pre2", "0.1.0_alpha", Less),
            ("6.0_pre1", "6.0", Less),
            ("6.0_p1", "6.0", Greater),
            ("8.2.0", "8.2.001", Less),
            ("8.2.0015", "8.2.002", Less),
            ("1.0~1234", "1.0~2345", Less),
            ("1.0~1234-r1", "1.0~2345-r0", Less),
            ("1.0~1234-r1", "1.0~1234-r0", Greater),
            // Real upgrades from Alpine logs.
            ("2.43-r1", "2.43-r0", Greater),
            ("15.2.0-r2", "14.2.0-r4", Greater),
            ("1.36.1-r2", "1.36.1-r15", Less),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare(a, b), expected, "{a} vs {b}");
            assert_eq!(compare(b, a), expected.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn validity_follows_the_pattern() {
        for valid in [
            "1.2",
            "0.1_pre2",
            "0.1_pre2~1234abcd",
            "0.1_p1_pre2",
            "0.1_alpha1_pre2",
            "0.1_git20240101_pre1",
            "2.43-r1",
            "1.0a-r0",
        ] {
            assert!(is_valid(valid), "{valid} is valid");
        }
        for invalid in [
            "",
            "0.1bc",
            "0.1bc1",
            "0.1a1",
            "0.1a.1",
            "0.1_pre2~",
            "0.1_pre2~1234xbcd",
            "0.1_pre2~1234abcd_pre1",
            "0.1_pre2-r1~1234xbcd",
            "0.1_foobar",
            "0.1_foobar1",
            "0.1-pre1.1",
            "0.1-r",
            "0.1-r2_pre1",
            "0.1-r2_p3_pre1",
            "0.1-r2-r3",
            "0.1-r2.1",
            ".1",
            "a",
            "_pre1",
            "-r1",
            "0.1_",
            "0.1_-r0",
            "0.1__alpha",
            "0.1_1_alpha",
        ] {
            assert!(!is_valid(invalid), "{invalid:?} is invalid");
        }
    }

    fn version_text() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "0", "1", "2", "10", "01", ".", "a", "_alpha", "_rc", "_p", "_git", "~ab", "-r", "-r1",
            "_", "x",
        ]);
        prop::collection::vec(piece, 1..8).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn ordering_is_antisymmetric(a in version_text(), b in version_text()) {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        }

        #[test]
        fn any_text_compares_without_panic(a in "\\PC{0,20}", b in "\\PC{0,20}") {
            let _ = compare(&a, &b);
            let _ = is_valid(&a);
        }
    }
}
