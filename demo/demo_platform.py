# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo's platform side: what scripts/demo.sh needs besides ansible-playbook.

Not part of the collection. Standard library plus psycopg2 and boto3 (both in the venv). Subcommands:

    progress                     read generate_data.py's stderr on stdin, print 10%..100% on one line
    free-port                    print a free TCP port on 127.0.0.1
    wait-port PORT [SECONDS]     wait until something listens on 127.0.0.1:PORT
    media DIR SIZE               write the demo's media files (deterministic content) under DIR
    config DIR PG_PORT           write the platform's config files (.env, docker-compose.yml, nginx/) under DIR
    bucket ENDPOINT NAME         create the offsite bucket on the S3 peer
    writer DSN PAUSE_FILE        keep inserting audit_log rows (one per 50 ms) until SIGTERM; idle while PAUSE_FILE exists
    checksums DSN OUT            per-table checksums (reference_platform/checksum.py) + the scenario's bounded ones, as JSON
    corrupt PGDIR DSN            disaster 1: drop payments, overwrite course titles, overwrite lessons' heap file
    delete DSN OUT               disaster 2: writes, the DELETE of course 7's enrollments, more writes; facts as JSON
    verify SCENARIO RESULTS DSN  compare the live database with the recorded checksums (JSON into RESULTS); exit 1 on a mismatch
    loaded SUMMARY               generate_data.py's JSON summary in a few words
    offsite ENDPOINT BUCKET      list the offsite objects as JSON
    report JSON_REPORT           the drill report in a few lines
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import socket
import sys
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
PLATFORM_DIR = os.path.join(os.path.dirname(HERE), 'reference_platform')
DELETED_WHERE = 'course_id = 7'  # the accidental deletion's condition (also passed to the playbook as dr_where)


