//! A log of another package manager, any bytes after a first line naming the format: reading
//! it never panics, the saved state resumes, and every change makes an event whose JSON holds
//! no raw control character.
#![no_main]

use std::path::Path;

use fenrir_sensor::event::Event;
use fenrir_sensor::parse::manager::LogFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, log) = match data.iter().position(|&b| b == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let format = match name {
        b"dnf" => LogFormat::DnfRpm,
        b"yum" => LogFormat::Yum,
        b"zypper" => LogFormat::ZyppHistory,
        b"pacman" => LogFormat::Pacman,
        b"apk" => LogFormat::Apk,
        // Any other first line: the format is told from the lines, as replay does.
        _ => match LogFormat::detect(log.split(|&b| b == b'\n')) {
            Some(format) => format,
            None => return,
        },
    };
    let path = Path::new("fuzz.log");
    let mut reader = format.reader(None);
    reader.begin_file(path);
    let mut changes = Vec::new();
    for (index, line) in log.split(|&b| b == b'\n').enumerate() {
        changes.extend(reader.line(line, path, index as u64 + 1));
        let _ = reader.take_run_start();
    }
    let mut resumed = format.reader(reader.saved_state().as_ref());
    changes.extend(resumed.finish());
    changes.extend(reader.finish());
    for change in &changes {
        let json = Event::from_change(change, "fuzz", format.manager().as_str()).to_json_line();
        assert!(
            !json.chars().any(char::is_control),
            "a control character reached the JSON raw: {json}"
        );
    }
});
