//! apt's own record, read while the sensor runs: who asked for a change the kernel did not see.
//!
//! In: the path of apt's `history.log` and a dpkg change (its time, package and
//! architecture). Out: the actor apt's entry gives — `{"source": "apt-history", "command",
//! "user", "uid", "apt_start"}`, the shape replay and query use — or none. State: the entries
//! of the file's tail, indexed, and the file's identity, size and modification time when read.
//!
//! apt writes an entry's `Start-Date`, `Commandline`, `Requested-By` and package lists before
//! it runs dpkg, and `End-Date` after: when a dpkg line of an apt run is read, its entry is on
//! disk already. The kernel is the stronger witness; this record only fills an actor that
//! would otherwise be `null` — the sensor runs without its tracer, or dpkg started before it —
//! and only when exactly one apt run covers the line's time and lists its package.

use std::fs::{self, File};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use serde_json::Value;
use tracing::debug;

use crate::parse::apt_history::{self, AptHistoryIndex};
use crate::replay::history_actor;

/// How much of the file's end is read: enough for the runs around a change, including a
/// release upgrade's package lists of a few hundred kilobytes.
const TAIL_BYTES: u64 = 2 * 1024 * 1024;

/// What identifies one state of the file: device, inode, size and modification time.
type FileState = (u64, u64, u64, i64, i64);

/// apt's history log, followed for live attribution.
#[derive(Debug)]
pub struct AptRecord {
    path: PathBuf,
    /// The state the index was built from; `None` before the first read or while absent.
    read_at: Option<FileState>,
    index: AptHistoryIndex,
    actors: Vec<Value>,
}

impl AptRecord {
    /// Follows apt's history at `path`; nothing is read before the first question.
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            read_at: None,
            index: AptHistoryIndex::default(),
            actors: Vec::new(),
        }
    }

    /// Follows the `apt/history.log` beside `dpkg_log`, where apt keeps it beside dpkg's log.
    #[must_use]
    pub fn beside(dpkg_log: &Path) -> Self {
        let dir = dpkg_log.parent().unwrap_or_else(|| Path::new("/"));
        Self::new(dir.join("apt").join("history.log"))
    }

    /// Returns the actor of the one apt run that covers `at` and lists `package`, if any.
    pub fn actor_for(
        &mut self,
        at: NaiveDateTime,
        package: &str,
        arch: Option<&str>,
    ) -> Option<Value> {
        self.refresh();
        let position = self.index.find(at, package, arch)?;
        self.actors.get(position).cloned()
    }

    /// Reads the file's tail again when it changed since the last read.
    fn refresh(&mut self) {
        let state = match fs::metadata(&self.path) {
            Ok(meta) => Some((
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
            )),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => {
                debug!(path = %self.path.display(), error = %err, "apt history not readable");
                None
            }
        };
        if state == self.read_at {
            return;
        }
        self.read_at = state;
        self.index = AptHistoryIndex::default();
        self.actors.clear();
        if state.is_none() {
            return;
        }

        match read_tail(&self.path) {
            Ok(history) => {
                self.index = AptHistoryIndex::new(history.entries);
                self.actors = self.index.entries().map(history_actor).collect();
            }
            Err(err) => {
                debug!(path = %self.path.display(), error = %err, "apt history not readable");
            }
        }
    }
}

/// Reads the entries in the last [`TAIL_BYTES`] of the file, from the first entry that starts
/// inside them.
fn read_tail(path: &Path) -> io::Result<apt_history::AptHistory> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let from = size.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes)?;

    // Cut mid-file, the bytes start inside some entry: skip to the next one.
    let start = if from == 0 {
        0
    } else {
        memchr::memmem::find(&bytes, b"\nStart-Date:").map_or(bytes.len(), |at| at + 1)
    };
    let mut reader = io::BufReader::new(&bytes[start..]);
    apt_history::read_entries(&mut reader, path)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        match NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
            Ok(time) => time,
            Err(err) => panic!("bad test time {text}: {err}"),
        }
    }

    const RUN: &str = "\nStart-Date: 2026-05-03  14:32:10\n\
        Commandline: apt-get install -y vim\n\
        Requested-By: alice (1000)\n\
        Install: vim:amd64 (2:9.0.1378-2)\n";

    #[test]
    fn a_run_still_going_names_its_command_and_user() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("dpkg.log");
        fs::create_dir_all(dir.path().join("apt"))?;
        let history = dir.path().join("apt/history.log");
        let mut record = AptRecord::beside(&log);

        // No file yet: nothing, and no error.
        assert!(record
            .actor_for(at("2026-05-03 14:32:11"), "vim", Some("amd64"))
            .is_none());

        fs::write(&history, RUN)?;
        let actor = record
            .actor_for(at("2026-05-03 14:32:11"), "vim", Some("amd64"))
            .ok_or_else(|| anyhow::anyhow!("no actor for a listed package"))?;
        assert_eq!(actor["source"], "apt-history");
        assert_eq!(actor["command"], "apt-get install -y vim");
        assert_eq!(actor["user"], "alice");
        assert_eq!(actor["uid"], 1000);

        // A package the run does not list, or a time before it, is not its change.
        assert!(record
            .actor_for(at("2026-05-03 14:32:11"), "curl", None)
            .is_none());
        assert!(record
            .actor_for(at("2026-05-03 14:32:09"), "vim", None)
            .is_none());

        // The run ends and a second starts: the file is read again.
        let mut file = fs::OpenOptions::new().append(true).open(&history)?;
        file.write_all(
            b"End-Date: 2026-05-03  14:32:12\n\n\
              Start-Date: 2026-05-03  14:40:00\n\
              Commandline: apt remove vim\n\
              Remove: vim:amd64 (2:9.0.1378-2)\n",
        )?;
        let actor = record
            .actor_for(at("2026-05-03 14:40:01"), "vim", Some("amd64"))
            .ok_or_else(|| anyhow::anyhow!("no actor for the second run"))?;
        assert_eq!(actor["command"], "apt remove vim");
        assert!(actor["user"].is_null());
        Ok(())
    }

    #[test]
    fn only_the_tail_of_a_long_history_is_read() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let history = dir.path().join("history.log");
        let mut text = String::from(
            "\nStart-Date: 2019-06-01  08:00:00\nCommandline: apt install first\n\
             Install: first:amd64 (1)\nEnd-Date: 2019-06-01  08:00:01\n",
        );
        let filler = "\nStart-Date: 2020-01-01  00:00:00\nCommandline: apt install old\n\
                      Install: old:amd64 (1)\nEnd-Date: 2020-01-01  00:00:01\n";
        while (text.len() as u64) < TAIL_BYTES + 4096 {
            text.push_str(filler);
        }
        text.push_str(RUN);
        fs::write(&history, &text)?;
        let mut record = AptRecord::new(history);
        assert!(record
            .actor_for(at("2019-06-01 08:00:00"), "first", None)
            .is_none());
        assert!(record
            .actor_for(at("2020-01-01 00:00:00"), "old", None)
            .is_some());
        assert!(record
            .actor_for(at("2026-05-03 14:32:11"), "vim", None)
            .is_some());
        Ok(())
    }

    #[test]
    fn garbage_in_the_file_is_no_actor_and_no_panic() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let history = dir.path().join("history.log");
        fs::write(&history, b"\xff\xfe\x00Start-Date: nonsense\n\x1b[2J\n")?;
        let mut record = AptRecord::new(history);
        assert!(record
            .actor_for(at("2026-05-03 14:32:11"), "vim", None)
            .is_none());
        Ok(())
    }
}
