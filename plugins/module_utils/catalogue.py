# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What exists under a backup root: list, choose and verify artifacts.

An artifact is *complete* when its data and both sidecars exist (see
:mod:`artifact`); only complete artifacts are ever chosen for a restore.
"""

from __future__ import annotations

import os

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import retention
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import snapshot_manifest

STATUS_OK = 'ok'
STATUS_MISMATCH = 'mismatch'
STATUS_MISSING_SIDECAR = 'missing_sidecar'
STATUS_UNVERIFIED = 'unverified'


class Artifact:
    def __init__(self, kind, path, prefix, created, metadata, has_sha256):
        self.kind = kind
        self.path = path
        self.name = os.path.basename(path)
        self.prefix = prefix
        self.created = created
        self.metadata = metadata
        self.has_sha256 = has_sha256

    @property
    def spec(self):
        return layout.KINDS[self.kind]

    @property
    def complete(self):
        return self.metadata is not None and (self.has_sha256 or self.spec.is_dir)

    @property
    def size(self):
        if self.metadata and 'size' in self.metadata:
            return self.metadata['size']
        try:
            return os.path.getsize(self.path)
        except OSError:
            return None

    def retention_item(self):
        return retention.Item(self.path, self.created, self.spec.tier)

    def to_dict(self):
        return {
            'kind': self.kind,
            'name': self.name,
            'path': self.path,
            'created': self.created.isoformat(),
            'size': self.size,
            'sha256': (self.metadata or {}).get('sha256'),
            'complete': self.complete,
            'metadata': self.metadata,
        }


def _created(spec, prefix_and_time, metadata):
    created = prefix_and_time[1]
    if spec.tier == 'weekly' and metadata and metadata.get('created'):
        try:
            created = layout.parse_time(metadata['created'])
        except ValueError:
            pass
    return created


def list_artifacts(backup_root, kinds=None, prefix=None, include_incomplete=False):
    """All artifacts of ``kinds`` under ``backup_root``, oldest first."""
    found = []
    for kind in kinds or layout.KINDS:
        spec = layout.KINDS[kind]
        directory = spec.directory(backup_root)
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            parsed = spec.parse(name)
            if parsed is None:
                continue
            if prefix is not None and parsed[0] is not None and parsed[0] != prefix:
                continue
            path = os.path.join(directory, name)
            if spec.is_dir != (os.path.isdir(path) and not os.path.islink(path)):
                continue
            metadata = artifact_io.read_metadata(path)
            item = Artifact(kind, path, parsed[0], _created(spec, parsed, metadata), metadata,
                            os.path.exists(path + layout.SHA256_SUFFIX))
            if item.complete or include_incomplete:
                found.append(item)
    found.sort(key=lambda item: (item.created, item.name))
    return found


def plan_retention(backup_root, kind, policy, now=None, prefix=None, extra=None):
    """The retention plan for the complete artifacts of one kind, plus ``extra`` (a run about to write one)."""
    items = [item.retention_item() for item in list_artifacts(backup_root, [kind], prefix)]
    if extra is not None:
        items.append(extra)
    return retention.plan_prune(items, policy, now or layout.utcnow())


def newest(backup_root, kind, prefix=None):
    """The newest complete artifact of one kind, or None."""
    items = list_artifacts(backup_root, [kind], prefix)
    return items[-1] if items else None


def choose(artifacts, at=None, kinds_label='backup'):
    """The newest artifact, or the newest created at or before ``at`` (UTC)."""
    candidates = [item for item in artifacts if item.complete]
    if at is not None:
        moment = layout.parse_time(at)
        eligible = [item for item in candidates if item.created <= moment]
        if not eligible:
            oldest = candidates[0].created.isoformat() if candidates else None
            raise BackupError(
                'no %s was made at or before %s; the oldest available is %s' % (
                    kinds_label, moment.isoformat(), oldest or 'none (nothing is backed up)'),
                reason='none_before', oldest=oldest)
        return eligible[-1]
    if not candidates:
        raise BackupError('no complete %s found' % kinds_label, reason='none')
    return candidates[-1]


def verify(item):
    """Re-hash an artifact: (status, actual sha256 or None).

    A file is checked against its ``.sha256`` sidecar; a snapshot directory
    against its manifest (every file re-hashed); then ``actual`` is None.
    """
    if item.spec.is_dir:
        if not os.path.exists(layout.manifest_path(item.path)):
            return STATUS_MISSING_SIDECAR, None
        intact, _problems = snapshot_manifest.verify_snapshot(item.path)
        return (STATUS_OK if intact else STATUS_MISMATCH), None
    try:
        expected = artifact_io.read_sha256_sidecar(item.path)
    except BackupError:
        return STATUS_MISMATCH, None
    if expected is None:
        return STATUS_MISSING_SIDECAR, None
    actual, _size = artifact_io.sha256_file(item.path)
    return (STATUS_OK if actual == expected else STATUS_MISMATCH), actual


def inventory(backup_root, kinds=None, prefix=None, verify_checksums=False, now=None):
    """What backup_info reports: artifacts, incomplete ones, a per-kind summary, failures."""
    now = now or layout.utcnow()
    listed = list_artifacts(backup_root, kinds, prefix, include_incomplete=True)
    artifacts, incomplete, failed, summary = [], [], [], {}
    for item in listed:
        if not item.complete:
            incomplete.append(item.path)
            continue
        entry = item.to_dict()
        del entry['complete']
        if verify_checksums:
            entry['status'], actual = verify(item)
            if entry['status'] not in (STATUS_OK, STATUS_UNVERIFIED):
                failed.append({'path': item.path, 'status': entry['status'], 'expected': entry['sha256'],
                               'actual': actual})
        artifacts.append(entry)
        kind = summary.setdefault(item.kind, {'count': 0, 'total_size': 0})
        kind['count'] += 1
        kind['total_size'] += item.size or 0
        kind['newest'] = item.path
        kind['newest_age_hours'] = round((now - item.created).total_seconds() / 3600.0, 2)
    return {'artifacts': artifacts, 'incomplete': incomplete, 'summary': summary,
            'failed_verification': failed}
