//! The integration suite, one binary: each area of the tool is a module, and what they share
//! (the lab's servers as pairs, the binary's runner, plan writers) is in `support`. One binary
//! links once and lets libtest schedule every test together.

mod support;

mod cli;
mod dns;
mod files;
mod fuzz_smoke;
mod gate;
mod lab_servers;
mod my_tls;
mod mysql_replication;
mod pg_replication;
mod pg_tls;
mod plan_validation;
mod proxy;
mod run;
mod serve;
