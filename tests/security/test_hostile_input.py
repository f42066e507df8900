# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile database, table, path and time inputs: rejected with a clear error, or handled literally.

Every case runs through ansible-playbook the way an operator's variables would reach the modules.  A real
database and table whose names hold quotes, spaces, ``;`` and ``=`` are backed up and restored; injection
attempts (``"; DROP TABLE canary; --``, ``dbname=...`` connection strings, ``../../etc``, ``2026-01-01; rm -rf /``)
fail clearly, and afterwards the canary tables still hold their rows and the canary files are untouched.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from conftest import DB_PASSWORD, Ansible, run_modules, tree_state

WEIRD_DB = 'it\'s a "db"; x=1'
WEIRD_TABLE = 'it\'s "odd" t; DROP'
INJECTION = '"; DROP TABLE canary; --'
CANARY_ROWS = 42
BAD_TIME = '2026-01-01; rm -rf /'
M = 'cepcomunicacion.backup.'


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(value):
    return "'%s'" % value.replace("'", "''")


def canary_counts(pg):
    counts = {}
    for dbname in ('canary_db', WEIRD_DB):
        counts[dbname] = int(pg.psql('SELECT count(*) FROM canary', dbname=dbname).strip())
    return counts


def weird_rows(pg, dbname=WEIRD_DB):
    return pg.psql('SELECT id, body FROM %s ORDER BY id' % quote_ident(WEIRD_TABLE), dbname=dbname)


def digest(path):
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture(scope='module')
def world(tmp_path_factory, secure_pg):
    """Databases with canaries, odd names on disk, a canary directory outside everything; the first batch run."""
    pg = secure_pg
    pg.createdb('canary_db')
    pg.createdb(WEIRD_DB)
    for dbname in ('canary_db', WEIRD_DB):
        pg.psql('CREATE TABLE canary (id int PRIMARY KEY); INSERT INTO canary SELECT generate_series(1, %d);'
                % CANARY_ROWS, dbname=dbname)
    table, body = quote_ident(WEIRD_TABLE), quote_literal("row ' \" ; -- ")
    pg.psql('CREATE TABLE %s (id serial PRIMARY KEY, body text NOT NULL); INSERT INTO %s (body) SELECT %s || g '
            'FROM generate_series(1, 10) g;' % (table, table, body), dbname=WEIRD_DB)
    # deep, so that "../../etc" from any working directory here stays inside pytest's temp area
    base = tmp_path_factory.mktemp('hostile') / 'a' / 'b' / 'c'
    (base / 'etc').mkdir(parents=True)
    (base / 'etc' / 'passwd').write_text('canary: must never change\n')
    media = base / 'media' / 'it\'s a "dir"; $(touch pwned)'
    (media / 'sub dir').mkdir(parents=True)
    (media / 'sub dir' / 'a "b" c.txt').write_bytes(os.urandom(3000))
    (media / '-rf').write_bytes(b'a file named like an option\n')
    conf = base / 'conf'
    conf.mkdir()
    (conf / 'it\'s "odd" file.env').write_text('KEY=value with spaces; and "quotes"\n')
    root = base / 'backups'
    ansible = Ansible(str(base / 'ansible'))
    os.makedirs(ansible.workdir)
    login = {'login_host': pg.host, 'login_port': pg.port, 'login_user': 'postgres', 'login_password': DB_PASSWORD}
    canary_state = tree_state(str(base / 'etc'))
    before = weird_rows(pg)
    tasks = [
        (M + 'pg_backup', dict(login, database=INJECTION, backup_root=str(root), status_file=ansible.status_file)),
        (M + 'pg_backup', dict(login, database='dbname=canary_db', backup_root=str(root),
                               status_file=ansible.status_file)),
        (M + 'pg_backup', dict(login, database=WEIRD_DB, backup_root=str(root), status_file=ansible.status_file)),
        (M + 'media_backup', {'src': ['../../etc'], 'backup_root': str(root), 'status_file': ansible.status_file}),
        (M + 'media_backup', {'src': [str(media)], 'backup_root': str(root), 'status_file': ansible.status_file}),
        (M + 'config_backup', {'paths': [str(conf / 'it\'s "odd" file.env')], 'backup_root': str(root),
                               'status_file': ansible.status_file}),
        (M + 'pg_restore', dict(login, database=WEIRD_DB, backup_root=str(root), at=BAD_TIME)),
        (M + 'backup_info', {'backup_root': '../../etc'}),
        (M + 'backup_info', {'backup_root': str(root), 'verify': True}),
    ]
    results, output, _play = run_modules(ansible, 'backups', tasks)
    return {'pg': pg, 'base': base, 'root': root, 'media': media, 'conf': conf, 'ansible': ansible, 'login': login,
            'results': results, 'output': output, 'canary_state': canary_state, 'before': before}


def failed_with(result, *words):
    assert result.get('failed'), 'expected a clear failure, got %r' % result
    message = result.get('msg', '')
    for word in words:
        assert word in message, (word, message)
    assert 'Traceback' not in message and 'MODULE FAILURE' not in message, message
    return message


def assert_nothing_else_touched(world):
    assert canary_counts(world['pg']) == {'canary_db': CANARY_ROWS, WEIRD_DB: CANARY_ROWS}
    assert tree_state(str(world['base'] / 'etc')) == world['canary_state']
    assert not os.path.exists(os.path.join(str(world['base']), 'pwned'))
    assert not os.path.exists(os.path.join(str(world['base'] / 'ansible'), 'pwned'))


def test_database_names_reach_sql_and_pg_dump_only_as_themselves(world):
    injection, conninfo, weird = world['results'][0:3]
    failed_with(injection, 'does not exist', INJECTION)
    # a libpq connection string in a name must not select another database
    failed_with(conninfo, "database 'dbname=canary_db' does not exist")
    assert not weird.get('failed'), weird
    assert weird['changed'] and os.path.isfile(weird['path'])
    dumps = [name for name in os.listdir(str(world['root'] / 'database')) if name.endswith('.dump')]
    assert dumps == [os.path.basename(weird['path'])], 'only the real database was dumped: %s' % dumps
    assert_nothing_else_touched(world)


def test_paths_and_times_are_validated_or_taken_literally(world):
    results = world['results']
    failed_with(results[3], 'not an absolute path')
    snapshot = results[4]
    assert not snapshot.get('failed'), snapshot
    copied = os.path.join(snapshot['snapshot'], os.path.relpath(str(world['media'] / 'sub dir' / 'a "b" c.txt'), '/'))
    if not os.path.exists(copied):  # snapshots may keep only the path below the source's parent
        copied = [os.path.join(d, f) for d, _s, fs in os.walk(snapshot['snapshot']) for f in fs if f == 'a "b" c.txt']
        assert copied, os.listdir(snapshot['snapshot'])
        copied = copied[0]
    assert digest(copied) == digest(str(world['media'] / 'sub dir' / 'a "b" c.txt'))
    assert not results[5].get('failed'), results[5]
    failed_with(results[6], 'cannot read the time', BAD_TIME)
    info_relative, info = results[7], results[8]
    assert info_relative.get('failed') or info_relative.get('artifacts') == [], info_relative
    assert not info.get('failed') and not info['failed_verification'], info
    kinds = sorted(item['kind'] for item in info['artifacts'])
    assert kinds == ['config', 'database', 'media'], kinds
    assert_nothing_else_touched(world)


def test_restores_refuse_injection_and_restore_odd_names_literally(world):
    pg, root, login, ansible = world['pg'], world['root'], world['login'], world['ansible']
    dump = world['results'][2]['path']
    pg.psql('DELETE FROM %s WHERE id > 5' % quote_ident(WEIRD_TABLE), dbname=WEIRD_DB)
    dest_media = world['base'] / 'restore' / 'it\'s a "dest"; x'
    dest_conf = world['base'] / 'conf restore' / 'it\'s "x"'
    tasks = [
        (M + 'pg_restore', dict(login, database=WEIRD_DB, backup_root=str(root), backup=dump, mode='tables', tables=[INJECTION])),
        (M + 'pg_restore', dict(login, database=WEIRD_DB, backup_root=str(root), backup=dump, mode='rows',
                                rows={'table': WEIRD_TABLE, 'where': 'true); DROP TABLE canary; --'})),
        (M + 'pg_restore', dict(login, database=WEIRD_DB, backup_root=str(root), backup=dump, mode='rows',
                                rows={'table': WEIRD_TABLE, 'where': 'id > 8'})),
        (M + 'pg_restore', dict(login, database=WEIRD_DB, backup_root=str(root), backup=dump, mode='tables', tables=[WEIRD_TABLE])),
        (M + 'pg_restore', dict(login, database=INJECTION, backup_root=str(root), backup=dump, pre_restore_dump=False)),
        (M + 'media_restore', {'backup_root': str(root), 'snapshot': '../../etc', 'dest': str(dest_media)}),
        (M + 'media_restore', {'backup_root': str(root), 'dest': '../../etc'}),
        (M + 'media_restore', {'backup_root': str(root), 'at': BAD_TIME, 'dest': str(dest_media)}),
        (M + 'media_restore', {'backup_root': str(root), 'paths': ['../../etc/passwd'], 'dest': str(dest_media)}),
        (M + 'media_restore', {'backup_root': str(root), 'dest': str(dest_media)}),
        (M + 'config_restore', {'backup_root': str(root), 'dest': '../../etc'}),
        (M + 'config_restore', {'backup_root': str(root), 'archive': '../../etc/passwd', 'dest': str(dest_conf)}),
        (M + 'config_restore', {'backup_root': str(root), 'at': BAD_TIME, 'dest': str(dest_conf)}),
        (M + 'config_restore', {'backup_root': str(root), 'dest': str(dest_conf)}),
    ]
    results, _output, _play = run_modules(ansible, 'restores', tasks)
    (tables_injection, where_injection, rows, tables, new_db, snap_escape, media_rel, media_time, media_pattern,
     media_ok, conf_rel, conf_archive, conf_time, conf_ok) = results

    failed_with(tables_injection, INJECTION, 'is not in the backup', 'nothing was changed')
    # the WHERE clause is the operator's own SQL, run read-only against the scratch copy: a second statement is a
    # syntax error there, and neither the live database nor the canaries see it
    failed_with(where_injection, 'syntax error')
    assert not rows.get('failed'), rows
    assert not tables.get('failed'), tables
    assert weird_rows(pg) == world['before'], 'the odd table did not come back as it was backed up'
    assert not new_db.get('failed'), new_db
    # a database literally named '"; DROP TABLE canary; --' now holds the backup's rows
    assert weird_rows(pg, dbname=INJECTION) == world['before']

    failed_with(snap_escape, 'not a complete media snapshot')
    failed_with(media_rel, 'absolute')
    failed_with(media_time, 'cannot read the time', BAD_TIME)
    # a pattern is matched against the snapshot's own paths: '../../etc/passwd' matches nothing, restores nothing
    assert not media_pattern.get('failed') and media_pattern['restored'] == [] and not media_pattern['changed']
    assert not media_ok.get('failed'), media_ok
    source = world['media'] / 'sub dir' / 'a "b" c.txt'
    restored = [os.path.join(d, f) for d, _s, fs in os.walk(str(dest_media)) for f in fs if f == 'a "b" c.txt']
    assert restored and digest(restored[0]) == digest(str(source)), restored
    assert any(os.path.basename(d) == 'sub dir' for d, _s, _f in os.walk(str(dest_media)))

    failed_with(conf_rel, 'absolute')
    failed_with(conf_archive, 'leads out of')
    failed_with(conf_time, 'cannot read the time', BAD_TIME)
    assert not conf_ok.get('failed'), conf_ok
    original = world['conf'] / 'it\'s "odd" file.env'
    restored = os.path.join(str(dest_conf), os.path.relpath(str(original), '/'))
    assert open(restored).read() == original.read_text()
    assert_nothing_else_touched(world)
