# shellcheck shell=bash
# The cluster of `scripts/run-local.sh --cluster`, sourced by run-local.sh after it has
# installed the prerequisites and built the binaries (BIN, PG_BIN_DIR, NATS_SERVER_BIN,
# DATA_DIR, LOGS, the base ports, NATS_LOGIN and NATS_AUTH are set):
#
#   three nats-server nodes in one JetStream cluster (routes on loopback, a store each),
#   the EVENTS stream and the EVENTS_DLQ at three replicas, two ingestion replicas, two
#   workers, a PostgreSQL primary and a streaming hot standby (deploy/postgres/), and
#   analytics reading the standby (DATABASE_READ_URL).
#
# Ports: each base port as in the single-node mode, the other members at fixed offsets
# (docs/operations.md, "Cluster"):
#   NATS clients   NATS_PORT +0 +1 +2      NATS routes  NATS_PORT +10 +11 +12
#   NATS monitor   NATS_PORT +20 +21 +22   PostgreSQL   PG_PORT (primary), +1 (standby)
#   ingestion      INGESTION_PORT, +10     worker       WORKER_PORT, +10
#   analytics      ANALYTICS_PORT
# The smoke (--smoke) lives in scripts/cluster-smoke.sh.

NATS_NODES=(1 2 3)
declare -A PROC_PID=()  # name -> pid of what this script started and has not stopped
SERVICES=()             # names of the services, in start order

nats_client_port() { echo $((NATS_PORT + $1 - 1)); }
nats_route_port() { echo $((NATS_PORT + 9 + $1)); }
nats_monitor_port() { echo $((NATS_PORT + 19 + $1)); }
STANDBY_PORT=$((PG_PORT + 1))

# Every port the cluster listens on, each once and free.
cluster_check_ports() {
    local ports=() port seen=" "
    for n in "${NATS_NODES[@]}"; do
        ports+=("$(nats_client_port "$n")" "$(nats_route_port "$n")" "$(nats_monitor_port "$n")")
    done
    ports+=("$PG_PORT" "$STANDBY_PORT" "$INGESTION_PORT" $((INGESTION_PORT + 10))
        "$WORKER_PORT" $((WORKER_PORT + 10)) "$ANALYTICS_PORT")
    for port in "${ports[@]}"; do
        if [ "$port" -gt 65535 ] || [[ "$seen" == *" $port "* ]]; then
            echo "port $port is out of range or used twice by the cluster: choose base ports" \
                "further apart (docs/operations.md, Cluster)" >&2
            exit 2
        fi
        seen+="$port "
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port is already taken on 127.0.0.1: stop what listens there or" \
                "choose other base ports (docs/operations.md, Cluster)" >&2
            exit 2
        fi
    done
}

# name, command...: starts a process in the background, its output in $LOGS/name.log.
start_proc() {
    local name=$1
    shift
    "$@" >>"$LOGS/$name.log" 2>&1 &
    PROC_PID[$name]=$!
}

# name: SIGKILLs a process this script started (the smoke's faults).
kill_proc() {
    kill -KILL "${PROC_PID[$1]}"
    wait "${PROC_PID[$1]}" 2>/dev/null || true
    unset "PROC_PID[$1]"
}

proc_kind() { # name: nats or service
    if [[ "$1" == nats-* ]]; then echo nats; else echo service; fi
}

stop_group() { # nats or service: SIGTERM all of that kind, then wait for them
    local name
    for name in "${!PROC_PID[@]}"; do
        if [ "$(proc_kind "$name")" = "$1" ]; then
            kill -TERM "${PROC_PID[$name]}" 2>/dev/null || true
        fi
    done
    for name in "${!PROC_PID[@]}"; do
        [ "$(proc_kind "$name")" = "$1" ] || continue
        wait "${PROC_PID[$name]}" 2>/dev/null || true
        unset "PROC_PID[$name]"
    done
}

cluster_stop_all() {
    trap - EXIT INT TERM
    echo "Stopping..."
    # Services first (they drain), then the brokers, then the databases.
    stop_group service
    stop_group nats
    local dir
    for dir in "$DATA_DIR/pg-standby" "$DATA_DIR/pg"; do
        if [ -f "$dir/postmaster.pid" ]; then
            as_postgres "$PG_BIN_DIR/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
        fi
    done
}

