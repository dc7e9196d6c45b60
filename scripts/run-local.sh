#!/usr/bin/env bash
# Starts the whole platform on this machine, without Docker: a private NATS (JetStream)
# and PostgreSQL with their data in ./.data, the ingestion, worker and analytics services
# from a release build, and a demo publisher. Ctrl-C stops everything.
#
#   scripts/run-local.sh            run until Ctrl-C
#   scripts/run-local.sh --smoke    start, publish 1000 demo events, check they are
#                                   stored and that the README's report examples
#                                   answer with their fields and non-zero figures,
#                                   stop (used by CI)
#   scripts/run-local.sh --nats-auth  (with or without --smoke) NATS asks for a login: a
#                                   user and password made for this run, in
#                                   $DATA_DIR/nats-auth.conf, which ingestion and the
#                                   worker get in NATS_URL
#   scripts/run-local.sh --cluster  (with or without --smoke, --nats-auth) a cluster
#                                   instead (scripts/cluster.sh): three NATS nodes, R3
#                                   streams, two ingestion replicas, two workers, a
#                                   PostgreSQL primary and streaming standby, analytics
#                                   on the standby; DATA_DIR=./.data/cluster. Its smoke
#                                   kills a worker and the stream leader under load
#                                   (scripts/cluster-smoke.sh)
#
# Ports (override with the variables): NATS_PORT=14222, PG_PORT=15432 (so a system
# NATS or PostgreSQL keeps its own), INGESTION_PORT=3001, ANALYTICS_PORT=3002,
# WORKER_PORT=3003. DATA_DIR=./.data. The cluster's other members listen at offsets from
# these (scripts/cluster.sh, docs/operations.md "Cluster").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prerequisites.sh

SMOKE=0
NATS_AUTH=0
CLUSTER=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        --nats-auth) NATS_AUTH=1 ;;
        --cluster) CLUSTER=1 ;;
        *) echo "unknown option $arg (known: --smoke, --nats-auth, --cluster)" >&2; exit 2 ;;
    esac
done
NATS_PORT="${NATS_PORT:-14222}"
PG_PORT="${PG_PORT:-15432}"
INGESTION_PORT="${INGESTION_PORT:-3001}"
ANALYTICS_PORT="${ANALYTICS_PORT:-3002}"
WORKER_PORT="${WORKER_PORT:-3003}"
if [ "$CLUSTER" = 1 ]; then DATA_DIR="${DATA_DIR:-.data/cluster}"; fi
DATA_DIR="$(realpath -m "${DATA_DIR:-.data}")"
LOGS="$DATA_DIR/logs"
PIDS=()

install_prerequisites
echo "Building release binaries..."
cargo build --release --quiet --bins
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"

mkdir -p "$LOGS"
# PostgreSQL runs as `postgres`: it must reach its data directory and write its log.
[ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA_DIR" "$LOGS"

stop_all() {
    trap - EXIT INT TERM
    echo "Stopping..."
    # Services first (they drain), then the broker and the database.
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -f "$DATA_DIR/pg/postmaster.pid" ]; then
        as_postgres "$PG_BIN_DIR/pg_ctl" -D "$DATA_DIR/pg" -m fast stop >/dev/null 2>&1 || true
    fi
}
trap stop_all EXIT INT TERM

wait_http() { # url, name
    for _ in $(seq 1 300); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "$2 did not become ready: see $LOGS/$2.log" >&2
    curl -s "$1" >&2 || true
    exit 1
}

NATS_ARGS=(-a 127.0.0.1 -p "$NATS_PORT" -js -sd "$DATA_DIR/nats")
NATS_LOGIN="" NATS_SHOWN_LOGIN=""
if [ "$NATS_AUTH" = 1 ]; then
    # A new password each run, in hex: nothing to escape in the URL or the configuration.
    NATS_PASSWORD="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    (
        umask 077
        printf 'authorization {\n  users: [ {user: "events", password: "%s"} ]\n}\n' \
            "$NATS_PASSWORD" >"$DATA_DIR/nats-auth.conf"
    )
    NATS_ARGS+=(-c "$DATA_DIR/nats-auth.conf")
    NATS_LOGIN="events:$NATS_PASSWORD@" NATS_SHOWN_LOGIN="events:***@"
fi
if [ "$CLUSTER" = 1 ]; then
    . scripts/cluster.sh
    cluster_main
    exit 0
fi
mkdir -p "$DATA_DIR/nats"
echo "Starting NATS on 127.0.0.1:$NATS_PORT (data in $DATA_DIR/nats${NATS_LOGIN:+, login required})..."
"$NATS_SERVER_BIN" "${NATS_ARGS[@]}" >"$LOGS/nats.log" 2>&1 &
PIDS+=($!)

