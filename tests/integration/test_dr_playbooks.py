# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disaster-recovery playbooks (playbooks/dr/) against localhost under a temp prefix.

Each test builds a platform of its own: a throwaway PostgreSQL cluster with the reference data, media files,
the backup_server role installed under the prefix (its cron file included), backups taken with
playbooks/backup.yml, and the reference app (reference_platform/app.py) on 127.0.0.1 (dr_platform.py). Then the disaster
happens the scenario's way, and the playbook has to bring the platform back: data equal to the recovery
point (per-table content checksums, media manifest), later writes kept where the scenario says so, the app
answering, the schedule back, and a report with the RTO. Every process started here is stopped here.
The Molecule drills (real server, containers) are the other half of issue 8.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time

import pytest

from conftest import checksum
from dr_platform import (MEDIA_FILES, Platform, Writer, assert_app_serves, assert_schedule_enabled, bounded_checksum,
                         http_get, report_of, run_playbook, show_rto, sql)

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import snapshot_manifest


@pytest.fixture
def platform(tmp_path):
    plat = Platform(tmp_path)
    try:
        yield plat.start()
    finally:
        plat.stop()


def corrupt_relation_file(plat, table):
    """Overwrite the table's heap file with random bytes while the server is down (a damaged disk)."""
    relative = sql(plat.dsn, "SELECT pg_relation_filepath('%s')" % table)[0][0]
    path = os.path.join(plat.cluster.data_dir, relative)
    plat.cluster.stop()
    size = os.path.getsize(path)
    with open(path, 'r+b') as handle:
        handle.write(os.urandom(max(size, 8192)))
    plat.cluster.start()


