//! Where in a log an event came from, as an identifier that survives restarts.
//!
//! In: the position after a log line (the file's device and inode and the offset) and the line
//! itself. Out: an id that is the same every time that line is read again — after a crash and
//! restart, after a rotation renamed the file — and differs for every other line. Sinks use it
//! to recognise an event they already hold; consumers can use it to deduplicate. No state.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::checkpoint::FileIdentity;
use super::tail::Position;

/// Where an event was decided.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// On the line that ends at this position.
    Line(&'a Position),
    /// When a dpkg run was judged over, in the file then followed: an install that never
    /// finished is decided on no line of its own.
    RunEnd(Option<FileIdentity>),
}

/// Returns the id of the `index`-th event decided at `origin` about `raw_line`.
#[must_use]
pub fn event_id(origin: Origin<'_>, raw_line: &str, index: usize) -> String {
    let mut hasher = Sha256::new();
    match origin {
        Origin::Line(position) => {
            hasher.update(b"line\0");
            hasher.update(position.identity.dev.to_le_bytes());
            hasher.update(position.identity.ino.to_le_bytes());
            hasher.update(position.offset.to_le_bytes());
        }
        // The line a failed install was decided on names it: the same line cannot fail twice.
        Origin::RunEnd(identity) => {
            hasher.update(b"run-end\0");
            let identity = identity.unwrap_or(FileIdentity { dev: 0, ino: 0 });
            hasher.update(identity.dev.to_le_bytes());
            hasher.update(identity.ino.to_le_bytes());
        }
    }
    hasher.update((index as u64).to_le_bytes());
    hasher.update(raw_line.as_bytes());

    // 128 bits: no collision among the events of any fleet, in 32 readable characters.
    hasher
        .finalize()
        .iter()
        .take(16)
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(ino: u64, offset: u64) -> Position {
        Position {
            identity: FileIdentity { dev: 8, ino },
            fingerprint: Some("abc".into()),
            offset,
        }
    }

    #[test]
    fn the_same_line_read_again_has_the_same_id() {
        let line = "2026-05-03 14:32:11 install vim:amd64 <none> 2:9.0-1";
        let first = event_id(Origin::Line(&position(7, 120)), line, 0);
        let again = event_id(Origin::Line(&position(7, 120)), line, 0);
        assert_eq!(first, again);
        assert_eq!(first.len(), 32);

        // A fingerprint computed later (the first line completed) changes nothing.
        let mut later = position(7, 120);
        later.fingerprint = None;
        assert_eq!(event_id(Origin::Line(&later), line, 0), first);
    }

    #[test]
    fn another_place_file_line_or_index_has_another_id() {
        let line = "2026-05-03 14:32:11 install vim:amd64 <none> 2:9.0-1";
        let id = event_id(Origin::Line(&position(7, 120)), line, 0);
        let others = [
            event_id(Origin::Line(&position(7, 121)), line, 0),
            event_id(Origin::Line(&position(9, 120)), line, 0),
            event_id(Origin::Line(&position(7, 120)), "other", 0),
            event_id(Origin::Line(&position(7, 120)), line, 1),
            event_id(Origin::RunEnd(Some(position(7, 0).identity)), line, 0),
        ];
        for other in others {
            assert_ne!(other, id);
        }
    }
}
