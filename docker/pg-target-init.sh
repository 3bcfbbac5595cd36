#!/bin/sh
# The app's role on the target; its tables arrive with `cutover`'s schema copy.
set -eu
psql -v ON_ERROR_STOP=1 -U postgres -d app -v pw="$APP_PASSWORD" -c "CREATE ROLE app LOGIN PASSWORD :'pw'"