def test_database_corruption_is_recovered_with_writers_stopped_and_restarted(platform, tmp_path):
    plat = platform
    plat.backup()
    dump = plat.dumps()[-1]
    point = checksum.database_checksums(plat.dsn)
    audit_max = sql(plat.dsn, 'SELECT max(id) FROM public.audit_log')[0][0]
    audit_point = bounded_checksum(plat.dsn, 'public.audit_log', 'id <= %d' % audit_max)

    pause = str(tmp_path / 'writer.paused')
    writer = Writer(plat.dsn, pause)
    writer.start()
    try:
        time.sleep(0.5)  # writes after the backup: lost by a full restore, and counted in the report
        sql(plat.dsn, "DROP TABLE public.payments", fetch=False)
        sql(plat.dsn, "UPDATE public.courses SET title = 'x' || md5(random()::text)", fetch=False)
        corrupt_relation_file(plat, 'public.lessons')
        time.sleep(0.3)
        assert http_get(plat.app_url + '/health')[0] == 200  # the app still answers: only the data is broken
        cron_before = plat.cron()
        plat.write_vars(recovery_writers=[{'name': 'drill writer', 'stop': ['touch', pause],
                                           'start': ['rm', '-f', pause]}])

        # without dr_confirm: refuses before touching anything
        code, output = run_playbook('dr/database_corruption.yml', plat.vars_file)
        assert code != 0
        assert 'Refusing to run the \'database_corruption\' recovery on localhost' in output
        assert 'Nothing has been changed' in output
        assert 'DISASTER RECOVERY database_corruption on host localhost' in output
        assert not os.path.exists(pause), 'the writers were stopped without confirmation'
        assert not plat.pre_restore_files() and not plat.reports('database_corruption')
        assert plat.cron() == cron_before
        assert not sql(plat.dsn, "SELECT to_regclass('public.payments')")[0][0]

        # --check: shows the plan and the recovery point, changes nothing
        code, output = run_playbook('dr/database_corruption.yml', plat.vars_file, '--check')
        assert code == 0, output
        assert 'CHECK MODE' in output and 'recovery point: %s' % dump in output
        assert not os.path.exists(pause)
        assert not plat.pre_restore_files() and not plat.reports('database_corruption')
        assert plat.cron() == cron_before
        assert not sql(plat.dsn, "SELECT to_regclass('public.payments')")[0][0]
        assert len(sql(plat.cluster.dsn(), "SELECT datname FROM pg_database WHERE datname LIKE 'cepcomunicacion%'")) == 1

        written_before_recovery = writer.written
        code, output = run_playbook('dr/database_corruption.yml', plat.vars_file, '-e', 'dr_confirm=true',
                                    '-e', 'dr_disaster_time=%s' % time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        assert code == 0, output
        assert written_before_recovery > 0

        # writers started again: new rows arrive (ids after the recovery point's)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sql(plat.dsn, "SELECT count(*) FROM public.audit_log WHERE id > %d" % audit_max)[0][0] > 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail('the writer did not resume after the recovery')
    finally:
        writer.stop()

    after = checksum.database_checksums(plat.dsn)
    for table, expected in point.items():
        if table != 'public.audit_log':
            assert after[table] == expected, table
    assert bounded_checksum(plat.dsn, 'public.audit_log', 'id <= %d' % audit_max) == audit_point
    assert_app_serves(plat)
    assert_schedule_enabled(plat)

    report = report_of(plat, 'database_corruption')
    assert report['outcome'] == 'recovered' and report['host'] == 'localhost'
    assert report['recovery_point']['path'] == dump and report['recovery_point']['fallback_from'] == []
    assert report['rto_seconds'] > 0 and report['smoke_passed']
    assert [p['name'] for p in report['phases']] == ['preflight', 'stop_writers', 'restore', 'start_writers', 'smoke',
                                                     'measure_loss', 'schedule']
    assert all(p['duration_seconds'] is not None and p['duration_seconds'] >= 0 for p in report['phases'])
    assert report['artifacts'][0]['path'] == dump and len(report['artifacts'][0]['sha256']) == 64
    lost = report['data_lost']['vs_disaster']
    assert {'public.lessons', 'public.payments'} <= set(lost['unreadable_before'])
    assert lost['rows_lost'].get('public.audit_log', 0) > 0  # the writes between the backup and the disaster
    assert report['results']['pre_restore_warning'], 'the damaged database should not dump'
    assert report['data_loss_window_seconds'] is not None
    show_rto('database_corruption', report)


def test_accidental_deletion_recovers_exactly_the_deleted_rows_and_keeps_later_writes(platform):
    plat = platform
    plat.backup('database')
    first_dump = plat.dumps()[-1]
    point = checksum.database_checksums(plat.dsn)
    course7_point = bounded_checksum(plat.dsn, 'public.enrollments', 'course_id = 7')
    assert course7_point[0] > 0

    # writes after the backup (kept), the mistake, more writes, then a newer backup without the rows
    sql(plat.dsn, "INSERT INTO public.enrollments (student_id, course_id, status) SELECT s.id, 3, 'activa' "
                  "FROM public.students s WHERE NOT EXISTS (SELECT 1 FROM public.enrollments e WHERE e.student_id = s.id "
                  "AND e.course_id = 3) ORDER BY s.id LIMIT 2", fetch=False)
    time.sleep(1.1)
    deletion_time = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    time.sleep(1.1)
    deleted = sql(plat.dsn, "WITH d AS (DELETE FROM public.enrollments WHERE course_id = 7 RETURNING 1) "
                            "SELECT count(*) FROM d")[0][0]
    sql(plat.dsn, "INSERT INTO public.audit_log (actor, action, entity, entity_id, payload) "
                  "VALUES ('after-deletion', 'create', 'course', 3, '{}'::jsonb)", fetch=False)
    sql(plat.dsn, "INSERT INTO public.enrollments (student_id, course_id, status) SELECT s.id, 4, 'activa' "
                  "FROM public.students s WHERE NOT EXISTS (SELECT 1 FROM public.enrollments e WHERE e.student_id = s.id "
                  "AND e.course_id = 4) ORDER BY s.id LIMIT 1", fetch=False)
    time.sleep(1.1)
    plat.backup('database')
    assert len(plat.dumps()) == 2
    others_before = bounded_checksum(plat.dsn, 'public.enrollments', 'course_id <> 7')
    audit_before = checksum.table_checksum(plat.dsn, 'public', 'audit_log')
    args = ['-e', 'dr_table=public.enrollments', '-e', "dr_where='course_id = 7'", '-e', 'dr_deletion_time=' + deletion_time]

    code, output = run_playbook('dr/accidental_deletion.yml', plat.vars_file, *args)
    assert code != 0 and 'Refusing' in output
    code, output = run_playbook('dr/accidental_deletion.yml', plat.vars_file, '--check', *args)
    assert code == 0, output
    assert 'recovery point: %s' % first_dump in output
    assert sql(plat.dsn, 'SELECT count(*) FROM public.enrollments WHERE course_id = 7')[0][0] == 0
    assert not plat.pre_restore_files() and not plat.reports('accidental_deletion')

    code, output = run_playbook('dr/accidental_deletion.yml', plat.vars_file, '-e', 'dr_confirm=true', *args)
    assert code == 0, output
    assert bounded_checksum(plat.dsn, 'public.enrollments', 'course_id = 7') == course7_point
    assert bounded_checksum(plat.dsn, 'public.enrollments', 'course_id <> 7') == others_before  # later writes kept
    assert checksum.table_checksum(plat.dsn, 'public', 'audit_log') == audit_before
    after = checksum.database_checksums(plat.dsn)
    for table in point:
        if table not in ('public.enrollments', 'public.audit_log'):
            assert after[table] == point[table], table
    assert_app_serves(plat)
    assert_schedule_enabled(plat)

    report = report_of(plat, 'accidental_deletion')
    assert report['outcome'] == 'recovered'
    assert report['recovery_point']['path'] == first_dump, 'must use the newest backup before the deletion'
    assert report['results']['rows_recovered'] == deleted == course7_point[0]
    assert report['results']['rows_in_backup'] == deleted
    assert report['rto_seconds'] > 0
    assert report['disaster_time'].startswith(deletion_time[:19].replace('Z', ''))
    assert any(s['step'] == 'stop writers' for s in report['skipped'])
    show_rto('accidental_deletion', report)


def test_media_loss_is_restored_from_the_latest_snapshot_with_permissions(platform):
    plat = platform
    plat.backup('media')
    snapshot = plat.snapshots()[-1]
    manifest = snapshot_manifest.load_for(snapshot)
    added = plat.uploads / 'user2' / 'new upload.txt'  # after the snapshot, outside the lost part: kept
    added.parent.mkdir()
    added.write_text('subido después de la copia\n')
    shutil.rmtree(plat.uploads / 'user1')
    shutil.rmtree(plat.uploads / 'public')
    assert http_get(plat.app_url + '/media/user1/photo.jpg')[0] == 404

    code, output = run_playbook('dr/media_loss.yml', plat.vars_file)
    assert code != 0 and 'Refusing' in output
    code, output = run_playbook('dr/media_loss.yml', plat.vars_file, '--check')
    assert code == 0, output
    assert 'recovery point: %s' % snapshot in output
    assert not (plat.uploads / 'user1').exists() and not plat.reports('media_loss')

    code, output = run_playbook('dr/media_loss.yml', plat.vars_file, '-e', 'dr_confirm=true')
    assert code == 0, output
    checked = 0
    for entry in manifest.entries:
        live = os.path.join('/', entry.path)
        if not entry.path.startswith(str(plat.uploads).lstrip('/')):
            continue
        st = os.lstat(live)
        assert stat.S_IMODE(st.st_mode) == entry.mode & 0o7777, entry.path
        assert (st.st_uid, st.st_gid) == (entry.uid, entry.gid), entry.path
        if entry.type == 'f':
            with open(live, 'rb') as handle:
                assert hashlib.sha256(handle.read()).hexdigest() == entry.sha256, entry.path
            assert st.st_mtime_ns == entry.mtime_ns, entry.path
            checked += 1
    assert checked == len(MEDIA_FILES)
    assert added.read_text() == 'subido después de la copia\n'
    assert_app_serves(plat)
    assert_schedule_enabled(plat)

    report = report_of(plat, 'media_loss')
    assert report['outcome'] == 'recovered'
    assert report['recovery_point']['path'] == snapshot and report['recovery_point']['kind'] == 'media'
    assert report['results']['files_restored'] == len(MEDIA_FILES)
    assert report['results']['files_differing_after_restore'] == 0
    assert report['rto_seconds'] > 0
    show_rto('media_loss', report)
