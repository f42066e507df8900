#!/usr/bin/env bash
# What `make bench` needs beyond the test venv, installed only when missing; a second run takes about a second.
#   1. Debian's pgbackrest package (the peer of the pgbackrest section), via apt-get.
#   2. bench/requirements.txt (matplotlib, for the chart) into the venv.
# Environment: VENV (default <repo>/.venv), BENCH_SKIP_APT=1 (fail instead of installing packages).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}

log() { printf 'bench setup: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x $VENV/bin/python ]] || die "no venv at $VENV: run 'make venv' first"

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "not root and sudo is missing; run as root or install sudo"
    SUDO=(sudo)
fi

if ! command -v pgbackrest >/dev/null; then
    [[ ${BENCH_SKIP_APT:-0} == 1 ]] && die "pgbackrest is missing (BENCH_SKIP_APT=1, so not installing it)"
    command -v apt-get >/dev/null || die "pgbackrest is missing and there is no apt-get; install pgBackRest by hand"
    log "apt-get install pgbackrest"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold pgbackrest
fi

if ! "$VENV/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
    log "installing bench/requirements.txt into $VENV"
    # This machine's pip.conf may name local indexes that are absent; pip's warnings about them are dropped.
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$ROOT/bench/requirements.txt" \
        2> >(grep -v "^WARNING: Location 'file:.*' is ignored" >&2)
fi

log "ready: $(pgbackrest version), matplotlib $("$VENV/bin/python" -c 'import matplotlib; print(matplotlib.__version__)')"
