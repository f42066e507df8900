# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure offsite logic: key layout, commit order, what counts as complete, prune and pull choices, error messages.

Transfers, verification and Object Lock are proven against a real S3 server in
tests/integration/test_offsite.py.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import subprocess

import pytest

from ansible_collections.cepcomunicacion.backup.plugins.module_utils import offsite
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.retention import Policy
from ansible_collections.cepcomunicacion.backup.plugins.module_utils.snapshot_manifest import Entry, Manifest

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 29, 4, 0, 0, tzinfo=UTC)
DAILY = 'cepcomunicacion_2026-11-29_02-00-00.dump'
WEEKLY = 'cepcomunicacion_weekly_2026-W48.dump'
CONFIG = 'config_2026-11-29_02-30-00.tar.gz'
SNAPSHOT = '2026-11-29_03-00-00'
SHA = 'a' * 64


@pytest.mark.parametrize('kind, name, expected', [
    ('database', DAILY, 'web1/database/' + DAILY),
    ('database_weekly', WEEKLY, 'web1/database/weekly/' + WEEKLY),
    ('config', CONFIG, 'web1/config/' + CONFIG),
])
def test_file_keys_mirror_the_backup_root(kind, name, expected):
    assert offsite.data_key('web1', kind, name) == expected
    assert offsite.sha256_key('web1', kind, name) == expected + '.sha256'
    assert offsite.marker_key('web1', kind, name) == expected + '.meta.json'


def test_media_keys_are_content_addressed():
    assert offsite.media_object_key('web1', SHA) == 'web1/media/objects/' + SHA
    assert offsite.manifest_key('web1', SNAPSHOT) == 'web1/media/%s.manifest.json' % SNAPSHOT
    assert offsite.marker_key('web1', 'media', SNAPSHOT) == 'web1/media/%s.meta.json' % SNAPSHOT


@pytest.mark.parametrize('kind, name, hashes', [
    ('database', DAILY, ()), ('config', CONFIG, ()), ('media', SNAPSHOT, (SHA, 'b' * 64)),
])
def test_commit_order_puts_data_first_and_the_marker_last(kind, name, hashes):
    order = offsite.commit_order('web1', kind, name, hashes)
    roles = [role for role, _key in order]
    assert roles[-1] == offsite.ROLE_MARKER and roles.count(offsite.ROLE_MARKER) == 1
    if kind == 'media':
        assert roles == [offsite.ROLE_OBJECT, offsite.ROLE_OBJECT, offsite.ROLE_MANIFEST, offsite.ROLE_MARKER]
    else:
        assert roles == [offsite.ROLE_DATA, offsite.ROLE_SHA256, offsite.ROLE_MARKER]


@pytest.mark.parametrize('kind, name, hashes', [
    ('database', DAILY, ()), ('database_weekly', WEEKLY, ()), ('config', CONFIG, ()), ('media', SNAPSHOT, (SHA,)),
])
def test_parse_key_inverts_the_layout(kind, name, hashes):
    for role, key in offsite.commit_order('web1', kind, name, hashes):
        if role == offsite.ROLE_OBJECT:
            assert offsite.parse_key('web1', key) == ('media', SHA, role)
        else:
            assert offsite.parse_key('web1', key) == (kind, name, role)


@pytest.mark.parametrize('key', [
    'web2/database/' + DAILY, 'web1/database/not-a-dump.txt', 'web1/media/objects/short', 'web1/media/' + SNAPSHOT,
    'web1/database/pre-restore/' + DAILY, 'web1/media/%s.sha256' % SNAPSHOT,
])
def test_parse_key_ignores_foreign_keys(key):
    assert offsite.parse_key('web1', key) is None


def listing(*artifacts):
    keys = {}
    for kind, name, roles in artifacts:
        for role, key in offsite.commit_order('web1', kind, name, (SHA,) if kind == 'media' else ()):
            if role in roles:
                keys[key] = 10
    return keys


ALL_FILE = (offsite.ROLE_DATA, offsite.ROLE_SHA256, offsite.ROLE_MARKER)
ALL_MEDIA = (offsite.ROLE_OBJECT, offsite.ROLE_MANIFEST, offsite.ROLE_MARKER)


