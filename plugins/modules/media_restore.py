#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: media_restore
short_description: Restore media files from a snapshot taken by media_backup
version_added: 0.1.0
description:
  - Chooses a complete snapshot under O(backup_root) C(media/) (the newest, a named one, or the newest at or before
    O(at)), verifies the files to restore against its manifest (every byte re-hashed; a damaged file is reported by
    path and nothing is restored), and copies back what differs with C(rsync), preserving owners, modes, mtimes,
    symlinks, hard links, and ACLs and extended attributes where both filesystems have them.
  - Files go back to their original paths, or under O(dest).
  - Before anything is overwritten or removed, the current versions of those files are kept in
    C(media/pre-restore/YYYY-MM-DD_HH-MM-SS/) (hard links when on the same filesystem, so it is cheap). A failed
    restore puts them back.
  - A file already identical to the snapshot (content, owner, mode and mtime) is left alone.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.RESTORE
  - cepcomunicacion.backup.attributes.BACKUP_ROOT
options:
  snapshot:
    description:
      - The snapshot to restore, by directory name (C(2026-11-29_03-00-00)), by full path, or V(latest).
      - When neither O(snapshot) nor O(at) is set, the newest complete snapshot.
    type: str
  at:
    description:
      - Restore the newest snapshot taken at or before this UTC time (ISO 8601, for example
        C(2026-11-29T02:00:00Z)), the last known-good point before an incident.
    type: str
  dest:
    description:
      - Restore under this directory instead of the original paths; the original absolute paths are recreated
        below it (C(/srv/app/uploads/a.jpg) goes to C(<dest>/srv/app/uploads/a.jpg)).
    type: path
  paths:
    description:
      - Restore only these paths. Shell patterns matched against the original absolute path; a directory selects
        everything below it (C(/srv/app/uploads/users/42), C(/srv/app/uploads/*.pdf)).
      - Everything in the snapshot when empty.
    type: list
    elements: str
    default: []
  delete:
    description:
      - Also remove files below the snapshot's source directories (and matching O(paths)) that are not in the
        snapshot. They are kept in C(media/pre-restore/) first.
    type: bool
    default: false
  verify:
    description:
      - Re-hash the snapshot's files against its manifest before restoring. Turn off only when the snapshot was
        verified moments ago.
    type: bool
    default: true
  lock_timeout:
    description:
      - Seconds to wait for another media job on the same O(backup_root) to finish before failing.
    type: int
    default: 300
seealso:
  - module: cepcomunicacion.backup.media_backup
  - module: cepcomunicacion.backup.backup_info
'''

EXAMPLES = r'''
- name: Restore the uploads as they were before the incident, removing files planted since
  cepcomunicacion.backup.media_restore:
    at: "2026-11-29T02:00:00Z"
    delete: true
  register: restored

- name: Restore one user's uploads from the newest snapshot into a scratch directory
  cepcomunicacion.backup.media_restore:
    paths:
      - /srv/cepcomunicacion/uploads/users/42
    dest: /srv/restore-check
'''

RETURN = r'''
snapshot:
  description: The snapshot restored from.
  returned: success
  type: str
  sample: /var/backups/cepcomunicacion/media/2026-11-29_03-00-00
snapshot_created:
  description: UTC time of the snapshot, ISO 8601.
  returned: success
  type: str
  sample: '2026-11-29T03:00:00+00:00'
dest:
  description: The root the files were restored under (C(/) for the original paths).
  returned: success
  type: str
  sample: /
files_restored:
  description: Files, symlinks and other non-directories written (or, in check mode, that would be).
  returned: success
  type: int
  sample: 12
files_identical:
  description: Files left alone because they already match the snapshot.
  returned: success
  type: int
  sample: 9988
files_removed:
  description: Paths removed because O(delete=true) and they are not in the snapshot.
  returned: success
  type: int
  sample: 3
restored:
  description: Paths restored, relative to O(dest) (the first 1000).
  returned: success
  type: list
  elements: str
  sample: [srv/cepcomunicacion/uploads/users/42/avatar.png]
removed:
  description: Paths removed, relative to O(dest) (the first 1000).
  returned: success
  type: list
  elements: str
  sample: [srv/cepcomunicacion/uploads/README_DECRYPT.txt]
verified:
  description: Whether the files were verified against the manifest first.
  returned: success
  type: bool
  sample: true
pre_restore:
  description: Where the overwritten and removed files were kept, or null when nothing was overwritten.
  returned: success
  type: str
  sample: /var/backups/cepcomunicacion/media/pre-restore/2026-11-29_09-12-00
duration:
  description: Seconds the restore took (its contribution to the RTO).
  returned: success
  type: float
  sample: 3.1
lock_waited:
  description: Seconds spent waiting for another media job.
  returned: when something was restored
  type: float
  sample: 0.0
executed_commands:
  description: Commands run.
  returned: success
  type: list
  elements: str
  sample: ["/usr/bin/rsync --archive --relative --no-implied-dirs --hard-links --numeric-ids --ignore-times
            --itemize-changes --from0 --files-from=/tmp/cep-restore-x.list /var/backups/cepcomunicacion/media/2026-11-29_03-00-00/ /"]
bad_paths:
  description: On a verification failure, the snapshot paths whose content does not match the manifest.
  returned: failure
  type: list
  elements: str
  sample: [srv/cepcomunicacion/uploads/users/42/avatar.png]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import media_snapshot


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
            snapshot=dict(type='str'),
            at=dict(type='str'),
            dest=dict(type='path'),
            paths=dict(type='list', elements='str', default=[]),
            delete=dict(type='bool', default=False),
            verify=dict(type='bool', default=True),
            lock_timeout=dict(type='int', default=300),
        ),
        mutually_exclusive=[('snapshot', 'at')],
        supports_check_mode=True,
    )
    params = module.params
    try:
        job = media_snapshot.MediaRestore(
            backup_root=params['backup_root'], snapshot=params['snapshot'], at=params['at'], dest=params['dest'],
            patterns=params['paths'], delete=params['delete'], verify=params['verify'],
            lock_timeout=params['lock_timeout'], check_mode=module.check_mode, log=module.log)
        result = job.run()
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
