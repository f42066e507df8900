# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a restore with the *installed* core (the server's python, ``<install_dir>/lib``), for the fault matrix.

    restore_driver.py LIB database ROOT DBNAME HOST PORT [--at TIME] [--backup PATH] [--kill-at POINT]
    restore_driver.py LIB media ROOT DEST [--at TIME]
    restore_driver.py LIB config ROOT DEST [--at TIME]

Prints one JSON line: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ..., "reason": ...}``.
``--kill-at`` makes the process SIGKILL its own process group at a chosen point of a full database
restore: ``pg_restore`` (while pg_restore is loading the scratch database, before the swap), ``mid_swap``
(between the swap's two renames: the live database renamed away, the scratch copy not yet renamed in) or
``after_swap`` (right after the scratch database took the live name).  That is the only injection; every
other line is the product's code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('lib')
    parser.add_argument('kind', choices=('database', 'media', 'config'))
    parser.add_argument('root')
    parser.add_argument('rest', nargs='*')
    parser.add_argument('--at')
    parser.add_argument('--backup')
    parser.add_argument('--kill-at', choices=('pg_restore', 'mid_swap', 'after_swap'))
    args = parser.parse_args()
    sys.path.insert(0, args.lib)
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
    try:
        if args.kind == 'database':
            result = restore_database(args)
        elif args.kind == 'media':
            from ansible_collections.cepcomunicacion.backup.plugins.module_utils import media_snapshot
            result = media_snapshot.MediaRestore(backup_root=args.root, at=args.at, dest=args.rest[0]).run()
        else:
            from ansible_collections.cepcomunicacion.backup.plugins.module_utils import config_archive
            result = config_archive.ConfigRestore(backup_root=args.root, at=args.at, dest=args.rest[0]).run()
    except BackupError as exc:
        print(json.dumps({'ok': False, 'error': str(exc), 'reason': exc.details.get('reason')}))
        return 2
    print(json.dumps({'ok': True, 'result': result}, default=str))
    return 0


def kill_group():
    os.killpg(os.getpgid(0), signal.SIGKILL)


def restore_database(args):
    from ansible_collections.cepcomunicacion.backup.plugins.module_utils import database_restore, postgres
    dbname, host, port = args.rest[0], args.rest[1], int(args.rest[2])
    kill_at = args.kill_at

    class Commands(list):
        """executed_commands: the swap records its first rename here before it runs the second one."""

        def append(self, command):
            super().append(command)
            if kill_at == 'mid_swap' and command.startswith('ALTER DATABASE %s RENAME TO ' % dbname):
                kill_group()

    class Restore(database_restore.DatabaseRestore):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.executed_commands = Commands()

        def swap(self, target_exists):
            super().swap(target_exists)
            if kill_at == 'after_swap':
                kill_group()

    def log(message):
        if kill_at == 'pg_restore' and message.startswith('pg_restore: table data'):
            kill_group()  # pg_restore is half-way through the scratch database

    connection = postgres.Connection(dbname, host, port, 'postgres', None)
    return Restore(connection, backup_root=args.root, at=args.at, backup=args.backup, jobs=1, lock_timeout=5,
                   log=log).run()


if __name__ == '__main__':
    sys.exit(main())