def test_only_artifacts_with_every_object_and_the_marker_are_complete():
    keys = listing(('database', DAILY, ALL_FILE),
                   ('config', CONFIG, (offsite.ROLE_DATA, offsite.ROLE_SHA256)),  # interrupted before its marker
                   ('media', SNAPSHOT, ALL_MEDIA),
                   ('media', '2026-11-28_03-00-00', (offsite.ROLE_OBJECT, offsite.ROLE_MANIFEST)))
    complete, incomplete, objects = offsite.catalogue_remote('web1', keys)
    assert [(a.kind, a.name) for a in complete] == [('database', DAILY), ('media', SNAPSHOT)]
    assert sorted((a.kind, a.name) for a in incomplete) == [('config', CONFIG), ('media', '2026-11-28_03-00-00')]
    assert objects == {SHA: 10}


def test_a_marker_without_its_data_is_not_complete():
    keys = listing(('database', DAILY, (offsite.ROLE_SHA256, offsite.ROLE_MARKER)))
    complete, incomplete, _objects = offsite.catalogue_remote('web1', keys)
    assert complete == [] and [a.name for a in incomplete] == [DAILY]


def remote(kind, name):
    item = offsite.RemoteArtifact(kind, name)
    for role, key in offsite.commit_order('web1', kind, name):
        item.keys[role] = key
    return item


def daily_name(days_ago):
    moment = NOW - datetime.timedelta(days=days_ago)
    return 'cepcomunicacion_%s.dump' % moment.strftime('%Y-%m-%d_%H-%M-%S')


def test_prune_plan_is_per_kind_and_keeps_each_kinds_newest():
    dumps = [remote('database', daily_name(n)) for n in (200, 120, 100, 10)]
    old_config = remote('config', 'config_%s.tar.gz' % (NOW - datetime.timedelta(days=300)).strftime('%Y-%m-%d_%H-%M-%S'))
    prune, keep = offsite.plan_prune(dumps + [old_config], Policy(daily_days=90, weekly_weeks=52), NOW)
    assert sorted(a.name for a in prune) == sorted([daily_name(200), daily_name(120), daily_name(100)])
    assert old_config in keep, 'the only config archive is the newest of its kind'


def test_unreferenced_objects_are_those_no_kept_manifest_names():
    def manifest(*hashes):
        return Manifest('s', [Entry('f%d' % i, 'f', 0o100600, 0, 0, 1, 0, h) for i, h in enumerate(hashes)] +
                        [Entry('d', 'd', 0o40700, 0, 0, 0, 0, None)])
    objects = {'1' * 64: 1, '2' * 64: 1, '3' * 64: 1}
    assert offsite.unreferenced_objects(objects, [manifest('1' * 64), manifest('1' * 64, '3' * 64)]) == ['2' * 64]


def test_pull_chooses_the_newest_per_kind_at_or_before_a_time_or_by_name():
    items = [remote('database', daily_name(n)) for n in (3, 2, 1)] + [remote('config', CONFIG)]
    items.sort(key=lambda a: a.created)
    assert [a.name for a in offsite.choose_for_pull(items, ['database'])] == [daily_name(1)]
    at = (NOW - datetime.timedelta(days=2)).strftime('%Y-%m-%dT%H:%M:%SZ')
    assert [a.name for a in offsite.choose_for_pull(items, ['database', 'media'], at=at)] == [daily_name(2)]
    assert [a.name for a in offsite.choose_for_pull(items, offsite.KINDS, names=[CONFIG])] == [CONFIG]
    with pytest.raises(BackupError, match='no complete offsite artifact is named nope'):
        offsite.choose_for_pull(items, offsite.KINDS, names=['nope'])


def test_lock_state():
    later = NOW + datetime.timedelta(days=1)
    assert offsite.lock_state({'ObjectLockMode': 'COMPLIANCE', 'ObjectLockRetainUntilDate': later}, NOW)['locked']
    assert not offsite.lock_state({'ObjectLockMode': 'GOVERNANCE',
                                   'ObjectLockRetainUntilDate': NOW - datetime.timedelta(seconds=1)}, NOW)['locked']
    assert offsite.lock_state({'ObjectLockLegalHoldStatus': 'ON'}, NOW)['locked']
    assert offsite.lock_state({}, NOW) == {'mode': None, 'retain_until': None, 'legal_hold': False, 'locked': False}


