#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_backup
short_description: Take an atomic, checksummed pg_dump of one PostgreSQL database
version_added: 0.1.0
description:
  - Dumps one database with C(pg_dump) in custom format into RV(path) under O(backup_root) C(database/)
    (daily) or C(database/weekly/) (one per ISO week).
  - The dump is hashed (SHA-256) while it is written, proven whole (C(pg_restore) reads its table of
    contents and reaches its last data block), fsynced, and renamed into place only then; a
    C(sha256sum -c) sidecar and a JSON metadata sidecar are written with it. A crash never leaves a
    finished-looking partial dump; leftovers are cleaned on the next run.
  - One database job runs at a time per backup root (a lock with a bounded wait).
  - After a successful dump, older dumps of the same kind are pruned by the retention policy; the
    newest dump is never pruned.
  - Refuses when C(pg_dump) is older than the server, the database does not exist, authentication
    fails, or the backup filesystem has less free space than O(free_space_margin) times the last dump.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.postgres
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.ACTION_WRITES
  - cepcomunicacion.backup.attributes.BACKUP_ROOT
  - cepcomunicacion.backup.attributes.STATUS_FILE
options:
  database:
    description:
      - Name of the database to dump.
    type: str
    default: cepcomunicacion
    aliases: [db]
  kind:
    description:
      - V(daily) writes C(database/<prefix>_YYYY-MM-DD_HH-MM-SS.dump).
      - V(weekly) writes C(database/weekly/<prefix>_weekly_YYYY-WNN.dump), once per ISO week; a second run in
        the same week reports C(changed=false) unless O(force=true).
    type: str
    choices: [daily, weekly]
    default: daily
  compression:
    description:
      - V(auto) is V(gzip) with C(pg_dump) older than 16, so that a plain C(pg_restore) reads the dump,
        and native V(zstd) with C(pg_dump) 16 or newer. See C(docs/BENCHMARKS.md) for the measurements.
      - V(gzip) is C(pg_dump)'s own compression (readable by any C(pg_restore)).
      - V(zstd) on C(pg_dump) 16 or newer is native; on older ones the uncompressed archive is streamed through
        the C(zstd) program and named C(.dump.zst) (restore with C(zstd -dc FILE | pg_restore ...) or the
        M(cepcomunicacion.backup.pg_restore) module).
      - V(none) writes an uncompressed custom-format archive.
    type: str
    choices: [auto, gzip, zstd, none]
    default: auto
  compression_level:
    description:
      - Compression level; defaults to 6 for gzip and 3 for zstd.
    type: int
  retention_days:
    description:
      - Daily dumps older than this many days are pruned after a successful backup. V(0) keeps them forever.
    type: int
    default: 30
  retention_weeks:
    description:
      - Weekly dumps older than this many weeks are pruned after a successful weekly backup. V(0) keeps them forever.
    type: int
    default: 12
  lock_timeout:
    description:
      - Seconds to wait for another database job on the same O(backup_root) to finish before failing.
    type: int
    default: 300
  force:
    description:
      - With O(kind=weekly), replace this week's dump. The old dump is kept until the new one is complete.
    type: bool
    default: false
  prefix:
    description:
      - First part of the dump's file name.
    type: str
    default: cepcomunicacion
  free_space_margin:
    description:
      - Refuse to start when the backup filesystem has less free space than this multiple of the last dump's size.
    type: float
    default: 1.2
notes:
  - Files are created C(0600) and directories C(0700), owned by the user the module runs as.
seealso:
  - module: cepcomunicacion.backup.backup_info
'''

EXAMPLES = r'''
- name: Take the daily database backup
  cepcomunicacion.backup.pg_backup:
    database: cepcomunicacion
    login_user: backup
    login_password: "{{ vault_backup_db_password }}"

- name: Take this week's long-term backup with zstd
  cepcomunicacion.backup.pg_backup:
    database: cepcomunicacion
    kind: weekly
    compression: zstd
    retention_weeks: 12
  register: weekly

- name: Show where it went
  ansible.builtin.debug:
    msg: "{{ weekly.path }} {{ weekly.sha256 }}"
