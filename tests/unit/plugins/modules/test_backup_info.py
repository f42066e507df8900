# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""backup_info as a module: it lists, verifies, and never changes anything."""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact, layout
from ansible_collections.cepcomunicacion.backup.plugins.modules import backup_info


def run(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            backup_info.main()
    return json.loads(capsys.readouterr().out)


def snapshot(root):
    return sorted((path, os.stat(os.path.join(path, n)).st_mtime_ns, n)
                  for path, _dirs, files in os.walk(root) for n in files)


def test_lists_and_verifies_without_changing(tmp_path, capsys):
    directory = layout.KINDS['database'].directory(str(tmp_path))
    artifact.ensure_directory(directory)
    path = os.path.join(directory, 'cepcomunicacion_2026-11-29_02-00-00.dump')
    with artifact.ArtifactWriter(path) as writer:
        writer.write(b'PGDMP' + b'x' * 100)
        writer.commit({'kind': 'database', 'created': '2026-11-29T02:00:00+00:00'})
    before = snapshot(str(tmp_path))
    result = run(capsys, {'backup_root': str(tmp_path), 'verify': True})
    assert result['changed'] is False
    assert [a['status'] for a in result['artifacts']] == ['ok']
    assert result['failed_verification'] == []
    assert snapshot(str(tmp_path)) == before


def test_missing_root_is_a_clear_error(tmp_path, capsys):
    result = run(capsys, {'backup_root': str(tmp_path / 'absent')})
    assert result['failed'] is True
    assert 'does not exist' in result['msg']