@pytest.mark.parametrize('prefix', ['', '/', 'a/../b'])
def test_bad_prefix_is_refused(prefix):
    with pytest.raises(BackupError, match='prefix'):
        offsite.clean_prefix(prefix)


def test_prefix_is_normalised_and_defaults_to_the_host_name():
    assert offsite.clean_prefix('/backups/web1/') == 'backups/web1'
    assert offsite.clean_prefix(None) == offsite.default_prefix() != ''


def test_parts_smaller_than_s3_allows_are_refused():
    with pytest.raises(BackupError, match='at least 5'):
        offsite.Transfer(multipart_chunksize=4)
    config = offsite.Transfer(8, 16, 2, 1024).config()
    assert (config.multipart_threshold, config.multipart_chunksize, config.max_concurrency, config.max_bandwidth) == (
        8 * 1024 * 1024, 16 * 1024 * 1024, 2, 1024 * 1024)


botocore_exceptions = pytest.importorskip('botocore.exceptions')


def client_error(code, message='m'):
    return botocore_exceptions.ClientError({'Error': {'Code': code, 'Message': message}}, 'PutObject')


@pytest.mark.parametrize('exc, reason, words', [
    (client_error('NoSuchBucket'), 'no_such_bucket', 'the bucket b does not exist'),
    (client_error('InvalidAccessKeyId'), 'bad_credentials', 'does not know the access key'),
    (client_error('SignatureDoesNotMatch'), 'bad_credentials', 'secret key does not match'),
    (client_error('AccessDenied'), 'access_denied', 'docs/OFFSITE.md'),
    (botocore_exceptions.EndpointConnectionError(endpoint_url='http://127.0.0.1:1'), 'endpoint_unreachable',
     'cannot reach the S3 endpoint http://127.0.0.1:1'),
    (botocore_exceptions.NoCredentialsError(), 'no_credentials', 'no S3 credentials'),
])
def test_errors_name_the_problem(exc, reason, words):
    error = offsite.s3_error(exc, 'uploading', 'http://127.0.0.1:1', 'b')
    assert error.details['reason'] == reason and words in str(error)


def test_credentials_never_appear_in_the_settings_description():
    settings = offsite.S3Settings('b', 'web1', 'http://127.0.0.1:1', None, 'AKIAEXAMPLE', 'very-secret', 'token')
    assert 'very-secret' not in repr(settings.describe()) and 'AKIAEXAMPLE' not in repr(settings.describe())


def test_half_given_credentials_are_refused():
    with pytest.raises(BackupError, match='both access_key and secret_key'):
        offsite.S3Settings('b', 'web1', access_key='AKIAEXAMPLE').client()


needs_age = pytest.mark.skipif(shutil.which('age') is None, reason='the age program is not installed')


@needs_age
def test_age_round_trip_hashes_the_plaintext(tmp_path):
    identity = str(tmp_path / 'key')
    subprocess.run(['age-keygen', '-o', identity], check=True, stderr=subprocess.DEVNULL)
    recipient = subprocess.run(['age-keygen', '-y', identity], check=True, stdout=subprocess.PIPE,
                               text=True).stdout.strip()
    source = tmp_path / 'plain'
    source.write_bytes(b'plaintext marker ' * 1000)
    age = offsite.find_age()
    digest, size = offsite.encrypt_file(age, [recipient], str(source), str(tmp_path / 'cipher'))
    assert (digest, size) == (hashlib.sha256(source.read_bytes()).hexdigest(), len(source.read_bytes()))
    cipher = (tmp_path / 'cipher').read_bytes()
    assert cipher.startswith(offsite.AGE_MAGIC) and b'plaintext marker' not in cipher
    assert offsite.decrypt_bytes(age, identity, cipher, 'k') == source.read_bytes()
    with pytest.raises(BackupError, match='age_identity_file'):
        offsite.decrypt_bytes(age, None, cipher, 'k')
    damaged = cipher[:-5] + bytes(5)
    with pytest.raises(BackupError, match='altered or damaged') as refused:
        offsite.decrypt_bytes(age, identity, damaged, 'web1/x')
    assert refused.value.details['key'] == 'web1/x'
