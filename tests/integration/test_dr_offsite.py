# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disaster-recovery playbooks that recover from the OFFSITE copies, against localhost under a temp prefix.

Each test builds a platform (dr_platform.Platform): a throwaway PostgreSQL cluster with the reference data, media,
the backup_server role installed under the prefix, backups taken by the role's own command and pushed by it to a
real S3 peer (moto_server on 127.0.0.1, s3_peer.py), and the reference app run from the app directory by
appctl.py (the recovery_writers), configured by its .env. Then the disaster happens, and the playbook must bring
the platform back from the bucket alone: per-table checksums equal to the backed-up point, media bytes and modes
equal, the app answering, the schedule back, a report with the RTO. Every process started here is stopped here.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import time

import psycopg2
import pytest

from conftest import DATABASE, checksum, pgcluster, tree_state
from dr_platform import (MEDIA_FILES, SECRET_KEYS, Platform, assert_app_serves, assert_schedule_enabled, http_get,
                         read_env, report_of, run_playbook, show_rto, sql)
from s3_peer import s3_client, unique_bucket

OLD_PASSWORD = 'old-db-pass-7f1c'


def utc_now():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def media_state(plat):
    return dict((relative, (stat.S_IMODE(os.stat(plat.uploads / relative).st_mode), (plat.uploads / relative).read_bytes()))
                for relative in MEDIA_FILES)


def pull_dirs(plat):
    return glob.glob(str(plat.root / 'cepcomunicacion-offsite-restore' / '*'))