if [ ! -f "$DATA_DIR/pg/PG_VERSION" ]; then
    echo "Creating the PostgreSQL cluster in $DATA_DIR/pg..."
    mkdir -p "$DATA_DIR/pg"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA_DIR/pg"
    as_postgres "$PG_BIN_DIR/initdb" -D "$DATA_DIR/pg" -U postgres -A trust -E UTF8 --locale=C >"$LOGS/initdb.log"
fi
echo "Starting PostgreSQL on 127.0.0.1:$PG_PORT..."
as_postgres "$PG_BIN_DIR/pg_ctl" -D "$DATA_DIR/pg" -l "$LOGS/postgres.log" -w \
    -o "-p $PG_PORT -k $DATA_DIR/pg -c listen_addresses=127.0.0.1" start >/dev/null
"$PG_BIN_DIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'events'" | grep -q 1 ||
    "$PG_BIN_DIR/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres events

export NATS_URL="nats://${NATS_LOGIN}127.0.0.1:$NATS_PORT"
export HOST=127.0.0.1 LOG_FORMAT="${LOG_FORMAT:-json}" RUST_LOG="${RUST_LOG:-info}"

# Least privilege (docs/operations.md, "PostgreSQL roles and TLS"): the migrations run as
# the owner (here the cluster's superuser) and create the roles events_writer and
# events_reader; the worker and analytics log in as users in them (no passwords: this
# private cluster trusts local connections).
OWNER_URL="postgres://postgres@127.0.0.1:$PG_PORT/events"
WORKER_DATABASE_URL="postgres://events_worker@127.0.0.1:$PG_PORT/events"
ANALYTICS_DATABASE_URL="postgres://events_analytics@127.0.0.1:$PG_PORT/events"
echo "Applying the migrations as the owner; creating the services' login users..."
MIGRATION_DATABASE_URL="$OWNER_URL" "$BIN/worker" migrate >"$LOGS/migrate.log" 2>&1 ||
    { echo "worker migrate failed: see $LOGS/migrate.log" >&2; exit 1; }
"$PG_BIN_DIR/psql" -X -w -q "$OWNER_URL" -f deploy/postgres/login-users.sql

PORT="$INGESTION_PORT" "$BIN/ingestion" >"$LOGS/ingestion.log" 2>&1 &
PIDS+=($!)
# MIGRATION_DATABASE_URL: a newer build started on this data migrates at start-up, as
# the owner, while the pipeline runs as events_worker.
PORT="$WORKER_PORT" DATABASE_URL="$WORKER_DATABASE_URL" MIGRATION_DATABASE_URL="$OWNER_URL" \
    "$BIN/worker" >"$LOGS/worker.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$WORKER_PORT/health/readiness" worker
PORT="$ANALYTICS_PORT" DATABASE_URL="$ANALYTICS_DATABASE_URL" \
    "$BIN/analytics" >"$LOGS/analytics.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$INGESTION_PORT/health/readiness" ingestion
wait_http "http://127.0.0.1:$ANALYTICS_PORT/health/readiness" analytics

cat <<INFO

The platform is up (logs in $LOGS):
  ingestion  http://127.0.0.1:$INGESTION_PORT/webhook/event   metrics: /metrics
  reports    http://127.0.0.1:$ANALYTICS_PORT/   (the page; API under /analytics, Swagger UI at /api)
  worker     http://127.0.0.1:$WORKER_PORT/metrics
  NATS       nats://${NATS_SHOWN_LOGIN}127.0.0.1:$NATS_PORT        PostgreSQL  $OWNER_URL
             (the worker logs in as events_worker, analytics as events_analytics)

INFO

