#!/usr/bin/env bash
# Prepare this machine for the collection's tests. Idempotent; a second run takes about a second.
#   1. Debian packages the tests need (installed only when missing).
#   2. .venv (Python 3.11) with requirements/*.txt (skipped while the requirements' hash is unchanged).
#   3. An offline stand-in for the get-pip script ansible-test downloads when it bootstraps its venvs.
# Environment: VENV (default <repo>/.venv), PYTHON (force an interpreter), BOOTSTRAP_SKIP_APT=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
REQUIREMENTS=("$ROOT"/requirements/*.txt)
STAMP=$VENV/.bootstrap-requirements.sha256

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "not root and sudo is missing; run as root or install sudo"
    SUDO=(sudo)
fi

apt_updated=0
apt_install() {
    # Install the given Debian packages; run 'apt-get update' at most once per run.
    if [[ ${BOOTSTRAP_SKIP_APT:-0} == 1 ]]; then
        die "missing Debian packages: $* (BOOTSTRAP_SKIP_APT=1, so not installing them)"
    fi
    command -v apt-get >/dev/null || die "missing packages $* and no apt-get; install them by hand"
    if [[ $apt_updated == 0 ]]; then
        log "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

missing_packages() {
    # Print those of the given packages that are not fully installed.
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [[ $status == "ii "* ]] || printf '%s\n' "$pkg"
    done
}

# --- 1. Debian packages -------------------------------------------------------------------------
# Without the shellcheck package, ansible-test sanity skips its shellcheck test of scripts/*.sh.
# docker-compose (1.29, Docker API client): the docker_corruption drill drives podman's Docker-compatible API with it.
APT_PACKAGES=(python3 python3-psycopg2 python3-boto3 postgresql-15 postgresql-client-15 rsync zstd tar util-linux shellcheck rsnapshot cron age acl docker-compose)
if command -v dpkg-query >/dev/null; then
    mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
        if printf '%s\n' "${missing[@]}" | grep -qx postgresql-15; then
            # Tests start throwaway clusters of their own; the Debian-created system cluster stays down.
            "${SUDO[@]}" pg_ctlcluster 15 main stop 2>/dev/null || true
        fi
    fi
else
    log "no dpkg-query: not a Debian system, assuming ${APT_PACKAGES[*]} are present"
fi

# --- 2. Python 3.11 and .venv ------------------------------------------------------------------
is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }

pick_python() {
    local candidate
    if [[ -n ${PYTHON:-} ]]; then
        is_py311 "$PYTHON" || die "PYTHON=$PYTHON is not a working Python 3.11"
        candidate=$PYTHON
    else
        for candidate in python3.11 python3 /usr/bin/python3.11; do
            command -v "$candidate" >/dev/null && is_py311 "$candidate" && break
            candidate=
        done
        [[ -n $candidate ]] || die "no Python 3.11 found (tried python3.11, python3, /usr/bin/python3.11)"
    fi
    # Resolve pyenv shims and the like to the real interpreter, so the venv does not depend on them.
    "$candidate" -c 'import sys; print(sys.executable)'
}

requirements_hash() {
    { "$VENV/bin/python" -c 'import sys; print(sys.version)'; cat "${REQUIREMENTS[@]}"; } | sha256sum | cut -d' ' -f1
}

if [[ -x $VENV/bin/python ]] && is_py311 "$VENV/bin/python"; then
    : # reuse the existing venv
else
    PY=$(pick_python)
    if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        log "$PY cannot create virtual environments"
        apt_install python3-venv
    fi
    [[ -e $VENV ]] && { log "removing unusable $VENV"; rm -rf "$VENV"; }
    log "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi

want=$(requirements_hash)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
    log "installing ${REQUIREMENTS[*]#"$ROOT"/} into $VENV"
    pip_args=()
    for req in "${REQUIREMENTS[@]}"; do pip_args+=(-r "$req"); done
    # This machine's pip.conf names local indexes that may be absent; pip then warns once per
    # package ("Location 'file:///...' is ignored"). Those lines are dropped; other output stays.
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${pip_args[@]}" \
        2> >(grep -v "^WARNING: Location 'file:.*' is ignored" >&2)
    printf '%s\n' "$want" >"$STAMP"
fi

# --- 3. ansible-test get-pip stand-in -----------------------------------------------------------
# ansible-test creates its venvs with --without-pip and runs get-pip-<pip version>.py, which it
# downloads from a host that is not reachable here. It first looks in the cache path below
# (ansible_test/_util/target/setup/requirements.py), so a stand-in placed there works offline.
CACHE_DIR=$HOME/.ansible/test/cache
ANSIBLE_TEST_DIR=$("$VENV/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
# The pip versions ansible-test asks for (get_venv_packages in _internal/python_requirements.py).
mapfile -t pip_versions < <(grep -ohE "pip(=|': *)'[0-9][0-9.]*'" "$ANSIBLE_TEST_DIR/_internal/python_requirements.py" |
    grep -oE "[0-9][0-9.]*" | sort -u)
((${#pip_versions[@]})) || die "could not find the pip version ansible-test wants in $ANSIBLE_TEST_DIR"

read -r -d '' GET_PIP_STANDIN <<'PYEOF' || true
"""Offline stand-in for get-pip.py, written by scripts/bootstrap.sh for ansible-test.

ensurepip installs the pip wheel bundled with this Python, then pip upgrades itself to the
version ansible-test asked for, using this machine's normal pip settings (index, certificate).
"""
import ensurepip
import os
import subprocess
import sys

# Options of get-pip.py that 'pip install' does not know.
GET_PIP_ONLY_OPTIONS = {'--no-setuptools', '--no-wheel', '--no-pip'}


def main():
    saved_environ = dict(os.environ)
    try:
        # ensurepip deletes every PIP_* variable and sets PIP_CONFIG_FILE=/dev/null, which would
        # hide /etc/pip.conf, /etc/xdg/pip/pip.conf and ~/.config/pip/pip.conf from the next step.
        ensurepip.bootstrap(upgrade=True)
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install', '--upgrade'] + args))


if __name__ == '__main__':
    main()
PYEOF

mkdir -p "$CACHE_DIR"
for version in "${pip_versions[@]}"; do
    target=$CACHE_DIR/get_pip_${version//./_}.py
    if ! cmp -s "$target" <(printf '%s\n' "$GET_PIP_STANDIN"); then
        log "writing ansible-test get-pip stand-in $target"
        printf '%s\n' "$GET_PIP_STANDIN" >"$target.tmp"
        mv -f "$target.tmp" "$target"
    fi
done

log "ready: $VENV ($("$VENV/bin/python" --version), $("$VENV/bin/ansible" --version | head -n1))"
