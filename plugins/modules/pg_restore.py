#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_restore
short_description: Restore a PostgreSQL database from a pg_backup dump without ever making things worse
version_added: 0.1.0
description:
  - Chooses a dump (O(backup), O(at), or the latest; daily and weekly dumps both count), verifies its SHA-256
    sidecar before touching anything, and restores it with C(pg_restore -j) into a new scratch database
    C(<database>__restore_<timestamp>).
  - The scratch copy is checked (C(pg_restore) exit status, a non-zero table count, optional O(sanity_sql)).
    If anything fails up to here, the live database is untouched and the scratch database is dropped.
  - O(mode=full) takes a safety dump of the live database into C(database/pre-restore/), then swaps
    (sessions on the target are terminated, the target is renamed C(<database>__pre_restore_<timestamp>),
    the scratch database takes its name). The old database is kept unless O(drop_previous=true);
    O(mode=rollback) puts it back.
  - O(mode=tables) replaces only the listed tables' data in the live database, in one transaction, after a
    safety dump of those tables. Foreign-key triggers are disabled for that transaction
    (C(session_replication_role=replica), which needs a superuser) so no other table is touched.
  - O(mode=rows) inserts the rows of one table that match O(rows.where) in the backup and whose primary key
    is missing from the live table; existing rows are never changed.
  - Creates the target database (fresh server), and roles that own or are granted objects in the dump
    (as C(NOLOGIN)) or named by O(owner), when they do not exist; ownership and grants from the dump survive.
  - zstd-compressed dumps are decompressed to a temporary file beside them (so C(-j) works) and removed after.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.postgres
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.BACKUP_ROOT
attributes:
  check_mode:
    support: full
    details:
      - Reports the dump that would be used (verified) and what would change; writes nothing.
  diff_mode:
    support: none
options:
  database:
    description:
      - The live database to restore.
    type: str
    default: cepcomunicacion
    aliases: [db]
  mode:
    description:
      - V(full) restores the whole database and swaps it in.
      - V(tables) restores the data of O(tables) into the live database.
      - V(rows) restores missing rows of one table (the accidental-deletion recovery).
      - V(rollback) puts the database that a full restore replaced back (O(pre_restore_database), or the newest one).
    type: str
    choices: [full, tables, rows, rollback]
    default: full
  backup:
    description:
      - Path of the dump to restore. Mutually exclusive with O(at). The latest when neither is given.
    type: path
  at:
    description:
      - Restore the newest dump made at or before this UTC time (ISO 8601, for example C(2026-11-29T02:00:00Z)).
    type: str
  verify:
    description:
      - Check the dump against its C(.sha256) sidecar before anything else.
      - Setting V(false) restores a dump whose integrity is unknown. Only for a desperate operator who has no
        verified dump left; the result says RV(sha256_verified=false).
    type: bool
    default: true
  jobs:
    description:
      - Parallel C(pg_restore) jobs. Defaults to the number of CPUs.
    type: int
  sanity_sql:
    description:
      - SQL statements run against the restored copy before it is used; each must return C(true) in its first
        column, or the restore stops with the live database untouched.
    type: list
    elements: str
    default: []
  drop_previous:
    description:
      - After a successful full restore, drop the replaced database instead of keeping it for rollback.
    type: bool
    default: false
  pre_restore_dump:
    description:
      - Take a safety dump of what is about to be replaced into C(database/pre-restore/) first.
    type: bool
    default: true
  owner:
    description:
      - Owner of the restored database; created as a login role when missing. Defaults to the current owner of the
        target, or O(login_user) when the target does not exist.
    type: str
  tables:
    description:
      - With O(mode=tables), the tables to restore (C(schema.table) or C(table) for C(public)).
    type: list
    elements: str
  rows:
    description:
      - With O(mode=rows), which rows to recover.
      - O(rows.where) is the operator's own SQL. It runs only against the scratch copy of the backup, in a read-only
        transaction; it never reaches the live database and no other value is ever put into SQL text.
    type: dict
    suboptions:
      table:
        description: The table (C(schema.table) or C(table)).
        type: str
        required: true
      where:
        description: SQL condition selecting the rows in the backup, for example C(course_id = 7).
        type: str
        required: true
  pre_restore_database:
    description:
      - With O(mode=rollback), the database to put back. Defaults to the newest C(<database>__pre_restore_*).
    type: str
  maintenance_db:
    description:
      - Database to connect to for creating, renaming and dropping databases.
    type: str
    default: postgres
  lock_timeout:
    description:
      - Seconds to wait for a running database backup or restore on the same O(backup_root).
    type: int
    default: 300
  count_rows:
    description:
      - Count the rows of every restored table (reported in RV(row_counts)).
    type: bool
    default: true
notes:
  - A full restore makes the database unavailable only for the two renames (milliseconds); sessions on the old
    database are terminated.
seealso:
  - module: cepcomunicacion.backup.pg_backup
  - module: cepcomunicacion.backup.backup_info
'''

EXAMPLES = r'''
- name: Restore the latest verified dump, keeping the replaced database for rollback
  cepcomunicacion.backup.pg_restore:
    database: cepcomunicacion
    sanity_sql:
      - SELECT count(*) > 0 FROM courses
  register: restored

- name: Restore the last dump made before the incident
  cepcomunicacion.backup.pg_restore:
    database: cepcomunicacion
    at: "2026-11-29T01:59:00Z"

