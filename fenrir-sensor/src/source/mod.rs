//! The source stage: where Fenrir learns that something changed.
//!
//! [`tail`] follows dpkg.log through rotations and truncations, [`checkpoint`] remembers how
//! far it got across restarts, [`lock`] tells whether a package manager still holds the dpkg
//! database, which is how the end of a dpkg run is known, and [`exec`] streams the kernel's
//! record of who ran a package manager and what it ran. [`snapshot`] keeps the installed set
//! across restarts and [`offline`] finds in dpkg's database what changed while the sensor was
//! down.

pub mod checkpoint;
pub mod exec;
pub mod lock;
pub mod offline;
pub mod snapshot;
pub mod ssh;
pub mod tail;
