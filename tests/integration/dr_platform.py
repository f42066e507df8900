# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared parts of the disaster-recovery drills on localhost (test_dr_playbooks.py, test_dr_offsite.py).

A ``Platform`` is one platform under a temp prefix: a throwaway PostgreSQL cluster with the reference data, media
files, the backup_server role installed under the prefix (its cron file included), and the reference app on
127.0.0.1. Helpers run the playbooks, query the database and the app, and read the reports.
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
import urllib.error
import urllib.request

import psycopg2

from conftest import COLLECTIONS, DATABASE, PLATFORM_DIR, REPO, generate, pgcluster
from s3_peer import TEST_KEY, TEST_SECRET, free_port

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
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False, timeout=timeout)
    print('ansible-playbook %s %s: exit %d in %.1f s' % (name, ' '.join(extra), proc.returncode, time.monotonic() - started))
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


APPCTL = r'''
"""Start or stop the reference app the way a service manager would, configured by the .env beside this file.

DATABASE_URL (postgres://user:password@host:port/dbname), APP_PORT and MEDIA_DIR come from the .env, so the
app uses whatever password the .env holds now (a restored or rotated one). The password reaches the app
through PGPASSWORD, never its command line. Standard library only; run with a Python that has psycopg2.
"""
import json, os, signal, socket, subprocess, sys, time
from urllib.parse import unquote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
PID = os.path.join(HERE, 'app.pid')


def settings():
    values = {}
    with open(os.path.join(HERE, '.env')) as handle:
        for line in handle:
            if '=' in line and not line.lstrip().startswith('#'):
                key, _sep, value = line.strip().partition('=')
                values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def start():
    values = settings()
    url = urlsplit(values['DATABASE_URL'])
    dsn = 'host=%s port=%s user=%s dbname=%s' % (url.hostname, url.port, unquote(url.username), url.path.lstrip('/'))
    env = dict(os.environ, PGPASSWORD=unquote(url.password or ''))
    log = open(os.path.join(HERE, 'app.log'), 'ab')
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, 'app.py'), '--port', values['APP_PORT'],
                             '--media-dir', values['MEDIA_DIR'], '--dsn', dsn], env=env, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    with open(PID, 'w') as handle:
        handle.write(str(proc.pid))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(('127.0.0.1', int(values['APP_PORT'])), timeout=0.5):
                return 0
        except OSError:
            if proc.poll() is not None:
                return 1
            time.sleep(0.1)
    return 1


def stop():
    if not os.path.exists(PID):
        return 0
    with open(PID) as handle:
        pid = int(handle.read())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            waited, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            waited = None
        if waited == pid or not os.path.exists('/proc/%d' % pid) or \
                open('/proc/%d/stat' % pid).read().split(')')[-1].split()[0] == 'Z':
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    os.unlink(PID)
    return 0


if __name__ == '__main__':
    sys.exit(start() if sys.argv[1] == 'start' else stop())
'''

SECRET_KEYS = ('SECRET_KEY', 'SESSION_SECRET', 'JWT_SECRET')


def read_env(path):
    values = {}
    with open(path) as handle:
        for line in handle:
            if '=' in line:
                key, _sep, value = line.strip().partition('=')
                values[key] = value
    return values


