//! `cutover` moves a live service from one host to another with (near) zero downtime.
//!
//! Layering, top to bottom:
//! - [`cli`]: argument parsing and one module per command; prints, never decides.
//! - [`serve`]: the daemon (service mode): polls the plans' servers and runs, serves metrics,
//!   status and the TTL job; reads what `run` journals, never runs a cutover.
//! - [`run`]: the hot-migration sequencer: typed steps, journal, rollback, resume, reverse
//!   cutover, hooks, checks, report; decides what the CLI renders.
//! - [`plan`]: the TOML plan file, its types and validation.
//! - [`postgres`]: PostgreSQL logical replication, preflight to cleanup.
//! - [`mysql`]: MySQL / MariaDB binlog replication, one dialect table per flavour and version.
//! - [`files`]: directory trees moved with rsync between the hosts, server to server.
//! - [`dns`]: TTL jobs, record switches, propagation on every authoritative server.
//! - [`engine`]: the phases every database engine's window offers a run (gate, fence, catch-up,
//!   promote, finish, roll back), and the words they share.
//! - [`finding`]: the shared words for what a check found (server, severity, problem, fix).
//! - [`lab`]: throwaway real servers on loopback for tests and the demo.
//! - [`state`]: the state directory's one owner (layout, atomic writes, the lease and journal store).
//! - [`secret`]: secrets from the environment or files, never printed.

pub mod cli;
pub mod dberror;
pub mod dns;
pub mod engine;
pub mod files;
pub mod finding;
pub mod lab;
pub mod mysql;
pub mod plan;
pub mod postgres;
pub mod run;
pub mod secret;
pub mod serve;
pub mod state;
