#!/usr/bin/env bash
# Run ansible-test on this collection: scripts/ansible_test.sh <sanity|units> [ansible-test options]
#
# ansible-test insists on a tree that sits physically at .../ansible_collections/<namespace>/<name>
# (a symlink does not do), and a clone may live anywhere, so the tree is mirrored into
# build/ansible_collections/cepcomunicacion/backup first. .git is copied too: ansible-test looks
# for .git upwards from the collection, and without a copy it would find this repository's own
# .git, in which build/ is ignored, and test nothing. With it, ansible-test lists files with
# 'git ls-files --cached --others --exclude-standard', so files not yet committed (but not
# ignored) are tested too. Results are copied back to tests/output/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
DEST=$ROOT/build/ansible_collections/cepcomunicacion/backup
PYTHON_VERSION=3.11

usage() { echo "usage: $0 <sanity|units> [ansible-test options]" >&2; exit 2; }
(($#)) || usage
command=$1
shift
case $command in
    sanity | units) ;;
    *) usage ;;
esac

[[ -x $VENV/bin/ansible-test ]] || { echo "ansible_test.sh: $VENV/bin/ansible-test missing; run 'make venv'" >&2; exit 1; }

if [[ $command == units ]] && ! find "$ROOT/tests/unit" -name 'test_*.py' -print -quit 2>/dev/null | grep -q .; then
    echo "ansible_test.sh: no unit tests under tests/unit; nothing to run"
    exit 0
fi

mkdir -p "$DEST"
# One run at a time: two runs mirroring into the same copy give each other wrong results, so a
# second run waits here for the first.
exec 9>"$ROOT/build/ansible_test.lock"
flock 9
# Excluded paths are also protected from --delete, so ansible-test's own tests/output in the copy
# (sanity caches) survives between runs.
rsync -a --delete \
    --exclude=/.venv/ \
    --exclude=/build/ \
    --exclude=/.cache/ \
    --exclude=/tests/output/ \
    --exclude=/bench/output/ \
    --exclude=__pycache__/ \
    --exclude=.pytest_cache/ \
    --exclude='*.pyc' \
    --exclude='/*.tar.gz' \
    "$ROOT"/ "$DEST"/

copy_back() {
    if [[ -d $DEST/tests/output ]]; then
        mkdir -p "$ROOT/tests/output"
        rsync -a "$DEST/tests/output/" "$ROOT/tests/output/"
    fi
}
trap copy_back EXIT

# The venv first on PATH: ansible-test --local then finds python3.11 (and pytest) there.
export PATH=$VENV/bin:$PATH
cd "$DEST"
ansible-test "$command" --python "$PYTHON_VERSION" --local --color no "$@"
