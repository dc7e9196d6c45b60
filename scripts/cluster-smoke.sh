# shellcheck shell=bash
# The smoke of `scripts/run-local.sh --cluster --smoke`, sourced by scripts/cluster.sh once
# the cluster is up. Under a bounded load (two publishers, one per ingestion replica,
# CLUSTER_SMOKE_EVENTS events each at CLUSTER_SMOKE_RATE events/s):
#
#   1. SIGKILL worker-2 once it has stored events;
#   2. SIGKILL the NATS node leading the EVENTS stream (asked of /jsz);
#   3. once worker-1 has stored more events under the new leader, restart both;
#   4. when the publishers are done, wait for the pipeline to drain and check the exact
#      oracle: every event sent was answered 202, every one is stored exactly once in the
#      primary (counted by the ids sent), nothing was dead-lettered, the stream is back at
#      three current replicas, and analytics, reading the standby once it has replayed
#      everything (lag 0), answers the same totals as a count on the primary.
#
# Any failure exits non-zero with the reason.

SMOKE_EVENTS="${CLUSTER_SMOKE_EVENTS:-8000}"
SMOKE_RATE="${CLUSTER_SMOKE_RATE:-400}"

smoke_fail() {
    echo "Cluster smoke FAILED: $*" >&2
    exit 1
}

# seconds, what, command...: runs the command every 0.2 s until it succeeds; fails the
# smoke with `what` when it has not after that long.
wait_until() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || smoke_fail "$what (waited ${seconds}s)"
        sleep 0.2
    done
}

psql_at() { # port, psql arguments...
    local port=$1
    shift
    PGOPTIONS="-c client_min_messages=warning" \
        "$PG_BIN_DIR/psql" -X -qtA -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$port/events" "$@"
}

metric() { # url, metric name: the sum of its samples (0 when absent or unreachable)
    local body
    body=$(curl -fsS "$1" 2>/dev/null) || body=""
    awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { print s + 0 }' <<<"$body"
}

worker_stored() { # replica: its worker_events_processed_total
    metric "http://127.0.0.1:$((WORKER_PORT + 10 * ($1 - 1)))/metrics" worker_events_processed_total
}

worker_stored_above() { # replica, count
    [ "$(worker_stored "$1")" -gt "$2" ]
}

# stream, [check]: from the first live node's /jsz, prints the stream's leader (n1..n3),
# or with `current`, succeeds when it has a leader and two current replicas.
stream_state() {
    local n body
    for n in "${NATS_NODES[@]}"; do
        [ -n "${PROC_PID[nats-$n]:-}" ] || continue
        body=$(curl -fsS "http://127.0.0.1:$(nats_monitor_port "$n")/jsz?streams=true") || continue
        python3 - "$1" "${2:-leader}" "$body" <<'PY' && return 0
import json, sys
name, check, body = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for account in body.get("account_details") or []:
    for stream in account.get("stream_detail") or []:
        if stream.get("name") != name:
            continue
        cluster = stream.get("cluster") or {}
        replicas = cluster.get("replicas") or []
        if check == "leader" and cluster.get("leader"):
            print(cluster["leader"])
            sys.exit(0)
        if check == "current" and cluster.get("leader") and len(replicas) == 2 \
                and all(r.get("current") for r in replicas):
            sys.exit(0)
sys.exit(1)
PY
    done
    return 1
}

start_publisher() { # replica of ingestion it sends to
    "$BIN/publisher" --url "http://127.0.0.1:$((INGESTION_PORT + 10 * ($1 - 1)))/webhook/event" \
        --count "$SMOKE_EVENTS" --rate "$SMOKE_RATE" --batch 20 --concurrency 4 \
        --duplicates 0.05 --start-time now --max-retries 30 \
        --dump "$DATA_DIR/smoke-$1.ndjson" --json \
        >"$DATA_DIR/smoke-$1.json" 2>>"$LOGS/publisher-$1.log" &
    PROC_PID["publisher-$1"]=$!
}

