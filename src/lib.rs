//! `cutover` moves a live service from one host to another with (near) zero downtime.
//!
//! Layering, top to bottom: each module imports only modules below it in this list.
//! - [`cli`]: argument parsing and one module per command; renders what the library decides.
//! - [`lab`]: throwaway real servers on loopback for tests, and the demo that migrates them
//!   with one run.
//! - [`serve`]: the daemon (service mode): polls the plans' servers and runs, serves metrics,
//!   status and the TTL job; reads what `run` journals, never runs a cutover.
//! - [`run`]: the hot-migration sequencer: typed steps, journal, rollback, resume, reverse
//!   cutover, hooks, checks, report, status; the one factory from a plan to its database pairs.
//! - [`postgres`]: PostgreSQL logical replication, preflight to cleanup; its TLS, its fence
//!   scoped to the moved database, its lease on the servers.
//! - [`mysql`]: MySQL / MariaDB binlog replication, one dialect table per flavour and version;
//!   its TLS, the source server's other databases, its lease on the servers.
//!   The two engines never import each other; both implement [`engine`]'s contract.
//! - [`files`]: directory trees moved with rsync between the hosts, server to server.
//! - [`dns`]: TTL jobs, record switches, propagation on every authoritative server.
//! - [`proxy`]: reverse-proxy routes read, switched and read back, one adapter per file.
//! - [`engine`]: the contract every database engine implements for a pair's whole life
//!   (preflight, start, readiness, the window's phases, reverse preparation, state), the
//!   start and status reports each engine types for the single-pair commands, its shared
//!   result types, and the single-pair driver and resume built on it.
//! - [`plan`]: the TOML plan file, its types and validation.
//! - [`dberror`]: the error both engines report (server, context, the server's message).
//! - [`space`]: room on the target for an initial copy (free space read where the server runs
//!   on this machine), one rule for every engine.
//! - [`finding`]: the shared words for what a check found (server, severity, problem, fix).
//! - [`state`]: the state directory's one owner (layout, atomic and durable writes, the lease
//!   and journal store).
//! - [`child`]: commands started for the operator (hooks, checks, proxy commands): argv, an
//!   explicit environment, their own process group, bounded.
//! - [`test_stop`]: a test's way to stop the process at a journal record, a step or an event
//!   (SIGSTOP, then `kill -9` or SIGCONT); inert without its environment variables.
//! - [`secret`]: secrets from the environment or files, never printed; the private-key file
//!   rule both engines' TLS keys follow; the variables a started command may inherit.

pub mod child;
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
pub mod proxy;
pub mod run;
pub mod secret;
pub mod serve;
pub mod space;
pub mod state;
pub mod test_stop;
