#!/usr/bin/env bash
# The end-to-end benchmark, in one command (see bench/README.md):
#
#   bench/run.sh            full run (~7 minutes): prints the table, writes
#                           bench/results/<date>.json and .md
#   bench/run.sh --quick    tiny sizes, a minute or two (CI: keeps the bench from rotting;
#                           asserts nothing about timings)
#   bench/run.sh --replicas [options]
#                           two runs with the same options, NATS with one node (R1) then
#                           three (R3), and one report setting them side by side:
#                           bench/results/<date>-r1.*, <date>-r3.* and <date>-r1-r3.md
#   bench/run.sh --help     every option (--duration, --burst, --preload, --durability, ...)
#
# Builds the release binaries, then runs target/release/e2e with the arguments given.
# It starts its own PostgreSQL and nats-server on free loopback ports and the three
# services from the release build; everything is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prerequisites.sh
install_prerequisites
echo "Building release binaries..." >&2
cargo build --release --quiet --bins
bin="${CARGO_TARGET_DIR:-target}/release"

replicas=false
args=()
for arg in "$@"; do
    if [ "$arg" = "--replicas" ]; then replicas=true; else args+=("$arg"); fi
done
if ! $replicas; then
    exec "$bin/e2e" "${args[@]}"
fi

out=bench/results
day="$(date -u +%F)"
suffix=""
for arg in "${args[@]}"; do
    case "$arg" in
        --quick) suffix="-quick" ;;
        --out=*) out="${arg#--out=}" ;;
        --nats-nodes* | --name*)
            echo "bench/run.sh --replicas sets --nats-nodes and --name itself" >&2
            exit 2 ;;
    esac
done
prev=""
for arg in "${args[@]}"; do
    [ "$prev" = "--out" ] && out="$arg"
    prev="$arg"
done
for nodes in 1 3; do
    echo "== bench with NATS at R$nodes" >&2
    "$bin/e2e" "${args[@]}" --nats-nodes "$nodes" --name "$day$suffix-r$nodes"
done
"$bin/e2e-compare" "R1=$out/$day$suffix-r1.json" "R3=$out/$day$suffix-r3.json" \
    --out "$out/$day$suffix-r1-r3.md"
