# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Listing, choosing and verifying artifacts in a crafted backup root."""

from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact, catalogue, layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

UTC = datetime.timezone.utc


def make(root, kind, name, content=b'PGDMP-data', created=None):
    directory = layout.KINDS[kind].directory(str(root))
    artifact.ensure_directory(directory)
    path = os.path.join(directory, name)
    with artifact.ArtifactWriter(path) as writer:
        writer.write(content)
        writer.commit({'kind': kind, 'created': created or layout.KINDS[kind].parse(name)[1].isoformat()})
    return path


@pytest.fixture
def root(tmp_path):
    make(tmp_path, 'database', 'cepcomunicacion_2026-11-27_02-00-00.dump')
    make(tmp_path, 'database', 'cepcomunicacion_2026-11-28_02-00-00.dump')
    make(tmp_path, 'database', 'cepcomunicacion_2026-11-29_02-00-00.dump')
    make(tmp_path, 'database_weekly', 'cepcomunicacion_weekly_2026-W47.dump', created='2026-11-22T03:30:00+00:00')
    return tmp_path


def test_lists_oldest_first_across_kinds(root):
    names = [a.name for a in catalogue.list_artifacts(str(root), ['database', 'database_weekly'])]
    assert names == ['cepcomunicacion_weekly_2026-W47.dump', 'cepcomunicacion_2026-11-27_02-00-00.dump',
                     'cepcomunicacion_2026-11-28_02-00-00.dump', 'cepcomunicacion_2026-11-29_02-00-00.dump']


def test_choose_latest_and_at(root):
    items = catalogue.list_artifacts(str(root), ['database', 'database_weekly'])
    assert catalogue.choose(items).name == 'cepcomunicacion_2026-11-29_02-00-00.dump'
    assert catalogue.choose(items, at='2026-11-28T12:00:00Z').name == 'cepcomunicacion_2026-11-28_02-00-00.dump'
    assert catalogue.choose(items, at='2026-11-28 02:00').name == 'cepcomunicacion_2026-11-28_02-00-00.dump'
    assert catalogue.choose(items, at='2026-11-23T00:00:00Z').name == 'cepcomunicacion_weekly_2026-W47.dump'


def test_choose_before_everything_is_a_clear_error(root):
    items = catalogue.list_artifacts(str(root), ['database'])
    with pytest.raises(BackupError, match='no backup was made at or before 2020-01-01.*oldest available is 2026-11-27'):
        catalogue.choose(items, at='2020-01-01T00:00:00Z')


def test_incomplete_is_never_chosen(root):
    directory = layout.KINDS['database'].directory(str(root))
    orphan = os.path.join(directory, 'cepcomunicacion_2026-11-30_02-00-00.dump')
    with open(orphan, 'wb') as handle:
        handle.write(b'no sidecars')
    items = catalogue.list_artifacts(str(root), ['database'], include_incomplete=True)
    assert [a.complete for a in items][-1] is False
    assert catalogue.choose(items).name == 'cepcomunicacion_2026-11-29_02-00-00.dump'
    report = catalogue.inventory(str(root), ['database'])
    assert report['incomplete'] == [orphan]


def test_verify_detects_flipped_byte_and_missing_sidecar(root):
    items = {a.name: a for a in catalogue.list_artifacts(str(root), ['database'])}
    target = items['cepcomunicacion_2026-11-28_02-00-00.dump']
    with open(target.path, 'r+b') as handle:
        handle.seek(3)
        byte = handle.read(1)
        handle.seek(3)
        handle.write(bytes([byte[0] ^ 0x01]))
    os.unlink(items['cepcomunicacion_2026-11-27_02-00-00.dump'].path + '.sha256')
    report = catalogue.inventory(str(root), ['database'], verify_checksums=True)
    statuses = {os.path.basename(f['path']): f['status'] for f in report['failed_verification']}
    assert statuses == {'cepcomunicacion_2026-11-28_02-00-00.dump': 'mismatch'}
    # without its .sha256 an artifact is incomplete: never listed as a backup
    assert report['incomplete'] == [items['cepcomunicacion_2026-11-27_02-00-00.dump'].path]
    ok = [a for a in report['artifacts'] if a['status'] == 'ok']
    assert [a['name'] for a in ok] == ['cepcomunicacion_2026-11-29_02-00-00.dump']


def test_summary(root):
    now = datetime.datetime(2026, 11, 29, 8, tzinfo=UTC)
    report = catalogue.inventory(str(root), now=now)
    assert report['summary']['database']['count'] == 3
    assert report['summary']['database']['newest_age_hours'] == 6.0
    assert report['summary']['database_weekly']['count'] == 1
