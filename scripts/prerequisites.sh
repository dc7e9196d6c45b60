# Installs what the platform needs on a Debian machine, skipping what is present.
# Sourced by run-local.sh and test.sh.

PG_BIN_DIR="${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
NATS_SERVER_BIN="${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_prerequisites() {
    local missing=()
    [ -x "$NATS_SERVER_BIN" ] || missing+=(nats-server)
    [ -x "$PG_BIN_DIR/initdb" ] || missing+=(postgresql-15)
    command -v curl >/dev/null || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing ${missing[*]} from Debian's packages..."
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        NATS_SERVER_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
    fi
    if ! command -v cargo >/dev/null; then
        echo "cargo not found: install Rust (1.89 or newer) with rustup first." >&2
        exit 1
    fi
    export NATS_SERVER_BIN PG_BIN_DIR
}

install_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        echo "Installing cargo-nextest from crates.io..."
        cargo install --locked cargo-nextest
    fi
}

# A command that runs as the `postgres` user when we are root (PostgreSQL refuses root).
as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}
