#!/usr/bin/python
# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: offsite_sync
short_description: Copy finished backups to S3-compatible storage, or back from it
version_added: 0.1.0
description:
  - With O(mode=push), uploads every finished local artifact of O(kinds) under O(backup_root) (daily and weekly
    database dumps, configuration archives, media snapshots) that is not offsite yet, with its sidecars, to
    C(s3://<bucket>/<prefix>/). Nothing new to upload is C(changed=false) and uploads nothing.
  - With O(mode=pull), downloads chosen artifacts (the newest of each kind, the newest at or before O(at), or those in
    O(names)) into O(backup_root), for example on a freshly provisioned server, verifying each before it is committed
    with the same atomic writes as a local backup.
  - Media snapshots are content-addressed offsite (C(<prefix>/media/objects/<sha256>)) by the SHA-256 in their
    manifests, so a file already stored for an earlier snapshot is not uploaded again; the manifest is what is pushed
    per snapshot, and a pull rebuilds the snapshot directory from it (modes, owners when run as root, mtimes,
    symlinks).
  - Integrity end to end. Every object carries its SHA-256 as an S3 checksum and in its metadata, and is read back
    after upload and compared with the local sidecar (the S3 server is not trusted to check). Data objects are
    uploaded first and the C(.meta.json) marker last, so an interrupted push never leaves an artifact that looks
    complete; abandoned multipart uploads are aborted on the next push. A pulled object whose SHA-256 does not match
    its sidecar or manifest is refused and named, and never used.
  - Optional encryption with C(age) to O(age_recipients) (public keys) before upload; the server holds no key that
    decrypts its offsite copies. O(mode=pull) decrypts with O(age_identity_file).
  - With O(object_lock_days) and a bucket created with Object Lock, uploads get a retention period, so the server's
    own credentials cannot delete or overwrite them (ransomware resistance). M(cepcomunicacion.backup.offsite_info)
    shows the lock status. C(docs/OFFSITE.md) gives the IAM policies for the server (put, no delete) and for an
    operator who prunes.
  - With O(retention), after the upload the offsite copies are pruned by their own policy (the newest of each kind is
    never pruned; locked objects are kept and reported). This needs delete permission (the operator's credentials).
  - One offsite job runs at a time per backup root. A push records its outcome in O(status_file) as job C(offsite),
    a pull as job C(offsite_pull).
author:
  - CEP Comunicación backup team (@cepcomunicacion)
extends_documentation_fragment:
  - cepcomunicacion.backup.s3
  - cepcomunicacion.backup.attributes
  - cepcomunicacion.backup.attributes.ACTION_WRITES
  - cepcomunicacion.backup.attributes.BACKUP_ROOT
  - cepcomunicacion.backup.attributes.STATUS_FILE
options:
  mode:
    description:
      - V(push) uploads local artifacts to the bucket; V(pull) downloads offsite artifacts into O(backup_root).
    type: str
    choices: [push, pull]
    default: push
  kinds:
    description:
      - Kinds of artifact to copy. V(database) is the daily dumps, V(database_weekly) the weekly ones.
    type: list
    elements: str
    choices: [database, database_weekly, config, media]
    default: [database, database_weekly, config, media]
  names:
    description:
      - With O(mode=pull), the artifacts to download by name (C(cepcomunicacion_2026-11-29_02-00-00.dump),
        C(2026-11-29_03-00-00) for a media snapshot). When unset, the newest of each kind in O(kinds).
    type: list
    elements: str
  at:
    description:
      - With O(mode=pull), take the newest artifact of each kind made at or before this UTC time
        (C(2026-11-29T02:00:00Z) or C(2026-11-29 02:00)), for example the last known-good point before ransomware.
    type: str
  storage_class:
    description:
      - S3 storage class of uploaded objects, for example C(STANDARD_IA). The bucket's default when unset.
    type: str
  server_side_encryption:
    description:
      - Server-side encryption of uploaded objects. V(AES256) is SSE-S3, V(aws:kms) is SSE-KMS.
    type: str
    choices: [none, AES256, 'aws:kms']
    default: none
  sse_kms_key_id:
    description:
      - KMS key for O(server_side_encryption=aws:kms). The account's default S3 key when unset.
    type: str
  age_recipients:
    description:
      - Encrypt every object with C(age) to these recipients (C(age1...) public keys or SSH public keys) before it
        is uploaded. Sidecars, manifests and metadata are encrypted too; object names are not.
      - Needs the C(age) program (Debian package C(age)). Keep the matching identity off the server.
    type: list
    elements: str
  age_identity_file:
    description:
      - With O(mode=pull), the C(age) identity (private key) file that decrypts encrypted objects.
    type: path
  object_lock_mode:
    description:
      - Object Lock retention mode of uploaded objects when O(object_lock_days) is set. V(compliance) cannot be
        shortened or removed by anyone; V(governance) can by a user with C(s3:BypassGovernanceRetention).
    type: str
    choices: [governance, compliance]
    default: governance
  object_lock_days:
    description:
      - Retain every uploaded object for this many days with Object Lock. The bucket must have been created with
        Object Lock; if it has none, a warning is returned and uploads are not locked. V(0) sets no retention (a
        default retention configured on the bucket still applies).
    type: int
    default: 0
  retention:
    description:
      - After a push, prune offsite artifacts by this policy, which may be longer than the local one. Nothing is
        pruned offsite when unset. The newest artifact of each kind is never pruned; a locked object is kept.
    type: dict
    suboptions:
      daily_days:
        description:
          - Daily database dumps, configuration archives and media snapshots older than this many days are pruned.
            V(0) keeps them forever.
        type: int
        default: 90
      weekly_weeks:
        description:
          - Weekly database dumps older than this many weeks are pruned. V(0) keeps them forever.
        type: int
        default: 52
      monthly_months:
        description:
          - Keep the newest artifact of each of the last this many calendar months as well. V(0) keeps none extra.
        type: int
        default: 0
  verify_upload:
    description:
      - Read every uploaded object back and compare its SHA-256 with the local sidecar before the artifact is
        committed offsite. Turning it off halves the traffic but trusts the server to store what it was sent.
    type: bool
    default: true
  multipart_threshold:
    description:
      - Files at least this large (MiB) are uploaded in parts.
    type: int
    default: 8
  multipart_chunksize:
    description:
      - Size of each part (MiB) of a multipart upload; at least 5.
    type: int
    default: 8
  max_concurrency:
    description:
      - Parts transferred at the same time.
    type: int
    default: 4
  bwlimit:
    description:
      - Bandwidth limit in KiB per second for each transfer. No limit when unset.
    type: int
  lock_timeout:
    description:
      - Seconds to wait for another offsite job on the same O(backup_root) to finish before failing.
    type: int
    default: 300
notes:
  - Check mode lists what would be uploaded (with sizes and new media objects), downloaded, aborted and pruned, and
    transfers nothing.
  - C(changed) is true when something was uploaded, downloaded, pruned, or an abandoned multipart upload was aborted.
  - With encryption, media object keys are the SHA-256 of the plaintext, so someone who can list the bucket can
    tell whether a file they already have is among the backups. Use a private bucket.
seealso:
  - module: cepcomunicacion.backup.offsite_info
  - module: cepcomunicacion.backup.backup_info
'''

EXAMPLES = r'''
- name: Copy new backups offsite, encrypted and locked for 30 days
  cepcomunicacion.backup.offsite_sync:
    mode: push
    bucket: cepcomunicacion-backups
    prefix: web1
    endpoint_url: https://s3.eu-central-1.example.net
    access_key: "{{ vault_s3_server_access_key }}"
    secret_key: "{{ vault_s3_server_secret_key }}"
    age_recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    object_lock_mode: compliance
    object_lock_days: 30
    bwlimit: 20480

- name: Prune offsite copies by the long-term policy (operator credentials)
  cepcomunicacion.backup.offsite_sync:
    mode: push
    bucket: cepcomunicacion-backups
    prefix: web1
    profile: backup-operator
    retention:
      daily_days: 90
      weekly_weeks: 52
      monthly_months: 12

- name: Bring the newest database dump and media snapshot onto a rebuilt server
  cepcomunicacion.backup.offsite_sync:
    mode: pull
    bucket: cepcomunicacion-backups
    prefix: web1
    kinds: [database, media]
    age_identity_file: /root/recovery/offsite.agekey
  register: pulled

- name: Show what arrived
  ansible.builtin.debug:
    msg: "{{ pulled.downloaded | map(attribute='path') | list }}"
'''

RETURN = r'''
mode:
  description: The mode that ran.
  returned: always
  type: str
  sample: push
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: cepcomunicacion-backups
prefix:
  description: The key prefix of this host's copies.
  returned: always
  type: str
  sample: web1
endpoint_url:
  description: The S3 endpoint, or null for AWS.
  returned: always
  type: str
  sample: https://s3.example.net
encrypted:
  description: Whether uploads are encrypted with age (push); null for a pull.
  returned: always
  type: bool
  sample: true
uploaded:
  description:
    - Artifacts uploaded (in check mode, that would be) with the reason, the marker key and the bytes (for a
      snapshot, the bytes of media files not offsite yet, and how many new objects).
  returned: when O(mode=push)
  type: list
  elements: dict
  sample: [{kind: database, name: cepcomunicacion_2026-11-29_02-00-00.dump, reason: not offsite, bytes: 2191795,
            key: web1/database/cepcomunicacion_2026-11-29_02-00-00.dump.meta.json}]
already_offsite:
  description: Names of local artifacts whose offsite copy is complete and identical.
  returned: when O(mode=push)
  type: list
  elements: str
  sample: [cepcomunicacion_2026-11-28_02-00-00.dump]
aborted_uploads:
  description: Keys of abandoned multipart uploads (from an interrupted push) that were aborted (or would be).
  returned: when O(mode=push)
  type: list
  elements: str
  sample: [web1/database/cepcomunicacion_2026-11-29_02-00-00.dump]
object_lock:
  description: Whether the bucket has Object Lock (null when it was not asked or may not be read), and the mode,
    days and retain-until date set on this push's uploads.
  returned: when O(mode=push)
  type: dict
  sample: {enabled: true, mode: COMPLIANCE, days: 30, retain_until: '2026-12-29T02:00:00+00:00'}
pruned:
  description: Offsite artifacts (C(kind/name)) pruned by O(retention), or that would be in check mode.
  returned: when O(retention) is set
  type: list
  elements: str
  sample: [database/cepcomunicacion_2026-08-01_02-00-00.dump]
prune_kept_locked:
  description: Artifacts O(retention) would prune but that are kept because an object of theirs is locked.
  returned: when O(retention) is set
  type: list
  elements: dict
  sample: [{kind: database, name: cepcomunicacion_2026-08-01_02-00-00.dump,
            locked: [{key: web1/database/cepcomunicacion_2026-08-01_02-00-00.dump,
                      retain_until: '2026-12-01T02:00:00+00:00'}]}]
downloaded:
  description: Artifacts downloaded (in check mode, that would be) and their local paths.
  returned: when O(mode=pull)
  type: list
  elements: dict
  sample: [{kind: database, name: cepcomunicacion_2026-11-29_02-00-00.dump,
            path: /var/backups/cepcomunicacion/database/cepcomunicacion_2026-11-29_02-00-00.dump}]
already_local:
  description: Local paths of chosen artifacts that were already complete and identical locally.
  returned: when O(mode=pull)
  type: list
  elements: str
  sample: [/var/backups/cepcomunicacion/media/2026-11-29_03-00-00]
objects_uploaded:
  description: Objects uploaded (data, sidecars, manifests, media files).
  returned: always
  type: int
  sample: 6
bytes_uploaded:
  description: Bytes uploaded (as stored, so ciphertext when encrypted).
  returned: always
  type: int
  sample: 2193020
objects_downloaded:
  description: Objects downloaded, not counting read-back verification.
  returned: always
  type: int
  sample: 3
bytes_downloaded:
  description: Bytes downloaded, not counting read-back verification.
  returned: always
  type: int
  sample: 2193020
lock_waited:
  description: Seconds spent waiting for another offsite job.
  returned: when something was transferred
  type: float
  sample: 0.0
duration:
  description: Seconds the job took.
  returned: always
  type: float
  sample: 4.2
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_status
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import offsite
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import retention

JOB_BY_MODE = {'push': 'offsite', 'pull': 'offsite_pull'}


def main():
    argument_spec = offsite.connection_argument_spec()
    argument_spec.update(
        mode=dict(type='str', default='push', choices=['push', 'pull']),
        backup_root=dict(type='path', default=layout.DEFAULT_BACKUP_ROOT),
        kinds=dict(type='list', elements='str', default=list(offsite.KINDS), choices=list(offsite.KINDS)),
        names=dict(type='list', elements='str'),
        at=dict(type='str'),
        storage_class=dict(type='str'),
        server_side_encryption=dict(type='str', default='none', choices=list(offsite.SSE_CHOICES)),
        sse_kms_key_id=dict(type='str'),
        age_recipients=dict(type='list', elements='str'),
        age_identity_file=dict(type='path'),
        object_lock_mode=dict(type='str', default='governance', choices=list(offsite.LOCK_MODES)),
        object_lock_days=dict(type='int', default=0),
        retention=dict(type='dict', options=dict(
            daily_days=dict(type='int', default=90),
            weekly_weeks=dict(type='int', default=52),
            monthly_months=dict(type='int', default=0),
        )),
        verify_upload=dict(type='bool', default=True),
        multipart_threshold=dict(type='int', default=8),
        multipart_chunksize=dict(type='int', default=8),
        max_concurrency=dict(type='int', default=4),
        bwlimit=dict(type='int'),
        lock_timeout=dict(type='int', default=300),
        status_file=dict(type='path', default=job_status.DEFAULT_STATUS_FILE),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('names', 'at')])
    params = module.params
    recorder = job_status.recording(None if module.check_mode else params['status_file'], JOB_BY_MODE[params['mode']])
    try:
        with recorder:
            policy = None
            if params['retention'] is not None:
                policy = retention.Policy(**params['retention'])
            job = offsite.OffsiteSync(
                offsite.S3Settings.from_module_params(params), backup_root=params['backup_root'],
                kinds=params['kinds'],
                transfer=offsite.Transfer(params['multipart_threshold'], params['multipart_chunksize'],
                                          params['max_concurrency'], params['bwlimit']),
                storage_class=params['storage_class'], server_side_encryption=params['server_side_encryption'],
                sse_kms_key_id=params['sse_kms_key_id'], age_recipients=params['age_recipients'],
                age_identity_file=params['age_identity_file'], object_lock_mode=params['object_lock_mode'],
                object_lock_days=params['object_lock_days'], retention_policy=policy,
                verify_upload=params['verify_upload'], names=params['names'], at=params['at'],
                lock_timeout=params['lock_timeout'], check_mode=module.check_mode, log=module.log)
            recorder.result = job.push() if params['mode'] == 'push' else job.pull()
    except (BackupError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    if recorder.status_error:
        module.warn(recorder.status_error)
    for warning in recorder.result.pop('warnings', []):
        module.warn(warning)
    module.exit_json(**recorder.result)


if __name__ == '__main__':
    main()
