#!/usr/bin/env bash
# Build the local Debian 12 images the Molecule scenarios boot (no registry is reachable here).
#   localhost/cepcomunicacion-debian12-base:<tag>      debootstrap minbase + systemd + python3:
#                                                     a bare server, nothing of the platform's
#   localhost/cepcomunicacion-debian12-platform:<tag>  FROM base + PostgreSQL 15 server and client,
#                                                     psycopg2, rsync, zstd, curl (one prepared
#                                                     image shared by every scenario)
# Each <tag> is a hash of what makes that image: the base's package list, build code, mirror and
# suite; the platform's package list, build code and the base's tag. Unchanged, the images are
# reused (~0.1 s); a change rebuilds only what it affects (base ~2.5 min, platform ~45 s).
# Older tags of the two images are removed after a build.
#   scripts/molecule_image.sh                  build what is missing; nothing on stdout
#   scripts/molecule_image.sh --print base     print the base image's reference (no build)
#   scripts/molecule_image.sh --print platform print the platform image's reference (no build)
# Environment: CONTAINERS_CONF (default molecule/containers.conf), DEBIAN_MIRROR (default: the
# first Debian URI in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list), SUITE=bookworm.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/molecule/containers.conf}
SUITE=${SUITE:-bookworm}
BASE_NAME=localhost/cepcomunicacion-debian12-base
PLATFORM_NAME=localhost/cepcomunicacion-debian12-platform

# What a bare server has: enough for systemd to boot and Ansible to connect.
BASE_PACKAGES=(python3 systemd systemd-sysv dbus cron sudo ca-certificates python3-apt procps iproute2)
# What the platform's server has before the collection touches it (installed in every drill).
PLATFORM_PACKAGES=(postgresql-15 postgresql-client-15 python3-psycopg2 rsync zstd curl)

log() { printf 'molecule_image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

debian_mirror() {
    local uri
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "$DEBIAN_MIRROR"
        return
    fi
    # deb822 sources first (Debian 12's default), then one-line sources; skip -security suites.
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z $uri ]]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
            /etc/apt/sources.list 2>/dev/null || true)
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

image_exists() { podman image exists "$1"; }

remove_old_tags() {
    # Drop other tags of our image name (stale builds); ignore failures (an image in use stays).
    local name=$1 keep=$2 ref
    while read -r ref; do
        [[ $ref == "$name:$keep" ]] && continue
        log "removing stale image $ref"
        podman rmi "$ref" >/dev/null 2>&1 || log "could not remove $ref (in use?); left in place"
    done < <(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$name" 2>/dev/null)
}

build_base() {
    local rootfs start=$SECONDS
    command -v debootstrap >/dev/null || die "debootstrap is missing; run scripts/molecule_setup.sh"
    rootfs=$(mktemp -d /var/tmp/cepcomunicacion-rootfs.XXXXXX)
    # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
    trap "rm -rf '$rootfs'" EXIT
    log "debootstrap $SUITE from $MIRROR (about a minute)"
    local include
    include=$(IFS=,; printf '%s' "${BASE_PACKAGES[*]}")
    debootstrap --variant=minbase --include="$include" \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || {
        tail -n 30 "$rootfs.log" >&2
        die "debootstrap failed (full log: $rootfs.log)"
    }
    rm -f "$rootfs.log"
    # Same suites inside as on the host: updates and security, so package versions match.
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
EOF
    # A container image: no machine id (systemd makes one at boot), no host names, no apt cache,
    # no units that need real hardware or a console.
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs/etc/hostname"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    local unit
    for unit in getty.target systemd-udevd.service systemd-udev-trigger.service \
        systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
        systemd-remount-fs.service; do
        ln -sfn /dev/null "$rootfs/etc/systemd/system/$unit"
    done
    tar -C "$rootfs" --numeric-owner -c . |
        podman import --quiet --change 'CMD ["/sbin/init"]' --change 'ENV LANG=C.UTF-8' \
            --change 'STOPSIGNAL SIGRTMIN+3' - "$BASE_NAME:$BASE_TAG" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    log "built $BASE_NAME:$BASE_TAG in $((SECONDS - start)) s"
}

build_platform() {
    local ctx start=$SECONDS
    ctx=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the trap must remove this very directory
    trap "rm -rf '$ctx'" EXIT
    # policy-rc.d keeps the postgresql postinst from starting a server inside the build; the
    # cluster 15/main is created (UTF-8, LANG=C.UTF-8) and starts under systemd when a container boots.
    cat >"$ctx/Containerfile" <<EOF
FROM $BASE_NAME:$BASE_TAG
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \\
 && apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${PLATFORM_PACKAGES[*]} >/dev/null \\
 && rm -f /usr/sbin/policy-rc.d \\
 && apt-get clean
CMD ["/sbin/init"]
EOF
    log "building $PLATFORM_NAME:$PLATFORM_TAG (installs ${PLATFORM_PACKAGES[*]})"
    podman build --quiet --pull=never --network=host -t "$PLATFORM_NAME:$PLATFORM_TAG" "$ctx" >/dev/null
    rm -rf "$ctx"
    trap - EXIT
    log "built $PLATFORM_NAME:$PLATFORM_TAG in $((SECONDS - start)) s"
}

MIRROR=$(debian_mirror)
# declare -f prints a function's code without comments: editing prose does not force a rebuild.
hash12() { sha256sum | cut -c1-12; }
BASE_TAG=$({ declare -p BASE_PACKAGES; declare -f build_base; printf '%s %s\n' "$MIRROR" "$SUITE"; } | hash12)
PLATFORM_TAG=$({ declare -p PLATFORM_PACKAGES; declare -f build_platform; printf '%s\n' "$BASE_TAG"; } | hash12)

case ${1:-} in
    --print)
        case ${2:-} in
            base) printf '%s:%s\n' "$BASE_NAME" "$BASE_TAG" ;;
            platform) printf '%s:%s\n' "$PLATFORM_NAME" "$PLATFORM_TAG" ;;
            *) die "usage: $0 [--print base|platform]" ;;
        esac
        exit 0
        ;;
    '') ;;
    *) die "usage: $0 [--print base|platform]" ;;
esac

built=0
if image_exists "$BASE_NAME:$BASE_TAG"; then
    log "$BASE_NAME:$BASE_TAG is cached"
else
    build_base
    built=1
fi
if image_exists "$PLATFORM_NAME:$PLATFORM_TAG"; then
    log "$PLATFORM_NAME:$PLATFORM_TAG is cached"
else
    build_platform
    built=1
fi
if ((built)); then
    # Children before parents: an old platform image holds its old base.
    remove_old_tags "$PLATFORM_NAME" "$PLATFORM_TAG"
    remove_old_tags "$BASE_NAME" "$BASE_TAG"
fi
