#!/usr/bin/env bash
# Prepare this machine for the Molecule drills (make drills). Idempotent; a warm run takes ~2 s.
#   1. Debian packages: podman with runc (crun fails here), debootstrap for the image build.
#   2. The collections Molecule needs at test time (containers.podman), unpacked from the
#      'ansible' wheel on PyPI into build/ansible_collections_deps/ (Galaxy is not reachable).
#   3. The local container images (scripts/molecule_image.sh), cached by tag.
# Run scripts/bootstrap.sh first (it installs requirements/drills.txt into .venv).
# Environment: VENV (default <repo>/.venv), SETUP_SKIP_APT=1, SETUP_SKIP_IMAGES=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
DEPS_DIR=$ROOT/build/ansible_collections_deps
# The collections unpacked from the wheel; 'ansible' 12.x ships containers.podman 1.17+.
DEPS_COLLECTIONS=(containers/podman)
ANSIBLE_WHEEL_SPEC='ansible>=12,<13'

log() { printf 'molecule_setup: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root: podman runs rootful containers for the drills"
[[ -x $VENV/bin/molecule ]] || die "$VENV/bin/molecule is missing; run scripts/bootstrap.sh (make venv) first"

# --- 1. Debian packages -------------------------------------------------------------------------
# podman depends on 'crun | runc': name runc so apt does not pick crun. containernetworking-plugins
# and iptables give rootful podman its bridge network (the containers reach the Debian mirror).
APT_PACKAGES=(podman runc conmon containernetworking-plugins iptables catatonit uidmap debootstrap)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == "ii "* ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    [[ ${SETUP_SKIP_APT:-0} == 1 ]] && die "missing Debian packages: ${missing[*]} (SETUP_SKIP_APT=1)"
    log "apt-get install ${missing[*]}"
    env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
fi

export CONTAINERS_CONF=$ROOT/molecule/containers.conf
podman info --format '{{.Host.OCIRuntime.Name}}' | grep -qx runc ||
    die "podman does not use runc; check CONTAINERS_CONF=$CONTAINERS_CONF"

# --- 2. Test-time collections -------------------------------------------------------------------
stamp=$DEPS_DIR/.unpacked-from
want="$ANSIBLE_WHEEL_SPEC ${DEPS_COLLECTIONS[*]}"
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    wheel_dir=$(mktemp -d)
    trap 'rm -rf "$wheel_dir"' EXIT
    log "downloading the $ANSIBLE_WHEEL_SPEC wheel to unpack ${DEPS_COLLECTIONS[*]}"
    "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps \
        --only-binary=:all: -d "$wheel_dir" "$ANSIBLE_WHEEL_SPEC" \
        2> >(grep -v "^WARNING: Location 'file:.*' is ignored" >&2)
    wheel=$(find "$wheel_dir" -name 'ansible-*.whl' -print -quit)
    [[ -n $wheel ]] || die "pip download produced no ansible wheel"
    rm -rf "$DEPS_DIR"
    mkdir -p "$DEPS_DIR"
    "$VENV/bin/python" - "$wheel" "$DEPS_DIR" "${DEPS_COLLECTIONS[@]}" <<'PYEOF'
"""Unpack only the named collections (namespace/name) from the ansible wheel."""
import sys
import zipfile

wheel, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
prefixes = tuple('ansible_collections/%s/' % name for name in wanted)
with zipfile.ZipFile(wheel) as archive:
    members = [m for m in archive.namelist() if m.startswith(prefixes)]
    for name in wanted:
        if not any(m.startswith('ansible_collections/%s/' % name) for m in members):
            sys.exit('collection %s is not in %s' % (name, wheel))
    archive.extractall(dest, members)
PYEOF
    printf '%s\n' "$want" >"$stamp"
    rm -rf "$wheel_dir"
    trap - EXIT
fi

# --- 3. Images ----------------------------------------------------------------------------------
if [[ ${SETUP_SKIP_IMAGES:-0} != 1 ]]; then
    "$ROOT/scripts/molecule_image.sh"
fi
log "ready: $(podman --version), collections in ${DEPS_DIR#"$ROOT"/}"
