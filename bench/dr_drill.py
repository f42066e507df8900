# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The `dr` section: playbooks/dr/database_corruption.yml against localhost on the ~1 GB reference database.

Set up as tests/integration/test_dr_playbooks.py does, at benchmark size: the backup_server role installed
under a temp prefix (its cron file included), a backup taken by the command the role installed (as cron
runs it), the reference app (reference_platform/app.py) answering on 127.0.0.1 and a writer inserting rows
while the damage happens: a table dropped, another overwritten with garbage, a third's heap file
overwritten with random bytes. Then the playbook runs with ``dr_confirm=true``; its JSON report gives the
RTO (start of the playbook to the smoke tests passing) and the restore phase. The recovered database must
equal the recovery point (per-table checksums; audit_log up to the backup's last row, since the writer goes
on after the recovery).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import psycopg2

from harness import PLATFORM_DIR, load_platform, log

RTO_TARGET_SECONDS = 120
MEDIA_FILES = {  # relative path under uploads -> (mode, size)
    'user1/photo.jpg': (0o640, 4096),
    'user1/cv.pdf': (0o600, 1500),
    'public/logo.png': (0o644, 777),
}


def sql(dsn, statement, fetch=True):
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if fetch else None
    finally:
        conn.close()


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


class Writer(threading.Thread):
    """Inserts an audit_log row every 20 ms while the pause file is absent (the app's writes); reconnects."""

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
                                "VALUES ('bench-writer', 'update', 'course', 1, '{}'::jsonb)")
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


def corrupt_relation_file(cluster, dsn, table):
    """Overwrite the table's heap file with random bytes while the server is down (a damaged disk)."""
    relative = sql(dsn, "SELECT pg_relation_filepath('%s')" % table)[0][0]
    path = os.path.join(cluster.data_dir, relative)
    cluster.stop()
    size = os.path.getsize(path)
    with open(path, 'r+b') as handle:
        remaining = max(size, 8192)
        while remaining:
            block = min(remaining, 8 * 1024 * 1024)
            handle.write(os.urandom(block))
            remaining -= block
    cluster.start()
    return size


