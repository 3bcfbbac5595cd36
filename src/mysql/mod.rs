//! MySQL / MariaDB binlog replication (DESIGN §5). Today: the dialect table.

pub mod dialect;