'''

RETURN = r'''
path:
  description: The dump written (or, with O(kind=weekly) and nothing to do, the existing one).
  returned: success
  type: str
  sample: /var/backups/cepcomunicacion/database/cepcomunicacion_2026-11-29_02-00-00.dump
sha256:
  description: SHA-256 of the dump, also in C(<path>.sha256). Not set in check mode.
  returned: when a dump exists
  type: str
  sample: 4d71225ad4a89ea536331b5d4d5d67317fcf3d992edd3b81f637f9b68a9f74e7
size:
  description: Size of the dump in bytes.
  returned: when a dump exists
  type: int
  sample: 2191795
created:
  description: UTC time the dump was started, ISO 8601.
  returned: when a dump exists
  type: str
  sample: '2026-11-29T02:00:00.123456+00:00'
tables:
  description: Number of tables whose data the dump holds.
  returned: when a dump was written
  type: int
  sample: 8
duration:
  description: Seconds the whole job took.
  returned: always
  type: float
  sample: 12.5
pruned:
  description: Dumps removed (or, in check mode, that would be removed) by retention.
  returned: always
  type: list
  elements: str
  sample: [/var/backups/cepcomunicacion/database/cepcomunicacion_2026-10-29_02-00-00.dump]
cleaned:
  description: Leftovers of interrupted runs that were removed (temporaries, orphaned sidecars).
  returned: always
  type: list
  elements: str
  sample: [.tmp-cepcomunicacion_2026-11-28_02-00-00.dump.4242]
kind:
  description: C(database) (daily) or C(database_weekly).
  returned: always
  type: str
  sample: database
compression:
  description: The compression used after resolving V(auto).
  returned: always
  type: str
  sample: gzip
compression_level:
  description: The compression level used.
  returned: always
  type: int
  sample: 6
server_version:
  description: The server's C(version()).
  returned: always
  type: str
  sample: PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu
pg_dump_version:
  description: C(pg_dump --version) of the program used.
  returned: always
  type: str
  sample: pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)
lock_waited:
  description: Seconds spent waiting for another database job.
  returned: when not in check mode
  type: float
  sample: 0.0
executed_commands:
  description: Commands run, without secrets.
  returned: always
  type: list
  elements: str
  sample: ["/usr/lib/postgresql/15/bin/pg_dump --format=custom --no-password --compress=6 --host=127.0.0.1 --port=5432
            --username=postgres --dbname=cepcomunicacion"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import database_backup
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_status
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import postgres

KIND_BY_CHOICE = {'daily': 'database', 'weekly': 'database_weekly'}


def main():
    argument_spec = postgres.postgres_argument_spec()
    argument_spec.update(
        database=dict(type='str', default='cepcomunicacion', aliases=['db']),
        backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
        kind=dict(type='str', default='daily', choices=['daily', 'weekly']),
        compression=dict(type='str', default='auto', choices=list(database_backup.COMPRESSIONS)),
        compression_level=dict(type='int'),
        retention_days=dict(type='int', default=30),
        retention_weeks=dict(type='int', default=12),
        lock_timeout=dict(type='int', default=300),
        force=dict(type='bool', default=False),
        prefix=dict(type='str', default=layout.DEFAULT_PREFIX),
        free_space_margin=dict(type='float', default=1.2),
        status_file=dict(type='path', default=job_status.DEFAULT_STATUS_FILE),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    recorder = job_status.recording(None if module.check_mode else params['status_file'], KIND_BY_CHOICE[params['kind']])
    try:
        with recorder:
            job = database_backup.DatabaseBackup(
                postgres.Connection.from_module_params(params),
                backup_root=params['backup_root'], kind=KIND_BY_CHOICE[params['kind']],
                compression=params['compression'], compression_level=params['compression_level'],
                retention_days=params['retention_days'], retention_weeks=params['retention_weeks'],
                lock_timeout=params['lock_timeout'], force=params['force'], prefix=params['prefix'],
                free_space_margin=params['free_space_margin'], check_mode=module.check_mode, log=module.log)
            recorder.result = job.run()
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    if recorder.status_error:
        module.warn(recorder.status_error)
    module.exit_json(**recorder.result)


if __name__ == '__main__':
    main()
