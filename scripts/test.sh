#!/usr/bin/env bash
# Runs every test of the workspace against real nats-server and PostgreSQL binaries
# (each test starts its own on free loopback ports), after the format and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prerequisites.sh
install_prerequisites
install_nextest
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --no-fail-fast "$@"
