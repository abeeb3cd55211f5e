//! The source stage: where Fenrir learns that something changed.
//!
//! [`tail`] follows dpkg.log through rotations and truncations, [`checkpoint`] remembers how
//! far it got across restarts, [`lock`] tells whether a package manager still holds the dpkg
//! database, which is how the end of a dpkg run is known, and [`exec`] streams the kernel's
//! record of who ran a package manager and what it ran. [`origin`] names each event after
//! the place in the log it came from, the same way every time that place is read.

pub mod checkpoint;
pub mod exec;
pub mod lock;
pub mod origin;
pub mod ssh;
pub mod tail;
