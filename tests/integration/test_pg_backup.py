# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_backup and backup_info through ansible-playbook against a real PostgreSQL."""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import time

import psycopg2
import pytest

from conftest import DATABASE, pgcluster, table_checksums

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact, catalogue, layout

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='mounting a tmpfs needs root (CI runs as root)')


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs
                  if '.locks' not in d)


def restore_plain(pg, dump, dbname, jobs=1):
    """Restore the way an operator would by hand: plain pg_restore (zstd -dc | for .zst)."""
    pg.createdb(dbname)
    env = pg.env(dbname)
    pg_restore = pg.bin('pg_restore')
    target = ['--dbname=%s' % dbname, '--host=%s' % pg.host, '--port=%d' % pg.port, '--username=postgres',
              '--exit-on-error', '--no-owner']
    if dump.endswith('.zst'):
        subprocess.run('zstd -dcq %s | %s %s' % (dump, pg_restore, ' '.join(target)), shell=True, check=True, env=env)
    else:
        subprocess.run([pg_restore, '--jobs=%d' % jobs] + target + [dump], check=True, env=env)


# --- happy path -----------------------------------------------------------------------------

def test_check_then_apply_then_reapply_round_trip(pg, ansible, conn_args, tmp_path):
    root = str(tmp_path / 'backups')
    args = dict(conn_args, database=DATABASE, backup_root=root)

    predicted = ansible.run('pg_backup', args, check=True)
    assert predicted['changed'] is True
    assert predicted['path'].startswith(os.path.join(root, 'database', 'cepcomunicacion_'))
    assert not os.path.exists(root), 'check mode must write nothing'

    first = ansible.run('pg_backup', args)
    assert first['changed'] is True and first.get('failed') is not True, first['_output']
    assert first['tables'] >= 5
    second = ansible.run('pg_backup', args)
    assert second['changed'] is True and second['path'] != first['path'], 'a daily run always makes a new dump'

    # the sidecar passes sha256sum -c, and matches what the module returned
    check = subprocess.run(['sha256sum', '-c', os.path.basename(first['path']) + '.sha256'],
                           cwd=os.path.dirname(first['path']), capture_output=True, text=True, check=False)
    assert check.returncode == 0 and ': OK' in check.stdout, check.stdout + check.stderr
    assert artifact.sha256_file(first['path']) == (first['sha256'], first['size'])
    meta = json.load(open(first['path'] + '.meta.json'))
    assert meta['source']['database'] == DATABASE and meta['kind'] == 'database'
    assert meta['tool_versions']['pg_dump'].startswith('pg_dump (PostgreSQL) ')
    assert meta['duration'] > 0 and meta['size'] == first['size']

    # modes: files 0600, directories 0700
    for path in files_under(root):
        assert mode(os.path.join(root, path)) == 0o600, path
    for directory, _subs, _files in os.walk(root):
        assert mode(directory) == 0o700, directory

    # rows restored with a plain pg_restore equal rows backed up
    restore_plain(pg, first['path'], 'roundtrip_plain', jobs=2)
    assert table_checksums(pg, 'roundtrip_plain') == table_checksums(pg, DATABASE)


def test_status_file_records_success_and_failure(pg, ansible, conn_args, tmp_path):
    root = str(tmp_path / 'backups')
    ok = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root))
    entry = ansible.status()['jobs']['database']
    assert (entry['result'], entry['exit_code'], entry['artifact'], entry['size']) == ('ok', 0, ok['path'], ok['size'])
    assert oct(os.stat(ansible.status_file).st_mode & 0o777) == oct(0o600)
    failed = ansible.run('pg_backup', dict(conn_args, database='no_such_db', backup_root=root))
    assert failed['failed'] is True
    entry = ansible.status()['jobs']['database']
    assert (entry['result'], entry['exit_code']) == ('failed', 2)
    assert "database 'no_such_db' does not exist" in entry['error']
    assert entry['last_success'] < entry['finished'] and entry['artifact'] == ok['path']
    ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root), check=True)
    assert ansible.status()['jobs']['database']['result'] == 'failed', 'check mode must not write the status file'