smoke_faults() {
    local before leader
    wait_until 30 "worker-2 stored nothing" worker_stored_above 2 0
    before=$(worker_stored 2)
    kill_proc worker-2
    echo "Smoke: worker-2 SIGKILLed, after it had stored $before events"
    before=$(worker_stored 1)
    wait_until 30 "worker-1 stored nothing after worker-2 died" worker_stored_above 1 $((before + 500))
    leader=$(stream_state "${NATS_STREAM:-EVENTS}") || smoke_fail "no node names a leader of EVENTS"
    KILLED_NODE="${leader#n}"
    [ -n "${PROC_PID[nats-$KILLED_NODE]:-}" ] || smoke_fail "the leader $leader is no node of ours"
    kill_proc "nats-$KILLED_NODE"
    echo "Smoke: NATS node $leader, the EVENTS leader, SIGKILLed"
    before=$(worker_stored 1)
    wait_until 30 "the pipeline stalled after the stream leader died" \
        worker_stored_above 1 $((before + 1000))
    echo "Smoke: the stream now led by $(stream_state "${NATS_STREAM:-EVENTS}" || echo '?');" \
        "restarting node n$KILLED_NODE and worker-2 under load"
    start_nats_node "$KILLED_NODE"
    start_worker 2
}

smoke_wait_publishers() {
    local n deadline=$((SECONDS + 2 * SMOKE_EVENTS / SMOKE_RATE + 60))
    for n in 1 2; do
        while kill -0 "${PROC_PID[publisher-$n]}" 2>/dev/null; do
            [ "$SECONDS" -lt "$deadline" ] || smoke_fail "publisher-$n still runs"
            sleep 0.2
        done
        wait "${PROC_PID[publisher-$n]}" || smoke_fail "publisher-$n failed: see $LOGS/publisher-$n.log"
        unset "PROC_PID[publisher-$n]"
        python3 - "$DATA_DIR/smoke-$n.json" <<'PY' || smoke_fail "publisher-$n: not every event was answered 202"
import json, sys
s = json.load(open(sys.argv[1]))
print(f"Smoke: publisher {sys.argv[1].split('-')[-1][:-5]}: {s['sent']} events sent, "
      f"{s['accepted']} answered 202 ({s['duplicates']} duplicates), {s['retries']} retries, "
      f"{s['failed']} failed, {s['rejected']} rejected")
sys.exit(0 if s["failed"] == 0 and s["rejected"] == 0 and s["accepted"] == s["sent"] else 1)
PY
    done
}

stored_count() { # prints "rows distinct" of the events sent, in the primary
    psql_at "$PG_PORT" -F ' ' -c "SELECT count(*), count(DISTINCT event_id) FROM events
        WHERE event_id IN (SELECT event_id FROM cluster_smoke.sent)"
}

all_stored() { [ "$(stored_count)" = "$EXPECTED $EXPECTED" ]; }

smoke_oracle() {
    local ids="$DATA_DIR/smoke-ids.txt"
    cat "$DATA_DIR"/smoke-[12].ndjson | grep -o '"eventId":"[^"]*"' | cut -d'"' -f4 | sort -u >"$ids"
    EXPECTED=$(wc -l <"$ids")
    psql_at "$PG_PORT" -c "DROP SCHEMA IF EXISTS cluster_smoke CASCADE" \
        -c "CREATE SCHEMA cluster_smoke" -c "CREATE TABLE cluster_smoke.sent (event_id text PRIMARY KEY)" \
        -c "\\copy cluster_smoke.sent FROM '$ids'"
    wait_until 60 "stored $(stored_count) (rows, distinct ids) of the $EXPECTED events answered 202" all_stored
    echo "Smoke: all $EXPECTED distinct events answered 202 are stored, each exactly once"
    local dlq
    dlq=$(scripts/nats-request.py "nats://${NATS_LOGIN}127.0.0.1:$NATS_PORT" \
        "\$JS.API.STREAM.INFO.${NATS_DLQ_STREAM:-EVENTS_DLQ}")
    grep -q '"messages": *0[,}]' <<<"$dlq" || smoke_fail "events were dead-lettered: $dlq"
    grep -q '"num_replicas": *3' <<<"$dlq" || smoke_fail "the DLQ has not three replicas: $dlq"
    wait_until 30 "EVENTS is not back at three current replicas" stream_state "${NATS_STREAM:-EVENTS}" current
    echo "Smoke: nothing dead-lettered; EVENTS has its three replicas again"
}

