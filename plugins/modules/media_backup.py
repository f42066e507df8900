#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: media_backup
short_description: Take an rsync hard-link snapshot of media directories
version_added: 0.1.0
description:
  - Copies the directories in O(src) with C(rsync --archive --relative --link-dest) into
    C(media/YYYY-MM-DD_HH-MM-SS/) under O(backup_root). A file unchanged since the newest complete snapshot
    becomes a hard link to it, so an unchanged tree costs almost no space. C(--inplace) is never used, so a
    changed file gets a new inode and older snapshots are never rewritten.
  - Owner, group (numeric), mode, mtime, symlinks and hard links are preserved; ACLs and extended attributes
    too when the backup filesystem supports them.
  - The snapshot is built under a temporary name, described by a manifest (path, size, mtime, SHA-256; hashes of
    hard-linked files are reused from the previous manifest) and renamed when complete; C(media/latest) is then
    swapped atomically. A killed or failed run (a full disk) never leaves a snapshot that looks complete and never
    moves C(media/latest); the next run removes its leftovers.
  - One media job runs at a time per backup root (a lock with a bounded wait). After a successful snapshot, older
    snapshots are pruned by O(retention_days); the newest is never pruned.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.ACTION_WRITES
  - cepcomunicacion.backup.attributes.BACKUP_ROOT
  - cepcomunicacion.backup.attributes.STATUS_FILE
options:
  src:
    description:
      - Absolute paths of the directories to snapshot, for example the uploads directory and Docker volume data
        directories such as C(/var/lib/docker/volumes/<name>/_data).
      - Each is stored under its full path inside the snapshot (C(/srv/app/uploads) in C(srv/app/uploads/)), so a
        restore knows where it came from.
    type: list
    elements: path
    required: true
  exclude:
    description:
      - rsync exclude patterns (C(--exclude)), for example C(*.tmp) or C(cache/).
    type: list
    elements: str
    default: []
  retention_days:
    description:
      - Snapshots older than this many days are pruned after a successful snapshot. V(0) keeps them forever.
    type: int
    default: 30
  lock_timeout:
    description:
      - Seconds to wait for another media job on the same O(backup_root) to finish before failing.
    type: int
    default: 300
  bwlimit:
    description:
      - Bandwidth limit for rsync in KiB per second (C(--bwlimit)). No limit when unset.
    type: int
notes:
  - Check mode runs C(rsync --dry-run --itemize-changes) against the newest snapshot and reports what would be
    transferred.
  - The snapshot directory is C(0700); files inside keep the source's owners and modes. Sidecars are C(0600).
seealso:
  - module: cepcomunicacion.backup.media_restore
  - module: cepcomunicacion.backup.backup_info
'''

EXAMPLES = r'''
- name: Snapshot the uploads and a Docker volume
  cepcomunicacion.backup.media_backup:
    src:
      - /srv/cepcomunicacion/uploads
      - /var/lib/docker/volumes/cepcomunicacion_media/_data
    exclude:
      - "*.part"
    retention_days: 30
  register: media

- name: Show how much new space the snapshot took
  ansible.builtin.debug:
    msg: "{{ media.snapshot }}: {{ media.files_transferred }} files copied, {{ media.new_space }} bytes new"
'''

RETURN = r'''
snapshot:
  description: The snapshot directory written (in check mode, the one that would be written).
  returned: success
  type: str
  sample: /var/backups/cepcomunicacion/media/2026-11-29_03-00-00
previous:
  description: The snapshot unchanged files were hard-linked to, or null for the first one.
  returned: success
  type: str
  sample: /var/backups/cepcomunicacion/media/2026-11-28_03-00-00
created:
  description: UTC time the snapshot was started, ISO 8601.
  returned: when a snapshot was written
  type: str
  sample: '2026-11-29T03:00:00.123456+00:00'
sources:
  description: The source directories, normalised.
  returned: success
  type: list
  elements: str
  sample: [/srv/cepcomunicacion/uploads]
files_total:
  description: Regular files in the snapshot.
  returned: success
  type: int
  sample: 10000
files_transferred:
  description: Files copied (new or changed); in check mode, files that would be copied.
  returned: success
  type: int
  sample: 100
files_linked:
  description: Files hard-linked to the previous snapshot (unchanged).
  returned: success
  type: int
  sample: 9900
bytes_total:
  description: Bytes in the regular files of the snapshot.
  returned: when a snapshot was written
  type: int
  sample: 1073741824
bytes_transferred:
  description: Bytes copied (in check mode, that would be copied).
  returned: success
  type: int
  sample: 10737418
new_space:
  description: Bytes of disk blocks the snapshot does not share with the previous one (its new files, its
    directories and its manifest).
  returned: when a snapshot was written
  type: int
  sample: 11534336
files_hashed:
  description: Files whose SHA-256 was computed for the manifest (the others reused the previous manifest's).
  returned: when a snapshot was written
  type: int
  sample: 100
duration:
  description: Seconds the whole job took.
  returned: always
  type: float
  sample: 4.2
pruned:
  description: Snapshots removed (or, in check mode, that would be removed) by retention.
  returned: always
  type: list
  elements: str
  sample: [/var/backups/cepcomunicacion/media/2026-10-29_03-00-00]
cleaned:
  description: Leftovers of interrupted runs that were removed.
  returned: always
  type: list
  elements: str
  sample: [.tmp-2026-11-28_03-00-00.4242]
lock_waited:
  description: Seconds spent waiting for another media job.
  returned: when not in check mode
  type: float
  sample: 0.0
rsync_version:
  description: First line of C(rsync --version).
  returned: always
  type: str
  sample: rsync  version 3.2.7  protocol version 31
warnings:
  description: rsync's complaint when some source files vanished while they were copied (the snapshot is kept).
  returned: when rsync reported vanished files
  type: list
  elements: str
  sample: ['file has vanished: "/srv/cepcomunicacion/uploads/tmp/x.part"']
executed_commands:
  description: Commands run.
  returned: always
  type: list
  elements: str
  sample: ["/usr/bin/rsync --archive --relative --hard-links --numeric-ids --itemize-changes --stats
            --no-human-readable --acls --xattrs --link-dest=/var/backups/cepcomunicacion/media/2026-11-28_03-00-00
            /srv/cepcomunicacion/uploads/ /var/backups/cepcomunicacion/media/.tmp-2026-11-29_03-00-00.4242/"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_status
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import media_snapshot


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type='list', elements='path', required=True),
            backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
            exclude=dict(type='list', elements='str', default=[]),
            retention_days=dict(type='int', default=30),
            lock_timeout=dict(type='int', default=300),
            status_file=dict(type='path', default=job_status.DEFAULT_STATUS_FILE),
            bwlimit=dict(type='int'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    recorder = job_status.recording(None if module.check_mode else params['status_file'], 'media')
    try:
        with recorder:
            job = media_snapshot.MediaSnapshot(
                params['src'], backup_root=params['backup_root'], exclude=params['exclude'],
                retention_days=params['retention_days'], lock_timeout=params['lock_timeout'], bwlimit=params['bwlimit'],
                check_mode=module.check_mode, log=module.log)
            recorder.result = job.run()
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    if recorder.status_error:
        module.warn(recorder.status_error)
    result = recorder.result
    module.exit_json(**result)


if __name__ == '__main__':
    main()
