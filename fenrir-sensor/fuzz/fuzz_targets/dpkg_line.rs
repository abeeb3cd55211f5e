//! One dpkg.log line of any bytes: parsing never panics, and a line that parses makes an
//! event whose JSON holds no raw control character.
#![no_main]

use std::path::Path;

use fenrir_sensor::event::Event;
use fenrir_sensor::parse::dpkg::parse_line;
use fenrir_sensor::parse::interpret::LogInterpreter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    if memchr_newline(line) {
        return;
    }
    let parsed = parse_line(line);
    let mut interpreter = LogInterpreter::default();
    let changes = interpreter.line(line, Path::new("fuzz.log"), 1);
    assert!(
        parsed.is_ok() || changes.is_empty(),
        "a line that does not parse makes no change"
    );
    for change in changes.iter().chain(&interpreter.finish()) {
        let json = Event::from_change(change, "fuzz", "dpkg").to_json_line();
        assert!(
            !json.chars().any(|c| c.is_control()),
            "a control character reached the JSON raw: {json}"
        );
        let _: serde_json::Value = serde_json::from_str(&json).expect("events are JSON");
    }
});

/// The tailer never hands a newline to the parser.
fn memchr_newline(line: &[u8]) -> bool {
    line.contains(&b'\n')
}
