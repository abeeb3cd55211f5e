//! The sink stage: events in, delivered alerts out.
//!
//! Each [`Sink`] delivers one event at a time and reports failure instead of stopping; the
//! [`dispatch::Dispatcher`] fans events out to every sink, keeps a bounded backlog for a sink
//! that is failing, retries it with backoff, and tells the pipeline whether any sink accepted
//! an event so the checkpoint never moves past an undelivered one. JSON lines come in
//! Fenrir's own schema or as Elastic Common Schema documents ([`mod@format`], [`ecs`]).

pub mod dispatch;
pub mod ecs;
pub mod format;
pub mod hook;
pub mod journald;
pub mod json;
pub mod store;

use std::io;

use crate::event::Event;

/// A destination for events.
pub trait Sink {
    /// Returns the sink's name for diagnostics (`json`, `journald`).
    fn name(&self) -> &str;

    /// Delivers one event, durably as far as the sink's medium allows.
    ///
    /// # Errors
    /// Returns a [`SinkError`] when the event was not delivered; the caller retries it later.
    fn send(&mut self, event: &Event) -> Result<(), SinkError>;

    /// Makes every event delivered so far durable, for a medium where that is a step of its
    /// own; called about once a second.
    ///
    /// # Errors
    /// Returns a [`SinkError`] when the medium could not confirm it.
    fn sync(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Why a sink did not deliver an event.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing to the sink's medium failed (disk full, broken pipe, socket gone).
    #[error("failed to write to {target}")]
    Write {
        target: String,
        #[source]
        source: io::Error,
    },
    /// The sink's endpoint does not exist (no journald listening).
    #[error("{target} is not available")]
    Unavailable {
        target: String,
        #[source]
        source: io::Error,
    },
}
