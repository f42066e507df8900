# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""offsite_sync and offsite_info through ansible-playbook, against a real moto_server on 127.0.0.1.

The artifacts are real: pg_dump of the throwaway PostgreSQL cluster, rsync
media snapshots and configuration archives, made by the collection's own core.
"""

from __future__ import annotations

import datetime
import filecmp
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from conftest import DATABASE, tree_state
from s3_peer import TEST_KEY, TEST_SECRET, s3_client, unique_bucket
# pytest fixtures of the S3 peer, used by name in the tests' signatures

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue, config_archive
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import database_backup, job_lock, layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import media_snapshot, postgres, snapshot_manifest

MARKER = b'OFFSITE-PLAINTEXT-MARKER-7f3a9c'
PREFIX = 'web1'


def make_media(source, changed=None):
    """A small media tree with the marker in a text file, a symlink and a duplicate file."""
    for index in range(8):
        path = os.path.join(source, 'users', str(index % 3), 'file-%d.bin' % index)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as handle:
            handle.write(hashlib.sha256(b'%d' % index).digest() * (1000 + index * 300))
        os.chmod(path, 0o640)
        os.utime(path, (1700000000 + index, 1700000000 + index))
    with open(os.path.join(source, 'notes.txt'), 'wb') as handle:
        handle.write(b'uploaded notes: ' + MARKER + b'\n')
    shutil.copyfile(os.path.join(source, 'users', '0', 'file-0.bin'), os.path.join(source, 'copy-of-0.bin'))
    if not os.path.lexists(os.path.join(source, 'latest-upload')):
        os.symlink('users/0/file-0.bin', os.path.join(source, 'latest-upload'))
    if changed:
        with open(os.path.join(source, 'users', '1', 'file-1.bin'), 'wb') as handle:
            handle.write(changed)


@pytest.fixture(scope='module')
def backups(pg, tmp_path_factory):
    """A backup root with every kind: a daily and a weekly dump, a config archive, two media snapshots."""
    base = tmp_path_factory.mktemp('offsite-source')
    root = str(base / 'backups')
    pg.createdb('offsite_marker')
    pg.psql("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('%s');" % MARKER.decode(),
            dbname='offsite_marker')
    connection = postgres.Connection('offsite_marker', pg.host, pg.port, 'postgres')
    now = layout.utcnow()
    daily = database_backup.DatabaseBackup(connection, backup_root=root, compression='none').run()
    weekly = database_backup.DatabaseBackup(postgres.Connection(DATABASE, pg.host, pg.port, 'postgres'),
                                            backup_root=root, kind='database_weekly').run()
    etc = base / 'etc' / 'app'
    etc.mkdir(parents=True)
    (etc / 'app.conf').write_bytes(b'secret_setting = ' + MARKER + b'\n')
    config = config_archive.ConfigBackup([str(etc)], backup_root=root).run()
    source = str(base / 'srv' / 'uploads')
    os.makedirs(source)
    make_media(source)
    first = media_snapshot.MediaSnapshot([source], backup_root=root, now=now - datetime.timedelta(days=2)).run()
    make_media(source, changed=b'changed content of file 1\n' * 500)
    second = media_snapshot.MediaSnapshot([source], backup_root=root, now=now).run()
    return {'root': root, 'daily': daily['path'], 'weekly': weekly['path'], 'config': config['path'],
            'media': [first['snapshot'], second['snapshot']], 'source': source}


def sync(ansible, endpoint, bucket_name, **extra):
    args = {'bucket': bucket_name, 'prefix': PREFIX, 'endpoint_url': endpoint, 'access_key': TEST_KEY,
            'secret_key': TEST_SECRET, 'status_file': ansible.status_file}
    args.update(extra)
    return args


def info_args(endpoint, bucket_name, **extra):
    args = {'bucket': bucket_name, 'prefix': PREFIX, 'endpoint_url': endpoint, 'access_key': TEST_KEY,
            'secret_key': TEST_SECRET}
    args.update(extra)
    return args


def bucket_objects(endpoint, bucket_name):
    """{key: bytes} of every object in the bucket."""
    client = s3_client(endpoint)
    found = {}
    for page in client.get_paginator('list_objects_v2').paginate(Bucket=bucket_name):
        for item in page.get('Contents', []):
            found[item['Key']] = client.get_object(Bucket=bucket_name, Key=item['Key'])['Body'].read()
    return found


def same_file_artifact(original, pulled):
    """Data, .sha256 and .meta.json byte for byte, and the pulled file 0600."""
    for suffix in ('', layout.SHA256_SUFFIX, layout.META_SUFFIX):
        assert filecmp.cmp(original + suffix, pulled + suffix, shallow=False), 'differs: %s' % (pulled + suffix)
        assert stat.S_IMODE(os.stat(pulled + suffix).st_mode) == 0o600


def same_snapshot(original, pulled):
    assert tree_state(original) == tree_state(pulled)
    for suffix in (layout.MANIFEST_SUFFIX, layout.META_SUFFIX):
        assert filecmp.cmp(original + suffix, pulled + suffix, shallow=False)
    assert snapshot_manifest.verify_snapshot(pulled) == (True, [])


def test_push_check_then_push_then_nothing_new(ansible, backups, s3_server, bucket):
    args = sync(ansible, s3_server, bucket, backup_root=backups['root'])
    predicted = ansible.run('offsite_sync', args, check=True)
    assert predicted['changed'] is True
    assert sorted(u['name'] for u in predicted['uploaded']) == sorted(
        [os.path.basename(backups[k]) for k in ('daily', 'weekly', 'config')] +
        [os.path.basename(p) for p in backups['media']])
    assert bucket_objects(s3_server, bucket) == {}, 'check mode uploads nothing'

    pushed = ansible.run('offsite_sync', args)
    assert pushed['changed'] is True and not pushed.get('failed')
    assert sorted(u['name'] for u in pushed['uploaded']) == sorted(u['name'] for u in predicted['uploaded'])
    stored = bucket_objects(s3_server, bucket)
    with open(backups['daily'], 'rb') as handle:
        assert stored['%s/database/%s' % (PREFIX, os.path.basename(backups['daily']))] == handle.read()
    head = s3_client(s3_server).head_object(Bucket=bucket, Key='%s/config/%s' % (
        PREFIX, os.path.basename(backups['config'])), ChecksumMode='ENABLED')
    with open(backups['config'] + '.sha256') as handle:
        assert head['Metadata']['sha256'] == handle.read().split()[0]
    assert 'ChecksumSHA256' in head
    status = ansible.status()['jobs']['offsite']
    assert status['result'] == 'ok' and status['changed'] is True

    again = ansible.run('offsite_sync', args)
    assert again['changed'] is False
    assert again['uploaded'] == [] and again['objects_uploaded'] == 0
    assert bucket_objects(s3_server, bucket) == stored

    listed = ansible.run('offsite_info', info_args(s3_server, bucket))
    assert listed['changed'] is False
    assert len(listed['artifacts']) == 5 and listed['incomplete'] == [] and listed['pending_uploads'] == []
    assert all(a['lock']['locked'] is False for a in listed['artifacts'])


def test_pull_each_kind_into_an_empty_root_is_identical(ansible, backups, s3_server, bucket, tmp_path):
    ansible.run('offsite_sync', sync(ansible, s3_server, bucket, backup_root=backups['root']))
    fresh = str(tmp_path / 'fresh-server')
    names = [os.path.basename(backups[k]) for k in ('daily', 'weekly', 'config')] + [
        os.path.basename(p) for p in backups['media']]
    args = sync(ansible, s3_server, bucket, mode='pull', backup_root=fresh, names=names)
    predicted = ansible.run('offsite_sync', args, check=True)
    assert predicted['changed'] is True and len(predicted['downloaded']) == 5
    assert not os.path.exists(fresh), 'check mode writes nothing'

    pulled = ansible.run('offsite_sync', args)
    assert pulled['changed'] is True
    assert sorted(d['name'] for d in pulled['downloaded']) == sorted(names)
    for key in ('daily', 'weekly', 'config'):
        relative = os.path.relpath(backups[key], backups['root'])
        same_file_artifact(backups[key], os.path.join(fresh, relative))
    for snapshot in backups['media']:
        same_snapshot(snapshot, os.path.join(fresh, 'media', os.path.basename(snapshot)))
    assert os.readlink(os.path.join(fresh, 'media', 'latest')) == os.path.basename(backups['media'][-1])
    listed = catalogue.inventory(fresh, verify_checksums=True)
    assert listed['failed_verification'] == [] and len(listed['artifacts']) == 5
    assert ansible.status()['jobs']['offsite_pull']['result'] == 'ok'

    again = ansible.run('offsite_sync', args)
    assert again['changed'] is False and again['downloaded'] == [] and len(again['already_local']) == 5

    latest_root = str(tmp_path / 'latest-only')
    latest = ansible.run('offsite_sync', sync(ansible, s3_server, bucket, mode='pull', backup_root=latest_root,
                                              kinds=['database', 'media']))
    assert sorted(d['name'] for d in latest['downloaded']) == sorted(
        [os.path.basename(backups['daily']), os.path.basename(backups['media'][-1])])


def test_unchanged_media_file_is_stored_once(ansible, backups, s3_server, bucket):
    first, second = backups['media']
    unique_first = {e.data for e in snapshot_manifest.load_for(first).files()}
    unique_both = unique_first | {e.data for e in snapshot_manifest.load_for(second).files()}
    assert len(unique_both) == len(unique_first) + 1, 'the fixture changes exactly one file'
    pushed = ansible.run('offsite_sync', sync(ansible, s3_server, bucket, backup_root=backups['root'],
                                              kinds=['media']))
    by_name = {u['name']: u for u in pushed['uploaded']}
    assert by_name[os.path.basename(first)]['objects_new'] == len(unique_first)
    assert by_name[os.path.basename(second)]['objects_new'] == 1
    objects = [k for k in bucket_objects(s3_server, bucket) if '/media/objects/' in k]
    assert sorted(k.rsplit('/', 1)[1] for k in objects) == sorted(unique_both)


def test_encrypted_round_trip_needs_the_identity_and_stores_no_plaintext(ansible, backups, s3_server, bucket,
                                                                         tmp_path):
    identity = str(tmp_path / 'offsite.agekey')
    subprocess.run(['age-keygen', '-o', identity], check=True, stderr=subprocess.DEVNULL)
    recipient = subprocess.run(['age-keygen', '-y', identity], check=True, stdout=subprocess.PIPE,
                               text=True).stdout.strip()
    other = str(tmp_path / 'other.agekey')
    subprocess.run(['age-keygen', '-o', other], check=True, stderr=subprocess.DEVNULL)

    pushed = ansible.run('offsite_sync', sync(ansible, s3_server, bucket, backup_root=backups['root'],
                                              age_recipients=[recipient]))
    assert pushed['changed'] is True and pushed['encrypted'] is True
    stored = bucket_objects(s3_server, bucket)
    assert stored and all(MARKER not in data for data in stored.values()), 'plaintext in the bucket'
    assert all(data.startswith(b'age-encryption.org/v1') for data in stored.values())
    head = s3_client(s3_server).head_object(Bucket=bucket, Key='%s/database/%s' % (
        PREFIX, os.path.basename(backups['daily'])))
    with open(backups['daily'] + '.sha256') as handle:
        assert head['Metadata']['sha256'] == handle.read().split()[0]
    assert head['Metadata']['ciphertext-sha256'] == hashlib.sha256(
        stored['%s/database/%s' % (PREFIX, os.path.basename(backups['daily']))]).hexdigest()

    fresh = str(tmp_path / 'fresh')
    names = [os.path.basename(backups['daily']), os.path.basename(backups['media'][-1])]
    refused = ansible.run('offsite_sync', sync(ansible, s3_server, bucket, mode='pull', backup_root=fresh,
                                               names=names))
    assert refused['failed'] is True and 'age_identity_file' in refused['msg'] and 'encrypted' in refused['msg']
    assert catalogue.list_artifacts(fresh, include_incomplete=True) == []
    wrong = ansible.run('offsite_sync', sync(ansible, s3_server, bucket, mode='pull', backup_root=fresh, names=names,
                                             age_identity_file=other))
    assert wrong['failed'] is True and 'not one of the recipients' in wrong['msg']

    pulled = ansible.run('offsite_sync', sync(ansible, s3_server, bucket, mode='pull', backup_root=fresh, names=names,
                                              age_identity_file=identity))
    assert pulled['changed'] is True
    same_file_artifact(backups['daily'], os.path.join(fresh, 'database', names[0]))
    same_snapshot(backups['media'][-1], os.path.join(fresh, 'media', names[1]))


def test_unencrypted_bucket_does_hold_the_marker(ansible, backups, s3_server, bucket):
    """The plaintext search above would find the marker if it were there."""
    ansible.run('offsite_sync', sync(ansible, s3_server, bucket, backup_root=backups['root'], kinds=['database']))
    assert any(MARKER in data for data in bucket_objects(s3_server, bucket).values())


def test_tampered_objects_are_refused_and_named(ansible, backups, s3_server, bucket, tmp_path):
    ansible.run('offsite_sync', sync(ansible, s3_server, bucket, backup_root=backups['root'],
                                     kinds=['config', 'media']))
    client = s3_client(s3_server)
    config_key = '%s/config/%s' % (PREFIX, os.path.basename(backups['config']))
    client.put_object(Bucket=bucket, Key=config_key, Body=b'not the archive')
    fresh = str(tmp_path / 'fresh')
    refused = ansible.run('offsite_sync', sync(ansible, s3_server, bucket, mode='pull', backup_root=fresh,
                                               kinds=['config']))
    assert refused['failed'] is True
    assert config_key in refused['msg'] and 'checksum mismatch' in refused['msg']
    assert catalogue.list_artifacts(fresh, include_incomplete=True) == []
    assert os.listdir(os.path.join(fresh, 'config')) == [], 'no temporary left behind'
    assert ansible.status()['jobs']['offsite_pull']['result'] == 'failed'

    manifest = snapshot_manifest.load_for(backups['media'][-1])
    victim = manifest.files()[0]
    object_key = '%s/media/objects/%s' % (PREFIX, victim.data)
    client.put_object(Bucket=bucket, Key=object_key, Body=b'ransomware was here')
    refused = ansible.run('offsite_sync', sync(ansible, s3_server, bucket, mode='pull', backup_root=fresh,
                                               kinds=['media']))
    assert refused['failed'] is True and object_key in refused['msg'] and victim.path in refused['msg']
    assert catalogue.list_artifacts(fresh, ['media'], include_incomplete=True) == []
    assert not os.path.lexists(os.path.join(fresh, 'media', 'latest'))


def test_interrupted_push_is_completed_and_its_upload_aborted(ansible, pg, bigdb, s3_server, bucket, tmp_path):
    root = str(tmp_path / 'root')
    dump = database_backup.DatabaseBackup(postgres.Connection(bigdb, pg.host, pg.port, 'postgres'), backup_root=root,
                                          compression='none').run()
    assert dump['size'] > 20 * 1024 * 1024
    args = sync(ansible, s3_server, bucket, backup_root=root, multipart_threshold=5, multipart_chunksize=5,
                max_concurrency=1, bwlimit=4096)
    proc, _result = ansible.start('offsite_sync', args)
    client = s3_client(s3_server)
    lock = job_lock.lock_path(root, 'offsite')
    deadline = time.monotonic() + 60
    pending = []
    while not pending and time.monotonic() < deadline:
        pending = client.list_multipart_uploads(Bucket=bucket).get('Uploads', [])
        time.sleep(0.05)
    assert pending, 'the multipart upload never started'
    holder = job_lock.read_holder(lock)
    os.kill(int(holder['pid']), signal.SIGKILL)
    proc.communicate(timeout=60)

    data_key = '%s/database/%s' % (PREFIX, os.path.basename(dump['path']))
    keys = set(bucket_objects(s3_server, bucket))
    assert data_key + '.meta.json' not in keys, 'nothing may look complete offsite'
    listed = ansible.run('offsite_info', info_args(s3_server, bucket))
    assert listed['artifacts'] == []
    assert [u['key'] for u in listed['pending_uploads']] == [data_key]

    resumed = ansible.run('offsite_sync', dict(args, bwlimit=None))
    assert resumed['changed'] is True and resumed['aborted_uploads'] == [data_key]
    assert client.list_multipart_uploads(Bucket=bucket).get('Uploads', []) == []
    listed = ansible.run('offsite_info', info_args(s3_server, bucket))
    assert [a['name'] for a in listed['artifacts']] == [os.path.basename(dump['path'])]
    assert listed['artifacts'][0]['sha256'] == dump['sha256']
    fresh = str(tmp_path / 'fresh')
    ansible.run('offsite_sync', sync(ansible, s3_server, bucket, mode='pull', backup_root=fresh))
    same_file_artifact(dump['path'], os.path.join(fresh, 'database', os.path.basename(dump['path'])))


def test_wrong_credentials_fail_clearly_without_the_secret(ansible, backups, s3_auth_server):
    endpoint, access_key, secret_key = s3_auth_server
    name = unique_bucket('auth')
    s3_client(endpoint, access_key, secret_key).create_bucket(Bucket=name)
    base = {'bucket': name, 'prefix': PREFIX, 'endpoint_url': endpoint, 'backup_root': backups['root'],
            'status_file': ansible.status_file, 'kinds': ['config']}
    bogus_secret = 'Bogus/Secret+Key-1234567890abcdefghijklmn'
    unknown = ansible.run('offsite_sync', dict(base, access_key='AKIANOSUCHKEY0000000', secret_key=bogus_secret),
                          verbosity='-vvv')
    assert unknown['failed'] is True and 'InvalidAccessKeyId' in unknown['msg']
    assert bogus_secret not in unknown['_output']
    mismatched = ansible.run('offsite_sync', dict(base, access_key=access_key, secret_key=bogus_secret),
                             verbosity='-vvv')
    assert mismatched['failed'] is True and 'SignatureDoesNotMatch' in mismatched['msg']
    assert 'secret key does not match' in mismatched['msg']
    assert bogus_secret not in mismatched['_output']
    status = ansible.status()['jobs']['offsite']
    assert status['result'] == 'failed' and bogus_secret not in str(status)
    good = ansible.run('offsite_sync', dict(base, access_key=access_key, secret_key=secret_key), verbosity='-vvv')
    assert good['changed'] is True and secret_key not in good['_output']


def test_endpoint_down_fails_clearly_local_backup_intact_status_records_it(ansible, pg, conn_args, tmp_path):
    root = str(tmp_path / 'root')
    dump = ansible.run('pg_backup', dict(conn_args, database=DATABASE, backup_root=root))
    with socket_closed_port() as port:
        failed = ansible.run('offsite_sync', {'bucket': 'nowhere', 'prefix': PREFIX, 'backup_root': root,
                                              'endpoint_url': 'http://127.0.0.1:%d' % port, 'access_key': TEST_KEY,
                                              'secret_key': TEST_SECRET, 'status_file': ansible.status_file})
    assert failed['failed'] is True
    assert 'cannot reach the S3 endpoint http://127.0.0.1:%d' % port in failed['msg']
    assert 'Local backups are untouched' in failed['msg']
    info = ansible.run('backup_info', {'backup_root': root, 'verify': True})
    assert [a['path'] for a in info['artifacts']] == [dump['path']] and info['failed_verification'] == []
    status = ansible.status()['jobs']
    assert status['database']['result'] == 'ok'
    assert status['offsite']['result'] == 'failed' and status['offsite']['reason'] == 'endpoint_unreachable'


class socket_closed_port:  # pylint: disable=invalid-name
    """A loopback port nothing listens on (bound then closed)."""

    def __enter__(self):
        import socket
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc):
        return False


def test_credentials_from_the_environment(ansible, backups, s3_server, bucket, s3_env):
    args = {'bucket': bucket, 'prefix': PREFIX, 'endpoint_url': s3_server, 'backup_root': backups['root'],
            'kinds': ['config'], 'status_file': ansible.status_file}
    pushed = ansible.run('offsite_sync', args)
    assert pushed['changed'] is True and len(pushed['uploaded']) == 1


def test_object_lock_protects_uploads_and_prune_keeps_them(ansible, backups, s3_server, locked_bucket):
    pushed = ansible.run('offsite_sync', sync(ansible, s3_server, locked_bucket, backup_root=backups['root'],
                                              kinds=['media', 'config'], object_lock_mode='compliance',
                                              object_lock_days=1))
    assert pushed['changed'] is True and pushed['object_lock']['enabled'] is True
    assert pushed['object_lock']['mode'] == 'COMPLIANCE'
    listed = ansible.run('offsite_info', info_args(s3_server, locked_bucket))
    assert listed['object_lock']['enabled'] is True
    assert listed['artifacts'] and all(a['lock']['locked'] and a['lock']['mode'] == 'COMPLIANCE'
                                       for a in listed['artifacts'])
    client = s3_client(s3_server)
    key = '%s/config/%s' % (PREFIX, os.path.basename(backups['config']))
    version = client.head_object(Bucket=locked_bucket, Key=key)['VersionId']
    with pytest.raises(ClientError) as denied:
        client.delete_object(Bucket=locked_bucket, Key=key, VersionId=version)
    assert denied.value.response['Error']['Code'] == 'AccessDenied'
    assert client.get_object(Bucket=locked_bucket, Key=key, VersionId=version)['Body'].read() == open(
        backups['config'], 'rb').read()

    # The older media snapshot falls outside a 1-day offsite window, but it is locked: kept and reported.
    pruning = ansible.run('offsite_sync', sync(ansible, s3_server, locked_bucket, backup_root=backups['root'],
                                               kinds=['media', 'config'], retention={'daily_days': 1}))
    assert pruning['pruned'] == []
    assert [k['name'] for k in pruning['prune_kept_locked']] == [os.path.basename(backups['media'][0])]
    listed = ansible.run('offsite_info', info_args(s3_server, locked_bucket))
    assert len(listed['artifacts']) == 3


def test_prune_by_offsite_retention_removes_old_and_unreferenced_objects(ansible, backups, s3_server, bucket):
    args = sync(ansible, s3_server, bucket, backup_root=backups['root'], kinds=['media'])
    ansible.run('offsite_sync', args)
    older, newer = backups['media']
    predicted = ansible.run('offsite_sync', dict(args, retention={'daily_days': 1}), check=True)
    assert predicted['changed'] is True and predicted['pruned'] == ['media/%s' % os.path.basename(older)]
    assert len([k for k in bucket_objects(s3_server, bucket) if k.endswith('.meta.json')]) == 2
    pruned = ansible.run('offsite_sync', dict(args, retention={'daily_days': 1}))
    assert pruned['changed'] is True and pruned['pruned'] == ['media/%s' % os.path.basename(older)]
    keys = set(bucket_objects(s3_server, bucket))
    newest_objects = {e.data for e in snapshot_manifest.load_for(newer).files()}
    assert {k.rsplit('/', 1)[1] for k in keys if '/media/objects/' in k} == newest_objects
    assert not any(os.path.basename(older) in k for k in keys)
    listed = ansible.run('offsite_info', info_args(s3_server, bucket))
    assert [a['name'] for a in listed['artifacts']] == [os.path.basename(newer)]