# url, name, [seconds=60]: waits for a 2xx answer.
cluster_wait_http() {
    local deadline=$((SECONDS + ${3:-60}))
    until curl -fs -o /dev/null "$1"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$2 did not become ready at $1: see $LOGS/$2.log" >&2
            curl -s "$1" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

# n: writes node n's configuration into $DATA_DIR/nats-n.conf.
nats_node_config() {
    local n=$1 m routes=""
    for m in "${NATS_NODES[@]}"; do
        routes+="    nats-route://127.0.0.1:$(nats_route_port "$m")"$'\n'
    done
    {
        echo "server_name: n$n"
        echo "listen: 127.0.0.1:$(nats_client_port "$n")"
        echo "http: 127.0.0.1:$(nats_monitor_port "$n")"
        echo "jetstream { store_dir: \"$DATA_DIR/nats-$n\" }"
        echo "cluster {"
        echo "  name: events-local"
        echo "  listen: 127.0.0.1:$(nats_route_port "$n")"
        printf '  routes: [\n%s  ]\n}\n' "$routes"
        if [ "$NATS_AUTH" = 1 ]; then echo "include ./nats-auth.conf"; fi
    } >"$DATA_DIR/nats-$n.conf"
}

start_nats_node() { # n
    start_proc "nats-$1" "$NATS_SERVER_BIN" -c "$DATA_DIR/nats-$1.conf"
}

start_nats_cluster() {
    local n
    echo "Starting NATS nodes n1-n3 on 127.0.0.1:$NATS_PORT-$((NATS_PORT + 2)) (routes" \
        "$((NATS_PORT + 10))-$((NATS_PORT + 12)), monitoring $((NATS_PORT + 20))-$((NATS_PORT + 22)))..."
    for n in "${NATS_NODES[@]}"; do
        mkdir -p "$DATA_DIR/nats-$n"
        nats_node_config "$n"
        start_nats_node "$n"
    done
    # /healthz answers 200 once JetStream has a meta leader and the node is current.
    for n in "${NATS_NODES[@]}"; do
        cluster_wait_http "http://127.0.0.1:$(nats_monitor_port "$n")/healthz" "nats-$n"
    done
}

pg_start() { # data dir, port, log name
    as_postgres "$PG_BIN_DIR/pg_ctl" -D "$1" -l "$LOGS/$3.log" -w \
        -o "-p $2 -k $1 -c listen_addresses=127.0.0.1" start >/dev/null
}

start_pg_primary() {
    if [ ! -f "$DATA_DIR/pg/PG_VERSION" ]; then
        echo "Creating the PostgreSQL primary in $DATA_DIR/pg..."
        mkdir -p "$DATA_DIR/pg"
        [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA_DIR/pg"
        as_postgres "$PG_BIN_DIR/initdb" -D "$DATA_DIR/pg" -U postgres -A trust -E UTF8 \
            --locale=C >"$LOGS/initdb.log"
    fi
    echo "Starting the PostgreSQL primary on 127.0.0.1:$PG_PORT..."
    pg_start "$DATA_DIR/pg" "$PG_PORT" postgres
    "$PG_BIN_DIR/psql" -X -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'events'" | grep -q 1 ||
        "$PG_BIN_DIR/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres events
    PGHOST=127.0.0.1 PGPORT="$PG_PORT" PGUSER=postgres PGDATABASE=events PGDATA="$DATA_DIR/pg" \
        REPLICATION_USER=replicator REPLICATION_HBA_ADDRESS=127.0.0.1/32 PATH="$PG_BIN_DIR:$PATH" \
        as_postgres sh deploy/postgres/replication.sh >>"$LOGS/replication-setup.log"
}

start_pg_standby() {
    echo "Starting the PostgreSQL standby on 127.0.0.1:$STANDBY_PORT (pg_basebackup -R)..."
    mkdir -p "$DATA_DIR/pg-standby"
    chmod 700 "$DATA_DIR/pg-standby"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA_DIR/pg-standby"
    PGDATA="$DATA_DIR/pg-standby" PRIMARY_HOST=127.0.0.1 PRIMARY_PORT="$PG_PORT" \
        REPLICATION_USER=replicator PATH="$PG_BIN_DIR:$PATH" \
        as_postgres sh deploy/postgres/standby.sh >>"$LOGS/standby-setup.log" 2>&1 ||
        { echo "making the standby failed: see $LOGS/standby-setup.log" >&2; exit 1; }
    pg_start "$DATA_DIR/pg-standby" "$STANDBY_PORT" postgres-standby
}

start_ingestion() { # replica 1 or 2
    start_proc "ingestion-$1" env PORT=$((INGESTION_PORT + 10 * ($1 - 1))) "$BIN/ingestion"
    SERVICES+=("ingestion-$1")
}

start_worker() { # replica 1 or 2
    start_proc "worker-$1" env PORT=$((WORKER_PORT + 10 * ($1 - 1))) \
        DATABASE_URL="$WORKER_DATABASE_URL" MIGRATION_DATABASE_URL="$OWNER_URL" "$BIN/worker"
    [[ " ${SERVICES[*]} " == *" worker-$1 "* ]] || SERVICES+=("worker-$1")
}

start_services() {
    local n
    for n in 1 2; do start_ingestion "$n"; done
    for n in 1 2; do start_worker "$n"; done
    start_proc analytics env PORT="$ANALYTICS_PORT" DATABASE_URL="$ANALYTICS_DATABASE_URL" \
        DATABASE_READ_URL="$ANALYTICS_READ_URL" "$BIN/analytics"
    SERVICES+=(analytics)
    for n in 1 2; do
        cluster_wait_http "http://127.0.0.1:$((INGESTION_PORT + 10 * (n - 1)))/health/readiness" "ingestion-$n"
        cluster_wait_http "http://127.0.0.1:$((WORKER_PORT + 10 * (n - 1)))/health/readiness" "worker-$n"
    done
    cluster_wait_http "http://127.0.0.1:$ANALYTICS_PORT/health/readiness" analytics
}

cluster_banner() {
    cat <<INFO

The cluster is up (logs in $LOGS, data in $DATA_DIR):
  ingestion  http://127.0.0.1:$INGESTION_PORT/webhook/event  http://127.0.0.1:$((INGESTION_PORT + 10))/webhook/event
  reports    http://127.0.0.1:$ANALYTICS_PORT/   (reads the standby; API under /analytics, Swagger UI at /api)
  worker     http://127.0.0.1:$WORKER_PORT/metrics  http://127.0.0.1:$((WORKER_PORT + 10))/metrics
  NATS       $NATS_SHOWN_URL
             monitoring http://127.0.0.1:$(nats_monitor_port 1)/jsz  :$(nats_monitor_port 2)  :$(nats_monitor_port 3)
             stream ${NATS_STREAM:-EVENTS} and ${NATS_DLQ_STREAM:-EVENTS_DLQ} at 3 replicas
  PostgreSQL primary $OWNER_URL
             standby postgres://postgres@127.0.0.1:$STANDBY_PORT/events (streaming, slot standby_1)
             (the worker logs in as events_worker, analytics as events_analytics)

INFO
}

cluster_main() {
    cluster_check_ports
    mkdir -p "$LOGS"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA_DIR" "$LOGS"
    trap cluster_stop_all EXIT
    trap 'cluster_stop_all; exit 130' INT TERM
    start_nats_cluster
    start_pg_primary

    local urls=() shown=() n
    for n in "${NATS_NODES[@]}"; do
        urls+=("nats://${NATS_LOGIN}127.0.0.1:$(nats_client_port "$n")")
        shown+=("nats://${NATS_SHOWN_LOGIN}127.0.0.1:$(nats_client_port "$n")")
    done
    NATS_URL=$(IFS=,; echo "${urls[*]}")
    NATS_SHOWN_URL=$(IFS=,; echo "${shown[*]}")
    export NATS_URL NATS_STREAM_REPLICAS=3
    # The smoke's killed worker leaves messages unacked: they come back after this.
    if [ "$SMOKE" = 1 ]; then export NATS_ACK_WAIT="${NATS_ACK_WAIT:-5s}"; fi
    export HOST=127.0.0.1 LOG_FORMAT="${LOG_FORMAT:-json}" RUST_LOG="${RUST_LOG:-info}"
    OWNER_URL="postgres://postgres@127.0.0.1:$PG_PORT/events"
    WORKER_DATABASE_URL="postgres://events_worker@127.0.0.1:$PG_PORT/events"
    ANALYTICS_DATABASE_URL="postgres://events_analytics@127.0.0.1:$PG_PORT/events"
    ANALYTICS_READ_URL="postgres://events_analytics@127.0.0.1:$STANDBY_PORT/events"

    echo "Applying the migrations as the owner; creating the services' login users..."
    MIGRATION_DATABASE_URL="$OWNER_URL" "$BIN/worker" migrate >"$LOGS/migrate.log" 2>&1 ||
        { echo "worker migrate failed: see $LOGS/migrate.log" >&2; exit 1; }
    "$PG_BIN_DIR/psql" -X -w -q "$OWNER_URL" -f deploy/postgres/login-users.sql
    start_pg_standby
    start_services
    cluster_banner

    if [ "$SMOKE" = 1 ]; then
        . scripts/cluster-smoke.sh
        cluster_smoke
        exit 0
    fi
    echo "Demo publisher: 200 events/s to each ingestion replica for 10 minutes (Ctrl-C stops everything)."
    for n in 1 2; do
        start_proc "publisher-$n" "$BIN/publisher" \
            --url "http://127.0.0.1:$((INGESTION_PORT + 10 * (n - 1)))/webhook/event" \
            --rate 200 --duration 10m --batch 10 --duplicates 0.02 --out-of-order 0.05
    done
    wait "${PROC_PID[publisher-1]}" "${PROC_PID[publisher-2]}" || true
    echo "The demo publishers are done; the cluster runs until Ctrl-C."
    wait
}
