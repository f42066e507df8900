# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore's front end: argument constraints, and refusals that need no server."""

from __future__ import annotations

import json
import socket

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.cepcomunicacion.backup.plugins.modules import pg_restore


def run(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            pg_restore.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('args,expected', [
    ({'backup': '/x.dump', 'at': '2026-11-29T00:00:00Z'}, 'mutually exclusive'),
    ({'mode': 'tables'}, 'tables'),
    ({'mode': 'rows'}, 'rows'),
    ({'mode': 'rows', 'rows': {'table': 'enrollments'}}, 'where'),
    ({'mode': 'everything'}, 'mode'),
])
def test_argument_constraints(tmp_path, capsys, args, expected):
    result = run(capsys, dict(args, backup_root=str(tmp_path)))
    assert result['failed'] is True
    assert expected in result['msg']


def test_server_down_is_named_and_nothing_written(tmp_path, capsys):
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    result = run(capsys, {'backup_root': str(tmp_path / 'root'), 'login_port': port, 'login_password': 'hidden-pw',
                          'connect_timeout': 2})
    assert result['failed'] is True
    assert 'cannot connect to PostgreSQL at 127.0.0.1:%d' % port in result['msg']
    assert 'hidden-pw' not in json.dumps(result)
    assert not (tmp_path / 'root').exists()
