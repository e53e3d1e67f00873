#!/usr/bin/env bash
# Install whatever is missing on a Debian bookworm machine, then optionally run something.
#
#   tools/bootstrap.sh          set up only
#   tools/bootstrap.sh demo     set up, then `nox -s demo` (build, boot 6.1, real work on a queue)
#   tools/bootstrap.sh test     set up, then `nox` (lint, unit, build, vm-6.1, vm-6.12: what CI runs)
#
# Steps (each skipped when already done, so a second run costs seconds):
#   1. apt: bookworm-backports source (copied from the machine's own bookworm source) and
#      the Debian packages of tools/kernels.py APT_PACKAGES           (root, or sudo)
#   2. .venv: tools/requirements.txt + `pip install -e userlib`
#   3. kernels: Debian 6.1 and 6.12 unpacked into .cache/kernels (tools/build.py kernels)
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-setup}"
case "$action" in setup|demo|test) ;; *) echo "usage: $0 [setup|demo|test]" >&2; exit 2 ;; esac

log() { echo "[bootstrap] $*"; }
t0=$(date +%s)

sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then sudo="sudo"; else sudo=""; fi
fi

# 1. Debian packages (tools/build.py deps uses only the standard library of the system python3)
pybase=$(command -v python3 || true)
if [ -z "$pybase" ]; then
    log "python3 missing: installing it"
    $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y python3
    pybase=$(command -v python3)
fi
$sudo "$pybase" tools/build.py deps
t1=$(date +%s); log "debian packages: $((t1 - t0))s"

# 2. the project's venv
stamp=.venv/.wd-stamp
want=$(cat tools/requirements.txt userlib/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "creating .venv"
    "$pybase" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r tools/requirements.txt
    .venv/bin/python -m pip install -q -e userlib
    echo "$want" > "$stamp"
fi
t2=$(date +%s); log "python venv: $((t2 - t1))s"

# 3. kernels
.venv/bin/python tools/build.py kernels
t3=$(date +%s); log "kernels: $((t3 - t2))s; setup total $((t3 - t0))s"

case "$action" in
    demo) exec .venv/bin/nox -s demo ;;
    test) exec .venv/bin/nox ;;
esac
