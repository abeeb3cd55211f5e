//! A configuration file of any text: parsing never panics; it is valid or an error that names
//! the file.
#![no_main]

use std::path::Path;

use fenrir_sensor::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(err) = Config::parse(text, Path::new("/etc/fenrir/fenrir.toml")) {
        assert!(err.to_string().contains("/etc/fenrir/fenrir.toml"), "{err}");
    }
});
