//! The source stage: where Fenrir learns that something changed.
//!
//! [`tail`] follows dpkg.log through rotations and truncations, [`checkpoint`] remembers how
//! far it got across restarts, and [`lock`] tells whether a package manager still holds the
//! dpkg database, which is how the end of a dpkg run is known.

pub mod checkpoint;
pub mod lock;
pub mod tail;
