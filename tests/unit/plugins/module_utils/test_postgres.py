# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection handling that needs no server: messages, passfile, client lookup."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import postgres
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError

SECRET = 's3cr:et\\pw'


@pytest.mark.parametrize('server_text,reason,expected', [
    ('FATAL:  password authentication failed for user "backup"', 'auth', "authentication failed for user 'backup'"),
    ('fe_sendauth: no password supplied', 'auth', 'asks for a password'),
    ('FATAL:  database "nope" does not exist', 'no_database', "database 'nope' does not exist on 127.0.0.1:5999"),
    ('could not connect to server: Connection refused', 'unreachable', 'cannot connect to PostgreSQL at 127.0.0.1:5999'),
    ('something else %s' % SECRET, 'postgres', 'something else ********'),
])
def test_error_messages_name_the_problem_and_hide_the_password(server_text, reason, expected):
    conn = postgres.Connection('nope', port=5999, user='backup', password=SECRET)
    error = conn.describe_error(Exception(server_text))
    assert error.details['reason'] == reason
    assert expected in str(error)
    assert SECRET not in str(error)


def test_passfile_is_private_and_escaped(tmp_path):
    conn = postgres.Connection('db', password=SECRET)
    env = conn.client_environment(str(tmp_path))
    assert 'PGPASSWORD' not in env
    assert SECRET not in ''.join(env.values())
    passfile = env['PGPASSFILE']
    assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
    assert open(passfile).read() == '*:*:*:*:s3cr\\:et\\\\pw\n'
    assert env['LC_ALL'] == 'C'


def test_no_password_uses_no_passfile(tmp_path):
    env = postgres.Connection('db').client_environment(str(tmp_path))
    assert not os.path.exists(env['PGPASSFILE'])
    assert os.listdir(str(tmp_path)) == []


def test_repr_hides_password():
    assert SECRET not in repr(postgres.Connection('db', password=SECRET))


def fake_client(directory, name, version):
    path = os.path.join(directory, name)
    with open(path, 'w') as handle:
        handle.write('#!/bin/sh\necho "%s (PostgreSQL) %s"\n' % (name, version))
    os.chmod(path, 0o755)
    return path


def test_client_older_than_server_is_refused(tmp_path):
    # a stand-in pg_dump: only PostgreSQL 15 clients can be installed on this machine
    fake_client(str(tmp_path), 'pg_dump', '14.9')
    with pytest.raises(BackupError, match=r'pg_dump 14.9 .* is older than the PostgreSQL server \(15\)'):
        postgres.find_client('pg_dump', 150004, str(tmp_path))


def test_client_newer_than_server_is_fine(tmp_path):
    path = fake_client(str(tmp_path), 'pg_dump', '16.2')
    assert postgres.find_client('pg_dump', 150004, str(tmp_path))[:2] == (path, (16, 2))


def test_missing_client_says_what_to_install(tmp_path):
    with pytest.raises(BackupError, match='apt install postgresql-client'):
        postgres.find_client('pg_dump', None, str(tmp_path))


def test_server_major():
    assert postgres.server_major(150004) == 15
    assert postgres.server_major(90624) == 9
