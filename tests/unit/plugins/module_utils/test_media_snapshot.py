# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Media snapshot core: rsync output parsing, the manifest (incremental build, verify), selection patterns."""

from __future__ import annotations

import os
import shutil

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import media_snapshot, snapshot_manifest
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

ITEMIZED = """created directory /x
cd+++++++++ srv/
>f+++++++++ srv/app/uploads/a.jpg
>f.st...... srv/app/uploads/b.jpg
cL+++++++++ srv/app/uploads/logo -> a.jpg
.d..t...... srv/app/

Number of files: 10,123 (reg: 10000, dir: 122, link: 1)
Number of regular files transferred: 2
Total file size: 1073741824 bytes
Total transferred file size: 2097152 bytes
"""


def test_parse_itemized_counts_transferred_files_and_bytes():
    counts = media_snapshot.parse_itemized(ITEMIZED)
    assert counts['files_transferred'] == 2
    assert counts['files_total'] == 10000
    assert counts['bytes_transferred'] == 2097152


@pytest.mark.parametrize('path, patterns, expected', [
    ('srv/app/uploads/users/42/a.png', ['/srv/app/uploads/users/42'], True),
    ('srv/app/uploads/users/421/a.png', ['/srv/app/uploads/users/42'], False),
    ('srv/app/uploads/doc.pdf', ['/srv/app/uploads/*.pdf'], True),
    ('srv/app/uploads/users/42/a.png', ['/srv/app/uploads/users/4?'], True),
    ('srv/app/other/a.png', ['/srv/app/uploads'], False),
])
def test_selection_patterns(path, patterns, expected):
    assert snapshot_manifest.matches(path, patterns) is expected


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as handle:
        handle.write(data)


def test_manifest_reuses_hashes_only_for_shared_inodes(tmp_path):
    first = str(tmp_path / 's1')
    write(os.path.join(first, 'a'), b'alpha')
    write(os.path.join(first, 'b'), b'bravo')
    os.symlink('a', os.path.join(first, 'l'))
    manifest1, stats1 = snapshot_manifest.build(first)
    assert stats1['hashed'] == 2 and stats1['reused'] == 0
    second = str(tmp_path / 's2')
    os.makedirs(second)
    os.link(os.path.join(first, 'a'), os.path.join(second, 'a'))  # what --link-dest does
    shutil.copy2(os.path.join(first, 'b'), os.path.join(second, 'b'))  # same size and mtime, new inode
    os.symlink('a', os.path.join(second, 'l'))
    manifest2, stats2 = snapshot_manifest.build(second, first, manifest1)
    assert stats2['reused'] == 1 and stats2['hashed'] == 1 and stats2['linked'] == 1
    assert manifest2.by_path['a'].sha256 == manifest1.by_path['a'].sha256
    assert manifest2.by_path['l'].data == 'a'


def test_manifest_round_trip_and_verify_reports_flipped_byte(tmp_path):
    snap = str(tmp_path / 'snap')
    write(os.path.join(snap, 'dir', 'f'), b'0123456789')
    write(os.path.join(snap, 'g'), b'x')
    manifest, _stats = snapshot_manifest.build(snap)
    sha, _size = snapshot_manifest.write(str(tmp_path / 'snap.manifest.json'), manifest)
    loaded = snapshot_manifest.load(str(tmp_path / 'snap.manifest.json'), sha)
    assert [e.row() for e in loaded.entries] == [e.row() for e in manifest.entries]
    assert snapshot_manifest.verify(snap, loaded) == []
    with open(os.path.join(snap, 'dir', 'f'), 'r+b') as handle:
        handle.write(b'1')
    os.unlink(os.path.join(snap, 'g'))
    problems = snapshot_manifest.verify(snap, loaded)
    assert {'path': 'dir/f', 'problem': 'sha256'} in problems and {'path': 'g', 'problem': 'missing'} in problems
    with pytest.raises(BackupError, match='does not match the SHA-256'):
        snapshot_manifest.load(str(tmp_path / 'snap.manifest.json'), '0' * 64)


def test_sources_must_be_absolute_existing_and_disjoint(tmp_path):
    (tmp_path / 'a' / 'b').mkdir(parents=True)
    with pytest.raises(BackupError, match='not an absolute path'):
        media_snapshot._normalise_sources(['relative/dir'])
    with pytest.raises(BackupError, match='does not exist'):
        media_snapshot._normalise_sources([str(tmp_path / 'nope')])
    with pytest.raises(BackupError, match='is inside'):
        media_snapshot._normalise_sources([str(tmp_path / 'a'), str(tmp_path / 'a' / 'b')])
