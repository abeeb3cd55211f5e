//! apk, Alpine's package manager: its log, its database of installed packages and its
//! version order.
//!
//! [`version`] orders versions as apk-tools does; [`log`] reads `/var/log/apk.log`;
//! [`installed`] reads `/lib/apk/db/installed` and tells what changed between two readings,
//! for hosts where apk writes no log.

pub mod installed;
pub mod log;
pub mod version;