def refuses(connect_password, plat):
    try:
        psycopg2.connect(plat.dsn_with(connect_password), connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        return 'password authentication failed' in str(exc)
    return False


@pytest.fixture
def make_platform(tmp_path):
    made = []

    def make(**options):
        plat = Platform(tmp_path, **options)
        made.append(plat)
        return plat.start()
    try:
        yield make
    finally:
        for plat in made:
            plat.stop()


def backed_up_offsite(plat, jobs=('database', 'media', 'config')):
    """Back up with the role's command, push offsite with it; return the point's table checksums."""
    plat.backup(*jobs)
    point = checksum.database_checksums(plat.dsn)
    plat.backup('offsite')
    return point


def test_ransomware_is_recovered_from_offsite_with_secrets_rotated(make_platform, s3_server):
    bucket = unique_bucket('cep-ransom')
    s3_client(s3_server).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    plat = make_platform(password=OLD_PASSWORD, managed_app=True, offsite=(s3_server, bucket), lock_days=1)
    point = backed_up_offsite(plat)
    media_point = media_state(plat)
    env_before = read_env(plat.env_file)
    time.sleep(1.1)
    incident = utc_now()
    time.sleep(1.1)

    # the attack: media and local backups encrypted and renamed, the database dropped, a ransom note
    encrypted = {}
    for path in [plat.uploads / relative for relative in MEDIA_FILES] + [
            p for p in (plat.root / 'backups').rglob('*') if p.is_file() and not p.name.endswith('.lock')]:
        garbage = os.urandom(max(64, path.stat().st_size))
        locked = str(path) + '.locked'
        with open(locked, 'wb') as handle:
            handle.write(garbage)
        os.unlink(path)
        encrypted[locked] = garbage
    note = plat.uploads / 'README_DECRYPT.txt'
    note.write_text('Your files are encrypted. Pay 1 BTC.\n')
    plat.cluster.dropdb(DATABASE)
    assert http_get(plat.app_url + '/health')[0] == 503

    args = ['-e', 'dr_incident_time=' + incident]
    code, output = run_playbook('dr/ransomware.yml', plat.vars_file, *args)
    assert code != 0 and "Refusing to run the 'ransomware' recovery on localhost" in output
    code, output = run_playbook('dr/ransomware.yml', plat.vars_file, '--check', *args)
    assert code == 0, output
    assert 'CHECK MODE' in output and 'recovery point (offsite s3://%s/web1/' % bucket in output
    assert os.path.exists(plat.uploads / 'user1' / 'photo.jpg.locked') and note.exists()
    assert not pull_dirs(plat) and not plat.reports('ransomware')
    assert http_get(plat.app_url + '/health')[0] == 503  # the app was not stopped by --check

    code, output = run_playbook('dr/ransomware.yml', plat.vars_file, '-e', 'dr_confirm=true', *args)
    assert code == 0, output

    env_after = read_env(plat.env_file)
    new_password = re.match(r'postgres://postgres:([^@]+)@', env_after['DATABASE_URL']).group(1)

    # data equal to the backed-up point; media bytes and modes; no encrypted file left among the media
    assert checksum.diff(point, checksum.database_checksums(plat.dsn_with(new_password))) == {}
    assert media_state(plat) == media_point
    assert not list(plat.uploads.rglob('*.locked')) and not note.exists()

    # quarantine holds the encrypted media and the note, byte for byte; the local backups stay as found (forensics)
    quarantine = glob.glob(str(plat.root / 'cepcomunicacion-quarantine' / '*'))
    assert len(quarantine) == 1 and stat.S_IMODE(os.stat(quarantine[0]).st_mode) == 0o700
    for locked, garbage in encrypted.items():
        if locked.startswith(str(plat.uploads)):
            with open(quarantine[0] + locked, 'rb') as handle:
                assert handle.read() == garbage, locked
        else:
            with open(locked, 'rb') as handle:
                assert handle.read() == garbage, 'a local backup was touched: %s' % locked
    assert open(quarantine[0] + str(note)).read().startswith('Your files are encrypted')

    # the database password rotated: the old one is refused, the new one (in .env and backup.conf) works
    assert new_password != OLD_PASSWORD and len(new_password) >= 32
    assert refuses(OLD_PASSWORD, plat)
    plat.password = new_password
    assert sql(plat.dsn, 'SELECT count(*) FROM public.courses')[0][0] > 0
    assert 'password = %s\n' % new_password in open(plat.vars['backup_server_config_file']).read()
    for key in SECRET_KEYS:
        assert env_after[key] and env_after[key] != env_before[key], key
    assert env_after['APP_PORT'] == env_before['APP_PORT'] and env_after['MEDIA_DIR'] == env_before['MEDIA_DIR']
    assert stat.S_IMODE(os.stat(plat.env_file).st_mode) == 0o600
    for secret in [new_password, OLD_PASSWORD] + [env_after[key] for key in SECRET_KEYS] + [env_before[key] for key in SECRET_KEYS]:
        assert secret not in output, 'a secret reached the Ansible output'

    assert_app_serves(plat)
    assert_schedule_enabled(plat)
    plat.backup('database')  # the scheduled backups work with the rotated password

    report = report_of(plat, 'ransomware')
    assert report['outcome'] == 'recovered' and report['rto_seconds'] > 0
    point_report = report['recovery_point']
    assert point_report['source'] == 'offsite' and point_report['kind'] == 'database'
    assert point_report['created'] <= incident.replace('Z', '+00:00') and point_report['object_lock_enabled'] is True
    assert {a['kind'] for a in report['artifacts']} == {'config', 'database', 'media'}
    for item in report['artifacts']:
        assert len(item['sha256']) == 64 and item['verified'] is True
        assert item['object_lock']['locked'] is True and item['object_lock']['mode'] == 'GOVERNANCE'
        assert not item['path'].startswith(plat.vars['backup_server_root'] + '/')
    assert set(report['results']['encrypted_files']) == set(encrypted)
    assert report['results']['ransom_notes'] == [str(note)]
    assert report['results']['encrypted_media_left'] == []
    rotated = report['results']['secrets_rotated']
    assert rotated['database_role'] == 'postgres' and set(rotated['env_secrets_rotated']) == set(SECRET_KEYS)
    assert rotated['env_urls_rotated'] == ['DATABASE_URL'] and rotated['backup_config_updated']
    assert [p['name'] for p in report['phases']] == ['preflight', 'isolate', 'pull_offsite', 'restore_config', 'restore_database',
                                                     'restore_media', 'rotate_secrets', 'start_writers', 'smoke', 'schedule']
    assert any(s['step'] == 'local backups' for s in report['skipped'])
    assert report['data_lost']['vs_disaster_files_count'] == 0
    markdown = open(plat.reports('ransomware')[0][:-len('.json')] + '.md').read()
    assert 'photo.jpg.locked' in markdown and new_password not in markdown
    show_rto('ransomware', report)


def test_complete_server_failure_rebuilds_from_offsite_only(make_platform, s3_server, bucket):
    plat = make_platform(password=OLD_PASSWORD, managed_app=True, offsite=(s3_server, bucket))
    point = backed_up_offsite(plat)
    media_point = media_state(plat)
    env_point = plat.env_file.read_bytes()
    port = plat.cluster.port

    # the server is gone: app, cluster and every file under the prefix
    plat.stop_app()
    plat.cluster.destroy()
    shutil.rmtree(plat.root)
    for directory in ('bin', 'cron.d', 'logrotate.d', 'run'):  # what a bare Debian has
        (plat.root / directory).mkdir(parents=True)
    plat.cluster = pgcluster.ThrowawayCluster(port=port)  # the new host's empty PostgreSQL, no password yet
    plat.cluster.start()
    plat.cluster.set_auth('scram-sha-256')
    assert refuses(OLD_PASSWORD, plat)
    plat.write_vars(dr_install_packages=False, recovery_postgresql_service='',
                    recovery_postgresql_socket_dir=plat.cluster.socket_dir)

    code, output = run_playbook('dr/complete_server_failure.yml', plat.vars_file, '--check')
    assert code == 0, output
    assert 'recovery point (offsite s3://%s/web1/' % bucket in output and not plat.env_file.exists()
    code, output = run_playbook('dr/complete_server_failure.yml', plat.vars_file, '-e', 'dr_confirm=true')
    assert code == 0, output
    assert OLD_PASSWORD not in output

    assert checksum.diff(point, checksum.database_checksums(plat.dsn)) == {}  # the vaulted password works again
    assert media_state(plat) == media_point
    assert plat.env_file.read_bytes() == env_point and stat.S_IMODE(os.stat(plat.env_file).st_mode) == 0o600
    assert_app_serves(plat)
    assert_schedule_enabled(plat)
    plat.backup('database')  # the role was installed: its command and config work

    report = report_of(plat, 'complete_server_failure')
    assert report['outcome'] == 'recovered' and report['rto_seconds'] > 0
    assert report['recovery_point']['source'] == 'offsite'
    assert [p['name'] for p in report['phases']] == ['preflight', 'provision', 'pull_offsite', 'restore_config',
                                                     'restore_database', 'restore_media', 'start_services', 'smoke',
                                                     'schedule']
    assert {a['kind'] for a in report['artifacts']} == {'config', 'database', 'media'}
    assert {s['step'] for s in report['skipped']} >= {'install packages', 'systemctl daemon-reload'}
    assert str(plat.env_file) in report['results']['restore']['config_restored']
    show_rto('complete_server_failure', report)


def test_media_loss_falls_back_to_offsite_when_no_local_snapshot_verifies(make_platform, s3_server, bucket):
    plat = make_platform(offsite=(s3_server, bucket))
    backed_up_offsite(plat, jobs=('media',))
    media_point = media_state(plat)
    snapshot = plat.snapshots()[-1]
    with open(os.path.join(snapshot, os.path.relpath(str(plat.uploads / 'user1' / 'cv.pdf'), '/')), 'r+b') as handle:
        handle.write(b'bitrot')  # the only local snapshot no longer verifies
    shutil.rmtree(plat.uploads / 'user1')

    code, output = run_playbook('dr/media_loss.yml', plat.vars_file, '-e', 'dr_confirm=true', '-e', 'dr_source=local')
    assert code != 0 and 'fails verification' in output and not (plat.uploads / 'user1').exists()
    for old in plat.reports('media_loss'):
        os.unlink(old)
        os.unlink(old[:-len('.json')] + '.md')

    code, output = run_playbook('dr/media_loss.yml', plat.vars_file, '-e', 'dr_confirm=true')
    assert code == 0, output
    assert 'pulling the media from offsite instead' in output
    assert media_state(plat) == media_point
    assert_app_serves(plat)
    assert_schedule_enabled(plat)
    report = report_of(plat, 'media_loss')
    assert report['outcome'] == 'recovered'
    assert report['results']['source'] == 'offsite' and 'fails verification' in report['results']['local_snapshots_refused']
    assert report['results']['files_restored'] == 2 and report['results']['files_differing_after_restore'] == 0
    assert report['recovery_point']['source'] == 'offsite' and report['recovery_point']['kind'] == 'media'
    show_rto('media_loss (offsite)', report)


def test_ransomware_refuses_a_corrupted_offsite_dump_and_leaves_live_data_alone(make_platform, s3_server, bucket):
    plat = make_platform(offsite=(s3_server, bucket))
    backed_up_offsite(plat)
    client = s3_client(s3_server)
    key = [k['Key'] for k in client.list_objects_v2(Bucket=bucket, Prefix='web1/database/')['Contents']
           if k['Key'].endswith('.dump') or k['Key'].endswith('.dump.zst')][0]
    client.put_object(Bucket=bucket, Key=key, Body=os.urandom(4096))  # altered offsite
    time.sleep(1.1)
    incident = utc_now()
    locked = plat.uploads / 'user1' / 'photo.jpg.locked'
    os.rename(plat.uploads / 'user1' / 'photo.jpg', locked)
    live_media = tree_state(str(plat.uploads))
    live_db = checksum.database_checksums(plat.dsn)

    code, output = run_playbook('dr/ransomware.yml', plat.vars_file, '-e', 'dr_confirm=true', '-e', 'dr_incident_time=' + incident)
    assert code != 0
    assert 'checksum mismatch: s3://%s/%s' % (bucket, key) in output and 'It will not be restored' in output
    assert tree_state(str(plat.uploads)) == live_media  # nothing quarantined, nothing restored
    assert checksum.database_checksums(plat.dsn) == live_db
    assert not glob.glob(str(plat.root / 'cepcomunicacion-quarantine' / '*'))
    assert_schedule_enabled(plat)
    report = report_of(plat, 'ransomware')
    assert report['outcome'] == 'failed'
    assert [r['key'] for r in report['results']['refused_offsite_copies']] == [key]
    assert report['results']['live_data'].startswith('unchanged')
    assert str(locked) in report['results']['encrypted_files']
