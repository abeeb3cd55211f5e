//! Support for Fenrir's end-to-end tests: real components started on demand.
//!
//! Each module starts or drives one real component the tests need and cleans up after it.

pub mod journald;
