//! Reads whole dpkg logs — plain or gzip, a rotated set in any order — into events.
//!
//! In: file paths. Out: one JSON line per event on a writer, oldest file first, each file in
//! line order, with default severities. State: one interpreter across all files, so an install
//! unpacked at the end of one file and configured at the start of the next is judged once.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;

use flate2::read::MultiGzDecoder;

use crate::event::Event;
use crate::parse::dpkg::{parse_line, LogLine, ParseError};
use crate::parse::interpret::{InterpretStats, LogInterpreter};

/// Longest line kept; longer ones are counted as malformed.
const MAX_LINE_BYTES: usize = crate::parse::dpkg::MAX_LINE_LEN;

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write events")]
    Write(#[source] io::Error),
}

/// Opens a log, decompressing it when it starts with the gzip magic, whatever its name.
fn open_log(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = File::open(path)?;
    let mut magic = [0_u8; 2];
    let n = file.read(&mut magic)?;
    let head = io::Cursor::new(magic[..n].to_vec());
    let stream = head.chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(MultiGzDecoder::new(stream))))
    } else {
        Ok(Box::new(BufReader::new(stream)))
    }
}

/// Returns the rotation number logrotate gave a file: `dpkg.log.3.gz` → 3, `dpkg.log` → 0.
fn rotation_number(path: &Path) -> u32 {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Returns the timestamp text of the first line that has one, to order files by content.
fn first_timestamp(path: &Path) -> Option<String> {
    let reader = open_log(path).ok()?;
    reader
        .split(b'\n')
        .take(1000)
        .map_while(Result::ok)
        .find_map(|line| {
            let head = line.get(..19)?;
            let text = std::str::from_utf8(head).ok()?;
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
            Some(text.to_owned())
        })
}

/// Orders files oldest first: by their first timestamp, then by rotation number (higher is
/// older), then as given.
#[must_use]
pub fn chronological(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut keyed: Vec<(Option<String>, u32, usize, &PathBuf)> = paths
        .iter()
        .enumerate()
        .map(|(index, path)| (first_timestamp(path), rotation_number(path), index, path))
        .collect();
    keyed.sort_by(|a, b| match (&a.0, &b.0) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => b.1.cmp(&a.1).then(a.2.cmp(&b.2)),
    });
    keyed
        .into_iter()
        .map(|(_, _, _, path)| path.clone())
        .collect()
}

/// Lines handed at once from the parsing thread to the deciding one.
const BATCH_LINES: usize = 4096;

/// Consecutive lines of one file, parsed.
struct Batch {
    path: Arc<PathBuf>,
    /// The lines' bytes, back to back.
    text: Vec<u8>,
    lines: Vec<ParsedLine>,
}

struct ParsedLine {
    range: Range<usize>,
    line_no: u64,
    parsed: Result<LogLine, ParseError>,
}

/// Writes the events of `paths` to `out` as JSON lines.
///
/// Parsing, which needs no state, runs on its own thread while this one follows dpkg's runs
/// and writes events, so a long history replays at the speed of the slower half.
///
/// # Errors
/// An unreadable file stops the replay with its path; malformed lines never do.
pub fn replay(
    paths: &[PathBuf],
    host: &str,
    out: &mut dyn Write,
) -> Result<InterpretStats, ReplayError> {
    let ordered = chronological(paths);
    let (sender, batches) = mpsc::sync_channel::<Result<Batch, ReplayError>>(16);
    let mut out = BufWriter::with_capacity(256 * 1024, out);

    thread::scope(|scope| {
        scope.spawn(move || read_and_parse(&ordered, &sender));

        let mut interpreter = LogInterpreter::default();
        for batch in batches {
            let batch = batch?;
            for line in batch.lines {
                let bytes = &batch.text[line.range];
                for change in interpreter.parsed(line.parsed, bytes, &batch.path, line.line_no) {
                    write_event(&Event::from_change(&change, host, "dpkg"), &mut out)?;
                }
            }
        }

        for change in interpreter.finish() {
            write_event(&Event::from_change(&change, host, "dpkg"), &mut out)?;
        }
        out.flush().map_err(ReplayError::Write)?;
        Ok(interpreter.stats())
    })
}

fn write_event(event: &Event, out: &mut impl Write) -> Result<(), ReplayError> {
    let mut line = event.to_json_line();
    line.push('\n');
    out.write_all(line.as_bytes()).map_err(ReplayError::Write)
}

/// Reads every file in order and sends its lines parsed, in batches; stops when the receiver
/// is gone.
fn read_and_parse(paths: &[PathBuf], sender: &mpsc::SyncSender<Result<Batch, ReplayError>>) {
    for path in paths {
        let path = Arc::new(path.clone());
        let read_error = |source| ReplayError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = match open_log(&path) {
            Ok(reader) => reader,
            Err(err) => {
                let _ = sender.send(Err(read_error(err)));
                return;
            }
        };

        let mut batch = Batch {
            path: Arc::clone(&path),
            text: Vec::new(),
            lines: Vec::new(),
        };
        let mut line = Vec::new();
        let mut line_no = 0_u64;
        loop {
            line.clear();
            match read_bounded_line(&mut reader, &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    let _ = sender.send(Err(read_error(err)));
                    return;
                }
            }
            line_no += 1;

            // An over-long line arrives cut one byte past the limit, which parse_line refuses.
            let start = batch.text.len();
            batch.text.extend_from_slice(&line);
            let range = start..batch.text.len();
            let parsed = parse_line(&line);
            batch.lines.push(ParsedLine {
                range,
                line_no,
                parsed,
            });

            if batch.lines.len() == BATCH_LINES {
                let full = std::mem::replace(
                    &mut batch,
                    Batch {
                        path: Arc::clone(&path),
                        text: Vec::new(),
                        lines: Vec::new(),
                    },
                );
                if sender.send(Ok(full)).is_err() {
                    return;
                }
            }
        }
        if !batch.lines.is_empty() && sender.send(Ok(batch)).is_err() {
            return;
        }
    }
}

/// Reads one line without its newline, keeping at most one byte past the limit so a huge line
/// costs no memory; returns the bytes consumed (0 at end of input).
fn read_bounded_line(reader: &mut dyn BufRead, line: &mut Vec<u8>) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(newline) => (&available[..newline], Some(newline + 1)),
            None => (available, None),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        consumed += used;
        if done.is_some() {
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_numbers_order_older_first() {
        assert_eq!(rotation_number(Path::new("/var/log/dpkg.log")), 0);
        assert_eq!(rotation_number(Path::new("/var/log/dpkg.log.1")), 1);
        assert_eq!(rotation_number(Path::new("/var/log/dpkg.log.12.gz")), 12);
    }

    #[test]
    fn bounded_line_reader_caps_memory_and_keeps_the_next_line() -> io::Result<()> {
        let mut input = vec![b'x'; 1_000_000];
        input.extend_from_slice(b"\nnext\nlast-without-newline");
        let mut reader: Box<dyn BufRead> = Box::new(BufReader::new(&input[..]));
        let mut line = Vec::new();
        assert_eq!(read_bounded_line(&mut reader, &mut line)?, 1_000_001);
        assert_eq!(line.len(), MAX_LINE_BYTES + 1);
        line.clear();
        read_bounded_line(&mut reader, &mut line)?;
        assert_eq!(line, b"next");
        line.clear();
        read_bounded_line(&mut reader, &mut line)?;
        assert_eq!(line, b"last-without-newline");
        line.clear();
        assert_eq!(read_bounded_line(&mut reader, &mut line)?, 0);
        Ok(())
    }
}
