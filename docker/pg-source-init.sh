#!/bin/sh
# The app's role and table on the source (the target gets the schema from `cutover`).
set -eu
psql -v ON_ERROR_STOP=1 -U postgres -d app -v pw="$APP_PASSWORD" <<'SQL'
CREATE ROLE app LOGIN PASSWORD :'pw';
CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO app;
GRANT USAGE ON SEQUENCE notes_id_seq TO app;
INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 1000) g;
SQL
