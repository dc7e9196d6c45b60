#!/usr/bin/env bash
# Runs every test of the workspace against real nats-server, PostgreSQL, Prometheus and
# Chromium binaries (each test starts its own on free loopback ports), after the format,
# lint and Prometheus rule checks and the test of which PostgreSQL major the scripts pick.
set -euo pipefail
cd "$(dirname "$0")/.."
# With UPDATE_OPENAPI the OpenAPI drift tests rewrite the committed openapi.json instead of
# failing on a difference: a run that would pass whatever the documents say.
if [ -n "${UPDATE_OPENAPI+set}" ]; then
    echo "UPDATE_OPENAPI is set: the tests would rewrite the committed OpenAPI documents" \
        "instead of checking them. Unset it (use it only with the one test that rewrites," \
        "as its failure message says)." >&2
    exit 2
fi
. scripts/prerequisites.sh
. scripts/prometheus.sh
install_prerequisites
install_chromium
install_nextest
install_prometheus
check_prometheus_rules
scripts/tests/prerequisites.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --no-fail-fast "$@"
