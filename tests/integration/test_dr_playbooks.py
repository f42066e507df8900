# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disaster-recovery playbooks (playbooks/dr/) against localhost under a temp prefix.

Each test builds a platform of its own: a throwaway PostgreSQL cluster with the reference data, media files,
the backup_server role installed under the prefix (its cron file included), backups taken with
playbooks/backup.yml, and the reference app (reference_platform/app.py) on 127.0.0.1. Then the disaster
happens the scenario's way, and the playbook has to bring the platform back: data equal to the recovery
point (per-table content checksums, media manifest), later writes kept where the scenario says so, the app
answering, the schedule back, and a report with the RTO. Every process started here is stopped here.
The Molecule drills (real server, containers) are the other half of issue 8.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg2
import pytest

from conftest import COLLECTIONS, DATABASE, PLATFORM_DIR, REPO, checksum, generate, pgcluster

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import snapshot_manifest

MEDIA_FILES = {  # relative path under uploads -> (mode, content)
    'user1/photo.jpg': (0o640, os.urandom(4096)),
    'user1/cv.pdf': (0o600, os.urandom(1500)),
    'public/logo.png': (0o644, os.urandom(777)),
    'public/docs/guía del curso.txt': (0o644, 'Guía de matrícula, versión 3\n'.encode('utf-8')),
}


def run_playbook(name, vars_file, *extra, timeout=600):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0')
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
            os.path.join(REPO, 'playbooks', name), '-e', '@' + vars_file] + list(extra)
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False, timeout=timeout)
    return proc.returncode, proc.stdout


