#!/bin/sh
# The app's user, database and table on the source (kept out of the binlog: the target
# creates its own user, and gets the data from cutover's snapshot).
set -eu
mysql -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER 'app'@'%' IDENTIFIED BY '$APP_PASSWORD';
GRANT ALL PRIVILEGES ON app.* TO 'app'@'%';
SET SESSION sql_log_bin = 1;
CREATE DATABASE app;
CREATE TABLE app.notes (id BIGINT AUTO_INCREMENT PRIMARY KEY, body TEXT NOT NULL) ENGINE=InnoDB;
INSERT INTO app.notes (body) VALUES ('first note'), ('second note');
SQL
