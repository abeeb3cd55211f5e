//! Fenrir's sensor: turns package-manager activity into security events.
//!
//! The modules follow the data's path through the sensor:
//!
//! ```text
//! source (dpkg.log tail, kernel execs, ssh logins) → parse (lines → package changes)
//!     → attribute (line → actor, ssh session) → event → rule (severity)
//!     → sink (JSON, journald, hooks)
//! ```
//!
//! `main.rs` only wires these stages together; every decision lives in them.

pub mod attribute;
pub mod config;
pub mod event;
pub mod parse;
pub mod pipeline;
pub mod replay;
pub mod rule;
pub mod service;
pub mod sink;
pub mod source;
