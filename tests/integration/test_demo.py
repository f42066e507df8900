# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""make demo, as a newcomer runs it (tiny data): it must finish, recover both disasters to the recovery point,
push offsite, stop everything it started, write nothing outside its prefix, and make demo-clean must remove it.

The data check does not trust the demo's own verification: the recovery point's dump (named by the drill report)
is restored into a scratch database here and compared with the live database the demo left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time

import psycopg2
import pytest

from conftest import REPO, checksum, pgcluster, tree_state

# The product's real paths on a host (PRODUCT.md defaults) and the system schedules: the demo must not touch them.
HOST_PATHS = ('/etc/cron.d', '/var/spool/cron/crontabs', '/etc/cepcomunicacion', '/etc/logrotate.d',
              '/var/log/cepcomunicacion', '/opt/cepcomunicacion-backup', '/usr/local/bin/cepcomunicacion-backup')
# Also default paths, but other jobs on a shared CI machine (benchmarks) may write them while the demo runs: there,
# nothing that changed may come from the demo (name its prefix or its PostgreSQL port).
SHARED_HOST_PATHS = ('/var/backups/cepcomunicacion', '/var/run/cepcomunicacion-backup-status.json')
PHASE_LINE = re.compile(r'^\[\s*\d+\.\ds\] .+ -> .+ \(\d+\.\d s\)$', re.M)
DELETED = 'course_id = 7'


def host_state():
    state = {}
    for path in HOST_PATHS:
        if os.path.isdir(path) and not os.path.islink(path):
            state[path] = tree_state(path)
        elif os.path.lexists(path):
            st = os.lstat(path)
            state[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
        else:
            state[path] = None
    return state


def changed_files(paths, since_ns):
    """Files under ``paths`` modified at or after ``since_ns``."""
    found = []
    for root in paths:
        candidates = [root] if os.path.isfile(root) else [
            os.path.join(d, name) for d, _subdirs, files in os.walk(root) for name in files]
        found += [path for path in candidates if os.lstat(path).st_mtime_ns >= since_ns]
    return found


def mentions(path, needles):
    with open(path, 'rb') as handle:
        data = handle.read(64 * 1024 * 1024)
    return [needle for needle in needles if needle.encode() in data]


def processes_mentioning(text):
    """PIDs whose command line or environment names ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        for name in ('cmdline', 'environ'):
            try:
                with open('/proc/%s/%s' % (pid, name), 'rb') as handle:
                    if text.encode() in handle.read():
                        found.append(int(pid))
                        break
            except OSError:
                pass
    return found


def bounded(dsn, table, where):
    """checksum.py's definition restricted to rows matching ``where`` (fixed SQL written here)."""
    conn = psycopg2.connect(dsn)
    try:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
                        "SET extra_float_digits = 1; SET bytea_output = 'hex'")
            cur.execute("SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY id), '')) FROM %s t WHERE %s"
                        % (table, where))
            rows, digest = cur.fetchone()
            return {'rows': rows, 'checksum': digest}
    finally:
        conn.close()


def load(path):
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture
def demo_prefix():
    prefix = tempfile.mkdtemp(prefix='cep-demo-')
    os.chmod(prefix, 0o755)  # the throwaway PostgreSQL runs as user postgres and must reach its data dir
    home = tempfile.mkdtemp(prefix='cep-demo-home-')
    tmp = tempfile.mkdtemp(prefix='cep-demo-tmp-')
    try:
        yield prefix, home, tmp
    finally:
        subprocess.run(['make', '-C', REPO, 'demo-clean', 'DEMO_PREFIX=%s' % prefix], capture_output=True, check=False)
        for path in (prefix, home, tmp):
            shutil.rmtree(path, ignore_errors=True)