def bounded_checksum(dsn, table, where):
    """checksum.py's definition, restricted to the rows matching ``where`` (fixed SQL written here)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1")
            cur.execute("SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY id), '')) FROM %s t "
                        "WHERE %s" % (table, where))
            return cur.fetchone()
    finally:
        conn.close()


def sql(dsn, statement, fetch=True):
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if fetch else None
    finally:
        conn.close()


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Writer(threading.Thread):
    """Keeps writing audit_log rows (one per 20 ms) while the pause file is absent; reconnects after errors."""

    def __init__(self, dsn, pause_file):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.pause_file = pause_file
        self.stop_event = threading.Event()
        self.written = 0

    def run(self):
        conn = None
        while not self.stop_event.is_set():
            if os.path.exists(self.pause_file):
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(0.05)
                continue
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn, connect_timeout=2)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO public.audit_log (actor, action, entity, entity_id, payload) "
                                "VALUES ('drill-writer', 'update', 'course', 1, '{}'::jsonb)")
                self.written += 1
            except psycopg2.Error:
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass
                conn = None
                time.sleep(0.1)
            time.sleep(0.02)
        if conn is not None:
            conn.close()

    def stop(self):
        self.stop_event.set()
        self.join(10)


class Platform:
    """One platform under a temp prefix: cluster, media, installed role, backups, app."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.root = tmp_path / 'server'
        self.uploads = self.root / 'app' / 'uploads'
        self.cluster = None
        self.app = None
        self.app_url = None
        self.vars = {}
        self.vars_file = str(tmp_path / 'vars.json')

    @property
    def dsn(self):
        return self.cluster.dsn(DATABASE)

    def start(self):
        self.cluster = pgcluster.ThrowawayCluster()
        self.cluster.start()
        generate(self.cluster, DATABASE)
        for relative, (mode, content) in MEDIA_FILES.items():
            path = self.uploads / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            os.chmod(path, mode)
        os.chmod(self.uploads / 'user1', 0o750)
        (self.root / 'app' / '.env').write_text('DATABASE_URL=postgres://app@db/cepcomunicacion\n')
        for directory in ('bin', 'cron.d', 'logrotate.d', 'run'):
            (self.root / directory).mkdir()
        self.vars = {
            'target': 'localhost', 'ansible_become': False, 'ansible_python_interpreter': sys.executable,
            'backup_server_manage_packages': False,
            'backup_server_root': str(self.root / 'backups'),
            'backup_server_install_dir': str(self.root / 'opt'),
            'backup_server_command_link': str(self.root / 'bin' / 'cepcomunicacion-backup'),
            'backup_server_config_file': str(self.root / 'etc' / 'backup.conf'),
            'backup_server_log_dir': str(self.root / 'log'),
            'backup_server_status_file': str(self.root / 'run' / 'status.json'),
            'backup_server_cron_file': str(self.root / 'cron.d' / 'cepcomunicacion-backup'),
            'backup_server_logrotate_file': str(self.root / 'logrotate.d' / 'cepcomunicacion-backup'),
            'backup_server_db_port': self.cluster.port,
            'backup_server_db_name': DATABASE,
            'backup_server_media_paths': [str(self.uploads)],
            'backup_server_config_paths': [str(self.root / 'app' / '.env')],
        }
        self.write_vars()
        code, output = run_playbook('install.yml', self.vars_file)
        assert code == 0, output
        self.start_app()
        self.vars.update(recovery_smoke_app_url=self.app_url,
                         recovery_smoke_media_paths=['user1/photo.jpg', 'public/docs/guía del curso.txt'])
        self.write_vars()
        return self

    def write_vars(self, **extra):
        self.vars.update(extra)
        with open(self.vars_file, 'w') as handle:
            json.dump(self.vars, handle)

    def start_app(self):
        env = dict(os.environ, PGPASSWORD='unused-with-trust-auth')
        self.app = subprocess.Popen([sys.executable, os.path.join(PLATFORM_DIR, 'app.py'), '--port', '0',
                                     '--media-dir', str(self.uploads), '--dsn', self.dsn], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.app.stdout.readline()
        assert line, 'the reference app did not start'
        self.app_url = 'http://127.0.0.1:%d' % json.loads(line)['port']

    def backup(self, *jobs):
        """Back up as cron does: the command the role installed, with its config file."""
        for job in jobs or ('database', 'media', 'config'):
            run = subprocess.run([self.vars['backup_server_command_link'], '--config', self.vars['backup_server_config_file'],
                                  '--quiet', job], env={'PATH': '/usr/bin:/bin'}, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, check=False, timeout=300)
            assert run.returncode == 0, (job, run.stdout, run.stderr)

    def dumps(self):
        found = glob.glob(str(self.root / 'backups' / 'database' / 'cepcomunicacion_*.dump'))
        found += glob.glob(str(self.root / 'backups' / 'database' / 'cepcomunicacion_*.dump.zst'))
        return sorted(found)

    def snapshots(self):
        return sorted(p for p in glob.glob(str(self.root / 'backups' / 'media' / '2*')) if os.path.isdir(p))

    def reports(self, scenario):
        return sorted(glob.glob(str(self.root / 'log' / ('dr-%s-*.json' % scenario))))

    def cron(self):
        path = self.vars['backup_server_cron_file']
        return open(path).read() if os.path.exists(path) else ''

    def pre_restore_files(self):
        found = []
        for sub in ('database/pre-restore', 'media/pre-restore'):
            found += os.listdir(self.root / 'backups' / sub) if (self.root / 'backups' / sub).exists() else []
        return found

    def stop(self):
        if self.app is not None:
            self.app.terminate()
            try:
                self.app.wait(10)
            except subprocess.TimeoutExpired:
                self.app.kill()
                self.app.wait(10)
            self.app.stdout.close()
        if self.cluster is not None:
            self.cluster.destroy()


@pytest.fixture
def platform(tmp_path):
    plat = Platform(tmp_path)
    try:
        yield plat.start()
    finally:
        plat.stop()


def report_of(plat, scenario):
    reports = plat.reports(scenario)
    assert len(reports) == 1, reports
    with open(reports[0]) as handle:
        report = json.load(handle)
    assert os.path.exists(reports[0][:-len('.json')] + '.md')
    assert stat.S_IMODE(os.stat(reports[0]).st_mode) == 0o600
    return report


def show_rto(scenario, report):
    phases = ', '.join('%s %.1f s' % (p['name'], p['duration_seconds']) for p in report['phases'])
    print('%s RTO: %s; phases: %s' % (scenario, report['rto'], phases))


def assert_app_serves(plat):
    status, body = http_get(plat.app_url + '/health')
    assert status == 200, body
    status, body = http_get(plat.app_url + '/courses')
    assert status == 200
    assert len(json.loads(body)) == sql(plat.dsn, 'SELECT count(*) FROM public.courses')[0][0] > 0
    status, body = http_get(plat.app_url + '/media/user1/photo.jpg')
    assert (status, body) == (200, MEDIA_FILES['user1/photo.jpg'][1])


def assert_schedule_enabled(plat):
    assert re.search(r'^0 2 \* \* \* root .* database >/dev/null', plat.cron(), re.M), plat.cron()


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
