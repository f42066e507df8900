# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move files aside into a quarantine directory, keeping their absolute paths below it (never deletes).

Run by the recovery role's quarantine.yml as ``python3 -c <this file>`` with a JSON request on stdin:
``{"quarantine": "/var/backups/cepcomunicacion-quarantine/20261129T091200", "paths": ["/abs/file", ...]}``.
A file on the same filesystem is renamed (cheap); otherwise it is copied with its metadata, fsynced, then
unlinked. An existing file in the quarantine is never overwritten. Prints one JSON line:
``{"moved": [...], "bytes": n, "errors": [...]}``; exit status 1 when anything could not be moved.
"""

from __future__ import annotations

import json
import os
import shutil
import sys


def move_one(path, quarantine):
    if not os.path.isabs(path):
        raise ValueError('%s is not an absolute path' % path)
    target = os.path.join(quarantine, os.path.normpath(path).lstrip('/'))
    if os.path.lexists(target):
        raise ValueError('%s is already in the quarantine' % target)
    parent = os.path.dirname(target)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    size = os.lstat(path).st_size
    try:
        os.rename(path, target)
    except OSError:
        shutil.copy2(path, target, follow_symlinks=False)
        if not os.path.islink(target):
            with open(target, 'rb') as handle:
                os.fsync(handle.fileno())
        os.unlink(path)
    return target, size


def main():
    request = json.load(sys.stdin)
    quarantine = request['quarantine']
    os.makedirs(quarantine, mode=0o700, exist_ok=True)
    os.chmod(quarantine, 0o700)
    moved, errors, total = [], [], 0
    for path in request.get('paths', []):
        try:
            target, size = move_one(path, quarantine)
        except (OSError, ValueError) as exc:
            errors.append('%s: %s' % (path, exc))
            continue
        moved.append({'path': path, 'quarantined_as': target})
        total += size
    print(json.dumps({'moved': moved, 'bytes': total, 'errors': errors}))
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
