#!/bin/sh
# The app's user on the target (not replicated).
set -eu
mysql -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER 'app'@'%' IDENTIFIED BY '$APP_PASSWORD';
GRANT ALL PRIVILEGES ON app.* TO 'app'@'%';
SQL
