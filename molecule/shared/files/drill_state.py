# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The platform's state as the DR drills compare it: per-table checksums and the media manifest.

Runs on the drill server (python3 + psycopg2). Prints JSON::

    {"tables": {"public.courses": {"rows": N, "checksum": "<md5>"}, ...},
     "media": {"<relative path>": {"sha256": ..., "size": N, "mode": "0644", "owner": "www-data:www-data"}}}

The database is reached with the app's own DATABASE_URL from its .env (so a rotated password is used
as the app uses it); the table checksums are reference_platform/checksum.py's definition.
"""

import grp
import hashlib
import json
import os
import pwd
import stat
import sys

PLATFORM = sys.argv[1] if len(sys.argv) > 1 else '/opt/cepcomunicacion'
sys.path.insert(0, '/opt/cepcomunicacion-reference')
import checksum  # noqa: E402  (reference_platform/checksum.py, copied by molecule/shared/platform.yml)


def database_url():
    with open(os.path.join(PLATFORM, '.env'), encoding='utf-8') as handle:
        for line in handle:
            key, _sep, value = line.strip().partition('=')
            if key == 'DATABASE_URL':
                return value
    raise SystemExit('DATABASE_URL is not in %s/.env' % PLATFORM)


def media(root):
    found = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            digest = hashlib.sha256()
            with open(path, 'rb') as handle:
                for block in iter(lambda: handle.read(1 << 20), b''):
                    digest.update(block)
            found[os.path.relpath(path, root)] = {
                'sha256': digest.hexdigest(), 'size': info.st_size, 'mode': '%04o' % stat.S_IMODE(info.st_mode),
                'owner': '%s:%s' % (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name)}
    return found


def main():
    state = {'tables': checksum.database_checksums(database_url()), 'media': media(os.path.join(PLATFORM, 'uploads'))}
    json.dump(state, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == '__main__':
    main()