def test_zstd_round_trip(pg, ansible, conn_args, tmp_path):
    result = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=str(tmp_path),
                                           compression='zstd'))
    assert result['changed'] and result['path'].endswith('.dump.zst'), result['_output']
    assert result['executed_commands'][0].endswith('| %s -q -c -3' % shutil.which('zstd'))
    restore_plain(pg, result['path'], 'roundtrip_zstd')
    assert table_checksums(pg, 'roundtrip_zstd') == table_checksums(pg, DATABASE)


def test_weekly_is_once_per_iso_week_unless_forced(pg, ansible, conn_args, tmp_path):
    args = dict(conn_args, database=DATABASE, backup_root=str(tmp_path), kind='weekly')
    first = ansible.run('pg_backup', args)
    week = layout.iso_week_label(layout.utcnow())
    assert first['changed'] and first['path'].endswith('cepcomunicacion_weekly_%s.dump' % week)
    again_check = ansible.run('pg_backup', args, check=True)
    again = ansible.run('pg_backup', args)
    assert again_check['changed'] is False and again['changed'] is False
    assert again['path'] == first['path'] and again['sha256'] == first['sha256']
    forced = ansible.run('pg_backup', dict(args, force=True))
    assert forced['changed'] is True and forced['path'] == first['path']
    assert artifact.sha256_file(forced['path'])[0] == forced['sha256']
    assert sorted(os.listdir(os.path.dirname(first['path']))) == sorted(
        [os.path.basename(first['path']) + suffix for suffix in ('', '.sha256', '.meta.json')])


def plant_dump(root, source_dump, moment):
    """An earlier dump, as pg_backup would have written it at ``moment``."""
    directory = os.path.join(root, 'database')
    artifact.ensure_directory(directory)
    path = os.path.join(directory, layout.database_dump_name('database', moment))
    with artifact.ArtifactWriter(path) as writer, open(source_dump, 'rb') as handle:
        writer.write(handle.read())
        writer.commit({'kind': 'database', 'created': moment.isoformat()})
    return path


def test_retention_prunes_exactly_the_planned_set(pg, ansible, conn_args, tmp_path):
    root = str(tmp_path / 'backups')
    seed = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root))
    now = layout.utcnow()
    planted = {days: plant_dump(root, seed['path'], now - datetime.timedelta(days=days, hours=1))
               for days in (3, 6, 8, 20, 40)}
    args = dict(conn_args, database=DATABASE, backup_root=root, retention_days=7)
    predicted = ansible.run('pg_backup', args, check=True)
    assert sorted(predicted['pruned']) == sorted([planted[8], planted[20], planted[40]])
    assert os.path.exists(planted[40]), 'check mode prunes nothing'
    result = ansible.run('pg_backup', args)
    assert sorted(result['pruned']) == sorted(predicted['pruned'])
    remaining = [a.path for a in catalogue.list_artifacts(root, ['database'])]
    assert remaining == [planted[6], planted[3], seed['path'], result['path']]
    for gone in result['pruned']:
        assert not any(os.path.exists(gone + suffix) for suffix in ('', '.sha256', '.meta.json'))


def test_failed_backup_prunes_nothing_and_last_backup_survives(pg, ansible, conn_args, tmp_path):
    root = str(tmp_path / 'backups')
    seed = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root))
    old = plant_dump(root, seed['path'], layout.utcnow() - datetime.timedelta(days=90))
    os.unlink(seed['path'])
    for sidecar in layout.sidecar_paths(seed['path']):
        os.unlink(sidecar)
    failed = ansible.run('pg_backup', dict(conn_args, database='no_such_db', backup_root=root, retention_days=1))
    assert failed['failed'] is True
    assert [a.path for a in catalogue.list_artifacts(root, ['database'])] == [old]