def bench_dr(cluster, workdir, collection, db, size_label):
    """database_corruption playbook on localhost, ~1 GB: RTO from its report, the restore phase, outcome checked."""
    checksum = load_platform('checksum')
    dsn = cluster.dsn(db)
    root = os.path.join(workdir, 'dr-server')
    uploads = os.path.join(root, 'app', 'uploads')
    for relative, (mode, size) in MEDIA_FILES.items():
        path = os.path.join(uploads, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as handle:
            handle.write(os.urandom(size))
        os.chmod(path, mode)
    with open(os.path.join(root, 'app', '.env'), 'w') as handle:
        handle.write('DATABASE_URL=postgres://app@db/cepcomunicacion\n')
    for directory in ('bin', 'cron.d', 'logrotate.d', 'run'):
        os.makedirs(os.path.join(root, directory))
    variables = {
        'target': 'localhost', 'ansible_become': False, 'ansible_python_interpreter': sys.executable,
        'backup_server_manage_packages': False,
        'backup_server_root': os.path.join(root, 'backups'),
        'backup_server_install_dir': os.path.join(root, 'opt'),
        'backup_server_command_link': os.path.join(root, 'bin', 'cepcomunicacion-backup'),
        'backup_server_config_file': os.path.join(root, 'etc', 'backup.conf'),
        'backup_server_log_dir': os.path.join(root, 'log'),
        'backup_server_status_file': os.path.join(root, 'run', 'status.json'),
        'backup_server_cron_file': os.path.join(root, 'cron.d', 'cepcomunicacion-backup'),
        'backup_server_logrotate_file': os.path.join(root, 'logrotate.d', 'cepcomunicacion-backup'),
        'backup_server_db_port': cluster.port,
        'backup_server_db_name': db,
        'backup_server_media_paths': [uploads],
        'backup_server_config_paths': [os.path.join(root, 'app', '.env')],
    }
    vars_file = os.path.join(workdir, 'dr-vars.json')

    def write_vars(**extra):
        variables.update(extra)
        with open(vars_file, 'w') as handle:
            json.dump(variables, handle)

    write_vars()
    log('dr: installing the backup_server role under %s' % root)
    code, output, install_s = collection.playbook('playbooks/install.yml', vars_file)
    if code != 0:
        raise RuntimeError('install.yml failed:\n%s' % output[-4000:])
    app = subprocess.Popen([sys.executable, os.path.join(PLATFORM_DIR, 'app.py'), '--port', '0', '--media-dir', uploads,
                            '--dsn', dsn], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    writer = None
    try:
        app_url = 'http://127.0.0.1:%d' % json.loads(app.stdout.readline())['port']
        write_vars(recovery_smoke_app_url=app_url, recovery_smoke_media_paths=['user1/photo.jpg', 'public/logo.png'])
        backup_seconds = {}
        for job in ('database', 'media', 'config'):
            log('dr: cepcomunicacion-backup %s (the scheduled command, as cron runs it)' % job)
            started = time.monotonic()
            run = subprocess.run([variables['backup_server_command_link'], '--config',
                                  variables['backup_server_config_file'], '--quiet', job],
                                 env={'PATH': '/usr/bin:/bin'}, stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, check=False, timeout=1800)
            backup_seconds[job] = round(time.monotonic() - started, 2)
            if run.returncode != 0:
                raise RuntimeError('backup %s failed: %s %s' % (job, run.stdout, run.stderr))
        dump = sorted(glob.glob(os.path.join(root, 'backups', 'database', 'cepcomunicacion_*.dump*')))
        dump = [path for path in dump if path.endswith(('.dump', '.dump.zst'))][-1]
        dump_size = os.path.getsize(dump)
        log('dr: checksums of the recovery point (not timed)')
        point = checksum.database_checksums(dsn)
        audit_max = sql(dsn, 'SELECT max(id) FROM public.audit_log')[0][0]
        audit_point = bounded_checksum(dsn, 'public.audit_log', 'id <= %d' % audit_max)

        pause = os.path.join(workdir, 'dr-writer.paused')
        writer = Writer(dsn, pause)
        writer.start()
        time.sleep(1.0)  # writes after the backup: lost by a full restore, counted in the report
        log('dr: the disaster: DROP TABLE payments, garbage in courses, lessons heap file overwritten')
        sql(dsn, 'DROP TABLE public.payments', fetch=False)
        sql(dsn, "UPDATE public.courses SET title = 'x' || md5(random()::text)", fetch=False)
        corrupted_bytes = corrupt_relation_file(cluster, dsn, 'public.lessons')
        time.sleep(0.5)
        disaster_time = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        write_vars(recovery_writers=[{'name': 'bench writer', 'stop': ['touch', pause], 'start': ['rm', '-f', pause]}])
        load_at_playbook = [round(value, 2) for value in os.getloadavg()]
        log('dr: ansible-playbook playbooks/dr/database_corruption.yml -e dr_confirm=true')
        code, output, playbook_s = collection.playbook('playbooks/dr/database_corruption.yml', vars_file,
                                                       '-e', 'dr_confirm=true', '-e', 'dr_disaster_time=' + disaster_time)
        if code != 0:
            raise RuntimeError('database_corruption.yml failed:\n%s' % output[-6000:])
        deadline = time.monotonic() + 30
        while sql(dsn, 'SELECT count(*) FROM public.audit_log WHERE id > %d' % audit_max)[0][0] == 0:
            if time.monotonic() > deadline:
                raise RuntimeError('the writer did not resume after the recovery')
            time.sleep(0.2)
        writer.stop()
        reports = sorted(glob.glob(os.path.join(root, 'log', 'dr-database_corruption-*.json')))
        with open(reports[-1]) as handle:
            report = json.load(handle)
        log('dr: checking the recovered database against the recovery point (not timed)')
        after = checksum.database_checksums(dsn)
        differing = sorted(table for table, expected in point.items()
                           if table != 'public.audit_log' and after.get(table) != expected)
        if bounded_checksum(dsn, 'public.audit_log', 'id <= %d' % audit_max) != audit_point:
            differing.append('public.audit_log (rows up to the recovery point)')
        if differing or report['outcome'] != 'recovered' or not report['smoke_passed']:
            raise RuntimeError('recovery did not restore the recovery point: outcome %s, smoke %s, differing %s' % (
                report['outcome'], report['smoke_passed'], differing))
        kept = report['results'].get('replaced_database_kept_as')
        if kept:
            cluster.dropdb(kept)
    finally:
        if writer is not None:
            writer.stop()
        app.terminate()
        try:
            app.wait(10)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait(10)
        app.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
    phases = {phase['name']: phase['duration_seconds'] for phase in report['phases']}
    rows = [{'name': 'database_corruption playbook: RTO (start of the playbook to the smoke tests passing)',
             'seconds': report['rto_seconds']},
            {'name': 'of which the restore phase (pg_restore module: verify, pre-restore dump, scratch restore, '
                     'checks, swap)', 'seconds': phases.get('restore')},
            {'name': 'ansible-playbook wall time (includes start-up, data-loss count and the report)',
             'seconds': round(playbook_s, 2)}]
    return {'title': 'Disaster recovery: the database_corruption playbook on the reference database (localhost)',
            'data': size_label, 'rows': rows, 'rto_seconds': report['rto_seconds'], 'rto': report['rto'],
            'rto_target_seconds': RTO_TARGET_SECONDS, 'restore_phase_seconds': phases.get('restore'),
            'phases': phases, 'restore_module_seconds': report['results'].get('restore_duration_seconds'),
            'restore_module_phases': report['results'].get('restore_phases_seconds'),
            'playbook_wall_seconds': round(playbook_s, 2), 'install_seconds': round(install_s, 2),
            'backup_seconds': backup_seconds, 'dump_size': dump_size, 'dump': os.path.basename(dump),
            'corrupted_heap_bytes': corrupted_bytes, 'writer_rows_inserted': writer.written,
            'load_average_at_playbook': load_at_playbook, 'outcome': report['outcome'],
            'pre_restore_warning': report['results'].get('pre_restore_warning'),
            'data_lost_vs_disaster': report.get('data_lost', {}).get('vs_disaster'),
            'checked': 'per-table checksums equal to the recovery point (audit_log up to the backup\'s last row)'}


def render_dr(section):
    lines = ['| measure | seconds | notes |', '|---|---:|---|']
    for row in section['rows']:
        lines.append('| %s | %.1f s | |' % (row['name'], row['seconds']))
    phases = ', '.join('%s %.1f s' % (name, seconds) for name, seconds in section['phases'].items())
    lines.append('| playbook phases | | %s |' % phases)
    if section.get('restore_module_phases'):
        lines.append('| inside the restore (module phases) | %.1f s | %s |' % (
            float(section['restore_module_seconds']), ', '.join('%s %.1f s' % (name, float(seconds)) for name, seconds in
                                                                sorted(section['restore_module_phases'].items()))))
    lines.append('| before the disaster: the scheduled backups (not part of the RTO) | | %s |' % ', '.join(
        '%s %.1f s' % item for item in section['backup_seconds'].items()))
    return lines


def conclude_dr(section):
    rto = section['rto_seconds']
    return ('Target: RTO ≤ %d s on these 2 cores. Measured: **%.1f s** (%s), of which the restore phase is %.1f s; '
            'the dump restored is %.1f MiB (%s). Outcome checked after the run: %s. The load average when the '
            'playbook started was %s (other workers share the machine).' % (
                section['rto_target_seconds'], rto, 'met' if rto <= section['rto_target_seconds'] else 'missed',
                section['restore_phase_seconds'], section['dump_size'] / 1048576.0, section['dump'],
                section['checked'], ', '.join('%.2f' % value for value in section['load_average_at_playbook'])))