standby_replayed() { # primary LSN
    [ "$(psql_at "$STANDBY_PORT" -c "SELECT pg_last_wal_replay_lsn() >= '$1'::pg_lsn")" = t ]
}

analytics_lag_zero() {
    [ "$(metric "http://127.0.0.1:$ANALYTICS_PORT/metrics" analytics_replica_lag_seconds)" = 0 ]
}

smoke_reports() {
    local lsn from to body primary headers="$DATA_DIR/smoke-headers.txt"
    psql_at "$PG_PORT" -c "DROP SCHEMA cluster_smoke CASCADE"
    lsn=$(psql_at "$PG_PORT" -c "SELECT pg_current_wal_lsn()")
    wait_until 30 "the standby has not replayed up to $lsn" standby_replayed "$lsn"
    wait_until 10 "analytics_replica_lag_seconds is not 0" analytics_lag_zero
    from=$(date -u -d '3 days ago' +%FT%TZ)
    to=$(date -u -d 'tomorrow' +%FT%TZ)
    body=$(curl -fsS -D "$headers" "http://127.0.0.1:$ANALYTICS_PORT/analytics/stats?from=$from&to=$to") ||
        smoke_fail "GET /analytics/stats failed"
    grep -qi '^data-as-of:' "$headers" || smoke_fail "the standby's answer has no Data-As-Of header"
    primary=$(psql_at "$PG_PORT" -c "SELECT json_agg(json_build_array(source, funnel_stage, event_type, n))
        FROM (SELECT source, funnel_stage, event_type, count(*) AS n FROM events
              WHERE event_time >= '$from' AND event_time < '$to' GROUP BY 1, 2, 3) t")
    python3 - "$body" "$primary" <<'PY' || smoke_fail "analytics on the standby differs from the primary"
import json, sys
a, rows = json.loads(sys.argv[1]), json.loads(sys.argv[2]) or []
want = {(s, f, t): n for s, f, t, n in rows}
got = {(e["source"], e["funnelStage"], e["eventType"]): e["count"] for e in a["byEventType"]}
sources = {}
for (s, _, _), n in want.items():
    sources[s] = sources.get(s, 0) + n
ok = (a["total"] == sum(want.values()) and got == want
      and {e["source"]: e["count"] for e in a["bySource"]} == sources)
print(f"Smoke: analytics on the standby: total {a['total']}, by source {sources}; "
      f"the primary counts {sum(want.values())}: {'equal' if ok else 'DIFFERENT'}")
if not ok:
    print(f"analytics: {a}\nprimary: {want}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}

cluster_smoke() {
    local started=$SECONDS
    echo "Smoke: two publishers, $SMOKE_EVENTS events each at $SMOKE_RATE events/s, one per ingestion replica"
    start_publisher 1
    start_publisher 2
    smoke_faults
    smoke_wait_publishers
    smoke_oracle
    smoke_reports
    echo "Cluster smoke test passed in $((SECONDS - started)) s of load and checks" \
        "($SECONDS s with the start-up): worker-2 and the EVENTS leader (n$KILLED_NODE) were" \
        "SIGKILLed under load and restarted; $EXPECTED events stored exactly once."
}
