# Prometheus (with promtool) from Debian's packages, for the observability test
# (worker/tests/observability) and the rule checks. Sourced by scripts/test.sh:
#
#     . scripts/prometheus.sh
#     install_prometheus
#     check_prometheus_rules
#
# The test finds the binaries through PATH or PROMETHEUS_BIN / PROMTOOL_BIN, and fails
# without them (a dashboard test that passed unchecked would hide broken panels).

_prometheus_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_prometheus() {
    if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
        return 0
    fi
    echo "Installing prometheus (with promtool) from Debian's packages..."
    _prometheus_as_root apt-get update -qq
    # --no-install-recommends: the exporters it recommends are not needed (and would
    # start services on a machine with systemd).
    _prometheus_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    command -v prometheus >/dev/null && command -v promtool >/dev/null
}

# Offline syntax check of the config and every rule file, plus the alert unit tests.
check_prometheus_rules() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    promtool check config "$root/prometheus/prometheus.yml" || return 1
    promtool check rules "$root"/prometheus/rules/*.yml || return 1
    promtool test rules "$root"/prometheus/tests/*.yml || return 1
}
