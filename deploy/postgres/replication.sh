#!/bin/sh
# Prepares a PostgreSQL primary for a streaming standby (deploy/postgres/standby.sh makes
# the standby). Idempotent; POSIX sh, so that it runs in the postgres:*-alpine image:
#
#   - the replication login REPLICATION_USER, with REPLICATION_PASSWORD (empty or unset:
#     no password, for a private cluster that trusts local connections);
#   - the physical replication slot REPLICATION_SLOT (default standby_1): the primary
#     keeps the WAL its standby has not received yet, at most
#     REPLICATION_MAX_SLOT_WAL_KEEP_SIZE (default 10GB; a standby further behind must be
#     made again);
#   - when PGDATA names the primary's data directory, a pg_hba.conf line letting
#     REPLICATION_USER stream from REPLICATION_HBA_ADDRESS (default all) with
#     scram-sha-256;
#   - wal_level = replica and max_wal_senders = 10 (ALTER SYSTEM; wal_level takes effect
#     at the next restart, and replica is already PostgreSQL's default).
#
# Nothing is done when REPLICATION_USER is unset or empty: a single PostgreSQL.
# psql reaches the primary through the usual PGHOST, PGPORT, PGUSER, PGDATABASE, as a
# superuser. Used by:
#   scripts/cluster.sh (run-local.sh --cluster), against its private primary;
#   docker-compose.yml, mounted in /docker-entrypoint-initdb.d of the `postgres` service
#     (so it runs once, when the volume is first initialised). The image's entrypoint
#     sources such a script when it is not executable: the work runs in a subshell
#     (`prepare_primary`), so neither `set -eu` nor its end reaches the entrypoint.
prepare_primary() (
    set -eu

    if [ -z "${REPLICATION_USER:-}" ]; then
        echo "replication.sh: REPLICATION_USER is unset: no standby to prepare for"
        return 0
    fi
    slot="${REPLICATION_SLOT:-standby_1}"
    keep="${REPLICATION_MAX_SLOT_WAL_KEEP_SIZE:-10GB}"

    psql -X -v ON_ERROR_STOP=1 -q -o /dev/null \
        -v user="$REPLICATION_USER" -v password="${REPLICATION_PASSWORD:-}" \
        -v slot="$slot" -v keep="$keep" <<'SQL'
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN', :'user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')
\gexec
SELECT format('ALTER ROLE %I WITH REPLICATION LOGIN PASSWORD %L', :'user', nullif(:'password', ''))
\gexec
SELECT pg_create_physical_replication_slot(:'slot')
WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = :'slot');
ALTER SYSTEM SET wal_level = 'replica';
ALTER SYSTEM SET max_wal_senders = 10;
SELECT format('ALTER SYSTEM SET max_slot_wal_keep_size = %L', :'keep')
\gexec
SQL

    if [ -n "${PGDATA:-}" ] && [ -f "$PGDATA/pg_hba.conf" ]; then
        line="host replication $REPLICATION_USER ${REPLICATION_HBA_ADDRESS:-all} scram-sha-256"
        grep -qxF "$line" "$PGDATA/pg_hba.conf" || echo "$line" >>"$PGDATA/pg_hba.conf"
    fi
    psql -X -v ON_ERROR_STOP=1 -q -c 'SELECT pg_reload_conf()' >/dev/null
    echo "replication.sh: $REPLICATION_USER may stream through slot $slot"
)

prepare_primary
