//! An apt history log of any bytes: reading it never panics, and what it finds indexes.
#![no_main]

use std::path::Path;

use fenrir_sensor::parse::apt_history::{read_entries, AptHistoryIndex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|log: &[u8]| {
    let mut reader = log;
    if let Ok(history) = read_entries(&mut reader, Path::new("history.log")) {
        let index = AptHistoryIndex::new(history.entries);
        let _ = index.len();
    }
});
