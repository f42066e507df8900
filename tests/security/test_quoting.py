# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The quoting the core relies on, proven against the real programs.

pg_dump's ``--dbname`` parses a value with ``=`` as a connection string and ``--table`` takes a psql pattern;
alert URLs reach urllib, which opens ``file:`` too.  Each helper is checked where it matters: a real pg_dump
against neighbours that a sloppy quote would also match.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from conftest import DB_PASSWORD

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import alerts, database_backup, postgres

NEIGHBOURS = ['a*b', 'axb', 'Mixed', 'mixed', 'x.y', 'y', "q'uo\"te d"]


@pytest.fixture(scope='module')
def pattern_db(secure_pg):
    name = 'dbname=pattern_db'  # a name libpq would read as a connection string if it were not quoted
    secure_pg.createdb(name)
    secure_pg.createdb('pattern_db')  # what the unquoted name would select instead
    statements = ['CREATE TABLE "%s" (id int);' % table.replace('"', '""') for table in NEIGHBOURS]
    secure_pg.psql(' '.join(statements), dbname=name)
    secure_pg.psql('CREATE TABLE decoy (id int);', dbname='pattern_db')
    return name


def listed_tables(secure_pg, path):
    """Table names whose data a custom-format dump holds (pg_restore --list)."""
    pg_restore = postgres.find_client('pg_restore')[0]
    out = subprocess.run([pg_restore, '--list', path], stdout=subprocess.PIPE, check=True, text=True).stdout
    return sorted(line.split(' TABLE DATA public ')[1].rsplit(' ', 1)[0] for line in out.splitlines()
                  if ' TABLE DATA public ' in line)


@pytest.mark.parametrize('table', ['a*b', 'Mixed', 'x.y', "q'uo\"te d"])
def test_pg_dump_table_selection_matches_exactly_one_name(secure_pg, pattern_db, tmp_path, table):
    connection = postgres.Connection(pattern_db, secure_pg.host, secure_pg.port, 'postgres', DB_PASSWORD)
    job = database_backup.DatabaseBackup(connection, backup_root=str(tmp_path), tables=[('public', table)],
                                         compression='none', free_space_margin=0.0)
    result = job.run()
    assert listed_tables(secure_pg, result['path']) == [table]
    # the name with '=' reached pg_dump quoted: the tables came from it, not from the database 'pattern_db'
    assert "--dbname=dbname='dbname=pattern_db'" in shlex.split(result['executed_commands'][0])


@pytest.mark.parametrize('name, expected', [
    ('cepcomunicacion', '--dbname=cepcomunicacion'),
    ('dbname=other host=10.0.0.1', "--dbname=dbname='dbname=other host=10.0.0.1'"),
    ("it's=\\", "--dbname=dbname='it\\'s=\\\\'"),
    ('postgresql://evil/db', "--dbname=dbname='postgresql://evil/db'"),
])
def test_dbname_option_quotes_what_libpq_would_parse(name, expected):
    assert postgres.dbname_option(name) == expected


@pytest.mark.parametrize('url', ['file:///etc/passwd', 'ftp://127.0.0.1/x', '/relative/no-scheme'])
def test_alert_urls_other_than_http_are_refused_without_showing_them(url, tmp_path):
    with pytest.raises(alerts.DeliveryError) as caught:
        alerts.http_post(url, b'{}', 'application/json', 5, 'the Slack webhook')
    assert not caught.value.retryable
    assert 'must be an http:// or https:// URL' in caught.value.message
    assert url not in caught.value.message and '/etc/passwd' not in caught.value.message
    assert os.path.exists('/etc/passwd')  # nothing was read or written: the function refused before opening
