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
//! - [`plan`]: the TOML plan file, its types and validation. Each database engine's section
//!   is that engine's own file (`postgres::config`, `mysql::config`): written at this layer
//!   (importing only what sits below `plan`, and `plan`'s shared checker), re-exported by
//!   `plan`, whose loader delegates the section's checks to it.
//! - [`dberror`]: the error both engines report (server, context, the server's message).
//! - [`space`]: room on the target for an initial copy (free space read where the server runs
//!   on this machine), one rule for every engine.
//! - [`finding`]: the shared words for what a check found (server, severity, problem, fix).
//! - [`state`]: the state directory's one owner (layout, atomic and durable writes, the lease
//!   and journal store).
//! - [`child`]: commands started for the operator (hooks, checks, proxy commands): argv, an
//!   explicit environment, their own process group, bounded.
//! - [`test_stop`]: a test's way to stop the process at a journal record, a step or an event
//!   (SIGSTOP, then `kill -9` or SIGCONT); inert without its environment variables, and
//!   compiled out unless the `test-stop` feature is on (only `cargo test` turns it on).
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

#[cfg(test)]
mod layering {
    //! The list above is a rule: every `crate::` path in a module's files names the module
    //! itself or one listed below it.

    use std::path::Path;

    /// The top-level modules, top to bottom, as this file's documentation lists them.
    fn layers() -> Vec<String> {
        include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! - [`"))
            .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_owned()))
            .collect()
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The paths a file's code names through `crate::`: each top-level module with the
    /// segment after it (`("postgres", "config")` for `crate::postgres::config::X`).
    fn named(text: &str) -> Vec<(String, String)> {
        let word = |rest: &str| -> String {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let mut out = Vec::new();
        for (i, _) in text.match_indices("crate::") {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[i + "crate::".len()..];
            let name = word(rest);
            let next = rest[name.len()..]
                .strip_prefix("::")
                .map(word)
                .unwrap_or_default();
            if !name.is_empty() {
                out.push((name, next));
            }
        }
        out
    }

    #[test]
    fn no_module_names_one_listed_above_it() {
        let layers = layers();
        assert!(layers.len() > 10, "the list is read: {layers:?}");
        let rank = |m: &str| layers.iter().position(|l| l == m);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut upward = Vec::new();
        for path in all {
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let top = rel.split(['/', '.']).next().unwrap_or_default().to_owned();
            // An engine's plan section sits at the plan's layer.
            let layer =
                if rel.ends_with("/config.rs") && ["postgres", "mysql"].contains(&top.as_str()) {
                    "plan".to_owned()
                } else {
                    top.clone()
                };
            let Some(own) = rank(&layer) else {
                continue;
            };
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for (name, next) in named(&text) {
                let Some(theirs) = rank(&name) else {
                    continue;
                };
                let section = layer == "plan"
                    && ["postgres", "mysql"].contains(&name.as_str())
                    && next == "config";
                if theirs < own && !section {
                    upward.push(format!("{rel} ({layer}) names crate::{name}"));
                }
            }
        }
        upward.sort();
        upward.dedup();
        assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
    }
}
