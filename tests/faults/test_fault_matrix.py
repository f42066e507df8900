# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fault matrix of issue 10, against the installed system (see conftest.py and docs/RELIABILITY.md).

Each case injects one fault, runs the affected job, restore or check, and asserts:
(a) a clear error naming the problem, or a correct success; (b) every earlier backup still verifies;
(c) production data unchanged when a restore failed; (d) the status file and the check report it and an
alert reached the SMTP server and both webhooks.  Each case then removes its fault, runs the job again
and ends with a healthy check, so the next case starts from a healthy system.
"""

from __future__ import annotations

import datetime
import glob
import io
import json
import os
import signal
import subprocess
import tarfile
import time

import psycopg2
import pytest

from conftest import DATABASE, closed_port, pgcluster, table_checksums, tree_state, write_media, integration
from s3_peer import s3_client

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact, catalogue, job_lock, layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import offsite

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='tmpfs mounts need root (CI runs as root)')
PASSWORD = 'Corr3ct-Horse:Battery-Staple'
WRONG_PASSWORD = 'Wr0ng-Secret-Value-7731'


# --- helpers ---------------------------------------------------------------------------------------

def flip_byte(path, offset=None):
    """XOR one byte with 0xFF; calling it twice puts the byte back."""
    offset = os.path.getsize(path) // 2 if offset is None else offset
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def wait_for(predicate, what, timeout=60, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail('timed out after %d s waiting for %s' % (timeout, what))
        time.sleep(interval)


def kill_session(proc):
    """SIGKILL the job and every process it started (its own session), as the OOM killer or a reboot would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def session_commands(sid):
    found = []
    for entry in glob.glob('/proc/[0-9]*'):
        try:
            if os.getsid(int(entry[6:])) != sid:
                continue
            with open(entry + '/cmdline', 'rb') as handle:
                found.append(handle.read().replace(b'\0', b' ').decode('utf-8', 'replace'))
        except (OSError, ValueError):
            continue
    return found


def temporaries(directory):
    return sorted(name for name in os.listdir(directory) if name.startswith(layout.TEMP_MARK))


def databases(pg):
    return set(pg.psql('SELECT datname FROM pg_database').split())


def dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size (unmounted at the end)."""
    mounted = []

    def mount(size):
        mountpoint = tmp_path / ('tmpfs-%d' % len(mounted))
        mountpoint.mkdir()
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0700' % size, 'tmpfs', str(mountpoint)],
                       check=True)
        mounted.append(str(mountpoint))
        return str(mountpoint)
    try:
        yield mount
    finally:
        for mountpoint in mounted:
            subprocess.run(['umount', '-l', mountpoint], check=False)


def stand_in_pg_bin(directory, pg, body):
    """A pg_bin_dir whose pg_dump is a stand-in script (real pg_restore beside it): no older or misbehaving pg_dump
    can be installed here, so this is the one named stand-in of the matrix."""
    os.makedirs(directory)
    script = os.path.join(directory, 'pg_dump')
    with open(script, 'w') as handle:
        handle.write('#!/bin/sh\nREAL=%s\n%s\n' % (pg.bin('pg_dump'), body))
    os.chmod(script, 0o755)
    os.symlink(pg.bin('pg_restore'), os.path.join(directory, 'pg_restore'))
    return directory


def secret_nowhere(system, secret):
    for name in os.listdir(system.log_dir):
        with open(os.path.join(system.log_dir, name)) as handle:
            assert secret not in handle.read(), 'the secret reached the log %s' % name
    with open(system.status_file) as handle:
        assert secret not in handle.read(), 'the secret reached the status file'


# --- 1, 2: disk full ------------------------------------------------------------------------------

@needs_root
@pytest.mark.fault(1, 'disk full mid database dump (1 MiB tmpfs: a 0.3 MB gzip dump fits, the 2 MB plain one not)')
def test_disk_full_mid_database_dump(case, system, tmpfs):
    before = system.artifacts()
    tmpfs = tmpfs('1m')
    with system.configured({'paths': {'backup_root': tmpfs}}):
        system.ok('database')
        earlier = system.artifacts(tmpfs)
        assert len(earlier) == 1
        # the free-space precheck passes (1.2 x the last dump is free); the disk fills while pg_dump writes
        with system.configured({'database': {'compression': 'none'}}):
            run = system.run('database')
        assert run.returncode == 2 and 'no space left on the backup filesystem' in run.stderr, run.stderr
        case.checked_that('exit 2, stderr and log say "no space left on the backup filesystem"')
        assert system.artifacts(tmpfs) == earlier, 'a partial dump looks finished'
        assert catalogue.list_artifacts(tmpfs, include_incomplete=True)[0].path in earlier
        assert temporaries(os.path.join(tmpfs, 'database')) == [], 'the partial dump was not removed'
        system.assert_earlier_backups_verify(earlier, root=tmpfs)
    assert 'FAILED database: no space left' in system.log('database')
    case.checked_that('no partial or temporary file left; the dump made before on the full disk still verifies')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups on the real root verify' % len(before))
    system.assert_reported('database', 'no space left on the backup filesystem')
    case.checked_that('status file: database failed; check critical job:database; alert by email, Slack, Discord')
    system.ok('database')
    system.assert_healthy()
    case.checked_that('the next run succeeds and the check is healthy again')


@needs_root
@pytest.mark.fault(2, 'disk full mid media snapshot (16 MiB tmpfs, 20 MiB new file)')
def test_disk_full_mid_media_snapshot(case, system, tmpfs, tmp_path):
    before = system.artifacts()
    tmpfs = tmpfs('16m')
    source = str(tmp_path / 'uploads')
    write_media(source, count=3)
    with system.configured({'paths': {'backup_root': tmpfs}, 'media': {'paths': [source]}}):
        system.ok('media')
        media_dir = os.path.join(tmpfs, 'media')
        earlier = system.artifacts(tmpfs)
        latest = os.readlink(os.path.join(media_dir, 'latest'))
        with open(os.path.join(source, 'huge.bin'), 'wb') as handle:
            handle.write(os.urandom(20 * 1024 * 1024))
        run = system.run('media')
        assert run.returncode == 2 and 'no space left on the backup filesystem' in run.stderr, run.stderr
        case.checked_that('exit 2, stderr says "no space left on the backup filesystem"')
        assert os.readlink(os.path.join(media_dir, 'latest')) == latest
        assert temporaries(media_dir) == [], 'the partial snapshot was not removed'
        assert system.artifacts(tmpfs) == earlier
        system.assert_earlier_backups_verify(earlier, root=tmpfs)
        case.checked_that('media/latest still points at the complete snapshot, which verifies; no partial left')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups on the real root verify' % len(before))
    system.assert_reported('media', 'no space left on the backup filesystem')
    case.checked_that('status file: media failed; check critical job:media; alert by email, Slack, Discord')
    system.ok('media')
    system.assert_healthy()
    case.checked_that('the next run succeeds and the check is healthy again')


# --- 3, 4, 5: SIGKILL -----------------------------------------------------------------------------

@pytest.mark.fault(3, 'SIGKILL mid database dump')
def test_sigkill_mid_dump(case, system, pg):
    before = system.artifacts()
    listed = [a.path for a in catalogue.list_artifacts(system.root, include_incomplete=True)]
    directory = os.path.join(system.root, 'database')
    # An open transaction holding a table lock keeps pg_dump waiting inside the dump: the kill lands mid-dump.
    blocker = psycopg2.connect(pg.dsn(DATABASE))
    try:
        blocker.cursor().execute('LOCK TABLE courses IN ACCESS EXCLUSIVE MODE')
        proc = system.start('database')
        wait_for(lambda: temporaries(directory) and any('pg_dump' in c for c in session_commands(proc.pid)),
                 'pg_dump writing its temporary file')
        kill_session(proc)
    finally:
        blocker.rollback()
        blocker.close()
    leftovers = temporaries(directory)
    assert leftovers, 'killed while dumping: its temporary is there'
    assert [a.path for a in catalogue.list_artifacts(system.root, include_incomplete=True)] == listed
    case.checked_that('the job and pg_dump were SIGKILLed while dumping; nothing new looks like a backup')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    mark = system.mark()
    entry = system.status()['jobs']['database']
    assert entry['result'] == 'running' and not job_lock.pid_alive(entry['pid'])
    run, check = system.check()
    finding = [f for f in check['findings'] if f['key'] == 'job:database'][0]
    assert run.returncode == 2 and finding['severity'] == 'critical' and 'ended without recording' in finding['message']
    mails, slack, discord = system.alerts_since(mark)
    for channel, texts in (('email', mails), ('slack', slack), ('discord', discord)):
        assert any('job:database' in t and 'ended without recording an outcome' in t for t in texts), channel
    case.checked_that('status file: database "running" with a dead PID; check critical "ended without recording an '
                      'outcome"; alert by email, Slack, Discord')
    system.ok('database')
    assert not set(leftovers) & set(os.listdir(directory)), 'the next run removes the partial dump'
    system.assert_healthy()
    case.checked_that('the next run removes the temporary and succeeds; the check is healthy again')


@pytest.mark.fault(4, 'SIGKILL mid media snapshot (rsync at 256 KiB/s inside a 4 MiB file)')
def test_sigkill_mid_snapshot(case, system):
    before = system.artifacts()
    media_dir = os.path.join(system.root, 'media')
    latest = os.readlink(os.path.join(media_dir, 'latest'))
    with open(os.path.join(system.media_source, 'video-4mib.bin'), 'wb') as handle:
        handle.write(os.urandom(4 * 1024 * 1024))
    with system.configured({'media': {'bwlimit': 256}}):
        proc = system.start('media')
        wait_for(lambda: any(n.startswith(layout.TEMP_MARK + '2') for n in os.listdir(media_dir)), 'the snapshot')
        time.sleep(1.5)  # rsync is inside the 4 MiB file now
        assert any('rsync' in c for c in session_commands(proc.pid)), 'rsync is running'
        kill_session(proc)
    leftovers = temporaries(media_dir)
    assert leftovers, 'killed while copying'
    assert os.readlink(os.path.join(media_dir, 'latest')) == latest
    assert system.artifacts() == before
    case.checked_that('job and rsync SIGKILLed mid-copy; media/latest still points at the last complete snapshot')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    mark = system.mark()
    run, check = system.check()
    finding = [f for f in check['findings'] if f['key'] == 'job:media'][0]
    assert run.returncode == 2 and 'ended without recording' in finding['message'], check['findings']
    mails, slack, discord = system.alerts_since(mark)
    for channel, texts in (('email', mails), ('slack', slack), ('discord', discord)):
        assert any('job:media' in t and 'ended without recording an outcome' in t for t in texts), channel
    case.checked_that('check critical job:media "ended without recording an outcome"; alert by email, Slack, Discord')
    system.ok('media')
    assert temporaries(media_dir) == []
    assert os.readlink(os.path.join(media_dir, 'latest')) != latest
    system.assert_healthy()
    case.checked_that('the next run cleans the partial snapshot and moves latest; check healthy again')


@pytest.mark.fault(5, 'SIGKILL mid offsite push (multipart upload of a 12 MiB file)')
def test_sigkill_mid_offsite_push(case, system):
    with open(os.path.join(system.media_source, 'video-12mib.bin'), 'wb') as handle:
        handle.write(os.urandom(12 * 1024 * 1024))
    system.ok('media')
    newest = catalogue.newest(system.root, 'media')
    before = system.artifacts()
    client = s3_client(system.s3_endpoint)
    marker = offsite.marker_key('web1', 'media', newest.name)
    with system.configured({'offsite': {'multipart_threshold': 5, 'multipart_chunksize': 5, 'max_concurrency': 1,
                                        'bwlimit': 2048}}):
        proc = system.start('offsite')
        wait_for(lambda: client.list_multipart_uploads(Bucket=system.bucket).get('Uploads'), 'the multipart upload')
        kill_session(proc)
    keys = [item['Key'] for item in client.list_objects_v2(Bucket=system.bucket, Prefix='web1/').get('Contents', [])]
    assert marker not in keys, 'nothing may look complete offsite'
    assert client.list_multipart_uploads(Bucket=system.bucket).get('Uploads')
    case.checked_that('killed mid multipart upload: the snapshot has no marker offsite (not complete), the upload '
                      'is pending')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d local backups verify' % len(before))
    mark = system.mark()
    run, check = system.check()
    finding = [f for f in check['findings'] if f['key'] == 'job:offsite'][0]
    assert run.returncode == 2 and 'ended without recording' in finding['message'], check['findings']
    mails, slack, discord = system.alerts_since(mark)
    for channel, texts in (('email', mails), ('slack', slack), ('discord', discord)):
        assert any('job:offsite' in t for t in texts), channel
    case.checked_that('check critical job:offsite "ended without recording an outcome"; alert by email, Slack, '
                      'Discord')
    system.ok('offsite')
    assert 'aborted abandoned multipart upload' in system.log('offsite')
    assert not client.list_multipart_uploads(Bucket=system.bucket).get('Uploads')
    assert marker in [item['Key'] for item in client.list_objects_v2(Bucket=system.bucket, Prefix='web1/')['Contents']]
    system.assert_healthy()
    case.checked_that('the next push aborts the abandoned upload and completes the snapshot; check healthy again')


# --- 6: SIGKILL mid restore -------------------------------------------------------------------------

@pytest.fixture
def edited_production(system, pg):
    """A fresh dump of production, then a change after it: (checksums at the backup, checksums now, dump)."""
    system.ok('database')
    dump = catalogue.newest(system.root, 'database').path
    at_backup = table_checksums(pg, DATABASE)
    pg.psql("UPDATE courses SET title = title || ' (edited after the backup)' WHERE id = 1", dbname=DATABASE)
    now = table_checksums(pg, DATABASE)
    assert now != at_backup
    return at_backup, now, dump


@pytest.mark.fault(6, 'SIGKILL mid database restore, before the swap (pg_restore loading the scratch copy)')
def test_sigkill_mid_restore_before_swap(case, system, pg, edited_production):
    _at_backup, before, dump = edited_production
    artifacts = system.artifacts()
    proc = system.restore_driver('database', system.root, DATABASE, pg.host, str(pg.port), '--kill-at', 'pg_restore',
                                 new_session=True)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    leftovers = [name for name in databases(pg) if name.startswith(DATABASE + '__restore_')]
    assert leftovers, 'killed while pg_restore filled the scratch database'
    assert table_checksums(pg, DATABASE) == before
    case.checked_that('restore and pg_restore SIGKILLed while loading the scratch database; production per-table '
                      'checksums unchanged')
    system.assert_earlier_backups_verify(artifacts)
    case.checked_that('%d earlier backups verify' % len(artifacts))
    run = system.run('check', '--restore-test')
    assert run.returncode == 0, (run.stderr, system.status()['check']['findings'])
    restore = system.status()['check']['restore_test']
    assert restore['result'] == 'ok' and restore['backup'] == dump
    assert not [name for name in databases(pg) if name.startswith(DATABASE + '__restore_')]
    assert 'left by an interrupted restore' in system.log('check')
    assert table_checksums(pg, DATABASE) == before
    system.assert_healthy()
    case.checked_that('(d) not applicable: a restore is run by an operator and reports to them; instead the check '
                      'stays healthy and its restore test drops the leftover scratch database, then restores the '
                      'dump into a scratch copy without touching production')


@pytest.mark.fault(6, 'SIGKILL mid database restore, right after the swap')
def test_sigkill_mid_restore_after_swap(case, system, pg, edited_production):
    at_backup, before, dump = edited_production
    artifacts = system.artifacts()
    proc = system.restore_driver('database', system.root, DATABASE, pg.host, str(pg.port), '--kill-at', 'after_swap',
                                 new_session=True)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    assert table_checksums(pg, DATABASE) == at_backup
    case.checked_that('killed right after the swap: production is the backup, table for table')
    previous = [name for name in databases(pg) if name.startswith(DATABASE + '__pre_restore_')]
    assert len(previous) == 1 and table_checksums(pg, previous[0]) == before
    safety = catalogue.list_artifacts(system.root, ['database_pre_restore'])
    assert safety and safety[-1].path not in artifacts
    case.checked_that('the database as it was before is kept as %s__pre_restore_* (same checksums) and a safety '
                      'dump is in database/pre-restore/' % DATABASE)
    system.assert_earlier_backups_verify(artifacts)
    case.checked_that('%d earlier backups verify' % len(artifacts))
    pg.psql('DROP DATABASE "%s"' % previous[0])
    system.assert_healthy()
    case.checked_that('(d) not applicable (the restore succeeded in effect); the check stays healthy')


@pytest.mark.fault(6, 'SIGKILL mid database restore, between the two renames of the swap')
def test_sigkill_mid_restore_mid_swap(case, system, pg, edited_production):
    _at_backup, before, dump = edited_production
    artifacts = system.artifacts()
    proc = system.restore_driver('database', system.root, DATABASE, pg.host, str(pg.port), '--kill-at', 'mid_swap',
                                 new_session=True)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    try:
        assert DATABASE in databases(pg), 'killed between the renames, the live name points at nothing'
        assert not [name for name in databases(pg) if name.startswith(DATABASE + '__pre_restore_')]
        case.checked_that('killed after the first rename, before the second: both renames roll back together, the '
                          'live name still holds the old database')
        system.assert_earlier_backups_verify(artifacts)
        case.checked_that('%d earlier backups verify' % len(artifacts))
        run = system.run('check', '--restore-test')
        assert run.returncode == 0, (run.stderr, system.status()['check']['findings'])
        assert system.status()['check']['restore_test']['backup'] == dump
        assert 'connections are allowed again' in system.log('check')
        assert table_checksums(pg, DATABASE) == before
        case.checked_that('the swap had closed the live database to new sessions; the next restore or restore test '
                          '(here check --restore-test) drops the leftover scratch copy and opens it again; production '
                          'checksums are as before the restore')
    finally:
        if 'f' in pg.psql("SELECT datallowconn FROM pg_database WHERE datname = '%s'" % DATABASE):
            pg.psql('ALTER DATABASE "%s" WITH ALLOW_CONNECTIONS true' % DATABASE)
        for name in databases(pg):
            if name.startswith(DATABASE + '__'):
                pg.psql('DROP DATABASE "%s"' % name)
    system.assert_healthy()
    case.checked_that('(d) not applicable: a restore reports to the operator who runs it; the check is healthy')


# --- 7: flipped bytes -----------------------------------------------------------------------------

def _assert_check_names(system, key, words, mark):
    run, check = system.check()
    finding = [f for f in check['findings'] if f['key'] == key]
    assert run.returncode == 2 and finding and finding[0]['severity'] == 'critical', check['findings']
    assert words in finding[0]['message'], finding
    mails, slack, discord = system.alerts_since(mark)
    for channel, texts in (('email', mails), ('slack', slack), ('discord', discord)):
        assert any(key in t and words in t for t in texts), (channel, texts)


@pytest.mark.fault(7, 'flipped byte in the newest database dump')
def test_flipped_byte_in_dump(case, system, pg):
    dump = catalogue.newest(system.root, 'database').path
    before = system.artifacts()
    production = table_checksums(pg, DATABASE)
    dbs = databases(pg)
    mark = system.mark()
    flip_byte(dump)
    try:
        _artifacts, failed, _incomplete = system.verify()
        assert [(f['path'], f['status']) for f in failed] == [(dump, 'mismatch')]
        case.checked_that('backup_info verify names exactly the damaged dump')
        result = system.restore_driver('database', system.root, DATABASE, pg.host, str(pg.port), '--backup', dump)
        assert not result['ok'] and 'fails its checksum' in result['error'] and dump in result['error'], result
        assert table_checksums(pg, DATABASE) == production and databases(pg) == dbs
        case.checked_that('restore of it refused ("fails its checksum", path named); production checksums and '
                          'database list unchanged')
        system.assert_earlier_backups_verify(before, allow_failed=[dump])
        case.checked_that('the %d other backups verify' % (len(before) - 1))
        _assert_check_names(system, 'checksum:database', os.path.basename(dump), mark)
        case.checked_that('check critical checksum:database naming the file; alert by email, Slack, Discord')
    finally:
        flip_byte(dump)
    system.assert_healthy()
    case.checked_that('byte put back: verifies again, check healthy')


@pytest.mark.fault(7, 'flipped byte in the newest configuration archive')
def test_flipped_byte_in_config_archive(case, system, tmp_path):
    archive = catalogue.newest(system.root, 'config').path
    before = system.artifacts()
    mark = system.mark()
    flip_byte(archive)
    dest = str(tmp_path / 'restore-here')
    os.makedirs(dest)
    try:
        result = system.restore_driver('config', system.root, dest)
        assert not result['ok'] and result['reason'] == 'checksum_mismatch', result
        assert 'failed verification' in result['error'] and os.listdir(dest) == []
        case.checked_that('config restore refused ("failed verification"); nothing written')
        system.assert_earlier_backups_verify(before, allow_failed=[archive])
        case.checked_that('the %d other backups verify' % (len(before) - 1))
        _assert_check_names(system, 'checksum:config', os.path.basename(archive), mark)
        case.checked_that('check critical checksum:config naming the archive; alert by email, Slack, Discord')
    finally:
        flip_byte(archive)
    system.assert_healthy()
    case.checked_that('byte put back: check healthy')


@pytest.mark.fault(7, 'flipped byte in a file of the newest media snapshot')
def test_flipped_byte_in_snapshot_file(case, system, tmp_path):
    snapshot = catalogue.newest(system.root, 'media').path
    relative = os.path.join(system.media_source.lstrip('/'), 'user1', 'upload-01.bin')
    victim = os.path.join(snapshot, relative)
    before = system.artifacts()
    # unchanged files are hard links shared by every snapshot: bit rot in one inode damages all of them
    sharing = [path for path in before if os.path.isdir(path) and os.path.exists(os.path.join(path, relative))
               and os.path.samefile(os.path.join(path, relative), victim)]
    mark = system.mark()
    flip_byte(victim, 0)
    dest = str(tmp_path / 'restore-here')
    try:
        result = system.restore_driver('media', system.root, dest)
        assert not result['ok'] and relative in result['error'], result
        assert not os.path.exists(dest) or os.listdir(dest) == []
        case.checked_that('media restore refused naming the damaged file; nothing restored')
        system.assert_earlier_backups_verify(before, allow_failed=sharing)
        case.checked_that('every backup not sharing the damaged inode verifies (%d share it)' % len(sharing))
        _assert_check_names(system, 'checksum:media', os.path.basename(snapshot), mark)
        case.checked_that('check critical checksum:media naming the snapshot; alert by email, Slack, Discord')
    finally:
        flip_byte(victim, 0)
    system.assert_healthy()
    case.checked_that('byte put back: check healthy')


@pytest.mark.fault(7, 'flipped byte in an offsite object (pull)')
def test_flipped_byte_in_offsite_object(case, system, tmp_path):
    item = catalogue.newest(system.root, 'config')
    key = offsite.data_key('web1', 'config', item.name)
    client = s3_client(system.s3_endpoint)
    original = client.get_object(Bucket=system.bucket, Key=key)['Body'].read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    client.put_object(Bucket=system.bucket, Key=key, Body=bytes(damaged))
    before = system.artifacts()
    ansible = integration.Ansible(str(tmp_path))
    fresh = str(tmp_path / 'pulled')
    args = {'mode': 'pull', 'bucket': system.bucket, 'prefix': 'web1', 'endpoint_url': system.s3_endpoint,
            'access_key': system.variables['backup_server_offsite_access_key'],
            'secret_key': system.variables['backup_server_offsite_secret_key'], 'backup_root': fresh,
            'kinds': ['config'], 'status_file': system.status_file}
    mark = system.mark()
    try:
        refused = ansible.run('offsite_sync', args)
        assert refused['failed'] is True and key in refused['msg'] and 'checksum mismatch' in refused['msg']
        assert catalogue.list_artifacts(fresh, include_incomplete=True) == []
        case.checked_that('offsite_sync pull refused naming the object key ("checksum mismatch"); nothing pulled')
        system.assert_earlier_backups_verify(before)
        case.checked_that('%d local backups verify' % len(before))
        system.assert_reported('offsite_pull', 'checksum mismatch', mark)
        case.checked_that('status file: offsite_pull failed; check critical job:offsite_pull; alert by email, '
                          'Slack, Discord')
    finally:
        client.put_object(Bucket=system.bucket, Key=key, Body=original)
    pulled = ansible.run('offsite_sync', args)
    assert pulled.get('failed') is not True, pulled['msg']
    system.assert_healthy()
    case.checked_that('object put back: the pull succeeds, check healthy')


# --- 8: truncated dump ------------------------------------------------------------------------------

@pytest.mark.fault(8, 'truncated dump (pg_dump exits 0 after 100 kB; a dump on disk cut in half)')
def test_truncated_dump(case, system, pg, tmp_path):
    before = system.artifacts()
    listed = [a.path for a in catalogue.list_artifacts(system.root, include_incomplete=True)]
    body = 'case "$1" in --version) exec $REAL --version;; esac\n$REAL "$@" | head -c 100000\nexit 0'
    bin_dir = stand_in_pg_bin(str(tmp_path / 'bin'), pg, body)
    with system.configured({'database': {'pg_bin_dir': bin_dir}}):
        run = system.run('database')
    assert run.returncode == 2 and 'truncated' in run.stderr, run.stderr
    assert [a.path for a in catalogue.list_artifacts(system.root, include_incomplete=True)] == listed
    assert temporaries(os.path.join(system.root, 'database')) == []
    case.checked_that('a pg_dump that exits 0 with a truncated archive: exit 2 "the dump is truncated or damaged", '
                      'nothing kept')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    system.assert_reported('database', 'truncated')
    case.checked_that('status file: database failed; check critical job:database; alert by email, Slack, Discord')
    dump = catalogue.newest(system.root, 'database').path
    with open(dump, 'rb') as handle:
        original = handle.read()
    production = table_checksums(pg, DATABASE)
    try:
        with open(dump, 'r+b') as handle:
            handle.truncate(len(original) // 2)
        result = system.restore_driver('database', system.root, DATABASE, pg.host, str(pg.port), '--backup', dump)
        assert not result['ok'] and 'fails its checksum' in result['error'], result
        assert table_checksums(pg, DATABASE) == production
    finally:
        with open(dump, 'wb') as handle:
            handle.write(original)
    case.checked_that('a dump cut in half on disk: restore refused ("fails its checksum"), production unchanged')
    system.ok('database')
    system.assert_healthy()
    case.checked_that('the next run succeeds; check healthy again')


# --- 9, 10: locks ----------------------------------------------------------------------------------

@pytest.mark.fault(9, 'concurrent database runs (the first waits inside pg_dump)')
def test_concurrent_database_runs(case, system, pg):
    before = system.artifacts()
    mark = system.mark()
    lock_file = job_lock.lock_path(system.root, 'database')
    blocker = psycopg2.connect(pg.dsn(DATABASE))
    try:
        blocker.cursor().execute('LOCK TABLE courses IN ACCESS EXCLUSIVE MODE')
        first = system.start('database')
        holder = wait_for(lambda: job_lock.read_holder(lock_file).get('pid'), 'the first run to take the lock')
        second = system.run('database')
        assert second.returncode == 2, second.stderr
        assert 'another database job holds the lock' in second.stderr and 'PID %s' % holder in second.stderr
        case.checked_that('the second run waits lock_timeout (2 s), then exits 2 naming the lock and PID %s' % holder)
        system.assert_reported('database', 'another database job holds the lock', mark)
        case.checked_that('status file: database failed; check critical job:database; alert by email, Slack, Discord')
    finally:
        blocker.rollback()
        blocker.close()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    new = set(system.artifacts()) - set(before)
    assert len(new) == 1, new
    system.assert_earlier_backups_verify(before)
    case.checked_that('the first run finishes with exactly one new dump; %d earlier backups verify' % len(before))
    system.assert_healthy()
    case.checked_that('check healthy again (its success replaces the failure in the status file)')


@pytest.mark.parametrize('job', ['media', 'config', 'offsite'])
@pytest.mark.fault(9, 'a run while another holds the job lock')
def test_concurrent_runs_wait_then_fail(case, system, job):
    before = system.artifacts()
    mark = system.mark()
    with job_lock.JobLock(system.root, job, timeout=0, job='fault-matrix'):
        run = system.run(job)
        assert run.returncode == 2, run.stderr
        assert 'another %s job holds the lock' % job in run.stderr and 'PID %d' % os.getpid() in run.stderr
        case.checked_that('exit 2 after lock_timeout, naming the lock and the holder\'s PID')
        system.assert_reported(job, 'another %s job holds the lock' % job, mark)
        case.checked_that('status file: %s failed; check critical job:%s; alert by email, Slack, Discord' % (job, job))
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    system.ok(job)
    system.assert_healthy()
    case.checked_that('lock released: the next run succeeds, check healthy')


@pytest.mark.fault(9, 'concurrent check runs')
def test_concurrent_checks(case, system):
    previous = system.status()['check']['last_run']
    with job_lock.JobLock(system.root, 'check', timeout=0, job='fault-matrix'):
        run = system.run('check')
    assert run.returncode == 2
    assert 'backup check could not run: another check job holds the lock' in system.log('check')
    assert system.status()['check']['last_run'] == previous, 'a check that could not run recorded nothing'
    case.checked_that('a check while another holds its lock exits 2 and logs "another check job holds the lock"; '
                      'the status file keeps the last real check')
    with system.configured({'database': {'name': 'no_such_db'}}):
        assert system.run('database').returncode == 2
    mark = system.mark()
    procs = [system.start('check'), system.start('check')]
    codes = [proc.wait(timeout=60) for proc in procs]
    for proc in procs:
        proc.communicate()
    assert codes == [2, 2], codes
    mails, slack, discord = system.alerts_since(mark)
    assert (len(mails), len(slack), len(discord)) == (1, 1, 1), (mails, slack, discord)
    assert all('job:database' in text for text in mails + slack + discord)
    case.checked_that('two checks at once after a failed job: both exit 2, exactly one alert per channel (the '
                      'de-duplication state is not raced)')
    system.ok('database')
    system.assert_healthy()
    case.checked_that('check healthy again')


@pytest.mark.fault(10, 'stale lock files left by a dead PID')
def test_stale_lock_from_dead_pid(case, system):
    before = system.artifacts()
    pid = dead_pid()
    for kind in ('database', 'media', 'config', 'offsite', 'check'):
        path = job_lock.lock_path(system.root, kind)
        with open(path, 'w') as handle:
            json.dump({'pid': pid, 'job': kind, 'started': '2026-01-01T00:00:00+00:00'}, handle)
    mark = system.mark()
    for job in ('database', 'media', 'config', 'offsite'):
        system.ok(job)
    assert 'previous holder of the lock (PID %d) is gone; continuing' % pid in system.log('database')
    case.checked_that('database, media, config and offsite succeed despite lock files naming dead PID %d; the '
                      'database log says the previous holder is gone' % pid)
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    check = system.assert_healthy()
    assert not [f for f in check['findings'] if f['check'] == 'lock' and f['severity'] != 'ok']
    mails, slack, discord = system.alerts_since(mark)
    assert not [text for text in mails + slack + discord if 'CRITICAL' in text or 'WARNING' in text]
    case.checked_that('correct success, so (d) is: the check is healthy, reports no stuck lock, and sends no alert')


# --- 11, 12: the database side ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def secured():
    """A second cluster that demands a password over TCP (scram-sha-256)."""
    cluster = pgcluster.ThrowawayCluster()
    cluster.start()
    try:
        cluster.create_role('backup', password=PASSWORD, superuser=True)
        cluster.createdb(DATABASE)
        cluster.set_auth('scram-sha-256')
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.parametrize('fault', ['wrong password', 'database down', 'database missing'])
@pytest.mark.fault(11, 'database unreachable')
def test_database_unreachable(case, system, fault, request):
    before = system.artifacts()
    if fault == 'wrong password':
        secured = request.getfixturevalue('secured')
        changes = {'port': secured.port, 'user': 'backup', 'password': WRONG_PASSWORD}
        words = "authentication failed for user 'backup' on 127.0.0.1:%d" % secured.port
    elif fault == 'database down':
        port = closed_port()
        changes = {'port': port}
        words = 'cannot connect to PostgreSQL at 127.0.0.1:%d' % port
    else:
        changes = {'name': 'no_such_db'}
        words = "database 'no_such_db' does not exist on 127.0.0.1:%d" % system.pg.port
    with system.configured({'database': changes}):
        run = system.run('database')
    assert run.returncode == 2 and words in run.stderr, run.stderr
    assert system.artifacts() == before
    case.checked_that('exit 2, stderr: "%s"; no new artifact' % words)
    if fault == 'wrong password':
        assert WRONG_PASSWORD not in run.stderr
        secret_nowhere(system, WRONG_PASSWORD)
        case.checked_that('the password is in no log, no stderr, not in the status file')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    system.assert_reported('database', words)
    case.checked_that('status file: database failed; check critical job:database; alert by email, Slack, Discord')
    system.ok('database')
    system.assert_healthy()
    case.checked_that('fixed: the next run succeeds, check healthy')


@pytest.mark.fault(12, 'pg_dump older than the server (a pg_dump 14.11 against PostgreSQL 15)')
def test_pg_dump_older_than_server(case, system, pg, tmp_path):
    before = system.artifacts()
    bin_dir = stand_in_pg_bin(str(tmp_path / 'bin'), pg, 'echo "pg_dump (PostgreSQL) 14.11"')
    with system.configured({'database': {'pg_bin_dir': bin_dir}}):
        run = system.run('database')
    words = 'older than the PostgreSQL server (15)'
    assert run.returncode == 2 and 'pg_dump 14.11' in run.stderr and words in run.stderr, run.stderr
    assert 'postgresql-client-15' in run.stderr
    assert system.artifacts() == before
    case.checked_that('refused before dumping: exit 2 names pg_dump 14.11, the server (15) and the package to install')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    system.assert_reported('database', words)
    case.checked_that('status file: database failed; check critical job:database; alert by email, Slack, Discord')
    system.ok('database')
    system.assert_healthy()
    case.checked_that('check healthy again')


# --- 13: S3 ----------------------------------------------------------------------------------------

@pytest.mark.fault(13, 'S3 endpoint down')
def test_s3_endpoint_down(case, system):
    system.ok('config')  # something new to push
    before = system.artifacts()
    port = closed_port()
    with system.configured({'offsite': {'endpoint_url': 'http://127.0.0.1:%d' % port}}):
        run = system.run('offsite')
    words = 'cannot reach the S3 endpoint http://127.0.0.1:%d' % port
    assert run.returncode == 2 and words in run.stderr and 'Local backups are untouched' in run.stderr, run.stderr
    assert system.status()['jobs']['offsite']['reason'] == 'endpoint_unreachable'
    case.checked_that('exit 2: "%s ... Local backups are untouched"' % words)
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d local backups verify' % len(before))
    system.assert_reported('offsite', 'cannot reach the S3 endpoint')
    case.checked_that('status file: offsite failed (endpoint_unreachable); check critical job:offsite; alert by '
                      'email, Slack, Discord')
    system.ok('offsite')
    system.assert_healthy()
    case.checked_that('endpoint back: the push succeeds, check healthy')


@pytest.mark.fault(13, 'S3 wrong credentials (moto checking signatures)')
def test_s3_wrong_credentials(case, system, s3_auth_server):
    endpoint, access_key, secret_key = s3_auth_server
    bucket = 'faults-auth-%d' % os.getpid()
    s3_client(endpoint, access_key, secret_key).create_bucket(Bucket=bucket)
    before = system.artifacts()
    bogus = 'Bogus/Secret+Key-fault-matrix-0123456789abcd'
    base = {'endpoint_url': endpoint, 'bucket': bucket, 'access_key': access_key}
    with system.configured({'offsite': dict(base, secret_key=bogus)}):
        run = system.run('offsite')
    assert run.returncode == 2 and 'SignatureDoesNotMatch' in run.stderr, run.stderr
    assert 'secret key does not match' in run.stderr and bogus not in run.stderr
    secret_nowhere(system, bogus)
    case.checked_that('exit 2: "SignatureDoesNotMatch ... secret key does not match"; the secret is in no log, no '
                      'stderr, not in the status file')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d local backups verify' % len(before))
    system.assert_reported('offsite', 'SignatureDoesNotMatch')
    case.checked_that('status file: offsite failed; check critical job:offsite; alert by email, Slack, Discord')
    with system.configured({'offsite': dict(base, secret_key=secret_key)}):
        system.ok('offsite')
    system.assert_healthy()
    case.checked_that('right key: the push succeeds, check healthy')


@pytest.mark.fault(13, 'S3 abandoned multipart upload')
def test_s3_abandoned_multipart(case, system):
    client = s3_client(system.s3_endpoint)
    key = 'web1/database/cepcomunicacion_2026-01-01_00-00-00.dump'
    upload = client.create_multipart_upload(Bucket=system.bucket, Key=key)
    client.upload_part(Bucket=system.bucket, Key=key, UploadId=upload['UploadId'], PartNumber=1,
                       Body=b'x' * (5 * 1024 * 1024))
    before = system.artifacts()
    mark = system.mark()
    system.ok('offsite')
    assert 'aborted abandoned multipart upload %s' % key in system.log('offsite')
    assert not client.list_multipart_uploads(Bucket=system.bucket).get('Uploads')
    case.checked_that('correct success: the push aborts the abandoned upload (logged by key), none pending after')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d local backups verify' % len(before))
    system.assert_healthy()
    mails, slack, discord = system.alerts_since(mark)
    assert not mails + slack + discord
    case.checked_that('(d) for a success: the check is healthy and no alert is sent')


# --- 14: SMTP down -----------------------------------------------------------------------------------

@pytest.mark.fault(14, 'SMTP server down while alerting')
def test_smtp_down_while_alerting(case, system):
    before = system.artifacts()
    with system.configured({'database': {'name': 'no_such_db'}}):
        assert system.run('database').returncode == 2
        port = closed_port()
        with system.configured({'alerts': {'email_smtp_port': port}}):
            mark = system.mark()
            run, check = system.check()
        assert run.returncode == 2
        mails, slack, discord = system.alerts_since(mark)
        assert mails == [] and len(slack) == 1 and len(discord) == 1 and 'job:database' in slack[0] + discord[0]
        failure = check['alerts']['failures'][-1]
        assert failure['channel'] == 'email' and 'cannot deliver through the SMTP server 127.0.0.1:%d' % port in \
            failure['error']
        assert 'alert via email failed' in system.log('check')
        case.checked_that('SMTP down: Slack and Discord still get the alert; the email failure is in the status file '
                          'and the check log')
        mark = system.mark()
        run, check = system.check()
        mails, slack, discord = system.alerts_since(mark)
        assert len(mails) == 1 and 'job:database' in mails[0] and slack == [] and discord == []
        case.checked_that('SMTP back: the next check sends the email it owed, and does not repeat Slack or Discord')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    system.ok('database')
    system.assert_healthy()
    case.checked_that('check healthy again')


# --- 15: clock skew ------------------------------------------------------------------------------------

@pytest.mark.fault(15, 'clock skew: a dump dated 30 days in the future, retention of 1 day')
def test_clock_skew_future_backup(case, system):
    newest = catalogue.newest(system.root, 'database')
    with open(newest.path, 'rb') as handle:
        data = handle.read()
    now = layout.utcnow()

    def plant(moment):
        path = os.path.join(system.root, 'database', layout.database_dump_name('database', moment))
        with artifact.ArtifactWriter(path) as writer:
            writer.write(data)
            writer.commit({'kind': 'database', 'created': moment.isoformat()})
        return path

    future = plant(now + datetime.timedelta(days=30))
    expired = [plant(now - datetime.timedelta(days=days)) for days in (3, 2)]
    before = dict((path, digest) for path, digest in system.artifacts().items() if path not in expired)
    mark = system.mark()
    try:
        with system.configured({'database': {'retention_days': 1}}):
            system.ok('database')
        after = system.artifacts()
        made = set(after) - set(before)
        assert len(made) == 1, made
        assert not any(os.path.exists(path) for path in expired), 'the expired dumps are pruned'
        assert future in after
        system.assert_earlier_backups_verify(before)
        case.checked_that('retention (1 day) prunes the two expired dumps, keeps the future-dated one (never counted '
                          'as newest), the new real dump and every real dump inside the window')
        case.checked_that('%d earlier backups verify' % len(before))
        run, check = system.check()
        assert run.returncode == 1, (run.returncode, check['findings'])
        finding = [f for f in check['findings'] if f['key'] == 'clock:database'][0]
        assert finding['severity'] == 'warning' and os.path.basename(future) in finding['message']
        assert check['kinds']['database']['newest'] == made.pop(), 'freshness is judged by the real newest dump'
        mails, slack, discord = system.alerts_since(mark)
        for channel, texts in (('email', mails), ('slack', slack), ('discord', discord)):
            assert any('clock:database' in t and os.path.basename(future) in t for t in texts), channel
        case.checked_that('check exits 1 with a warning naming the future-dated dump and judges freshness by the '
                          'real newest; the warning reached email, Slack, Discord')
    finally:
        artifact.remove_artifact(future)
    system.assert_healthy()
    case.checked_that('future-dated dump removed: check healthy')


# --- 16: tampered config archive -----------------------------------------------------------------------

def _member(name, data=b'', kind=tarfile.REGTYPE, linkname=''):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.fault(16, 'tampered config archive with path-traversal members (valid sidecars)')
def test_tampered_config_archive(case, system, tmp_path):
    before = system.artifacts()
    production = tree_state(os.path.dirname(system.config_paths[0]))
    moment = layout.utcnow() + datetime.timedelta(seconds=1)
    path = os.path.join(system.root, 'config', layout.config_archive_name(moment))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
        for info, data in (_member('safe.txt', b'ok'), _member('../../escaped.txt', b'pwned'),
                           _member('link', kind=tarfile.SYMTYPE, linkname='/tmp'),
                           _member('link/cep-fault-escape.txt', b'pwned')):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    with artifact.ArtifactWriter(path) as writer:  # an attacker with write access: the sidecars match
        writer.write(buffer.getvalue())
        writer.commit({'kind': 'config', 'created': moment.isoformat()})
    dest = tmp_path / 'sandbox' / 'a' / 'dest'
    dest.mkdir(parents=True)
    try:
        result = system.restore_driver('config', system.root, str(dest))
        assert not result['ok'] and result['reason'] == 'unsafe_member' and '".."' in result['error'], result
        assert os.listdir(str(dest)) == [], 'nothing written, not even the safe member'
        assert not (tmp_path / 'sandbox' / 'escaped.txt').exists() and not os.path.exists('/tmp/cep-fault-escape.txt')
        assert tree_state(os.path.dirname(system.config_paths[0])) == production
        case.checked_that('restore of the newest (tampered) archive refused: reason unsafe_member, names ".."; '
                          'nothing written inside or outside dest; the configuration files unchanged')
        system.assert_earlier_backups_verify(before)
        case.checked_that('%d earlier backups verify' % len(before))
        system.assert_healthy()
        case.checked_that('(d) not applicable: sidecars match, so the check cannot tell; the refusal goes to the '
                          'operator running the restore; the check stays healthy')
    finally:
        artifact.remove_artifact(path)


# --- 17: recovery time older than every backup ----------------------------------------------------------

@pytest.mark.fault(17, 'restore with a recovery time older than every backup')
def test_restore_at_before_every_backup(case, system, pg, tmp_path):
    before = system.artifacts()
    production = table_checksums(pg, DATABASE)
    dbs = databases(pg)
    at = '2001-01-01T00:00:00Z'
    result = system.restore_driver('database', system.root, DATABASE, pg.host, str(pg.port), '--at', at)
    assert not result['ok'] and result['reason'] == 'none_before', result
    assert 'no database dump was made at or before 2001-01-01' in result['error']
    assert 'the oldest available is 20' in result['error']
    assert table_checksums(pg, DATABASE) == production and databases(pg) == dbs
    case.checked_that('database: refused "no database dump was made at or before 2001-01-01 ...; the oldest '
                      'available is ..."; production checksums and database list unchanged')
    for kind, words in (('media', 'no media snapshot was made at or before'),
                        ('config', 'no configuration archive was made at or before')):
        dest = str(tmp_path / kind)
        result = system.restore_driver(kind, system.root, dest, '--at', at)
        assert not result['ok'] and words in result['error'], result
        assert not os.path.exists(dest) or os.listdir(dest) == []
    case.checked_that('media and config: refused the same way, nothing written')
    system.assert_earlier_backups_verify(before)
    case.checked_that('%d earlier backups verify' % len(before))
    system.assert_healthy()
    case.checked_that('(d) not applicable: the refusal goes to the operator; the check stays healthy')
