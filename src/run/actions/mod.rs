//! What each step of a run does, one file per component. Every action takes the plan and what
//! it acts on, does its work, and returns the words and figures its journal record keeps; the
//! runner decides the order, the batching, the journal and what a failure means.

pub(super) mod db;
pub(super) mod dns;
pub(super) mod files;
pub(super) mod hooks;

/// A step's summary (for the journal and the progress lines) and its figures (for the report).
pub(super) type Done = (String, serde_json::Value);
