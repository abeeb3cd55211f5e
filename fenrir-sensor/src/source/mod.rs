//! The source stage: where Fenrir learns that something changed.
//!
//! [`tail`] follows a log through rotations and truncations, [`checkpoint`] remembers how far
//! it got across restarts, [`followed`] keeps one tail and checkpoint per package manager's
//! log (and [`database`] follows apk's database where apk writes no log), [`lock`] tells
//! whether a package manager still holds its database, which is how the end of a run is
//! known, and [`exec`] streams the kernel's record of who ran a package manager and what it
//! ran.

pub mod checkpoint;
pub mod database;
pub mod exec;
pub mod followed;
pub mod lock;
pub mod ssh;
pub mod tail;
