# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic artifacts on a real filesystem."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_commit_writes_data_and_sidecars(tmp_path):
    path = str(tmp_path / 'a.dump')
    payload = os.urandom(3 * artifact.CHUNK_SIZE + 17)
    with artifact.ArtifactWriter(path) as writer:
        for start in range(0, len(payload), 100000):
            writer.write(payload[start:start + 100000])
        meta = writer.commit({'kind': 'database'})
    with open(path, 'rb') as handle:
        assert handle.read() == payload
    assert meta['sha256'] == hashlib.sha256(payload).hexdigest()
    assert meta['size'] == len(payload)
    assert json.load(open(path + '.meta.json'))['sha256'] == meta['sha256']
    for name in (path, path + '.sha256', path + '.meta.json'):
        assert mode(name) == 0o600
    check = subprocess.run(['sha256sum', '-c', 'a.dump.sha256'], cwd=str(tmp_path), capture_output=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(os.listdir(str(tmp_path))) == ['a.dump', 'a.dump.meta.json', 'a.dump.sha256']


def test_failure_leaves_nothing(tmp_path):
    path = str(tmp_path / 'b.dump')
    with pytest.raises(RuntimeError):
        with artifact.ArtifactWriter(path) as writer:
            writer.write(b'partial')
            raise RuntimeError('pg_dump died')
    assert os.listdir(str(tmp_path)) == []


def test_crash_leftovers_are_cleaned(tmp_path):
    directory = str(tmp_path)
    # a temporary from a killed run, and sidecars whose data never committed
    dead = subprocess.run(['sh', '-c', 'echo $$'], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / ('.tmp-c.dump.%s' % dead)).write_bytes(b'half')
    (tmp_path / ('.tmp-d.dump.%d' % os.getpid())).write_bytes(b'this run is still writing it')
    (tmp_path / 'c.dump.sha256').write_text('0' * 64 + '  c.dump\n')
    (tmp_path / 'c.dump.meta.json').write_text('{}')
    (tmp_path / 'kept.dump').write_bytes(b'x')
    (tmp_path / 'kept.dump.sha256').write_text('0' * 64 + '  kept.dump\n')
    cleaned = artifact.cleanup_directory(directory)
    assert sorted(cleaned) == ['.tmp-c.dump.%s' % dead, 'c.dump.meta.json', 'c.dump.sha256']
    assert sorted(os.listdir(directory)) == ['.tmp-d.dump.%d' % os.getpid(), 'kept.dump', 'kept.dump.sha256']


def test_replacement_is_restored_when_new_one_never_committed(tmp_path):
    path = str(tmp_path / 'w.dump')
    with artifact.ArtifactWriter(path) as writer:
        writer.write(b'old')
        writer.commit({})
    stash = artifact._stash_existing(path)  # the state a crash in the middle of a replace leaves
    assert not os.path.exists(path)
    artifact.cleanup_directory(str(tmp_path))
    assert open(path, 'rb').read() == b'old'
    assert not os.path.exists(stash)


def test_replace_keeps_new(tmp_path):
    path = str(tmp_path / 'w.dump')
    for content in (b'old', b'new'):
        with artifact.ArtifactWriter(path) as writer:
            writer.write(content)
            writer.commit({})
    assert open(path, 'rb').read() == b'new'
    assert open(path + '.sha256').read().split()[0] == hashlib.sha256(b'new').hexdigest()
    assert sorted(os.listdir(str(tmp_path))) == ['w.dump', 'w.dump.meta.json', 'w.dump.sha256']


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(2 * artifact.CHUNK_SIZE + 5)
    (tmp_path / 'f').write_bytes(data)
    assert artifact.sha256_file(str(tmp_path / 'f')) == (hashlib.sha256(data).hexdigest(), len(data))


def test_malformed_sidecar_is_reported(tmp_path):
    (tmp_path / 'x').write_bytes(b'x')
    (tmp_path / 'x.sha256').write_text('garbage\n')
    with pytest.raises(BackupError, match='malformed'):
        artifact.read_sha256_sidecar(str(tmp_path / 'x'))


def test_ensure_directory_tightens_mode(tmp_path):
    target = tmp_path / 'root'
    target.mkdir(mode=0o755)
    artifact.ensure_directory(str(target))
    assert mode(str(target)) == 0o700


def test_human_size():
    assert artifact.human_size(512) == '512 B'
    assert artifact.human_size(16 * 1024 * 1024) == '16.0 MiB'
