# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore through ansible-playbook against a real PostgreSQL: it never makes things worse."""

from __future__ import annotations

import datetime
import itertools
import os

import pytest

from conftest import DATABASE, generate, table_checksums

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact, layout


LIVE_NUMBERS = itertools.count(1)
ROWS_OF_COURSE_7 = "SELECT md5(string_agg(e::text, ',' ORDER BY id)) FROM enrollments e WHERE course_id = 7"


def databases(pg):
    return set(pg.psql('SELECT datname FROM pg_database').split())


def flip_byte(path, offset=None):
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def live(pg, ansible, conn_args, tmp_path):
    """A live database of the reference platform, with one verified daily dump of it."""
    name = 'live_%d' % next(LIVE_NUMBERS)
    generate(pg, name)
    root = str(tmp_path / 'backups')
    dump = ansible.run('pg_backup', dict(conn_args, database=name, backup_root=root))
    assert dump['changed'], dump['_output']
    return {'name': name, 'root': root, 'dump': dump, 'at_backup': table_checksums(pg, name),
            'args': dict(conn_args, database=name, backup_root=root)}


def test_full_restore_swaps_in_the_backup_and_can_roll_back(pg, ansible, live):
    name = live['name']
    other_before = table_checksums(pg, DATABASE)
    pg.psql("DELETE FROM enrollments WHERE course_id < 10; UPDATE courses SET title = 'ransom' WHERE id < 5; "
            "DROP TABLE lessons CASCADE;", dbname=name)
    damaged = table_checksums(pg, name)
    assert damaged != live['at_backup']

    predicted = ansible.run('pg_restore', live['args'], check=True)
    assert predicted['changed'] is True and predicted['backup'] == live['dump']['path'], predicted
    assert predicted['sha256_verified'] is True
    assert table_checksums(pg, name) == damaged, 'check mode changed the database'

    result = ansible.run('pg_restore', dict(live['args'], sanity_sql=['SELECT count(*) > 0 FROM courses']))
    assert result['changed'] is True, result['_output']
    assert table_checksums(pg, name) == live['at_backup']
    assert table_checksums(pg, DATABASE) == other_before, 'another database on the server was touched'
    assert result['pre_restore_database'] == '%s__pre_restore_%s' % (name, result['pre_restore_database'].rsplit('_', 1)[1])
    assert table_checksums(pg, result['pre_restore_database']) == damaged
    assert os.path.dirname(result['pre_restore_backup']) == os.path.join(live['root'], 'database', 'pre-restore')
    assert set(result['phases']) >= {'verify', 'pre_restore', 'restore', 'swap'}
    assert result['duration'] > 0 and result['row_counts']['public.courses'] > 0
    # grants and ownership from the dump survive
    assert pg.psql("SELECT has_table_privilege('cep_readonly', 'public.courses', 'SELECT')", dbname=name).strip() == 't'
    assert not [d for d in databases(pg) if d.startswith(name + '__restore_')], 'scratch database left behind'

    rolled = ansible.run('pg_restore', dict(live['args'], mode='rollback'))
    assert rolled['changed'] is True, rolled['_output']
    assert table_checksums(pg, name) == damaged
    assert table_checksums(pg, rolled['rolled_back_database']) == live['at_backup']


