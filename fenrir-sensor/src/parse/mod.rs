//! The parse stage: raw log lines in, package changes out.
//!
//! [`dpkg`] reads one line into a typed [`dpkg::LogLine`]; [`version`] orders Debian versions
//! exactly as dpkg does; [`transaction`] follows each package through dpkg's runs and decides
//! what every action line means (install, upgrade, downgrade, reinstall, …) and which installs
//! never finished; [`apt_history`] reads apt's own record of its runs and [`status`] dpkg's
//! database of installed packages. [`rpm`], [`pacman`] and [`apk`] do the same for the other
//! package managers' logs, each with its own version order; [`manager`] is what all formats
//! share.

pub mod apk;
pub mod apt_history;
pub mod dpkg;
pub mod interpret;
pub mod manager;
pub mod pacman;
pub mod rpm;
pub mod status;
pub mod transaction;
pub mod version;

use chrono::NaiveDateTime;

use crate::event::Category;

/// One package change, as decided from the log: the input of event building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageChange {
    pub category: Category,
    /// The package name without its architecture qualifier.
    pub package: String,
    /// The architecture after `:` in the log, absent in logs of dpkg before 1.16.2.
    pub arch: Option<String>,
    /// `None` where dpkg wrote `<none>`.
    pub old_version: Option<String>,
    /// `None` where dpkg wrote `<none>`.
    pub new_version: Option<String>,
    /// The log's local wall-clock time of the line the change was decided on.
    pub timestamp: NaiveDateTime,
    /// The line the change was decided on, as read (not yet escaped).
    pub raw_line: String,
    /// For a failed install: the last state dpkg recorded for the package.
    pub last_state: Option<String>,
}