def test_backup_info_lists_and_verifies(pg, ansible, conn_args, tmp_path):
    root = str(tmp_path / 'backups')
    daily = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root))
    weekly = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root, kind='weekly'))
    before = files_under(root)
    info = ansible.run('backup_info', {'backup_root': root, 'verify': True})
    assert info['changed'] is False
    assert {(a['kind'], a['path'], a['status']) for a in info['artifacts']} == {
        ('database', daily['path'], 'ok'), ('database_weekly', weekly['path'], 'ok')}
    with open(daily['path'], 'r+b') as handle:  # one flipped byte
        handle.seek(daily['size'] // 2)
        byte = handle.read(1)
        handle.seek(daily['size'] // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    info = ansible.run('backup_info', {'backup_root': root, 'verify': True})
    assert [(f['path'], f['status']) for f in info['failed_verification']] == [(daily['path'], 'mismatch')]
    assert files_under(root) == before


# --- faults ---------------------------------------------------------------------------------

def test_missing_database_is_named(pg, ansible, conn_args, tmp_path):
    result = ansible.run('pg_backup', dict(conn_args, database='no_such_db', backup_root=str(tmp_path)))
    assert result['failed'] is True
    assert "database 'no_such_db' does not exist on 127.0.0.1:%d" % pg.port in result['msg']
    assert catalogue.list_artifacts(str(tmp_path), include_incomplete=True) == []


def test_server_down_is_named(ansible, tmp_path):
    cluster = pgcluster.ThrowawayCluster()
    cluster.start()
    port = cluster.port
    cluster.destroy()
    result = ansible.run('pg_backup', {'login_port': port, 'backup_root': str(tmp_path), 'connect_timeout': 3})
    assert result['failed'] is True
    assert 'cannot connect to PostgreSQL at 127.0.0.1:%d' % port in result['msg']


@pytest.fixture(scope='module')
def secured(bigdb):
    """A second cluster that demands a password over TCP (scram-sha-256)."""
    cluster = pgcluster.ThrowawayCluster()
    cluster.start()
    try:
        cluster.create_role('backup', password='Corr3ct-Horse:Battery\\Staple', superuser=True)
        cluster.createdb('secure')
        cluster.psql("CREATE TABLE big (id int PRIMARY KEY, body text); "
                     "INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 220000) g;",
                     dbname='secure')
        cluster.set_auth('scram-sha-256')
        yield cluster
    finally:
        cluster.destroy()


SECRET = 'Corr3ct-Horse:Battery\\Staple'


def test_wrong_password_is_clear_and_never_echoed(secured, ansible, tmp_path):
    wrong = 'Wr0ng-Secret-Value'
    result = ansible.run('pg_backup', {'login_port': secured.port, 'login_user': 'backup', 'login_password': wrong,
                                       'database': 'secure', 'backup_root': str(tmp_path)}, verbosity='-vvv')
    assert result['failed'] is True
    assert "authentication failed for user 'backup' on 127.0.0.1:%d" % secured.port in result['msg']
    assert wrong not in result['_output'] and wrong not in json.dumps(result)


def test_secret_never_in_process_list_or_output(secured, ansible, tmp_path):
    args = {'login_port': secured.port, 'login_user': 'backup', 'login_password': SECRET, 'database': 'secure',
            'backup_root': str(tmp_path), 'compression_level': 9}
    proc, result_file = ansible.start('pg_backup', args)
    seen_pg_dump = 0
    leaks = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        for entry in glob.glob('/proc/[0-9]*'):
            try:
                cmdline = open(entry + '/cmdline', 'rb').read().decode('utf-8', 'replace')
            except OSError:
                continue
            if 'pg_dump' in cmdline and '--port=%d' % secured.port in cmdline:
                seen_pg_dump += 1
                try:
                    environ = open(entry + '/environ', 'rb').read().decode('utf-8', 'replace')
                except OSError:
                    environ = ''
                if SECRET in environ:
                    leaks.append('environment of pg_dump')
            if SECRET in cmdline:
                leaks.append(cmdline)
        time.sleep(0.02)
    output = proc.communicate()[0].decode()
    assert proc.returncode == 0, output
    assert seen_pg_dump > 0, 'pg_dump was never observed running; the scan proved nothing'
    assert leaks == []
    result = json.load(open(result_file))
    assert result['changed'] is True, output
    assert SECRET not in output and SECRET not in json.dumps(result)
    for path in files_under(str(tmp_path)):
        with open(os.path.join(str(tmp_path), path), 'rb') as handle:
            assert SECRET.encode() not in handle.read(), path


def stand_in_bin(tmp_path, pg, pg_dump_body):
    """A pg_bin_dir whose pg_dump is a stand-in shell script (real pg_restore beside it).

    A stand-in because this machine cannot install an older or a misbehaving pg_dump.
    """
    directory = tmp_path / 'bin'
    directory.mkdir()
    real = pg.bin('pg_dump')
    script = directory / 'pg_dump'
    script.write_text('#!/bin/sh\nREAL=%s\n%s\n' % (real, pg_dump_body))
    script.chmod(0o755)
    os.symlink(pg.bin('pg_restore'), str(directory / 'pg_restore'))
    return str(directory)


def test_pg_dump_older_than_server_is_refused(pg, ansible, conn_args, tmp_path):
    bin_dir = stand_in_bin(tmp_path, pg, 'echo "pg_dump (PostgreSQL) 14.11"')
    result = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=str(tmp_path / 'root'),
                                           pg_bin_dir=bin_dir))
    assert result['failed'] is True
    assert 'pg_dump 14.11' in result['msg'] and 'older than the PostgreSQL server (15)' in result['msg']
    assert 'postgresql-client-15' in result['msg']
    assert not (tmp_path / 'root').exists()


