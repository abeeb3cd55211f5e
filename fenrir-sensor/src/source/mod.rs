//! The source stage: where Fenrir learns that something changed.
//!
//! [`tail`] follows a log through rotations and truncations, [`checkpoint`] remembers how far
//! it got across restarts, [`followed`] keeps one tail and checkpoint per package manager's
//! log (and [`database`] follows apk's and rpm's databases by snapshot), [`lock`] tells
//! whether a package manager still holds its database, which is how the end of a run is
//! known, and [`exec`] streams the kernel's record of who ran a package manager and what it
//! ran. [`snapshot`] keeps dpkg's installed set across restarts and [`offline`] finds in
//! dpkg's database what changed while the sensor was down. [`origin`] names each event after
//! the place in the log it came from, the same way every time that place is read.

pub mod checkpoint;
pub mod database;
pub mod exec;
pub mod followed;
pub mod lock;
pub mod offline;
pub mod origin;
pub mod snapshot;
pub mod ssh;
pub mod tail;
