#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: offsite_info
short_description: List the offsite copies in S3-compatible storage with their Object Lock status
version_added: 0.1.0
description:
  - Lists the artifacts M(cepcomunicacion.backup.offsite_sync) stored under C(s3://<bucket>/<prefix>/), oldest first,
    with their SHA-256, whether they are encrypted, their storage class and their Object Lock status (mode, retained
    until, legal hold, locked now).
  - Only complete artifacts (whose C(.meta.json) marker, uploaded last, exists) are listed as artifacts; what an
    interrupted push left is reported in RV(incomplete) and RV(pending_uploads).
  - Never changes anything.
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.s3
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.INFO_MODULE
options:
  kinds:
    description:
      - Kinds to list.
    type: list
    elements: str
    choices: [database, database_weekly, config, media]
    default: [database, database_weekly, config, media]
seealso:
  - module: cepcomunicacion.backup.offsite_sync
  - module: cepcomunicacion.backup.backup_info
'''

EXAMPLES = r'''
- name: List the offsite copies of web1
  cepcomunicacion.backup.offsite_info:
    bucket: cepcomunicacion-backups
    prefix: web1
    profile: backup-operator
  register: offsite

- name: Fail unless every offsite copy is locked
  ansible.builtin.assert:
    that: offsite.artifacts | rejectattr('lock.locked') | list | length == 0
    fail_msg: "unlocked offsite copies: {{ offsite.artifacts | rejectattr('lock.locked') | map(attribute='name') }}"
'''

RETURN = r'''
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: cepcomunicacion-backups
prefix:
  description: The key prefix listed.
  returned: always
  type: str
  sample: web1
endpoint_url:
  description: The S3 endpoint, or null for AWS.
  returned: always
  type: str
  sample: https://s3.example.net
artifacts:
  description: Complete offsite artifacts, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: C(database), C(database_weekly), C(config) or C(media).
      type: str
      sample: database
    name:
      description: The artifact's name, as under the backup root.
      type: str
      sample: cepcomunicacion_2026-11-29_02-00-00.dump
    key:
      description: The data object (for a media snapshot, its manifest).
      type: str
      sample: web1/database/cepcomunicacion_2026-11-29_02-00-00.dump
    created:
      description: UTC time from the artifact's name, ISO 8601.
      type: str
      sample: '2026-11-29T02:00:00+00:00'
    stored_size:
      description: Bytes stored for the data object (ciphertext when encrypted).
      type: int
      sample: 2191795
    sha256:
      description: SHA-256 of the artifact's content (for a media snapshot, of its manifest).
      type: str
      sample: 4d71225ad4a89ea536331b5d4d5d67317fcf3d992edd3b81f637f9b68a9f74e7
    encrypted:
      description: Whether the object is encrypted with age.
      type: bool
      sample: true
    storage_class:
      description: S3 storage class.
      type: str
      sample: STANDARD
    server_side_encryption:
      description: Server-side encryption reported by the server, or null.
      type: str
      sample: AES256
    lock:
      description: Object Lock status of the data object.
      type: dict
      sample: {mode: COMPLIANCE, retain_until: '2026-12-29T02:00:00+00:00', legal_hold: false, locked: true}
summary:
  description: Per kind, the count, the newest name and its age in hours.
  returned: always
  type: dict
  sample: {database: {count: 30, newest: cepcomunicacion_2026-11-29_02-00-00.dump, newest_age_hours: 6.5}}
media_objects:
  description: Content-addressed media files stored under C(<prefix>/media/objects/).
  returned: always
  type: int
  sample: 10234
incomplete:
  description: Artifacts (C(kind/name)) with objects offsite but no marker, left by an interrupted push.
  returned: always
  type: list
  elements: str
  sample: [database/cepcomunicacion_2026-11-29_02-00-00.dump]
pending_uploads:
  description: Unfinished multipart uploads under the prefix (the next push aborts them).
  returned: always
  type: list
  elements: dict
  sample: [{key: web1/database/cepcomunicacion_2026-11-29_02-00-00.dump, upload_id: abc,
            initiated: '2026-11-29T02:01:00+00:00'}]
object_lock:
  description: Whether the bucket has Object Lock enabled (null when the credentials may not read it).
  returned: always
  type: dict
  sample: {enabled: true}
duration:
  description: Seconds the listing took.
  returned: always
  type: float
  sample: 0.4
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import offsite


def main():
    argument_spec = offsite.connection_argument_spec()
    argument_spec.update(
        kinds=dict(type='list', elements='str', default=list(offsite.KINDS), choices=list(offsite.KINDS)),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        job = offsite.OffsiteSync(offsite.S3Settings.from_module_params(module.params), kinds=module.params['kinds'],
                                  check_mode=True, log=module.log)
        result = job.listing()
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    result.pop('mode', None)
    result.pop('encrypted', None)
    result.pop('changed', None)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
