#!/usr/bin/env bash
# Run Molecule scenarios (the DR drills) on podman: 'make drills' runs them all.
#   scripts/drills.sh                      molecule test for every scenario under molecule/
#   scripts/drills.sh default dr_ransomware  molecule test for the named scenarios
#   scripts/drills.sh -- converge -s default any other molecule command, in the same environment
# Sets up first (scripts/molecule_setup.sh: podman, runc, debootstrap, containers.podman, the
# images), then exports what every podman and molecule call needs. The DR drills on containers also
# get the drills' podman network, the prepared image (scripts/drills_image.sh) and a fresh S3 peer
# per scenario (scripts/drills_peer.py, stopped after it). Prints each scenario's time (and a DR
# drill's RTO) and ends with 'drills: N passed, N failed'. Exit 1 when any scenario failed.
# Environment: VENV (default <repo>/.venv), DRILLS_SKIP_SETUP=1, DRILLS_PREPARED_IMAGE (pin an image).
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


# The DR drills on containers share the drills' own podman network (its gateway is where the S3 peer
# listens) and one prepared image (built once, cached by tag); set both up only when a chosen scenario
# uses them. DRILLS_PREPARED_IMAGE set by the caller pins an image (while the code it hashes is edited).
PEER=("$VENV/bin/python" "$ROOT/scripts/drills_peer.py")
# One drills run at a time on this machine: they share the network, the peer's port and its pid file.
mkdir -p "$ROOT/build/drills"
exec 8>"$ROOT/build/drills/drills.lock"
if ! flock -n 8; then
    log "another drills run holds build/drills/drills.lock; waiting for it"
    flock 8
fi
uses() { grep -q -- "$2" "$ROOT/molecule/$1/molecule.yml"; }
DRILLS_S3_ENDPOINT=http://10.89.77.1:18766
export DRILLS_S3_ENDPOINT
# Whatever happens, no S3 peer outlives this script.
trap '"${PEER[@]}" stop' EXIT
setup_shared() {
    local scenario need_network=0 need_image=0
    for scenario in "$@"; do
        uses "$scenario" cepcomunicacion-drills && need_network=1
        uses "$scenario" DRILLS_PREPARED_IMAGE && need_image=1
    done
    if ((need_network)); then "${PEER[@]}" network; fi
    if ((need_image)) && [[ -z ${DRILLS_PREPARED_IMAGE:-} ]]; then
        DRILLS_PREPARED_IMAGE=$("$ROOT/scripts/drills_image.sh")
    fi
    export DRILLS_PREPARED_IMAGE=${DRILLS_PREPARED_IMAGE:-unused}
}

if [[ ${1:-} == -- ]]; then
    shift
    mapfile -t all < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | sed 's|^molecule/||')
    setup_shared "${all[@]}"
    "${PEER[@]}" start >/dev/null
    molecule "$@"
    exit
fi

if (($#)); then
    scenarios=("$@")
else
    mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' |
        sed 's|^molecule/||' | sort)
fi
((${#scenarios[@]})) || { log "no scenarios under molecule/"; exit 1; }
setup_shared "${scenarios[@]}"

passed=0
failed=0
summary=()
for scenario in "${scenarios[@]}"; do
    start=$SECONDS
    log "molecule test -s $scenario"
    # A fresh, empty S3 peer for each scenario that uses it: no scenario sees another's objects.
    if uses "$scenario" cepcomunicacion-drills; then "${PEER[@]}" start >/dev/null; fi
    if molecule test -s "$scenario"; then
        passed=$((passed + 1))
        summary+=("$scenario: passed in $((SECONDS - start)) s")
    else
        failed=$((failed + 1))
        summary+=("$scenario: FAILED after $((SECONDS - start)) s")
    fi
    "${PEER[@]}" stop
    # The recovery time each DR drill measured (the report's figure), for the summary.
    rto=$(cat "$ROOT/build/drills/$scenario.rto" 2>/dev/null || true)
    [[ -z $rto ]] || summary[-1]+=", RTO $rto s"
done
for line in "${summary[@]}"; do log "$line"; done
# Leftovers of a failed destroy would hold the images; say so rather than hide them.
leftover=$(podman ps -a --filter label=owner=molecule --format '{{.Names}}')
[[ -z $leftover ]] || log "WARNING: molecule containers left behind: $leftover"
echo "drills: $passed passed, $failed failed"
((failed == 0))
