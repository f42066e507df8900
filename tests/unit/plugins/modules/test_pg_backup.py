# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_backup's front end: argument handling and error reporting without a server."""

from __future__ import annotations

import json
import socket

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.cepcomunicacion.backup.plugins.modules import pg_backup


def run(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            pg_backup.main()
    return json.loads(capsys.readouterr().out)


def closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_server_down_is_reported_and_nothing_written(tmp_path, capsys):
    # status_file under tmp_path: the default is the real server's /var/run/cepcomunicacion-backup-status.json
    result = run(capsys, {'backup_root': str(tmp_path / 'root'), 'login_port': closed_port(),
                          'status_file': str(tmp_path / 'status.json'),
                          'login_password': 'not-shown-anywhere', 'connect_timeout': 2})
    assert result['failed'] is True
    assert 'cannot connect to PostgreSQL at 127.0.0.1:' in result['msg']
    assert 'not-shown-anywhere' not in json.dumps(result)
    assert not (tmp_path / 'root').exists()
    assert 'not-shown-anywhere' not in (tmp_path / 'status.json').read_text()


def test_kind_choices_are_enforced(tmp_path, capsys):
    result = run(capsys, {'backup_root': str(tmp_path), 'kind': 'hourly'})
    assert result['failed'] is True
    assert 'kind' in result['msg']