@pytest.mark.parametrize('behaviour', ['empty', 'truncated'])
def test_pg_dump_exit_zero_with_bad_output_is_an_error(pg, ansible, conn_args, tmp_path, bigdb, behaviour):
    body = {
        'empty': 'case "$1" in --version) exec $REAL --version;; esac\nexit 0',
        'truncated': 'case "$1" in --version) exec $REAL --version;; esac\n$REAL "$@" | head -c 300000\nexit 0',
    }[behaviour]
    bin_dir = stand_in_bin(tmp_path, pg, body)
    root = str(tmp_path / 'root')
    result = ansible.run('pg_backup', dict(conn_args, database=bigdb, backup_root=root, pg_bin_dir=bin_dir))
    assert result['failed'] is True, result['_output']
    assert ('not a pg_dump archive' in result['msg']) if behaviour == 'empty' else ('truncated' in result['msg'])
    assert catalogue.list_artifacts(root, include_incomplete=True) == []
    assert [n for n in os.listdir(os.path.join(root, 'database')) if not os.path.isdir(os.path.join(root, 'database', n))] == []


@pytest.fixture
def tmpfs(tmp_path):
    mountpoint = tmp_path / 'tmpfs'
    mountpoint.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', str(mountpoint)], check=True)
    try:
        yield str(mountpoint)
    finally:
        subprocess.run(['umount', '-l', str(mountpoint)], check=False)


@needs_root
def test_disk_full_mid_dump(pg, ansible, conn_args, bigdb, tmpfs):
    earlier = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=tmpfs))
    assert earlier['changed'] is True
    result = ansible.run('pg_backup', dict(conn_args, database=bigdb, backup_root=tmpfs, compression='none',
                                           free_space_margin=0.0))
    assert result['failed'] is True
    assert 'no space left on the backup filesystem' in result['msg']
    assert [a.path for a in catalogue.list_artifacts(tmpfs, include_incomplete=True)] == [earlier['path']]
    assert not [n for n in os.listdir(os.path.join(tmpfs, 'database')) if n.startswith('.tmp-')]
    check = subprocess.run(['sha256sum', '-c', os.path.basename(earlier['path']) + '.sha256'],
                           cwd=os.path.dirname(earlier['path']), capture_output=True, check=False)
    assert check.returncode == 0