@pytest.mark.parametrize('damage', ['flipped_byte', 'truncated', 'missing_sidecar'])
def test_damaged_dump_is_refused_before_anything_happens(pg, ansible, live, damage):
    path = live['dump']['path']
    if damage == 'flipped_byte':
        flip_byte(path)
    elif damage == 'truncated':
        with open(path, 'r+b') as handle:
            handle.truncate(os.path.getsize(path) // 2)
    else:
        os.unlink(path + '.sha256')
    pg.psql('INSERT INTO app_settings (key, value) VALUES (%s, %s)' % ("'after_backup'", "'\"kept\"'"), dbname=live['name'])
    before = table_checksums(pg, live['name'])
    before_dbs = databases(pg)
    args = dict(live['args'], backup=path)
    result = ansible.run('pg_restore', args)
    assert result['failed'] is True
    if damage == 'missing_sidecar':
        assert 'has no checksum sidecar' in result['msg']
    else:
        assert 'fails its checksum' in result['msg'] and path in result['msg'] and 'Nothing was changed' in result['msg']
    assert table_checksums(pg, live['name']) == before
    assert databases(pg) == before_dbs


def test_dump_that_fails_in_pg_restore_leaves_production_untouched(pg, ansible, live):
    path = live['dump']['path']
    with open(path, 'r+b') as handle:
        handle.truncate(os.path.getsize(path) * 2 // 3)
    pg.psql("UPDATE courses SET title = 'written after the backup' WHERE id = 1", dbname=live['name'])
    before = table_checksums(pg, live['name'])
    before_dbs = databases(pg)
    result = ansible.run('pg_restore', dict(live['args'], backup=path, verify=False))
    assert result['failed'] is True
    assert 'pg_restore failed' in result['msg'] and 'live database was not touched' in result['msg']
    assert table_checksums(pg, live['name']) == before
    assert databases(pg) == before_dbs, 'scratch database left behind'


def test_failing_sanity_sql_leaves_production_untouched(pg, ansible, live):
    pg.psql("DELETE FROM payments WHERE id % 2 = 0", dbname=live['name'])
    before = table_checksums(pg, live['name'])
    before_dbs = databases(pg)
    result = ansible.run('pg_restore', dict(live['args'], sanity_sql=['SELECT count(*) > 1000000 FROM courses']))
    assert result['failed'] is True
    assert 'sanity SQL did not return true' in result['msg'] and 'count(*) > 1000000' in result['msg']
    assert table_checksums(pg, live['name']) == before
    assert databases(pg) == before_dbs


def test_tables_mode_restores_only_those_tables(pg, ansible, live):
    name = live['name']
    pg.psql("DELETE FROM payments WHERE id % 3 = 0; UPDATE payments SET amount = 0 WHERE id % 3 = 1; "
            "UPDATE courses SET title = 'changed after backup, must stay' WHERE id = 2;", dbname=name)
    before = table_checksums(pg, name)
    result = ansible.run('pg_restore', dict(live['args'], mode='tables', tables=['public.payments']))
    assert result['changed'] is True, result['_output']
    after = table_checksums(pg, name)
    assert after['public.payments'] == live['at_backup']['public.payments']
    for table, value in before.items():
        if table != 'public.payments':
            assert after[table] == value, '%s was touched' % table
    assert result['tables_restored'] == ['public.payments']
    assert os.path.basename(result['pre_restore_backup']).startswith(name + '_')
    assert not [d for d in databases(pg) if d.startswith(name + '__')]


def test_rows_mode_brings_back_exactly_the_deleted_rows(pg, ansible, live):
    name = live['name']
    deleted = int(pg.psql('SELECT count(*) FROM enrollments WHERE course_id = 7', dbname=name))
    assert deleted > 0
    rows_before = pg.psql(ROWS_OF_COURSE_7, dbname=name)
    pg.psql('DELETE FROM enrollments WHERE course_id = 7', dbname=name)
    # writes continue after the deletion: they must be kept
    pg.psql("INSERT INTO enrollments (student_id, course_id, enrolled_at) SELECT s.id, 8, now() FROM students s "
            "WHERE NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.student_id = s.id AND e.course_id = 8) LIMIT 1",
            dbname=name)
    pg.psql("UPDATE students SET email = 'new-' || email WHERE id = 3", dbname=name)
    after_writes = table_checksums(pg, name)
    check = ansible.run('pg_restore', dict(live['args'], mode='rows',
                                           rows={'table': 'enrollments', 'where': 'course_id = 7'}), check=True)
    assert check['changed'] is True and table_checksums(pg, name) == after_writes
    result = ansible.run('pg_restore', dict(live['args'], mode='rows',
                                            rows={'table': 'public.enrollments', 'where': 'course_id = 7'}))
    assert result['changed'] is True, result['_output']
    assert (result['rows_found'], result['rows_present'], result['rows_inserted']) == (deleted, 0, deleted)
    now = table_checksums(pg, name)
    for table, value in after_writes.items():
        if table != 'public.enrollments':
            assert now[table] == value, '%s was touched' % table
    assert int(pg.psql('SELECT count(*) FROM enrollments WHERE course_id = 7', dbname=name)) == deleted
    assert int(pg.psql('SELECT count(*) FROM enrollments WHERE course_id = 8 AND enrolled_at > now() - '
                       "interval '1 hour'", dbname=name)) == 1, 'a write made after the deletion was lost'
    assert pg.psql(ROWS_OF_COURSE_7, dbname=name) == rows_before, 'restored rows differ from the backup'
    again = ansible.run('pg_restore', dict(live['args'], mode='rows',
                                           rows={'table': 'enrollments', 'where': 'course_id = 7'}))
    assert again['changed'] is False
    assert (again['rows_found'], again['rows_present'], again['rows_inserted']) == (deleted, deleted, 0)


def test_rows_mode_rejects_a_bad_where_without_touching_anything(pg, ansible, live):
    before = table_checksums(pg, live['name'])
    result = ansible.run('pg_restore', dict(live['args'], mode='rows',
                                            rows={'table': 'enrollments', 'where': '1=1; DROP TABLE courses'}))
    assert result['failed'] is True
    assert table_checksums(pg, live['name']) == before


def plant(root, source, kind, moment):
    directory = layout.KINDS[kind].directory(root)
    artifact.ensure_directory(directory)
    path = os.path.join(directory, layout.database_dump_name(kind, moment))
    with artifact.ArtifactWriter(path) as writer, open(source, 'rb') as handle:
        writer.write(handle.read())
        writer.commit({'kind': kind, 'created': moment.isoformat()})
    return path


def test_at_picks_the_right_dump_among_daily_and_weekly(pg, ansible, live):
    now = layout.utcnow()
    src = live['dump']['path']
    weekly = plant(live['root'], src, 'database_weekly', now - datetime.timedelta(days=10))
    older = plant(live['root'], src, 'database', now - datetime.timedelta(days=3))
    newer = plant(live['root'], src, 'database', now - datetime.timedelta(days=2))
    cases = {now - datetime.timedelta(days=2, hours=12): older, now - datetime.timedelta(days=1): newer,
             now - datetime.timedelta(days=9): weekly, now: live['dump']['path']}
    for moment, expected in cases.items():
        result = ansible.run('pg_restore', dict(live['args'], at=moment.isoformat()), check=True)
        assert result['backup'] == expected, (moment, result.get('msg'))
    too_old = ansible.run('pg_restore', dict(live['args'], at='2001-01-01T00:00:00Z'))
    assert too_old['failed'] is True
    assert 'no database dump was made at or before 2001-01-01' in too_old['msg'] and 'oldest available' in too_old['msg']


def test_fresh_server_creates_database_and_owner(pg, ansible, live):
    pg.psql('DROP ROLE IF EXISTS cep_readonly_fresh')
    args = dict(live['args'], database='fresh_target', owner='fresh_owner', backup=live['dump']['path'])
    assert 'fresh_target' not in databases(pg)
    result = ansible.run('pg_restore', args)
    assert result['changed'] is True, result['_output']
    assert result['created_database'] is True and result['pre_restore_database'] is None
    assert table_checksums(pg, 'fresh_target') == live['at_backup']
    assert pg.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'fresh_target'").strip() == 'fresh_owner'
    assert pg.psql("SELECT has_table_privilege('cep_readonly', 'public.courses', 'SELECT')",
                   dbname='fresh_target').strip() == 't'


def test_zstd_dump_restores_with_jobs_and_temp_is_removed(pg, ansible, live):
    dump = ansible.run('pg_backup', dict(live['args'], compression='zstd'))
    pg.psql('DELETE FROM audit_log', dbname=live['name'])
    result = ansible.run('pg_restore', dict(live['args'], backup=dump['path'], jobs=2, drop_previous=True))
    assert result['changed'] is True, result['_output']
    assert table_checksums(pg, live['name']) == live['at_backup']
    assert result['pre_restore_database'] is None
    assert not [d for d in databases(pg) if d.startswith(live['name'] + '__')]
    assert not [n for n in os.listdir(os.path.dirname(dump['path'])) if n.startswith('.tmp-')]
