#!/bin/sh
# Makes PGDATA a streaming hot standby of PRIMARY_HOST:PRIMARY_PORT (default port 5432)
# when it holds no database yet, then runs its arguments (if any). POSIX sh, so that it
# runs in the postgres:*-alpine image. The primary is prepared by
# deploy/postgres/replication.sh.
#
#   pg_basebackup -R (standby.signal and primary_conninfo), -X stream, through the slot
#   REPLICATION_SLOT (default standby_1), as REPLICATION_USER (REPLICATION_PASSWORD, if
#   any); then hot_standby = on and hot_standby_feedback = on (long reports are not
#   cancelled by the replay of a vacuum on the primary, at the price of some bloat there).
#
# It waits up to STANDBY_WAIT_SECONDS (default 60) for the primary to accept connections.
# A PGDATA that already holds a database is left as it is (a restart).
#
# Used by:
#   scripts/cluster.sh: PGDATA=... PRIMARY_HOST=127.0.0.1 PRIMARY_PORT=... standby.sh
#   docker-compose.yml (`postgres-standby`): standby.sh docker-entrypoint.sh postgres
#     (the image's entrypoint then finds a database and starts it; it also gives the
#     files pg_basebackup wrote as root to the postgres user).
set -eu

: "${PGDATA:?PGDATA must name the data directory of the standby}"
: "${PRIMARY_HOST:?PRIMARY_HOST must name the primary}"
: "${REPLICATION_USER:?REPLICATION_USER must name the replication login}"
port="${PRIMARY_PORT:-5432}"
slot="${REPLICATION_SLOT:-standby_1}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    waited=0
    until pg_isready -q -h "$PRIMARY_HOST" -p "$port"; do
        if [ "$waited" -ge "${STANDBY_WAIT_SECONDS:-60}" ]; then
            echo "standby.sh: the primary $PRIMARY_HOST:$port did not accept connections" >&2
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "standby.sh: copying the primary $PRIMARY_HOST:$port into $PGDATA (slot $slot)"
    if [ -n "${REPLICATION_PASSWORD:-}" ]; then
        export PGPASSWORD="$REPLICATION_PASSWORD"
    fi
    pg_basebackup -h "$PRIMARY_HOST" -p "$port" -U "$REPLICATION_USER" -D "$PGDATA" \
        -R -X stream -S "$slot" --checkpoint=fast
    unset PGPASSWORD
    printf 'hot_standby = on\nhot_standby_feedback = on\n' >>"$PGDATA/postgresql.auto.conf"
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