class Platform:
    """One platform under a temp prefix: cluster, media, installed role, backups, app.

    ``managed_app``: the app lives in the app directory (app.py, appctl.py, .env with DATABASE_URL, secrets, port and
    media dir), is backed up as configuration and started and stopped by ``appctl.py`` (the recovery_writers), as a
    service unit would be. ``password``: the postgres password (TCP then needs scram-sha-256). ``offsite``:
    (endpoint, bucket) of a moto_server bucket the role pushes to.
    """

    def __init__(self, tmp_path, password=None, managed_app=False, offsite=None, lock_days=0):
        self.tmp = tmp_path
        self.root = tmp_path / 'server'
        self.app_dir = self.root / 'app'
        self.uploads = self.app_dir / 'uploads'
        self.cluster = None
        self.app = None
        self.app_url = None
        self.password = password
        self.managed_app = managed_app
        self.offsite = offsite
        self.lock_days = lock_days
        self.vars = {}
        self.vars_file = str(tmp_path / 'vars.json')

    @property
    def dsn(self):
        return self.dsn_with(self.password)

    def dsn_with(self, password):
        base = self.cluster.dsn(DATABASE)
        return base + (' password=%s' % password if password else '')

    @property
    def env_file(self):
        return self.app_dir / '.env'

    def start(self):
        self.cluster = pgcluster.ThrowawayCluster()
        self.cluster.start()
        generate(self.cluster, DATABASE)
        if self.password:
            self.cluster.set_password('postgres', self.password)
        self.make_files()
        self.vars = self.role_vars()
        self.write_vars()
        code, output = run_playbook('install.yml', self.vars_file)
        assert code == 0, output
        if self.managed_app:
            self.app_url = 'http://127.0.0.1:%d' % self.app_port
            self.appctl('start')
            self.vars.update(recovery_writers=[{'name': 'reference app', 'stop': self.appctl_argv('stop'),
                                                'start': self.appctl_argv('start')}])
        else:
            self.start_app()
        self.vars.update(recovery_smoke_app_url=self.app_url,
                         recovery_smoke_media_paths=['user1/photo.jpg', 'public/docs/guía del curso.txt'])
        self.write_vars()
        return self

    def make_files(self):
        for relative, (mode, content) in MEDIA_FILES.items():
            path = self.uploads / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            os.chmod(path, mode)
        os.chmod(self.uploads / 'user1', 0o750)
        if self.managed_app:
            self.app_port = free_port()
            shutil.copyfile(os.path.join(PLATFORM_DIR, 'app.py'), self.app_dir / 'app.py')
            (self.app_dir / 'appctl.py').write_text(APPCTL)
            lines = ['# reference platform settings', 'APP_PORT=%d' % self.app_port, 'MEDIA_DIR=%s' % self.uploads,
                     'DATABASE_URL=postgres://postgres:%s@127.0.0.1:%d/%s' % (self.password or '', self.cluster.port, DATABASE)]
            lines += ['%s=%s' % (key, hashlib.sha256(key.encode() + os.urandom(8)).hexdigest()) for key in SECRET_KEYS]
            self.env_file.write_text('\n'.join(lines) + '\n')
        else:
            self.env_file.write_text('DATABASE_URL=postgres://app@db/cepcomunicacion\n')
        os.chmod(self.env_file, 0o600)
        for directory in ('bin', 'cron.d', 'logrotate.d', 'run'):
            (self.root / directory).mkdir(exist_ok=True)

    def role_vars(self):
        values = {
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
            'backup_server_config_paths': [str(self.env_file)],
        }
        if self.password:
            values['backup_server_db_password'] = self.password
        if self.managed_app:
            values['backup_server_config_paths'] += [str(self.app_dir / 'app.py'), str(self.app_dir / 'appctl.py')]
        if self.offsite:
            endpoint, bucket = self.offsite
            values.update(backup_server_offsite_enabled=True, backup_server_offsite_bucket=bucket,
                          backup_server_offsite_prefix='web1', backup_server_offsite_endpoint_url=endpoint,
                          backup_server_offsite_access_key=TEST_KEY, backup_server_offsite_secret_key=TEST_SECRET)
            if self.lock_days:
                values.update(backup_server_offsite_object_lock_days=self.lock_days,
                              backup_server_offsite_object_lock_mode='governance')
        return values

    def write_vars(self, **extra):
        self.vars.update(extra)
        with open(self.vars_file, 'w') as handle:
            json.dump(self.vars, handle)

    def appctl_argv(self, action):
        return [sys.executable, str(self.app_dir / 'appctl.py'), action]

    def appctl(self, action):
        run = subprocess.run(self.appctl_argv(action), capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, (action, run.stdout, run.stderr)

    def start_app(self):
        env = dict(os.environ, PGPASSWORD=self.password or 'unused-with-trust-auth')
        self.app = subprocess.Popen([sys.executable, os.path.join(PLATFORM_DIR, 'app.py'), '--port', '0',
                                     '--media-dir', str(self.uploads), '--dsn', self.cluster.dsn(DATABASE)], env=env,
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

    def stop_app(self):
        if self.app is not None:
            self.app.terminate()
            try:
                self.app.wait(10)
            except subprocess.TimeoutExpired:
                self.app.kill()
                self.app.wait(10)
            self.app.stdout.close()
            self.app = None
        if self.managed_app and (self.app_dir / 'app.pid').exists():
            self.appctl('stop')

    def stop(self):
        try:
            self.stop_app()
        finally:
            if self.cluster is not None:
                self.cluster.destroy()


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
