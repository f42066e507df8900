#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: backup_info
short_description: List and verify the backups under a backup root
version_added: 0.1.0
description:
  - Lists the artifacts under O(backup_root) by kind, oldest first, with their metadata sidecars.
  - With O(verify=true) re-hashes every artifact (streaming SHA-256; media snapshots against their manifest)
    and reports each as C(ok), C(mismatch) or C(missing_sidecar).
  - Artifacts whose sidecars are missing (an interrupted run) are reported in RV(incomplete) and never
    counted as backups.
  - Never changes anything.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.INFO_MODULE
  - cepcomunicacion.backup.attributes.BACKUP_ROOT
options:
  kinds:
    description:
      - Kinds to list. V(database) is the daily dumps, V(database_weekly) the weekly ones,
        V(database_pre_restore) the safety dumps taken before restores.
    type: list
    elements: str
    choices: [database, database_weekly, database_pre_restore, config, media]
    default: [database, database_weekly, database_pre_restore, config, media]
  verify:
    description:
      - Re-hash each file artifact and compare with its C(.sha256) sidecar.
    type: bool
    default: false
  prefix:
    description:
      - Only list database dumps whose name starts with this prefix. All prefixes when unset.
    type: str
seealso:
  - module: cepcomunicacion.backup.pg_backup
'''

EXAMPLES = r'''
- name: Verify every backup on the server
  cepcomunicacion.backup.backup_info:
    verify: true
  register: backups

- name: Fail when any backup does not verify
  ansible.builtin.assert:
    that: backups.failed_verification | length == 0
    fail_msg: "{{ backups.failed_verification }}"
'''

RETURN = r'''
artifacts:
  description: Complete artifacts, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: C(database), C(database_weekly), C(database_pre_restore), C(media) or C(config).
      type: str
      sample: database
    name:
      description: File or directory name.
      type: str
      sample: cepcomunicacion_2026-11-29_02-00-00.dump
    path:
      description: Full path.
      type: str
      sample: /var/backups/cepcomunicacion/database/cepcomunicacion_2026-11-29_02-00-00.dump
    created:
      description: UTC creation time, ISO 8601.
      type: str
      sample: '2026-11-29T02:00:00+00:00'
    size:
      description: Size in bytes.
      type: int
      sample: 2191795
    sha256:
      description: SHA-256 recorded when it was written.
      type: str
      sample: 4d71225ad4a89ea536331b5d4d5d67317fcf3d992edd3b81f637f9b68a9f74e7
    status:
      description: With O(verify=true), C(ok), C(mismatch) or C(missing_sidecar); a media snapshot is checked
        file by file against its manifest.
      type: str
      sample: ok
    metadata:
      description: The JSON metadata sidecar.
      type: dict
      sample: {"kind": "database", "duration": 12.5}
  sample: []
incomplete:
  description: Paths of artifacts an interrupted run left without sidecars; never used for a restore.
  returned: always
  type: list
  elements: str
  sample: []
summary:
  description: Per kind, the number of artifacts, the newest one, its age in hours and the total size.
  returned: always
  type: dict
  sample: {"database": {"count": 30, "newest": "/var/backups/.../cepcomunicacion_2026-11-29_02-00-00.dump",
           "newest_age_hours": 5.2, "total_size": 65011712}}
failed_verification:
  description: With O(verify=true), the artifacts whose status is not C(ok) or C(unverified).
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/var/backups/.../cepcomunicacion_2026-11-28_02-00-00.dump", "status": "mismatch"}]
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
            kinds=dict(type='list', elements='str', choices=list(layout.KINDS), default=list(layout.KINDS)),
            verify=dict(type='bool', default=False),
            prefix=dict(type='str'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not os.path.isdir(params['backup_root']):
        module.fail_json(msg='backup root %s does not exist or is not a directory' % params['backup_root'])
    try:
        report = catalogue.inventory(params['backup_root'], params['kinds'], params['prefix'], params['verify'])
    except BackupError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    module.exit_json(changed=False, **report)


if __name__ == '__main__':
    main()