ENDPOINT="http://127.0.0.1:$INGESTION_PORT/webhook/event"
if [ "$SMOKE" = 1 ]; then
    "$BIN/publisher" --url "$ENDPOINT" --count 1000 --batch 50 --rate 0 --seed 7 --start-time now \
        --duplicates 0.1 --dump "$DATA_DIR/smoke.ndjson"
    expected=$(grep -o '"eventId":"[^"]*"' "$DATA_DIR/smoke.ndjson" | sort -u | wc -l)
    for _ in $(seq 1 150); do
        rows=$("$PG_BIN_DIR/psql" -X "$ANALYTICS_DATABASE_URL" -tAc "SELECT count(*) FROM events")
        [ "$rows" = "$expected" ] && break
        sleep 0.2
    done
    echo "Smoke: $rows rows stored, $expected distinct events published"
    [ "$rows" = "$expected" ] || { echo "Smoke test failed" >&2; exit 1; }
    users=$("$PG_BIN_DIR/psql" -X "$OWNER_URL" -tAc "SELECT string_agg(DISTINCT usename::text, ',')
        FROM pg_stat_activity WHERE usename IN ('events_worker', 'events_analytics')")
    [ "$users" = "events_analytics,events_worker" ] ||
        { echo "the services are not connected as their login users: $users" >&2; exit 1; }
    # The body is read whole first: `curl | grep -q` under pipefail fails when grep stops
    # reading early (curl gets SIGPIPE); the counter follows the commit, so it may lag the
    # rows by a moment.
    metrics=""
    for _ in $(seq 1 50); do
        metrics=$(curl -fsS "http://127.0.0.1:$WORKER_PORT/metrics") || metrics=""
        grep -q '^worker_events_processed_total' <<<"$metrics" && break
        sleep 0.1
    done
    grep -q '^worker_events_processed_total' <<<"$metrics" ||
        { echo "worker metrics missing" >&2; exit 1; }
    # The README's report examples, as the README writes them (the last day, which holds
    # the smoke events): each answers 200 with the fields the README shows, and with
    # figures that are not zero, so an example that reads nothing is caught.
    command -v python3 >/dev/null || { echo "the smoke's report checks need python3" >&2; exit 1; }
    A="http://127.0.0.1:$ANALYTICS_PORT/analytics"
    R="from=$(date -u -d '1 day ago' +%FT%TZ)&to=$(date -u +%FT%TZ)"
    report() { # query, a Python condition on the answer `a` that needs data, fields...
        local query=$1 condition=$2 body
        shift 2
        body=$(curl -fsS "$A/$query") || { echo "GET $A/$query failed" >&2; exit 1; }
        for field in "$@"; do
            grep -q "\"$field\":" <<<"$body" ||
                { echo "GET $A/$query: no \"$field\" in $body" >&2; exit 1; }
        done
        python3 -c 'import json, sys; a = json.loads(sys.argv[2]); sys.exit(not eval(sys.argv[1]))' \
            "$condition" "$body" ||
            { echo "GET $A/$query: expected $condition, got $body" >&2; exit 1; }
    }
    report "stats?$R&source=facebook" 'a["total"] > 0 and a["byEventType"][0]["count"] > 0' \
        from to total bySource byFunnelStage byEventType
    report "timeseries?$R&interval=hour&tz=Europe/Berlin" 'a["tz"] == "Europe/Berlin" and any(p["count"] > 0 and p["revenue"] != "0.00" for p in a["points"])' \
        interval tz points bucket count revenue
    report "revenue?$R&campaignId=cmp-12" 'a["purchases"] > 0 and a["total"] != "0.00"' \
        total purchases bySource
    report "campaigns/top?$R&by=events&limit=5" 'len(a["campaigns"]) == 5 and a["campaigns"][-1]["events"] > 0' \
        campaigns campaignId events purchases revenue
    report "funnel?$R" 'all(s["topEvents"] > 0 and s["bottomEvents"] > 0 and s["convertedUsers"] > 0 for s in a["sources"])' \
        sources topEvents bottomEvents topUsers convertedUsers steps
    report "geo?$R&funnelStage=bottom" 'a["countries"][0]["events"] > 0 and a["unknownCountryEvents"] > 0' \
        countries country events users revenue unknownCountryEvents
    report "users/top?$R&by=revenue" 'a["users"][0]["revenue"] != "0.00"' \
        users source userId events revenue
    report "demographics?$R&source=tiktok" 'sum(b["users"] for b in a["followerBuckets"]) > 0 and a["devices"][0]["users"] > 0' \
        source followerBuckets devices countries
    # The CSV example: the header row the API document gives, and a country row with events.
    csv=$(curl -fsS "$A/geo?$R&format=csv") || { echo "GET $A/geo?...&format=csv failed" >&2; exit 1; }
    [ "$(head -n 1 <<<"$csv" | tr -d '\r')" = "section,country,events,users,revenue" ] &&
        grep -Eq '^countries,[^,]+,[1-9]' <<<"$csv" ||
        { echo "GET $A/geo?...&format=csv: not the documented CSV with data: $csv" >&2; exit 1; }
    echo "Smoke: the README's nine report examples answer with their fields and non-zero figures."
    echo "Smoke test passed."
    exit 0
fi

echo "Demo publisher: 200 events/s for 10 minutes (Ctrl-C stops everything)."
"$BIN/publisher" --url "$ENDPOINT" --rate 200 --duration 10m --batch 10 \
    --duplicates 0.02 --invalid 0.01 --out-of-order 0.05 >"$LOGS/publisher.log" 2>&1 &
PIDS+=($!)
wait "${PIDS[0]}"