def test_make_demo_recovers_both_disasters_and_leaves_only_its_prefix(demo_prefix):
    prefix, home, tmp = demo_prefix
    before = host_state()
    started_ns = time.time_ns()
    env = dict(os.environ, DEMO_PREFIX=prefix, DEMO_SIZE='tiny', DEMO_SKIP_BOOTSTRAP='1', HOME=home, TMPDIR=tmp)
    proc = subprocess.run(['make', '--no-print-directory', '-C', REPO, 'demo'], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out

    # what a person reads: one timed line per phase, both drill reports with their RTO, how to clean up
    assert len(PHASE_LINE.findall(out)) >= 14, out
    assert re.search(r'database_corruption: RECOVERED, RTO \d', out) and re.search(r'accidental_deletion: RECOVERED, RTO \d', out), out
    assert 'recovery point: cepcomunicacion_' in out and 'phases: preflight' in out
    assert out.rstrip().splitlines()[-1].startswith('Remove it with: make demo-clean'), out

    # nothing left running, nothing written outside the prefix
    assert processes_mentioning(prefix) == [], 'the demo left processes running'
    assert not os.path.exists(os.path.join(prefix, 'pg', 'data', 'postmaster.pid')), 'PostgreSQL still running'
    assert os.listdir(home) == [], 'the demo wrote into $HOME: %s' % os.listdir(home)
    assert os.listdir(tmp) == [], 'the demo wrote into $TMPDIR instead of its prefix: %s' % os.listdir(tmp)
    assert host_state() == before, 'the demo touched a host path'
    pg_port = str(load(os.path.join(prefix, 'run', 'pg.json'))['port'])
    for path in changed_files(SHARED_HOST_PATHS, started_ns):
        assert not mentions(path, [prefix, '"port": %s' % pg_port, ':%s' % pg_port]), 'the demo wrote %s' % path
    cron = open(os.path.join(prefix, 'server', 'cron.d', 'cepcomunicacion-backup')).read()
    assert re.search(r'^0 2 \* \* \* \S+ .*%s/server/bin/cepcomunicacion-backup .*database' % re.escape(prefix), cron, re.M), cron

    summary = load(os.path.join(prefix, 'results', 'summary.json'))
    assert summary['verification'] == {'database_corruption': True, 'accidental_deletion': True}
    assert summary['wall_seconds'] > 0 and len(summary['phases']) >= 14

    # offsite: every kind of backup reached the S3 peer (listed from moto while it ran)
    keys = summary['offsite']['objects']
    daily = sorted(n for n in os.listdir(os.path.join(prefix, 'server', 'backups', 'database'))
                   if re.fullmatch(r'cepcomunicacion_[\d_-]+\.dump(\.zst)?', n))
    assert len(daily) == 2, daily  # the backup before the disasters and the nightly one after the deletion
    for expected in ('demo/database/' + daily[0], 'demo/database/%s.sha256' % daily[0], 'demo/database/weekly/cepcomunicacion_weekly_',
                     'demo/config/config_', 'demo/media/2'):
        assert any(key.startswith(expected) for key in keys), (expected, keys)
    media_files = sum(len(files) for _d, _s, files in os.walk(os.path.join(prefix, 'platform', 'app', 'uploads')))
    assert len([key for key in keys if key.startswith('demo/media/objects/')]) == media_files > 0

    # both reports written, with an RTO and the phases
    reports = {}
    for scenario, phases in (('database_corruption', ['preflight', 'stop_writers', 'restore', 'start_writers', 'smoke',
                                                      'measure_loss', 'schedule']),
                             ('accidental_deletion', ['preflight', 'restore_rows', 'smoke', 'schedule'])):
        path = summary['reports'][scenario]['json']
        assert path.startswith(prefix + '/server/log/') and os.path.exists(path[:-len('.json')] + '.md')
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        report = load(path)
        assert report['outcome'] == 'recovered' and report['rto_seconds'] > 0 and report['smoke_passed']
        assert [p['name'] for p in report['phases']] == phases
        assert summary['reports'][scenario]['rto_seconds'] == report['rto_seconds']
        reports[scenario] = report
    point_dump = reports['database_corruption']['recovery_point']['path']
    assert reports['accidental_deletion']['recovery_point']['path'] == point_dump, \
        'the row restore must use the backup before the deletion, not the nightly one after it'
    deletion = load(os.path.join(prefix, 'results', 'deletion.json'))
    assert reports['accidental_deletion']['results']['rows_recovered'] == deletion['rows_deleted'] > 0

    # the data, checked here: the recovery point's dump restored into a scratch database, against the live one
    recorded = load(os.path.join(prefix, 'results', 'checksums-backup.json'))
    cluster = pgcluster.ThrowawayCluster.attach(os.path.join(prefix, 'pg'))
    cluster.start()
    try:
        cluster.createdb('point')
        subprocess.run([cluster.bin('pg_restore'), '--no-owner', '-d', cluster.dsn('point'), point_dump], check=True,
                       capture_output=True)
        point = checksum.database_checksums(cluster.dsn('point'))
        assert point == recorded['tables'], 'the checksums the demo recorded are not what the backup holds'
        live_dsn = cluster.dsn('cepcomunicacion')
        live = checksum.database_checksums(live_dsn)
        for table in point:
            if table not in ('public.audit_log', 'public.enrollments'):
                assert live[table] == point[table], table
        assert bounded(live_dsn, 'public.enrollments', DELETED) == bounded(cluster.dsn('point'), 'public.enrollments', DELETED)
        last_id = bounded(cluster.dsn('point'), 'public.enrollments', 'true')['rows']  # ids are 1..n in the reference data
        assert bounded(cluster.dsn('point'), 'public.enrollments', 'id <= %d' % last_id)['rows'] == last_id
        assert bounded(live_dsn, 'public.enrollments', 'id <= %d' % last_id) == \
            bounded(cluster.dsn('point'), 'public.enrollments', 'id <= %d' % last_id)
        assert bounded(live_dsn, 'public.enrollments', 'id > %d' % last_id)['rows'] == 3, 'the writes made after the backup'
        audit_max = recorded['audit_log_max_id']
        assert bounded(live_dsn, 'public.audit_log', 'id <= %d' % audit_max) == \
            bounded(cluster.dsn('point'), 'public.audit_log', 'id <= %d' % audit_max)
        assert bounded(live_dsn, 'public.audit_log', 'id > %d' % audit_max)['rows'] > 0, 'the app\'s later writes'
    finally:
        cluster.stop()

    # make demo-clean refuses a directory the demo did not make, and removes the demo's prefix
    stranger = tempfile.mkdtemp(prefix='cep-not-demo-')
    try:
        open(os.path.join(stranger, 'keep'), 'w').close()
        refused = subprocess.run(['make', '-C', REPO, 'demo-clean', 'DEMO_PREFIX=%s' % stranger], capture_output=True,
                                 text=True, check=False)
        assert refused.returncode != 0 and os.path.exists(os.path.join(stranger, 'keep')), refused.stdout
    finally:
        shutil.rmtree(stranger, ignore_errors=True)
    cleaned = subprocess.run(['make', '-C', REPO, 'demo-clean', 'DEMO_PREFIX=%s' % prefix], capture_output=True, text=True,
                             check=False)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not os.path.exists(prefix)
