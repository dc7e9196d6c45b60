#!/usr/bin/env bash
# Opens GET /api of ingestion and analytics in headless Chromium (Debian package
# `chromium`) and checks that Swagger UI renders every endpoint: the dumped DOM must hold
# an operation block (`opblock`) for each operation of docs/api.md and of the service's own
# /api/openapi.json. Fails naming every missing operation.
#
#   scripts/check-swagger-ui.sh        (CI runs it from .ci/run)
#
# It builds the release binaries, starts a private NATS and PostgreSQL and the two
# services on free loopback ports (throw-away data), and stops exactly what it started.
# CHROMIUM overrides the browser command.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prerequisites.sh

install_chromium
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$CHROMIUM" ]; then
    echo "check-swagger-ui: chromium not found (apt-get install chromium)" >&2
    exit 1
fi

# The operations docs/api.md names for each service; the document's own are added to them.
ANALYTICS_OPS=(
    "GET /analytics/stats" "GET /analytics/timeseries" "GET /analytics/funnel"
    "GET /analytics/geo" "GET /analytics/revenue" "GET /analytics/campaigns/top"
    "GET /analytics/users/top" "GET /analytics/demographics"
    "GET /health/liveness" "GET /health/readiness" "GET /metrics"
)
INGESTION_OPS=(
    "POST /webhook/event" "POST /webhook"
    "GET /health/liveness" "GET /health/readiness" "GET /metrics"
)

install_prerequisites
echo "Building release binaries (ingestion, analytics)..."
cargo build --release --quiet --bin ingestion --bin analytics
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"

WORK="$(mktemp -d)"
PIDS=()
PG_STARTED=0
cleanup() {
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$PG_STARTED" = 1 ]; then
        as_postgres "$PG_BIN_DIR/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Starts a service on port 0 (no race for a port on a shared machine) and sets PORT_OF
# to the port it reports in its "listening" log line.
start_service() { # name, environment assignments...
    local name="$1" pid port=""
    shift
    env "$@" HOST=127.0.0.1 PORT=0 LOG_FORMAT=json RUST_LOG="warn,$name=info" \
        "$BIN/$name" >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 150); do
        port=$(grep -i 'listening' "$WORK/$name.log" | grep -o '"port":[0-9]*' | head -n 1 | cut -d: -f2 || true)
        [ -n "$port" ] && break
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.2
    done
    if [ -z "$port" ]; then
        echo "check-swagger-ui: $name did not start; its log (start):" >&2
        head -n 20 "$WORK/$name.log" >&2 || true
        exit 1
    fi
    PORT_OF="$port"
}

NATS_PORT=$(free_port)
PG_PORT=$(free_port)

mkdir -p "$WORK/nats" "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK" "$WORK/pg"
"$NATS_SERVER_BIN" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
as_postgres "$PG_BIN_DIR/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --locale=C >/dev/null
as_postgres "$PG_BIN_DIR/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w \
    -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null
PG_STARTED=1
"$PG_BIN_DIR/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres events

start_service ingestion NATS_URL="nats://127.0.0.1:$NATS_PORT"
INGESTION_PORT="$PORT_OF"
start_service analytics DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/events"
ANALYTICS_PORT="$PORT_OF"

failed=0
check() { # name, port, operations...
    local name="$1" port="$2"
    shift 2
    local url="http://127.0.0.1:$port/api"
    if ! curl -fsS --retry 10 --retry-connrefused --retry-delay 1 "$url/openapi.json" \
        >"$WORK/$name.openapi.json"; then
        echo "check-swagger-ui: $name does not serve $url/openapi.json" >&2
        failed=1
        return
    fi
    # A fresh profile per run; the budget lets Swagger UI fetch the document and render.
    if ! timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
        --disable-background-networking --user-data-dir="$WORK/chromium-$name" \
        --virtual-time-budget=10000 --dump-dom "$url" \
        >"$WORK/$name.dom.html" 2>"$WORK/$name.chromium.log"; then
        echo "check-swagger-ui: chromium failed on $url:" >&2
        tail -n 20 "$WORK/$name.chromium.log" >&2
        failed=1
        return
    fi
    python3 - "$name" "$url" "$WORK/$name.dom.html" "$WORK/$name.openapi.json" "$@" <<'PY' || failed=1
import json, sys
from html.parser import HTMLParser

name, url, dom_file, doc_file, *required = sys.argv[1:]
methods = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
expected = {tuple(op.split(" ", 1)) for op in required}
with open(doc_file) as f:
    for path, item in json.load(f).get("paths", {}).items():
        expected |= {(m.upper(), path) for m in item if m in methods}

class Operations(HTMLParser):
    """(METHOD, path) of every rendered operation block: a `div.opblock.opblock-<method>`
    holding a `[data-path]` (Swagger UI writes the path text with zero-width spaces, the
    attribute as is)."""

    def __init__(self):
        super().__init__()
        self.stack = []  # (tag, method of the opblock it opens, or None)
        self.found = set()
        self.opblocks = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        method = None
        if "opblock" in classes:
            self.opblocks += 1
            method = next((c[len("opblock-"):] for c in classes
                           if c[len("opblock-"):] in methods), None)
        if "data-path" in attrs:
            current = next((m for _, m in reversed(self.stack) if m), None)
            if current:
                self.found.add((current.upper(), attrs["data-path"]))
        if tag not in ("br", "img", "input", "meta", "link", "hr", "wbr", "source", "col"):
            self.stack.append((tag, method))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

parser = Operations()
with open(dom_file, encoding="utf-8", errors="replace") as f:
    parser.feed(f.read())
missing = sorted(expected - parser.found, key=lambda op: (op[1], op[0]))
if parser.opblocks == 0:
    print(f"check-swagger-ui: {name}: Swagger UI rendered no operation at {url} "
          f"(no element with class opblock in the DOM)", file=sys.stderr)
    sys.exit(1)
if missing:
    print(f"check-swagger-ui: {name}: Swagger UI at {url} does not list "
          f"{len(missing)} operation(s): " + ", ".join(f"{m} {p}" for m, p in missing),
          file=sys.stderr)
    sys.exit(1)
print(f"{name}: Swagger UI at {url} lists all {len(expected)} operations")
PY
}

check analytics "$ANALYTICS_PORT" "${ANALYTICS_OPS[@]}"
check ingestion "$INGESTION_PORT" "${INGESTION_OPS[@]}"
if [ "$failed" != 0 ]; then
    echo "check-swagger-ui: FAILED" >&2
    exit 1
fi
echo "Swagger UI check passed."