def load_platform(name):
    """reference_platform/<name>.py (not a package on purpose: it would shadow stdlib modules)."""
    spec = importlib.util.spec_from_file_location('reference_platform_%s' % name, os.path.join(PLATFORM_DIR, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def connect(dsn):
    conn = psycopg2.connect(dsn, connect_timeout=5)
    conn.autocommit = True
    return conn


def sql(dsn, statement, params=None, fetch=True):
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if fetch else None
    finally:
        conn.close()


def bounded_checksum(dsn, table, where):
    """checksum.py's definition restricted to the rows matching ``where`` (fixed SQL written in this file)."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
                        "SET extra_float_digits = 1; SET bytea_output = 'hex'")
            cur.execute("SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY id), '')) FROM %s t WHERE %s"
                        % (table, where))
            rows, digest = cur.fetchone()
            return {'rows': rows, 'checksum': digest}
    finally:
        conn.close()


def write_json(path, data):
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write('\n')
    os.replace(tmp, path)


def read_json(path):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def utc_now():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


# --------------------------------------------------------------------------------------------- setup
def cmd_progress(_args):
    """10%.. 20%.. on one line from generate_data.py's progress lines (its plan line gives the total)."""
    total, done, shown = 0, {}, 0
    for line in sys.stdin:
        if 'plan for' in line and '{' in line:
            total = sum(json.loads(line[line.index('{'):]).values())
            continue
        parts = line.split()
        # "[   1.2s] public.students   100000 / 250000 rows"
        if total and len(parts) >= 6 and parts[-1] == 'rows' and parts[-3] == '/':
            done[parts[-5]] = int(parts[-4])
            percent = min(100, 100 * sum(done.values()) // total)
            while shown + 10 <= percent:
                shown += 10
                sys.stdout.write(' %d%%' % shown)
                sys.stdout.flush()
    return 0


def cmd_free_port(_args):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        print(sock.getsockname()[1])
    return 0


def cmd_wait_port(args):
    port, seconds = int(args[0]), float(args[1]) if len(args) > 1 else 30
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                return 0
        except OSError:
            time.sleep(0.1)
    print('nothing listens on 127.0.0.1:%d after %.0f s' % (port, seconds), file=sys.stderr)
    return 1


MEDIA_FILES_BY_SIZE = {'tiny': (12, 16 * 1024), 'small': (60, 96 * 1024)}  # files, mean size
FIXED_MEDIA = {  # served by the app and checked by the DR playbooks' smoke tests
    'user1/photo.jpg': 0o640,
    'public/logo.png': 0o644,
    'public/docs/guía del curso.txt': 0o644,
}


def cmd_media(args):
    """Uploads of the platform: a few fixed files and course material, about 1% of the database size."""
    root, size = args[0], args[1]
    count, mean = MEDIA_FILES_BY_SIZE.get(size.lower(), (200, 512 * 1024))
    rng = random.Random('cep-demo-media')
    files = {path: (mode, rng.randbytes(rng.randint(500, 5000))) for path, mode in FIXED_MEDIA.items()}
    for number in range(1, count + 1):
        extension = rng.choice(['pdf', 'mp4', 'jpg', 'pptx'])
        path = 'cursos/%04d/unidad-%02d/recurso-%d.%s' % (1 + number % 40, 1 + number % 8, number, extension)
        files[path] = (0o644, rng.randbytes(rng.randint(mean // 2, mean * 3 // 2)))
    total = 0
    for relative, (mode, content) in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as handle:
            handle.write(content)
        os.chmod(path, mode)
        total += len(content)
    os.chmod(os.path.join(root, 'user1'), 0o750)
    print(json.dumps({'files': len(files), 'bytes': total}))
    return 0


CONFIG_FILES = {  # relative path -> (mode, text); what config_backup archives
    '.env': (0o600, 'DATABASE_URL=postgres://app@127.0.0.1:{port}/cepcomunicacion\nSECRET_KEY=demo-only-not-a-secret\n'
                    'MEDIA_ROOT=/srv/uploads\nMAIL_FROM=no-responder@cepcomunicacion.com\nTZ=Atlantic/Canary\n'),
    'docker-compose.yml': (0o644, """services:
  web:
    image: cepcomunicacion/web:demo
    env_file: .env
    volumes: ["./uploads:/srv/uploads"]
    ports: ["127.0.0.1:8000:8000"]
    depends_on: [db]
  db:
    image: postgres:15
    volumes: ["pgdata:/var/lib/postgresql/data"]
volumes:
  pgdata: {{}}
"""),
    'nginx/cepcomunicacion.conf': (0o644, """server {{
    listen 80;
    server_name cepcomunicacion.example;
    client_max_body_size 512m;
    location /media/ {{ alias /srv/uploads/; expires 7d; }}
    location / {{ proxy_pass http://127.0.0.1:8000; proxy_set_header Host $host; }}
}}
"""),
}


def cmd_config(args):
    """The platform's configuration files (.env with its secret, compose file, nginx site)."""
    root, port = args
    for relative, (mode, text) in CONFIG_FILES.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as handle:
            handle.write(text.format(port=port))
        os.chmod(path, mode)
    return 0


def cmd_bucket(args):
    import boto3  # pylint: disable=import-outside-toplevel
    client = boto3.client('s3', endpoint_url=args[0], region_name='us-east-1',
                          aws_access_key_id=os.environ['AWS_ACCESS_KEY_ID'],
                          aws_secret_access_key=os.environ['AWS_SECRET_ACCESS_KEY'])
    client.create_bucket(Bucket=args[1])
    return 0


def cmd_writer(args):
    """The platform's writes: one audit_log row per 50 ms; idle while the pause file exists (the DR
    playbook's recovery_writers stop/start create and remove it); reconnects after errors."""
    dsn, pause_file = args
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    conn = None
    while not stop:
        if os.path.exists(pause_file):
            if conn is not None:
                conn.close()
                conn = None
            time.sleep(0.05)
            continue
        try:
            if conn is None:
                conn = connect(dsn)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO public.audit_log (actor, action, entity, entity_id, payload) "
                            "VALUES ('demo-writer', 'update', 'course', 1, '{}'::jsonb)")
        except psycopg2.Error:
            try:
                if conn is not None:
                    conn.close()
            except psycopg2.Error:
                pass
            conn = None
            time.sleep(0.2)
        time.sleep(0.05)
    if conn is not None:
        conn.close()
    return 0


def cmd_checksums(args):
    """What the backup holds, computed from the live database just before it was dumped (nothing writes meanwhile)."""
    dsn, out = args
    checksum = load_platform('checksum')
    write_json(out, {
        'taken': utc_now(),
        'tables': checksum.database_checksums(dsn),
        'audit_log_max_id': sql(dsn, 'SELECT coalesce(max(id), 0) FROM public.audit_log')[0][0],
        'enrollments_deleted_later': bounded_checksum(dsn, 'public.enrollments', DELETED_WHERE),
    })
    return 0


# --------------------------------------------------------------------------------------------- disasters
def cmd_corrupt(args):
    """Database corruption while the app and the writer run: a dropped table, overwritten values,
    and a heap file overwritten with random bytes (a damaged disk)."""
    pg_dir, dsn = args
    pgcluster = load_platform('pgcluster')
    cluster = pgcluster.ThrowawayCluster.attach(pg_dir)
    sql(dsn, 'DROP TABLE public.payments', fetch=False)
    sql(dsn, "UPDATE public.courses SET title = 'x' || md5(random()::text)", fetch=False)
    relative = sql(dsn, "SELECT pg_relation_filepath('public.lessons')")[0][0]
    path = os.path.join(cluster.data_dir, relative)
    cluster.stop()
    size = os.path.getsize(path)
    with open(path, 'r+b') as handle:
        handle.write(os.urandom(max(size, 8192)))
    cluster.start()
    try:
        sql(dsn, 'SELECT count(*), max(md5(body)) FROM public.lessons')
        symptom = 'lessons still reads (unexpected)'
    except psycopg2.Error as exc:
        symptom = str(exc).strip().splitlines()[0]
    print(json.dumps({'disaster_time': utc_now(), 'symptom': symptom}))
    return 0


def cmd_delete(args):
    """Accidental deletion while the platform keeps running: writes before and after the DELETE."""
    dsn, out = args
    enroll = ("INSERT INTO public.enrollments (student_id, course_id, status) SELECT s.id, %d, 'activa' "
              "FROM public.students s WHERE NOT EXISTS (SELECT 1 FROM public.enrollments e WHERE e.student_id = s.id "
              "AND e.course_id = %d) ORDER BY s.id LIMIT %d")
    sql(dsn, enroll % (3, 3, 2), fetch=False)
    time.sleep(1.1)
    deletion_time = utc_now()
    time.sleep(1.1)
    deleted = sql(dsn, 'WITH d AS (DELETE FROM public.enrollments WHERE %s RETURNING 1) SELECT count(*) FROM d'
                  % DELETED_WHERE)[0][0]
    sql(dsn, enroll % (4, 4, 1), fetch=False)
    write_json(out, {'deletion_time': deletion_time, 'where': DELETED_WHERE, 'rows_deleted': deleted})
    print(json.dumps({'deletion_time': deletion_time, 'rows_deleted': deleted}))
    return 0


# --------------------------------------------------------------------------------------------- verification
def cmd_verify(args):
    """database_corruption: every table equals the recovery point (audit_log: its rows up to the point's last id).
    accidental_deletion: the deleted rows equal the backup's, and the other enrollments equal what was there just
    before the recovery (writes made after the backup kept); record 'before' first with SCENARIO=accidental_deletion-before."""
    scenario, results, dsn = args
    point = read_json(os.path.join(results, 'checksums-backup.json'))
    checksum = load_platform('checksum')
    if scenario == 'accidental_deletion-before':
        write_json(os.path.join(results, 'checksums-before-row-restore.json'), {
            'enrollments_other': bounded_checksum(dsn, 'public.enrollments', 'NOT (%s)' % DELETED_WHERE),
            'enrollments_deleted': bounded_checksum(dsn, 'public.enrollments', DELETED_WHERE),
            'audit_log_rows': sql(dsn, 'SELECT count(*) FROM public.audit_log')[0][0]})
        return 0
    if scenario == 'database_corruption':
        after = checksum.database_checksums(dsn)
        tables = {}
        for table, expected in sorted(point['tables'].items()):
            if table == 'public.audit_log':
                bounded = bounded_checksum(dsn, table, 'id <= %d' % point['audit_log_max_id'])
                tables[table] = bounded == expected
            else:
                tables[table] = after.get(table) == expected
        later = sql(dsn, 'SELECT count(*) FROM public.audit_log WHERE id > %d' % point['audit_log_max_id'])[0][0]
        result = {'scenario': scenario, 'checked': utc_now(), 'tables': tables, 'equal': all(tables.values()),
                  'audit_log_rows_written_after_recovery': later, 'after': after}
    elif scenario == 'accidental_deletion':
        before = read_json(os.path.join(results, 'checksums-before-row-restore.json'))
        restored = bounded_checksum(dsn, 'public.enrollments', DELETED_WHERE)
        others = bounded_checksum(dsn, 'public.enrollments', 'NOT (%s)' % DELETED_WHERE)
        audit_rows = sql(dsn, 'SELECT count(*) FROM public.audit_log')[0][0]
        tables = {'deleted rows equal the backup': restored == point['enrollments_deleted_later'],
                  'other enrollments as before the recovery': others == before['enrollments_other']}
        result = {'scenario': scenario, 'checked': utc_now(), 'tables': tables, 'equal': all(tables.values()),
                  'rows_restored': restored['rows'], 'rows_in_backup': point['enrollments_deleted_later']['rows'],
                  'audit_log_rows_before_recovery': before['audit_log_rows'], 'audit_log_rows_after_recovery': audit_rows}
    else:
        print('unknown scenario %r' % scenario, file=sys.stderr)
        return 2
    write_json(os.path.join(results, 'verify-%s.json' % scenario), result)
    if not result['equal']:
        print('MISMATCH: %s' % ', '.join(name for name, same in result['tables'].items() if not same))
        return 1
    if scenario == 'database_corruption':
        print('%d of %d tables identical to the backup; %d rows written by the app since' % (
            len(tables), len(tables), result['audit_log_rows_written_after_recovery']))
    else:
        print('%d of %d rows back, identical to the backup; other enrollments and %d audit rows written meanwhile kept' % (
            result['rows_restored'], result['rows_in_backup'],
            result['audit_log_rows_after_recovery'] - result['audit_log_rows_before_recovery']))
    return 0


def cmd_loaded(args):
    """generate_data.py's summary in a few words."""
    summary = read_json(args[0])
    print('%.0f MB, %d rows' % (summary['data_bytes'] / 2 ** 20, sum(summary['tables'].values())))
    return 0


def cmd_offsite(args):
    import boto3  # pylint: disable=import-outside-toplevel
    client = boto3.client('s3', endpoint_url=args[0], region_name='us-east-1',
                          aws_access_key_id=os.environ['AWS_ACCESS_KEY_ID'],
                          aws_secret_access_key=os.environ['AWS_SECRET_ACCESS_KEY'])
    objects = []
    for page in client.get_paginator('list_objects_v2').paginate(Bucket=args[1]):
        objects += [{'key': item['Key'], 'size': item['Size']} for item in page.get('Contents', [])]
    print(json.dumps({'bucket': args[1], 'endpoint': args[0], 'count': len(objects),
                      'bytes': sum(o['size'] for o in objects), 'objects': objects}))
    return 0


def seconds(value):
    return '-' if value is None else '%.1f s' % value


def cmd_report(args):
    """A drill report (dr_report's JSON) in a few lines."""
    report = read_json(args[0])
    point = report.get('recovery_point') or {}
    lines = ['%s: %s, RTO %s' % (report['scenario'], report['outcome'].upper(), report.get('rto')),
             'recovery point: %s (created %s UTC)' % (os.path.basename(point.get('path') or '-'),
                                                      str(point.get('created', '-'))[:19].replace('T', ' ')),
             'phases: ' + ', '.join('%s %s' % (p['name'], seconds(p.get('duration_seconds'))) for p in report['phases'])]
    lost = report.get('data_lost') or {}
    if isinstance(lost.get('vs_recovery_point'), str):
        lines.append('data lost vs the recovery point: ' + lost['vs_recovery_point'])
    vs_disaster = lost.get('vs_disaster')
    if isinstance(vs_disaster, dict) and vs_disaster.get('rows_lost') is not None:
        rows = ', '.join('%s %s' % (t.split('.')[-1], n) for t, n in sorted(vs_disaster['rows_lost'].items()) if n)
        lines.append('data lost vs the moment of the disaster: %s rows (%s)%s' % (
            sum(vs_disaster['rows_lost'].values()), rows or 'none',
            '; unreadable before: ' + ', '.join(vs_disaster['unreadable_before']) if vs_disaster.get('unreadable_before') else ''))
    elif isinstance(vs_disaster, str):
        lines.append('data lost vs the moment of the disaster: ' + ' '.join(vs_disaster.split()))
    if report.get('data_loss_window_seconds') is not None:
        lines.append('data-loss window (recovery point to disaster): %s' % seconds(report['data_loss_window_seconds']))
    results = report.get('results') or {}
    if results.get('rows_recovered') is not None:
        lines.append('rows put back: %s of %s in the backup; writes since the backup: %s' % (
            results['rows_recovered'], results.get('rows_in_backup'), results.get('writes_since_backup', '-')))
    print('\n'.join(lines))
    return 0


COMMANDS = {'progress': cmd_progress, 'free-port': cmd_free_port, 'wait-port': cmd_wait_port, 'media': cmd_media,
            'config': cmd_config, 'bucket': cmd_bucket, 'writer': cmd_writer, 'checksums': cmd_checksums, 'corrupt': cmd_corrupt,
            'delete': cmd_delete, 'verify': cmd_verify, 'loaded': cmd_loaded, 'offsite': cmd_offsite, 'report': cmd_report}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == '__main__':
    sys.exit(main())
