#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: config_restore
short_description: Restore configuration files from an archive taken by config_backup
version_added: 0.1.0
description:
  - Chooses an archive under O(backup_root) C(config/) (the newest, a named one, or the newest at or before O(at)),
    verifies it against its C(.sha256) sidecar (a mismatch restores nothing), and restores all or the selected
    members to their original paths, or under O(dest), with owners, modes and mtimes.
  - Every member is validated before anything is written. An archive with a member that is absolute, contains
    C(..), is a device or fifo, would be written through a symlink, or is a hard link to anything but an earlier file
    of the same archive is refused as a whole (a tampered archive cannot write outside the restore root).
  - Files already identical (content, mode, owner) are left alone. The current versions of the files about to be
    overwritten are first archived into C(config/pre-restore/config_YYYY-MM-DD_HH-MM-SS.tar.gz); a failed restore
    puts them back.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.RESTORE_DIFF
  - cepcomunicacion.backup.attributes.BACKUP_ROOT
options:
  archive:
    description:
      - The archive to restore, by file name, by full path, or V(latest).
      - When neither O(archive) nor O(at) is set, the newest complete archive.
    type: str
  at:
    description:
      - Restore the newest archive taken at or before this UTC time (ISO 8601, for example C(2026-11-29T02:00:00Z)).
    type: str
  dest:
    description:
      - Restore under this directory instead of the original paths, for inspection; the original absolute paths are
        recreated below it.
    type: path
  paths:
    description:
      - Restore only these. Shell patterns matched against the original absolute path; a directory selects
        everything below it (C(/etc/nginx), C(/opt/cepcomunicacion/.env)).
      - Everything in the archive when empty.
    type: list
    elements: str
    default: []
  lock_timeout:
    description:
      - Seconds to wait for another configuration job on the same O(backup_root) to finish before failing.
    type: int
    default: 300
notes:
  - Owners are restored (by numeric id) only when the module runs as root.
  - Diff mode shows text files up to 256 KiB. The C(.env) file is a text file too; run with O(dest) or without
    C(--diff) if its differences must not reach the output.
seealso:
  - module: cepcomunicacion.backup.config_backup
  - module: cepcomunicacion.backup.backup_info
'''

EXAMPLES = r'''
- name: Show what restoring the newest nginx configuration would change
  cepcomunicacion.backup.config_restore:
    paths:
      - /etc/nginx
  check_mode: true
  diff: true

- name: Restore everything from the last archive before the incident
  cepcomunicacion.backup.config_restore:
    at: "2026-11-29T02:00:00Z"
  register: restored
'''

RETURN = r'''
archive:
  description: The archive restored from.
  returned: success
  type: str
  sample: /var/backups/cepcomunicacion/config/config_2026-11-29_02-30-00.tar.gz
archive_created:
  description: UTC time of the archive, ISO 8601.
  returned: success
  type: str
  sample: '2026-11-29T02:30:00+00:00'
dest:
  description: The root the files were restored under (C(/) for the original paths).
  returned: success
  type: str
  sample: /
restored:
  description: Files and links written (or, in check mode, that would be), as original absolute paths.
  returned: success
  type: list
  elements: str
  sample: [/etc/nginx/nginx.conf]
identical:
  description: Members left alone because they already match.
  returned: success
  type: list
  elements: str
  sample: [/opt/cepcomunicacion/docker-compose.yml]
pre_restore:
  description: The archive holding the files as they were before they were overwritten, or null.
  returned: success
  type: str
  sample: /var/backups/cepcomunicacion/config/pre-restore/config_2026-11-29_09-00-00.tar.gz
duration:
  description: Seconds the restore took.
  returned: success
  type: float
  sample: 0.3
lock_waited:
  description: Seconds spent waiting for another configuration job.
  returned: when something was restored
  type: float
  sample: 0.0
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import config_archive
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
            archive=dict(type='str'),
            at=dict(type='str'),
            dest=dict(type='path'),
            paths=dict(type='list', elements='str', default=[]),
            lock_timeout=dict(type='int', default=300),
        ),
        mutually_exclusive=[('archive', 'at')],
        supports_check_mode=True,
    )
    params = module.params
    try:
        job = config_archive.ConfigRestore(
            backup_root=params['backup_root'], archive=params['archive'], at=params['at'], dest=params['dest'],
            patterns=params['paths'], lock_timeout=params['lock_timeout'], check_mode=module.check_mode,
            diff=module._diff, log=module.log)
        result = job.run()
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
