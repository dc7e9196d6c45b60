#!/usr/bin/env bash
# The end-to-end benchmark, in one command (see bench/README.md):
#
#   bench/run.sh            full run (~5 minutes): prints the table, writes
#                           bench/results/<date>.json and .md
#   bench/run.sh --quick    tiny sizes, under a minute (CI: keeps the bench from rotting;
#                           asserts nothing about timings)
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
exec "${CARGO_TARGET_DIR:-target}/release/e2e" "$@"
