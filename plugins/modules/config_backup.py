#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: config_backup
short_description: Archive configuration files into a checksummed tar.gz
version_added: 0.1.0
description:
  - Writes the files and directories in O(paths) (recursively, minus O(exclude)) into
    C(config/config_YYYY-MM-DD_HH-MM-SS.tar.gz) under O(backup_root), with owners, modes, mtimes and symlinks.
  - The archive is hashed (SHA-256) while it is written, fsynced and renamed into place only when complete, with a
    C(sha256sum -c) sidecar and a JSON metadata sidecar that also records a content digest (paths, types, modes,
    owners, link targets and bytes).
  - With O(skip_unchanged=true), nothing is written (C(changed=false)) when the content digest equals the newest
    archive's.
  - Paths that do not exist are reported in RV(missing) and skipped; the module fails only when none exists.
  - One configuration job runs at a time per backup root. After a new archive, older archives are pruned by
    O(retention_days); the newest is never pruned.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.ACTION_WRITES
  - cepcomunicacion.backup.attributes.BACKUP_ROOT
  - cepcomunicacion.backup.attributes.STATUS_FILE
options:
  paths:
    description:
      - Absolute paths of the files and directories to archive.
    type: list
    elements: path
    default:
      - /opt/cepcomunicacion/.env
      - /opt/cepcomunicacion/docker-compose.yml
      - /etc/cepcomunicacion
      - /etc/nginx
      - /var/spool/cron/crontabs
  exclude:
    description:
      - Shell patterns matched against each path and its file name (C(*.swp), C(/etc/nginx/cache)); a matching
        directory is skipped with everything below it.
    type: list
    elements: str
    default: []
  skip_unchanged:
    description:
      - Write nothing and report C(changed=false) when the content is identical to the newest archive's.
    type: bool
    default: false
  retention_days:
    description:
      - Archives older than this many days are pruned after a new archive is written. V(0) keeps them forever.
    type: int
    default: 30
  lock_timeout:
    description:
      - Seconds to wait for another configuration job on the same O(backup_root) to finish before failing.
    type: int
    default: 300
notes:
  - The archive may hold secrets (the C(.env) file); it is created C(0600) in a C(0700) directory, and its contents
    never appear in the module's output.
seealso:
  - module: cepcomunicacion.backup.config_restore
  - module: cepcomunicacion.backup.backup_info
'''

EXAMPLES = r'''
- name: Archive the platform's configuration, only when it changed
  cepcomunicacion.backup.config_backup:
    paths:
      - /opt/cepcomunicacion/.env
      - /opt/cepcomunicacion/docker-compose.yml
      - /etc/nginx
    exclude:
      - "*.swp"
    skip_unchanged: true
  register: config
'''

RETURN = r'''
path:
  description: The archive written (with nothing to do, the newest existing one; in check mode, the one that would
    be written).
  returned: success
  type: str
  sample: /var/backups/cepcomunicacion/config/config_2026-11-29_02-30-00.tar.gz
sha256:
  description: SHA-256 of the archive, also in C(<path>.sha256). Not set in check mode.
  returned: when not in check mode
  type: str
  sample: 4d71225ad4a89ea536331b5d4d5d67317fcf3d992edd3b81f637f9b68a9f74e7
size:
  description: Size of the archive in bytes. Not set in check mode.
  returned: when not in check mode
  type: int
  sample: 18211
created:
  description: UTC time the archive was started, ISO 8601.
  returned: when an archive was written
  type: str
  sample: '2026-11-29T02:30:00.123456+00:00'
content_digest:
  description: SHA-256 over the archived paths, types, modes, owners, link targets and contents.
  returned: success
  type: str
  sample: 7a7e8bcf471b069f3283970db83cbd7cb4b280d1472fac314020eaeb2ecba594
files:
  description: Files and symlinks archived (directories not counted).
  returned: success
  type: int
  sample: 42
missing:
  description: Paths in O(paths) that do not exist and were skipped.
  returned: success
  type: list
  elements: str
  sample: [/var/spool/cron/crontabs]
duration:
  description: Seconds the whole job took.
  returned: success
  type: float
  sample: 0.4
pruned:
  description: Archives removed (or, in check mode, that would be removed) by retention.
  returned: success
  type: list
  elements: str
  sample: [/var/backups/cepcomunicacion/config/config_2026-10-29_02-30-00.tar.gz]
cleaned:
  description: Leftovers of interrupted runs that were removed.
  returned: success
  type: list
  elements: str
  sample: []
lock_waited:
  description: Seconds spent waiting for another configuration job.
  returned: when not in check mode
  type: float
  sample: 0.0
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import config_archive
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_status
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type='list', elements='path', default=list(config_archive.DEFAULT_PATHS)),
            backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
            exclude=dict(type='list', elements='str', default=[]),
            skip_unchanged=dict(type='bool', default=False),
            retention_days=dict(type='int', default=30),
            lock_timeout=dict(type='int', default=300),
            status_file=dict(type='path', default=job_status.DEFAULT_STATUS_FILE),
        ),
        supports_check_mode=True,
    )
    params = module.params
    recorder = job_status.recording(None if module.check_mode else params['status_file'], 'config')
    try:
        with recorder:
            job = config_archive.ConfigBackup(
                params['paths'], backup_root=params['backup_root'], exclude=params['exclude'],
                retention_days=params['retention_days'], lock_timeout=params['lock_timeout'],
                skip_unchanged=params['skip_unchanged'], check_mode=module.check_mode, log=module.log)
            recorder.result = job.run()
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    if recorder.status_error:
        module.warn(recorder.status_error)
    result = recorder.result
    for path in result.get('missing', []):
        module.warn('%s does not exist; not archived' % path)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
