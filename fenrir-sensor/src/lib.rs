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
//! Beside the pipeline, [`integrity`] compares the log, the kernel and dpkg's database and
//! checks installed files against what was installed.
//!
//! Beside the running sensor, [`query`] answers questions about past changes from the event
//! store and the logs, and [`mcp`] offers those questions to an assistant.
//!
//! `main.rs` only wires these stages together; every decision lives in them.

pub mod attribute;
pub mod config;
pub mod event;
pub mod integrity;
pub mod mcp;
pub mod parse;
pub mod pipeline;
pub mod query;
pub mod replay;
pub mod rule;
pub mod service;
pub mod sink;
pub mod source;