- name: Bring back rows deleted by mistake, keeping everything written since
  cepcomunicacion.backup.pg_restore:
    database: cepcomunicacion
    mode: rows
    rows:
      table: public.enrollments
      where: course_id = 7

- name: Undo the last full restore
  cepcomunicacion.backup.pg_restore:
    database: cepcomunicacion
    mode: rollback
'''

RETURN = r'''
backup:
  description: The dump used.
  returned: unless O(mode=rollback)
  type: str
  sample: /var/backups/cepcomunicacion/database/cepcomunicacion_2026-11-29_02-00-00.dump
backup_created:
  description: When the dump used was made (UTC), the recovery point.
  returned: unless O(mode=rollback)
  type: str
  sample: '2026-11-29T02:00:00+00:00'
sha256_verified:
  description: Whether the dump was checked against its sidecar.
  returned: unless O(mode=rollback)
  type: bool
  sample: true
pre_restore_backup:
  description: Safety dump of what was replaced, in C(database/pre-restore/).
  returned: when not in check mode and not O(mode=rollback)
  type: str
  sample: /var/backups/cepcomunicacion/database/pre-restore/cepcomunicacion_2026-11-29_09-00-00.dump
pre_restore_database:
  description: The replaced database, kept for rollback (full mode), or the one put back (rollback mode).
  returned: always
  type: str
  sample: cepcomunicacion__pre_restore_20261129t090000
rolled_back_database:
  description: With O(mode=rollback), the name the rolled-back database now has.
  returned: with O(mode=rollback)
  type: str
  sample: cepcomunicacion__rolled_back_20261129t091500
duration:
  description: Seconds the restore took (the measured RTO of this step).
  returned: always
  type: float
  sample: 12.3
phases:
  description: Seconds per phase (verify, pre_restore, restore, swap, apply, cleanup).
  returned: always
  type: dict
  sample: {"verify": 0.4, "pre_restore": 2.1, "restore": 8.9, "swap": 0.1}
tables_restored:
  description: Tables restored (schema-qualified).
  returned: when not in check mode and not O(mode=rollback)
  type: list
  elements: str
  sample: [public.courses, public.enrollments]
row_counts:
  description: Rows per restored table.
  returned: when not in check mode and not O(mode=rows) or O(mode=rollback)
  type: dict
  sample: {"public.courses": 40}
rows_found:
  description: With O(mode=rows), rows in the backup matching O(rows.where).
  returned: with O(mode=rows)
  type: int
  sample: 87
rows_present:
  description: With O(mode=rows), of those, rows already in the live table (left untouched).
  returned: with O(mode=rows)
  type: int
  sample: 0
rows_inserted:
  description: With O(mode=rows), rows inserted into the live table.
  returned: with O(mode=rows)
  type: int
  sample: 87
roles_created:
  description: Roles the dump needed that did not exist and were created (C(NOLOGIN)).
  returned: when not in check mode and not O(mode=rollback)
  type: list
  elements: str
  sample: [cep_readonly]
cleaned:
  description: Scratch databases of interrupted restores that were dropped.
  returned: when not in check mode and not O(mode=rollback)
  type: list
  elements: str
  sample: []
executed_commands:
  description: Commands and SQL run, without secrets.
  returned: always
  type: list
  elements: str
  sample: ["ALTER DATABASE cepcomunicacion RENAME TO cepcomunicacion__pre_restore_20261129t090000"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import database_restore
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import postgres


def main():
    argument_spec = postgres.postgres_argument_spec()
    argument_spec.update(
        database=dict(type='str', default='cepcomunicacion', aliases=['db']),
        backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
        mode=dict(type='str', default='full', choices=list(database_restore.MODES)),
        backup=dict(type='path'),
        at=dict(type='str'),
        verify=dict(type='bool', default=True),
        jobs=dict(type='int'),
        sanity_sql=dict(type='list', elements='str', default=[]),
        drop_previous=dict(type='bool', default=False),
        pre_restore_dump=dict(type='bool', default=True),
        owner=dict(type='str'),
        tables=dict(type='list', elements='str'),
        rows=dict(type='dict', options=dict(table=dict(type='str', required=True),
                                            where=dict(type='str', required=True))),
        pre_restore_database=dict(type='str'),
        maintenance_db=dict(type='str', default='postgres'),
        lock_timeout=dict(type='int', default=300),
        count_rows=dict(type='bool', default=True),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[('backup', 'at')],
        required_if=[('mode', 'tables', ['tables']), ('mode', 'rows', ['rows'])],
    )
    params = module.params
    try:
        job = database_restore.DatabaseRestore(
            postgres.Connection.from_module_params(params), backup_root=params['backup_root'], mode=params['mode'],
            backup=params['backup'], at=params['at'], verify=params['verify'], jobs=params['jobs'],
            sanity_sql=params['sanity_sql'], drop_previous=params['drop_previous'],
            pre_restore_dump=params['pre_restore_dump'], owner=params['owner'], tables=params['tables'],
            rows=params['rows'], pre_restore_database=params['pre_restore_database'],
            maintenance_db=params['maintenance_db'], lock_timeout=params['lock_timeout'],
            count_rows=params['count_rows'], check_mode=module.check_mode, log=module.log)
        result = job.run()
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    if not params['verify']:
        module.warn('verify=false: the dump was restored without checking its checksum')
    module.exit_json(**result)


if __name__ == '__main__':
    main()
