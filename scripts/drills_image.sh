#!/usr/bin/env bash
# Build the prepared image the DR drills (molecule/dr_*) start from, once for all of them:
#   localhost/cepcomunicacion-debian12-prepared:<tag>  FROM the platform image + the reference platform
#       (PostgreSQL with the tiny reference data, media, .env, compose file, the app as a systemd unit),
#       the backup_server role applied, the scheduled jobs run once (the recovery point) and that point's
#       expected state in /var/lib/cepcomunicacion-drill/point.json (molecule/shared/prepared.yml)
# <tag> hashes what makes the image (the platform image, the collection's code and roles, the reference
# platform, molecule/shared/ and this script), so a change to any of them rebuilds it (~2 min);
# unchanged it is reused. Older tags are removed after a build.
#   scripts/drills_image.sh           build when missing, then print the image reference
#   scripts/drills_image.sh --print   print the reference only
# Run by scripts/drills.sh (which exports CONTAINERS_CONF, ANSIBLE_COLLECTIONS_PATH, DRILLS_PLATFORM_IMAGE).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
NAME=localhost/cepcomunicacion-debian12-prepared
BUILDER=cepcomunicacion-drill-prepare

log() { printf 'drills_image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -n ${DRILLS_PLATFORM_IMAGE:-} ]] || die "DRILLS_PLATFORM_IMAGE is not set (run through scripts/drills.sh)"

tag() {
    cd "$ROOT"
    {
        printf '%s\n' "$DRILLS_PLATFORM_IMAGE"
        find plugins roles/backup_server reference_platform molecule/shared scripts/drills_image.sh \
            -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-12
}

TAG=$(tag)
REF=$NAME:$TAG
if [[ ${1:-} == --print ]]; then
    printf '%s\n' "$REF"
    exit 0
fi
if podman image exists "$REF"; then
    printf '%s\n' "$REF"
    exit 0
fi

start=$SECONDS
log "building $REF from $DRILLS_PLATFORM_IMAGE (about 2 minutes)"
podman rm -f "$BUILDER" >/dev/null 2>&1 || true
trap 'podman rm -f "$BUILDER" >/dev/null 2>&1 || true' EXIT
# On podman's default network, not the drills' own: Molecule deletes that one after each scenario and
# cannot while another container is attached.
podman run -d --name "$BUILDER" --hostname cepcomunicacion-drill --systemd=always \
    "$DRILLS_PLATFORM_IMAGE" /sbin/init >/dev/null
logfile=$ROOT/build/drills/prepared-image.log
mkdir -p "$(dirname "$logfile")"
if ! MOLECULE_PROJECT_DIRECTORY=$ROOT ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 \
    "$VENV/bin/ansible-playbook" -i "$BUILDER," -c containers.podman.podman \
    -e ansible_python_interpreter=/usr/bin/python3 -e "@$ROOT/molecule/shared/group_vars/all.yml" \
    "$ROOT/molecule/shared/prepared.yml" >"$logfile" 2>&1; then
    tail -n 40 "$logfile" >&2
    die "preparing the image failed (full log: $logfile)"
fi
podman commit --quiet --change 'CMD ["/sbin/init"]' "$BUILDER" "$REF" >/dev/null
log "built $REF in $((SECONDS - start)) s"
while read -r old; do
    [[ $old == "$REF" ]] && continue
    if podman rmi "$old" >/dev/null 2>&1; then log "removed stale image $old"; fi
done < <(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$NAME" 2>/dev/null)
printf '%s\n' "$REF"
