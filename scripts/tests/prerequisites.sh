#!/usr/bin/env bash
# Tests pick_postgres_major (scripts/prerequisites.sh): which PostgreSQL major the scripts
# use, given the majors installed (stub bin/ directories) and those apt can install (a stub
# apt-cache first on PATH). Only 15 runs on our CI machines (Debian 12); this is what
# covers 16 and 17. Run by scripts/test.sh; no root, no network.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/prerequisites.sh

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin"
# apt-cache show --no-all-versions postgresql-N: a record for the names in APT_PACKAGES,
# apt's "No packages found" and status 100 for any other.
cat >"$WORK/bin/apt-cache" <<'STUB'
#!/usr/bin/env bash
name="${*: -1}"
for known in $APT_PACKAGES; do
    if [ "$known" = "$name" ]; then
        printf 'Package: %s\nVersion: 1.0-stub\n\n' "$name"
        exit 0
    fi
done
echo "E: No packages found" >&2
exit 100
STUB
chmod +x "$WORK/bin/apt-cache"
PATH="$WORK/bin:$PATH"

failures=0
# case NAME INSTALLED_MAJORS APT_PACKAGES EXPECTED: EXPECTED is a major, or "error" when
# pick_postgres_major must fail with a message that says what to do.
case_() {
    local name="$1" installed="$2" expected="$4" major status=0 root
    root="$WORK/$name"
    mkdir -p "$root"
    for major in $installed; do
        mkdir -p "$root/$major/bin"
        printf '#!/bin/sh\n' >"$root/$major/bin/initdb"
        chmod +x "$root/$major/bin/initdb"
    done
    major="$(PG_LIB_ROOT="$root" APT_PACKAGES="$3" pick_postgres_major 2>"$root.err")" || status=$?
    if [ "$expected" = error ]; then
        if [ "$status" = 0 ] || ! grep -q "PG_BIN_DIR" "$root.err"; then
            echo "FAIL $name: expected an error naming PG_BIN_DIR, got status $status," \
                "output '$major', message '$(cat "$root.err")'" >&2
            failures=$((failures + 1))
            return
        fi
    elif [ "$status" != 0 ] || [ "$major" != "$expected" ]; then
        echo "FAIL $name: expected $expected, got '$major' (status $status): $(cat "$root.err")" >&2
        failures=$((failures + 1))
        return
    fi
    echo "ok   $name -> $expected"
}

case_ 15-installed "15" "postgresql-15 postgresql-17" 15
case_ 17-installed "17" "postgresql-17" 17
case_ 16-and-17-installed "16 17" "" 17
case_ 14-is-not-one-we-take "14" "postgresql-16" 16
case_ none-installed-17-installable "" "postgresql-15 postgresql-17" 17
case_ none-installed-16-installable "" "postgresql-16 postgresql-client" 16
case_ nothing "" "" error
case_ only-14-anywhere "14" "postgresql-14" error

if [ "$failures" != 0 ]; then
    echo "pick_postgres_major: $failures case(s) failed" >&2
    exit 1
fi
echo "pick_postgres_major: all cases pass"
