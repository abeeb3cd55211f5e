//! A whole log of any bytes, then one valid line: nothing panics, and the valid line after
//! the garbage still makes its event.
#![no_main]

use std::path::Path;

use fenrir_sensor::event::Category;
use fenrir_sensor::parse::interpret::LogInterpreter;
use libfuzzer_sys::fuzz_target;

const PROBE: &[u8] = b"2026-05-03 14:32:11 remove fenrir-fuzz-probe:amd64 1.0-1 <none>";

fuzz_target!(|log: &[u8]| {
    let mut interpreter = LogInterpreter::default();
    let path = Path::new("fuzz.log");
    let mut line_no = 0;
    for line in log.split(|&b| b == b'\n') {
        line_no += 1;
        let _ = interpreter.line(line, path, line_no);
    }
    let state = interpreter.saved_state();
    let mut resumed = LogInterpreter::resume(state.as_ref());

    let changes = resumed.line(PROBE, path, line_no + 1);
    assert!(
        changes.iter().any(|change| change.package == "fenrir-fuzz-probe"
            && change.category == Category::PackageRemove),
        "the valid line after the fuzzed log was lost: {changes:?}"
    );
    let _ = resumed.finish();
    let _ = interpreter.finish();
});
