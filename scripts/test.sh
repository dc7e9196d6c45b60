#!/usr/bin/env bash
# Runs every test of the workspace against real nats-server, PostgreSQL and Prometheus
# binaries (each test starts its own on free loopback ports), after the format, lint and
# Prometheus rule checks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/prerequisites.sh
. scripts/prometheus.sh
install_prerequisites
install_nextest
install_prometheus
check_prometheus_rules
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --no-fail-fast "$@"
