#!/usr/bin/env bash
# The chaos test, long (see bench/README.md, "Chaos"):
#
#   bench/chaos.sh              10 minutes of load and faults, then the drain and the checks;
#                               prints the summary and writes bench/results/<date>-chaos.md
#   bench/chaos.sh --secs 120   another duration
#   bench/chaos.sh --help
#
# It runs worker/tests/chaos (which CI runs for 40 s) in release mode with CHAOS_SECS set.
# CHAOS_SEED=<seed> replays a run's events, poison and faults; CHAOS_RATE sets the events
# offered per second (default 300). The exit status is the test's: 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=600
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) secs="$2"; shift 2 ;;
        --secs=*) secs="${1#--secs=}"; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

. scripts/prerequisites.sh
install_prerequisites

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "Building and running the chaos test for $secs s (release)..." >&2
status=0
CHAOS_SECS="$secs" cargo test --release --quiet -p worker --test chaos -- --nocapture 2>&1 \
    | tee "$log" || status=$?

summary="$(sed -n '/^==== chaos summary ====$/,/^==== end of chaos summary ====$/p' "$log" | sed '1d;$d')"
if [ -z "$summary" ]; then
    echo "The test printed no summary (exit status $status)." >&2
    [ "$status" = 0 ] && status=1
    exit "$status"
fi
out="bench/results/$(date -u +%F)-chaos.md"
{
    echo "# Chaos run, $(date -u +%F)"
    echo
    echo "\`bench/chaos.sh --secs $secs\` at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with uncommitted changes)');"
    echo "$("$NATS_SERVER_BIN" --version), PostgreSQL $("$PG_BIN_DIR/postgres" --version | awk '{print $3}'),"
    echo "$(nproc) × $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1). Result: $([ "$status" = 0 ] && echo 'every check passed' || echo "FAILED (exit status $status)")."
    echo
    echo "$summary"
} > "$out"
echo "Summary written to $out" >&2
exit "$status"
