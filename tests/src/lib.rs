//! Support for Fenrir's end-to-end tests: real components started on demand.
//!
//! Each module starts or drives one real component the tests need and cleans up after it:
//! [`dpkg`] a sandboxed dpkg, [`managers`] sandboxed dnf, zypper and pacman, [`journald`] a
//! systemd-journald, [`sensor`] the sensor binary, [`sshd`] an OpenSSH server with a test user
//! and an rsyslog. [`dist`] reads the files the Debian package ships; [`container`] boots a
//! real systemd in a container over this host; [`private_journald`] is a journald a test may
//! kill. [`rule_cost`] measures the rule engine in process for the benchmark.

pub mod container;
pub mod dist;
pub mod dpkg;
pub mod journald;
pub mod managers;
pub mod private_journald;
pub mod rule_cost;
pub mod sensor;
pub mod sshd;