@needs_root
def test_refuses_to_start_without_room_for_the_next_dump(pg, ansible, conn_args, tmpfs):
    seed = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=tmpfs))
    # an earlier 12 MiB dump: the next one needs 1.2 x 12 MiB and the tmpfs has less left
    big = plant_dump(tmpfs, seed['path'], layout.utcnow() - datetime.timedelta(hours=1))
    artifact.remove_artifact(seed['path'])  # the planted one is now the last dump
    with open(big, 'ab') as handle:
        handle.write(os.urandom(12 * 1024 * 1024))
    meta = json.load(open(big + '.meta.json'))
    meta['size'] = os.path.getsize(big)
    open(big + '.meta.json', 'w').write(json.dumps(meta))
    before = files_under(tmpfs)
    result = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=tmpfs))
    assert result['failed'] is True
    assert 'free on the filesystem of %s' % tmpfs in result['msg'] and 'nothing was written' in result['msg']
    assert files_under(tmpfs) == before


def test_sigkill_mid_dump_leaves_no_partial_and_next_run_succeeds(pg, ansible, conn_args, bigdb, tmp_path):
    root = str(tmp_path / 'root')
    args = dict(conn_args, database=bigdb, backup_root=root, compression_level=9)
    proc, _result = ansible.start('pg_backup', args)
    directory = os.path.join(root, 'database')
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        temps = glob.glob(os.path.join(directory, '.tmp-*.dump.*'))
        if temps and os.path.getsize(temps[0]) > 0:
            victim = int(temps[0].rsplit('.', 1)[1])  # the module process's PID is in the temporary name
        time.sleep(0.01)
    assert victim, 'the dump never started'
    os.kill(victim, signal.SIGKILL)
    proc.communicate()
    assert catalogue.list_artifacts(root, include_incomplete=True) == [], 'no partial may look like a backup'
    info = ansible.run('backup_info', {'backup_root': root})
    assert info['artifacts'] == [] and info['incomplete'] == []
    after = ansible.run('pg_backup', args)
    assert after['changed'] is True
    assert any(name.startswith('.tmp-') for name in after['cleaned'])
    assert sorted(os.listdir(directory)) == sorted(['pre-restore', 'weekly'] + [
        os.path.basename(after['path']) + s for s in ('', '.sha256', '.meta.json')])


def test_concurrent_runs_one_waits_then_fails_clearly(pg, ansible, conn_args, bigdb, tmp_path):
    root = str(tmp_path / 'root')
    args = dict(conn_args, database=bigdb, backup_root=root, lock_timeout=1)
    # Hold a table lock so the first run's pg_dump waits: the runs overlap for certain.
    blocker = psycopg2.connect(pg.dsn(bigdb))
    cursor = blocker.cursor()
    cursor.execute('LOCK TABLE big IN ACCESS EXCLUSIVE MODE')
    try:
        first, first_file = ansible.start('pg_backup', args)
        lock_file = os.path.join(root, '.locks', 'database.lock')
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (os.path.exists(lock_file) and os.path.getsize(lock_file)):
            time.sleep(0.01)
        holder = json.load(open(lock_file))['pid']
        second = ansible.run('pg_backup', args)
    finally:
        blocker.rollback()
        blocker.close()
    first.communicate()
    first_result = json.load(open(first_file))
    assert first_result['changed'] is True, first_result
    assert second['failed'] is True
    assert 'another database job holds the lock' in second['msg'] and 'PID %d' % holder in second['msg']
    assert [a.path for a in catalogue.list_artifacts(root)] == [first_result['path']]


def test_concurrent_runs_with_a_wait_both_succeed_serially(pg, ansible, conn_args, tmp_path):
    root = str(tmp_path / 'root')
    args = dict(conn_args, database=DATABASE, backup_root=root, lock_timeout=120)
    runs = [ansible.start('pg_backup', args) for _run in range(2)]
    results = []
    for proc, result_file in runs:
        proc.communicate()
        results.append(json.load(open(result_file)))
    assert all(r['changed'] for r in results), results
    assert len({r['path'] for r in results}) == 2
    assert len(catalogue.list_artifacts(root)) == 2
