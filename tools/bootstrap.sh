#!/usr/bin/env bash
# Install whatever is missing on a Debian bookworm machine, then optionally run something.
#
#   tools/bootstrap.sh          set up only
#   tools/bootstrap.sh demo     set up, then `nox -s demo` (build, boot 6.1, real work on a queue)
#   tools/bootstrap.sh test     set up, then `nox` (what CI runs: lint, unit, docs, build, and the VM
#                               suite on 6.1, 6.12 and the debug kernel, built in the background)
#
# Steps (each skipped when already done, so a second run costs seconds):
#   1. apt: bookworm-backports source (copied from the machine's own bookworm source) and
#      the Debian packages of tools/kernels.py APT_PACKAGES           (root, or sudo)
#   2. .venv: tools/requirements.txt + `pip install -e userlib`, on the system's python3
#   3. kernels: Debian 6.1 and 6.12, unpacked once per user under ~/.cache/wrapdrive and
#      linked from .cache/kernels (tools/build.py kernels)
# Every command has a time limit; the tools give every process they start the PATH it
# needs (the venv's bin first), so the caller's PATH does not matter.
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-setup}"
case "$action" in setup|demo|test) ;; *) echo "usage: $0 [setup|demo|test]" >&2; exit 2 ;; esac

log() { echo "[bootstrap] $*"; }
# limited [-q] SECONDS CMD...: CMD with a time limit, and one clear line when it fails
# (-q: CMD is one of our tools, which prints that line itself)
limited() {
    local quiet=""; [ "$1" = -q ] && { quiet=1; shift; }
    local limit=$1; shift
    local rc=0
    timeout --kill-after=30 "$limit" "$@" || rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        log "ERROR: '$*' did not finish within ${limit}s"; exit 1
    elif [ "$rc" != 0 ]; then
        [ -n "$quiet" ] || log "ERROR: '$*' failed (exit $rc)"
        exit "$rc"
    fi
}
t0=$(date +%s)

sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then sudo="sudo"; else sudo=""; fi
fi

# 1. Debian packages (tools/build.py deps uses only the standard library of the system python3)
pybase=$(command -v python3 || true)
if [ -z "$pybase" ]; then
    log "python3 missing: installing it"
    limited 900 $sudo apt-get update -q
    limited 1800 $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y python3
    pybase=$(command -v python3)
fi
limited -q 7200 $sudo "$pybase" tools/build.py deps
t1=$(date +%s); log "debian packages: $((t1 - t0))s"

# 2. the project's venv
stamp=.venv/.wd-stamp
want=$( (cat tools/requirements.txt userlib/pyproject.toml; readlink -f "$pybase"; "$pybase" -V) | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "creating .venv with $pybase ($("$pybase" -V))"
    limited 300 "$pybase" -m venv --clear .venv
    limited 900 .venv/bin/python -m pip install -q --upgrade pip
    limited 1800 .venv/bin/python -m pip install -q -r tools/requirements.txt
    limited 900 .venv/bin/python -m pip install -q -e userlib
    echo "$want" > "$stamp"
fi
t2=$(date +%s); log "python venv: $((t2 - t1))s"

# 3. kernels
limited -q 3600 .venv/bin/python tools/build.py kernels
t3=$(date +%s); log "kernels: $((t3 - t2))s; setup total $((t3 - t0))s"

case "$action" in
    demo) exec .venv/bin/nox -s demo ;;
    test) exec .venv/bin/nox ;;
esac
