//! The source stage.
pub mod exec;
