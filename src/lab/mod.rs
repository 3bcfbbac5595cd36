//! The lab: throwaway **real** servers on 127.0.0.1, each in its own directory on a free port.
//!
//! Integration tests and `cutover lab` use the same code. Each server type has one module with a
//! `start` function; [`Lab`] starts a full set (two PostgreSQL 15 clusters, two MariaDB servers,
//! PowerDNS, BIND9 and an sshd) and writes a ready plan for it.

mod app;
pub mod bind;
pub mod demo;
mod env;
pub mod haproxy;
mod health;
pub mod ledger;
mod mariadb;
pub mod mysql_writer;
pub mod nginx;
mod plan;
mod postgres;
mod powerdns;
mod process;
mod sshd;
pub mod state;
mod sys;
pub mod tls;
pub mod web;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use app::prepare as prepare_app;
pub use bind::Bind;
pub use env::{LabDir, find_program, free_port, random_token};
pub use haproxy::Haproxy;
pub use health::HealthServer;
pub use mariadb::{MariaDb, PLAN_EXEMPT_USERS};
pub use nginx::Nginx;
pub use plan::{APP, APP_RECORD_TTL, SQLITE_DB, lab_plan_toml, run_plan_extras};
pub use postgres::Postgres;
pub use powerdns::PowerDns;
pub use process::{ServerProcess, Supervision};
pub use sshd::Sshd;
pub use state::{LabState, stop_detached};

/// Something went wrong starting or talking to a lab server.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A program the lab needs is not installed.
    #[error(
        "`{program}` was not found ({hint}); run `scripts/install-deps` to install the lab's packages"
    )]
    MissingProgram {
        /// The program.
        program: String,
        /// Which package provides it.
        hint: &'static str,
    },
    /// A system user the lab needs does not exist.
    #[error(
        "system user `{0}` does not exist; installing the {0} package creates it (`scripts/install-deps`)"
    )]
    MissingUser(String),
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("cannot start `{}`: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A set-up command ran and failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// A server exited while starting.
    #[error("{name} exited during start-up ({status}); end of its log:\n{log_tail}")]
    Exited {
        /// Which server.
        name: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// A server did not become ready in time.
    #[error("{name} was not ready after {waited:?}; end of its log:\n{log_tail}")]
    NotReady {
        /// Which server.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// A SQL statement run by the lab failed.
    #[error("{server}: {context}: {message}")]
    Sql {
        /// Which server.
        server: String,
        /// What the lab was doing.
        context: String,
        /// The server's message.
        message: String,
    },
    /// The lab's state file is missing or unreadable.
    #[error("no lab found in {}: {reason}", dir.display())]
    State {
        /// The lab directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

impl LabError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> LabError {
        LabError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A full lab: every server the project tests against.
pub struct Lab {
    /// The directory everything lives in.
    pub dir: LabDir,
    /// The PostgreSQL cluster playing the old host.
    pub pg_source: Postgres,
    /// The PostgreSQL cluster playing the new host.
    pub pg_target: Postgres,
    /// The MariaDB server playing the old host.
    pub maria_source: MariaDb,
    /// The MariaDB server playing the new host.
    pub maria_target: MariaDb,
    /// PowerDNS authoritative server with its HTTP API.
    pub powerdns: PowerDns,
    /// BIND9 accepting TSIG-signed RFC 2136 updates.
    pub bind: Bind,
    /// sshd for rsync over ssh, reachable as `lab-source` and `lab-target`.
    pub sshd: Sshd,
    /// The CA that signed every database server's certificate: the PostgreSQL clusters take
    /// TCP connections over TLS only (`hostssl`), the MariaDB servers require secure
    /// transport, and the lab's plan verifies them with it (`verify-full`, `verify_identity`).
    pub pg_ca_file: PathBuf,
}

impl Lab {
    /// Starts every lab server in `dir`, in parallel where they do not depend on each other.
    pub async fn start(dir: LabDir, supervision: Supervision) -> Result<Lab, LabError> {
        let root = dir.path().to_owned();
        let ca = tls::LabCa::create(&root.join("tls"), "lab")?;
        let pg_tls = tls::ServerTls {
            ca: &ca,
            names: vec!["127.0.0.1".into(), "localhost".into()],
            client_cert: false,
            session_status: false,
        };
        let my_tls = tls::ServerTls {
            ca: &ca,
            names: vec!["127.0.0.1".into(), "localhost".into()],
            client_cert: false,
            session_status: true,
        };
        let (pg_source, pg_target, maria_source, maria_target, powerdns, bind, sshd) = tokio::try_join!(
            Postgres::start_with(&root, "pg-source", supervision, Some(&pg_tls)),
            Postgres::start_with(&root, "pg-target", supervision, Some(&pg_tls)),
            MariaDb::start_with(&root, "maria-source", 1, supervision, Some(&my_tls)),
            MariaDb::start_with(&root, "maria-target", 2, supervision, Some(&my_tls)),
            PowerDns::start(&root, "powerdns", supervision),
            Bind::start(&root, "bind", supervision),
            Sshd::start(&root, "sshd", supervision),
        )?;
        Ok(Lab {
            dir,
            pg_source,
            pg_target,
            maria_source,
            maria_target,
            powerdns,
            bind,
            sshd,
            pg_ca_file: ca.ca_file.clone(),
        })
    }
}

impl Lab {
    /// Lets every server outlive this handle (for `lab up`); returns what `lab down` needs.
    pub fn release(self) -> Vec<state::ServerEntry> {
        vec![
            self.pg_source.release(),
            self.pg_target.release(),
            self.maria_source.release(),
            self.maria_target.release(),
            self.powerdns.release(),
            self.bind.release(),
            self.sshd.release(),
        ]
    }
}
