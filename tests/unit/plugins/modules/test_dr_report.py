# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dr_report's front end: check mode writes nothing, a real run writes both files, errors are named."""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.cepcomunicacion.backup.plugins.modules import dr_report


def run(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            dr_report.main()
    return json.loads(capsys.readouterr().out)


def args(tmp_path, **extra):
    base = {'report_dir': str(tmp_path / 'log'), 'scenario': 'media_loss', 'host': 'web1',
            'started': '2026-11-29T09:00:00Z', 'smoke_passed': '2026-11-29T09:00:30Z',
            'recovery_point': {'path': '/b/media/2026-11-29_03-00-00', 'created': '2026-11-29T03:00:00+00:00'}}
    base.update(extra)
    return base


def test_check_mode_predicts_and_writes_nothing(tmp_path, capsys):
    result = run(capsys, args(tmp_path, _ansible_check_mode=True))
    assert result['changed'] is True
    assert result['report']['outcome'] == 'recovered' and result['report']['check_mode'] is True
    assert result['json_path'] == str(tmp_path / 'log' / 'dr-media_loss-2026-11-29_09-00-00.json')
    assert not (tmp_path / 'log').exists()


def test_writes_json_and_markdown(tmp_path, capsys):
    result = run(capsys, args(tmp_path, results={'files_restored': 4}))
    assert result['rto_seconds'] == 30.0
    with open(result['json_path']) as handle:
        assert json.load(handle)['results'] == {'files_restored': 4}
    assert os.path.exists(result['markdown_path'])


def test_bad_time_fails_clearly(tmp_path, capsys):
    result = run(capsys, args(tmp_path, started='soon'))
    assert result['failed'] is True and 'started' in result['msg'] and 'cannot read the time' in result['msg']
