#!/usr/bin/env bash
# Run Molecule scenarios (the DR drills) on podman: 'make drills' runs them all.
#   scripts/drills.sh                      molecule test for every scenario under molecule/
#   scripts/drills.sh default dr_ransomware  molecule test for the named scenarios
#   scripts/drills.sh -- converge -s default any other molecule command, in the same environment
# Sets up first (scripts/molecule_setup.sh: podman, runc, debootstrap, containers.podman, the
# images), then exports what every podman and molecule call needs. Prints each scenario's time
# and ends with 'drills: N passed, N failed'. Exit 1 when any scenario failed.
# Environment: VENV (default <repo>/.venv), DRILLS_SKIP_SETUP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
cd "$ROOT"

log() { printf 'drills: %s\n' "$*" >&2; }

if [[ ${DRILLS_SKIP_SETUP:-0} != 1 ]]; then
    "$ROOT/scripts/molecule_setup.sh"
fi

# This checkout as the collection cepcomunicacion.backup (same link as 'make collections-link').
mkdir -p "$ROOT/build/collections/ansible_collections/cepcomunicacion"
ln -sfn "$ROOT" "$ROOT/build/collections/ansible_collections/cepcomunicacion/backup"

export PATH=$VENV/bin:$PATH
export CONTAINERS_CONF=$ROOT/molecule/containers.conf
export ANSIBLE_COLLECTIONS_PATH=$ROOT/build/collections:$ROOT/build/ansible_collections_deps
# The images scenarios name in molecule.yml: a bare server, and one with the platform's packages.
DRILLS_BASE_IMAGE=$("$ROOT/scripts/molecule_image.sh" --print base)
DRILLS_PLATFORM_IMAGE=$("$ROOT/scripts/molecule_image.sh" --print platform)
export DRILLS_BASE_IMAGE DRILLS_PLATFORM_IMAGE
# No colours and no progress spinners in logs; molecule must not try Galaxy.
export ANSIBLE_NOCOLOR=1 NO_COLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

if [[ ${1:-} == -- ]]; then
    shift
    exec molecule "$@"
fi

if (($#)); then
    scenarios=("$@")
else
    mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' |
        sed 's|^molecule/||' | sort)
fi
((${#scenarios[@]})) || { log "no scenarios under molecule/"; exit 1; }

passed=0
failed=0
summary=()
for scenario in "${scenarios[@]}"; do
    start=$SECONDS
    log "molecule test -s $scenario"
    if molecule test -s "$scenario"; then
        passed=$((passed + 1))
        summary+=("$scenario: passed in $((SECONDS - start)) s")
    else
        failed=$((failed + 1))
        summary+=("$scenario: FAILED after $((SECONDS - start)) s")
    fi
done
for line in "${summary[@]}"; do log "$line"; done
# Leftovers of a failed destroy would hold the images; say so rather than hide them.
leftover=$(podman ps -a --filter label=owner=molecule --format '{{.Names}}')
[[ -z $leftover ]] || log "WARNING: molecule containers left behind: $leftover"
echo "drills: $passed passed, $failed failed"
((failed == 0))
