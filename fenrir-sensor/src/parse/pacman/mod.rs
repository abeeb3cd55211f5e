//! pacman: its log and its version order.
//!
//! [`version`] orders versions as libalpm does; [`log`] reads `/var/log/pacman.log`.

pub mod log;
pub mod version;
