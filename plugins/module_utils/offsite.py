# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offsite copies in S3-compatible storage: push, pull, list (with lock status) and prune.

Key layout under ``<prefix>/`` (one prefix per host) mirrors the backup root::

    <prefix>/database/<name>.dump               data          (1)
    <prefix>/database/<name>.dump.sha256        sidecar       (2)
    <prefix>/database/<name>.dump.meta.json     commit marker (3, written last)
    <prefix>/database/weekly/...                the same for weekly dumps
    <prefix>/config/config_<ts>.tar.gz[...]     the same for configuration archives
    <prefix>/media/objects/<sha256>             a media file, content-addressed by its SHA-256
    <prefix>/media/<snapshot>.manifest.json     the snapshot's manifest (2)
    <prefix>/media/<snapshot>.meta.json         commit marker (3, written last)

An artifact is *complete offsite* only when its ``.meta.json`` object exists,
and that object is uploaded only after every other object of the artifact was
uploaded and read back with the expected SHA-256 (the S3 server is not trusted
to check checksums).  An interrupted push therefore never leaves anything that
lists as complete; the next push aborts the abandoned multipart uploads under
the prefix and uploads the artifact again.  A media file already stored for an
earlier snapshot is not uploaded again (same SHA-256, same key).

Every object carries its SHA-256 as an S3 checksum (``ChecksumAlgorithm
SHA256``) and in user metadata (``sha256`` of the content, ``ciphertext-sha256``
of the stored bytes when encrypted).  The local sidecar (or manifest) is the
truth: push compares against it, pull verifies against the pulled sidecar
before it commits anything, and refuses, naming the key, an object that does
not match.

Optional encryption uses Debian's ``age`` program: each object is encrypted to
the recipients (public keys) before upload, so the server holds no key that
decrypts its own offsite copies; pull decrypts with an identity file given at
recovery time.  With encryption, sidecars, manifests and metadata are
encrypted too; object keys (names, and for media the plaintext SHA-256) are not.

Transfers use boto3's transfer manager (``upload_fileobj`` / ``download_fileobj``
with a ``TransferConfig`` carrying the multipart threshold and part size,
concurrency and bandwidth limit).  Credentials come from options, the
environment or an AWS profile; they are never put on a command line, in a log
or in a result.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import media_snapshot
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import retention
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import snapshot_manifest

try:
    import boto3
    import botocore.config
    import botocore.exceptions
    from boto3.s3.transfer import TransferConfig
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the target
    boto3 = None
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = _exc

KINDS = ('database', 'database_weekly', 'config', 'media')
LOCK_KIND = 'offsite'
OBJECTS = 'objects'
AGE_MAGIC = b'age-encryption.org/v1'
MIB = 1024 * 1024
SSE_CHOICES = ('none', 'AES256', 'aws:kms')
LOCK_MODES = ('governance', 'compliance')
ROLE_DATA, ROLE_SHA256, ROLE_MANIFEST, ROLE_MARKER, ROLE_OBJECT = 'data', 'sha256', 'manifest', 'marker', 'object'


def connection_argument_spec():
    """S3 connection options shared by offsite_sync and offsite_info (doc fragment ``s3``)."""
    return dict(
        bucket=dict(type='str', required=True),
        prefix=dict(type='str'),
        endpoint_url=dict(type='str', aliases=['s3_url']),
        region=dict(type='str', aliases=['aws_region']),
        access_key=dict(type='str', no_log=True, aliases=['aws_access_key_id']),
        secret_key=dict(type='str', no_log=True, aliases=['aws_secret_access_key']),
        session_token=dict(type='str', no_log=True, aliases=['aws_session_token']),
        profile=dict(type='str', aliases=['aws_profile']),
        validate_certs=dict(type='bool', default=True),
    )


# --- key layout (pure) --------------------------------------------------------------------------

def default_prefix():
    """The per-host prefix when none is given: the short host name."""
    return socket.gethostname().split('.')[0] or 'localhost'


def clean_prefix(prefix):
    prefix = (prefix if prefix is not None else default_prefix()).strip('/')
    if not prefix or '..' in prefix.split('/'):
        raise BackupError('prefix %r is not usable: give a non-empty path such as "web1" or "backups/web1"' % prefix)
    return prefix


def kind_dir_key(prefix, kind):
    return '%s/%s' % (prefix, layout.KINDS[kind].subdir.replace(os.sep, '/'))


def data_key(prefix, kind, name):
    return '%s/%s' % (kind_dir_key(prefix, kind), name)


def sha256_key(prefix, kind, name):
    return data_key(prefix, kind, name) + layout.SHA256_SUFFIX


def marker_key(prefix, kind, name):
    """The ``.meta.json`` object: uploaded last, its presence makes the artifact complete offsite."""
    return data_key(prefix, kind, name) + layout.META_SUFFIX


def manifest_key(prefix, name):
    return data_key(prefix, 'media', name) + layout.MANIFEST_SUFFIX


def media_object_key(prefix, sha256):
    return '%s/%s/%s' % (kind_dir_key(prefix, 'media'), OBJECTS, sha256)


def commit_order(prefix, kind, name, object_hashes=()):
    """The (role, key) pairs of one artifact in the order they are uploaded; the marker is always last."""
    if kind == 'media':
        order = [(ROLE_OBJECT, media_object_key(prefix, digest)) for digest in object_hashes]
        order.append((ROLE_MANIFEST, manifest_key(prefix, name)))
    else:
        order = [(ROLE_DATA, data_key(prefix, kind, name)), (ROLE_SHA256, sha256_key(prefix, kind, name))]
    order.append((ROLE_MARKER, marker_key(prefix, kind, name)))
    return order


def parse_key(prefix, key):
    """(kind, name, role) for a key under ``prefix``, or None for anything else."""
    head = prefix + '/'
    if not key.startswith(head):
        return None
    rest = key[len(head):]
    objects = 'media/%s/' % OBJECTS
    if rest.startswith(objects):
        digest = rest[len(objects):]
        return ('media', digest, ROLE_OBJECT) if len(digest) == 64 else None
    directory, _sep, filename = rest.rpartition('/')
    for kind in KINDS:
        spec = layout.KINDS[kind]
        if spec.subdir.replace(os.sep, '/') != directory:
            continue
        for suffix, role in ((layout.META_SUFFIX, ROLE_MARKER), (layout.SHA256_SUFFIX, ROLE_SHA256),
                             (layout.MANIFEST_SUFFIX, ROLE_MANIFEST), ('', ROLE_DATA)):
            if suffix and not filename.endswith(suffix):
                continue
            name = filename[:len(filename) - len(suffix)] if suffix else filename
            if spec.parse(name) is not None:
                if spec.is_dir and role in (ROLE_DATA, ROLE_SHA256):
                    return None
                return kind, name, role
    return None


class RemoteArtifact:
    """An artifact as it exists offsite, built from a key listing."""

    def __init__(self, kind, name):
        self.kind = kind
        self.name = name
        self.keys = {}
        parsed = layout.KINDS[kind].parse(name)
        self.created = parsed[1]

    @property
    def complete(self):
        needed = (ROLE_MANIFEST, ROLE_MARKER) if self.kind == 'media' else (ROLE_DATA, ROLE_SHA256, ROLE_MARKER)
        return all(role in self.keys for role in needed)

    @property
    def tier(self):
        return layout.KINDS[self.kind].tier

    @property
    def content_key(self):
        return self.keys.get(ROLE_MANIFEST if self.kind == 'media' else ROLE_DATA)


def catalogue_remote(prefix, listing):
    """Group a key listing ({key: size}) into artifacts: (complete, incomplete, media object hashes)."""
    artifacts = {}
    objects = {}
    for key, size in listing.items():
        parsed = parse_key(prefix, key)
        if parsed is None:
            continue
        kind, name, role = parsed
        if role == ROLE_OBJECT:
            objects[name] = size
            continue
        item = artifacts.setdefault((kind, name), RemoteArtifact(kind, name))
        item.keys[role] = key
    ordered = sorted(artifacts.values(), key=lambda item: (item.created, item.kind, item.name))
    return [a for a in ordered if a.complete], [a for a in ordered if not a.complete], objects


def plan_prune(remote_artifacts, policy, now):
    """Per kind, retention.plan_prune over the complete offsite artifacts: (prune, keep) lists of artifacts."""
    prune, keep = [], []
    for kind in KINDS:
        items = [a for a in remote_artifacts if a.kind == kind]
        by_key = dict((a.name, a) for a in items)
        plan = retention.plan_prune([retention.Item(a.name, a.created, a.tier) for a in items], policy, now)
        prune += [by_key[name] for name in plan.prune]
        keep += [by_key[name] for name in plan.keep]
    return prune, keep


def unreferenced_objects(objects, manifests):
    """Media object hashes no manifest in ``manifests`` refers to."""
    wanted = set()
    for manifest in manifests:
        wanted.update(entry.data for entry in manifest.files())
    return sorted(set(objects) - wanted)


def choose_for_pull(complete, kinds, names=None, at=None):
    """The remote artifacts a pull fetches: by name, else the newest of each kind (at or before ``at``)."""
    complete = [a for a in complete if a.kind in kinds]
    if names:
        chosen = []
        for name in names:
            found = [a for a in complete if a.name == name]
            if not found:
                raise BackupError('no complete offsite artifact is named %s (kinds: %s); offsite_info lists them'
                                  % (name, ', '.join(kinds)), reason='not_offsite', name=name)
            chosen += found
        return chosen
    moment = layout.parse_time(at) if at else None
    chosen = []
    for kind in kinds:
        candidates = [a for a in complete if a.kind == kind and (moment is None or a.created <= moment)]
        if candidates:
            chosen.append(candidates[-1])
    return chosen


def lock_state(head, now):
    """Object Lock status of one object from its HeadObject response."""
    until = head.get('ObjectLockRetainUntilDate')
    mode = head.get('ObjectLockMode')
    hold = head.get('ObjectLockLegalHoldStatus') == 'ON'
    return {'mode': mode, 'retain_until': until.isoformat() if until else None, 'legal_hold': hold,
            'locked': bool(hold or (mode and until and until > now))}


# --- errors -------------------------------------------------------------------------------------

def _error_code(exc):
    return str(exc.response.get('Error', {}).get('Code', ''))


def s3_error(exc, doing, endpoint, bucket):
    """One BackupError, naming the problem and what to do; never a credential."""
    where = endpoint or 'the AWS S3 endpoint'
    if not HAS_BOTO3:
        return BackupError('S3 failure while %s: %s' % (doing, exc))
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _error_code(exc)
        message = exc.response.get('Error', {}).get('Message', '')
        if code == 'NoSuchBucket':
            return BackupError('the bucket %s does not exist at %s (while %s); create it (with Object Lock for '
                               'ransomware resistance, see docs/OFFSITE.md) or correct bucket' % (bucket, where, doing),
                               reason='no_such_bucket', bucket=bucket)
        if code == 'InvalidAccessKeyId':
            return BackupError('the S3 server at %s does not know the access key (InvalidAccessKeyId) while %s; '
                               'check access_key, AWS_ACCESS_KEY_ID or the profile' % (where, doing),
                               reason='bad_credentials')
        if code == 'SignatureDoesNotMatch':
            return BackupError('the S3 secret key does not match the access key (SignatureDoesNotMatch at %s) while '
                               '%s; check secret_key, AWS_SECRET_ACCESS_KEY or the profile' % (where, doing),
                               reason='bad_credentials')
        if code in ('InvalidToken', 'ExpiredToken', 'TokenRefreshRequired'):
            return BackupError('the S3 session token was refused (%s) while %s; renew the temporary credentials'
                               % (code, doing), reason='bad_credentials')
        if code in ('AccessDenied', '403', 'AllAccessDisabled'):
            return BackupError('access denied while %s (s3://%s at %s): the credentials lack this permission; '
                               'docs/OFFSITE.md lists the server and operator policies' % (doing, bucket, where),
                               reason='access_denied')
        if code in ('NoSuchKey', '404', 'NotFound'):
            return BackupError('not found while %s in s3://%s' % (doing, bucket), reason='not_found')
        return BackupError('S3 error %s while %s (s3://%s at %s): %s' % (code, doing, bucket, where, message),
                           reason='s3_error', code=code)
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                        botocore.exceptions.ConnectionClosedError, botocore.exceptions.ReadTimeoutError)):
        return BackupError('cannot reach the S3 endpoint %s while %s (%s); is the server up and endpoint_url right? '
                           'Local backups are untouched.' % (where, doing, type(exc).__name__),
                           reason='endpoint_unreachable')
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return BackupError('no S3 credentials found while %s: set access_key and secret_key, the AWS_ACCESS_KEY_ID / '
                           'AWS_SECRET_ACCESS_KEY environment, or profile' % doing, reason='no_credentials')
    if isinstance(exc, botocore.exceptions.PartialCredentialsError):
        return BackupError('incomplete S3 credentials while %s: give both access_key and secret_key' % doing,
                           reason='no_credentials')
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return BackupError('the AWS profile is not defined in ~/.aws/config or ~/.aws/credentials', reason='no_profile')
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return BackupError('S3 failure while %s at %s: %s' % (doing, where, exc), reason='s3_error')
    return BackupError('S3 failure while %s at %s: %s' % (doing, where, exc), reason='s3_error')


_S3_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) if HAS_BOTO3 else ()


# --- age ----------------------------------------------------------------------------------------

def find_age():
    path = shutil.which('age')
    if not path:
        raise BackupError('encryption needs the age program, which is not on PATH (apt install age)', reason='no_age')
    return path


def _age_failure(stderr, what):
    text = stderr.decode('utf-8', 'replace').strip().replace('\n', ' ')
    return BackupError('age failed %s: %s' % (what, text or 'no message'), reason='age_failed')


def recipient_args(recipients):
    argv = []
    for recipient in recipients:
        argv += ['--recipient', recipient]
    return argv


def encrypt_file(age, recipients, source, dest):
    """Encrypt ``source`` into ``dest``: (plaintext sha256, plaintext size); one read of the source."""
    digest = hashlib.sha256()
    size = 0
    proc = subprocess.Popen([age, '--encrypt'] + recipient_args(recipients) + ['--output', dest],  # noqa: S603 -- argv list, no shell; age found on PATH
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with open(source, 'rb') as handle:
            while True:
                chunk = handle.read(artifact_io.CHUNK_SIZE)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                proc.stdin.write(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    except OSError as exc:
        proc.kill()
        proc.wait()
        raise BackupError('cannot read %s: %s' % (source, exc.strerror or exc), path=source)
    stderr = proc.stderr.read()
    proc.stderr.close()
    if proc.wait() != 0:
        raise _age_failure(stderr, 'encrypting %s' % source)
    return digest.hexdigest(), size


def encrypt_bytes(age, recipients, data, what):
    proc = subprocess.run([age, '--encrypt'] + recipient_args(recipients), input=data, stdout=subprocess.PIPE,  # noqa: S603 -- argv list, no shell
                          stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise _age_failure(proc.stderr, 'encrypting %s' % what)
    return proc.stdout


def _identity_required(identity, key):
    if not identity:
        raise BackupError('s3 object %s is encrypted with age; give age_identity_file (the private key kept off the '
                          'server) to pull it' % key, reason='identity_required', key=key)


def decrypt_bytes(age, identity, data, key):
    _identity_required(identity, key)
    proc = subprocess.run([age, '--decrypt', '--identity', identity], input=data, stdout=subprocess.PIPE,  # noqa: S603 -- argv list, no shell
                          stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise _decrypt_failure(proc.stderr, key, identity)
    return proc.stdout


def _decrypt_failure(stderr, key, identity):
    text = stderr.decode('utf-8', 'replace').strip().replace('\n', ' ')
    if 'no identity matched' in text:
        return BackupError('cannot decrypt %s with the identity in %s: it is not one of the recipients the backup was '
                           'encrypted to; use the matching identity' % (key, identity), reason='wrong_identity',
                           key=key)
    return BackupError('cannot decrypt %s (age: %s); the object was altered or damaged and is not used'
                       % (key, text or 'no message'), reason='checksum_mismatch', key=key)


def decrypt_into(age, identity, source, writer, key):
    """Decrypt the file ``source`` into ``writer`` (anything with ``copy_from_fd``)."""
    _identity_required(identity, key)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([age, '--decrypt', '--identity', identity, source], stdout=subprocess.PIPE,  # noqa: S603 -- argv list, no shell
                                stderr=errors)
        try:
            writer.copy_from_fd(proc.stdout.fileno())
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            raise _decrypt_failure(errors.read(), key, identity)


# --- streams ------------------------------------------------------------------------------------

class HashSink:
    """A write-only target for download_fileobj: SHA-256 of what the server holds, nothing kept."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self):
        return self.digest.hexdigest()


class HashingFile:
    """A write-only file that hashes what it writes (a media file being pulled); copy_from_fd for age."""

    def __init__(self, path, mode=layout.FILE_MODE):
        self.path = path
        self.handle = open(path, 'wb')
        os.chmod(path, mode)
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.digest.update(data)
        self.handle.write(data)
        self.size += len(data)
        return len(data)

    def copy_from_fd(self, fd):
        while True:
            data = os.read(fd, artifact_io.CHUNK_SIZE)
            if not data:
                return self.size
            self.write(data)

    def close(self):
        self.handle.close()

    def hexdigest(self):
        return self.digest.hexdigest()


# --- the job ------------------------------------------------------------------------------------

class S3Settings:
    """Where and how to connect; built from the connection options. Holds credentials: never returned or logged."""

    def __init__(self, bucket, prefix=None, endpoint_url=None, region=None, access_key=None, secret_key=None,
                 session_token=None, profile=None, validate_certs=True):
        self.bucket = bucket
        self.prefix = clean_prefix(prefix)
        self.endpoint_url = endpoint_url
        self.region = region
        self._credentials = (access_key, secret_key, session_token)
        self.profile = profile
        self.validate_certs = validate_certs

    @classmethod
    def from_module_params(cls, params):
        names = ('bucket', 'prefix', 'endpoint_url', 'region', 'access_key', 'secret_key', 'session_token', 'profile',
                 'validate_certs')
        return cls(*(params.get(name) for name in names))

    def client(self):
        if not HAS_BOTO3:
            raise BackupError('offsite copies need boto3 on the host that runs them (Debian: apt install '
                              'python3-boto3); import failed: %s' % BOTO3_IMPORT_ERROR, reason='no_boto3')
        access_key, secret_key, session_token = self._credentials
        if bool(access_key) != bool(secret_key):
            raise BackupError('give both access_key and secret_key, or neither (then the environment or profile is '
                              'used)', reason='no_credentials')
        try:
            session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                            aws_session_token=session_token, profile_name=self.profile,
                                            region_name=self.region or 'us-east-1')
            config = botocore.config.Config(retries={'max_attempts': 3, 'mode': 'standard'}, connect_timeout=10,
                                            read_timeout=120, s3={'addressing_style': 'path'} if self.endpoint_url
                                            else None)
            return session.client('s3', endpoint_url=self.endpoint_url, verify=self.validate_certs, config=config)
        except _S3_ERRORS as exc:
            raise s3_error(exc, 'opening the S3 session', self.endpoint_url, self.bucket)

    def describe(self):
        return {'bucket': self.bucket, 'prefix': self.prefix, 'endpoint_url': self.endpoint_url}


class Transfer:
    """Transfer tuning: multipart threshold and part size (MiB), concurrency, bandwidth (KiB/s)."""

    def __init__(self, multipart_threshold=8, multipart_chunksize=8, max_concurrency=4, bwlimit=None):
        if multipart_chunksize < 5:
            raise BackupError('multipart_chunksize must be at least 5 (MiB): S3 refuses smaller parts')
        if max_concurrency < 1:
            raise BackupError('max_concurrency must be 1 or more')
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.max_concurrency = max_concurrency
        self.bwlimit = bwlimit

    def config(self):
        return TransferConfig(multipart_threshold=self.multipart_threshold * MIB,
                              multipart_chunksize=self.multipart_chunksize * MIB,
                              max_concurrency=self.max_concurrency,
                              max_bandwidth=self.bwlimit * 1024 if self.bwlimit else None)


class OffsiteSync:
    """One offsite job: ``push()``, ``pull()``, ``listing()``; each returns the result dict."""

    def __init__(self, settings, backup_root=layout.DEFAULT_BACKUP_ROOT, kinds=KINDS, transfer=None,
                 storage_class=None, server_side_encryption='none', sse_kms_key_id=None, age_recipients=None,
                 age_identity_file=None, object_lock_mode='governance', object_lock_days=0, retention_policy=None,
                 verify_upload=True, names=None, at=None, lock_timeout=300, check_mode=False, log=None, now=None):
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.backup_root = backup_root
        self.kinds = list(kinds or KINDS)
        for kind in self.kinds:
            if kind not in KINDS:
                raise BackupError('kind %r cannot be copied offsite; choose from %s' % (kind, ', '.join(KINDS)))
        self.transfer = transfer or Transfer()
        self.storage_class = storage_class
        self.sse = server_side_encryption or 'none'
        self.sse_kms_key_id = sse_kms_key_id
        self.recipients = list(age_recipients or [])
        self.identity = age_identity_file
        self.lock_mode = (object_lock_mode or 'governance').upper()
        self.lock_days = int(object_lock_days or 0)
        self.policy = retention_policy
        self.verify_upload = verify_upload
        self.names = list(names or [])
        self.at = at
        self.lock_timeout = lock_timeout
        self.check_mode = check_mode
        self.log = log or (lambda message: None)
        self.now = now or layout.utcnow()
        self._client = None
        self._config = None
        self._age = None
        self.warnings = []
        self.stats = {'objects_uploaded': 0, 'bytes_uploaded': 0, 'objects_downloaded': 0, 'bytes_downloaded': 0}

    # --- S3 primitives ---------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            self._client = self.settings.client()
            self._config = self.transfer.config()
        return self._client

    def _call(self, doing, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except _S3_ERRORS as exc:
            raise s3_error(exc, doing, self.settings.endpoint_url, self.bucket)

    def list_keys(self, prefix=None):
        """{key: size} of every object under ``prefix`` (default: this host's prefix)."""
        found = {}
        paginator = self.client.get_paginator('list_objects_v2')
        where = (prefix or self.prefix) + '/'
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=where):
                for item in page.get('Contents', []):
                    found[item['Key']] = item['Size']
        except _S3_ERRORS as exc:
            raise s3_error(exc, 'listing s3://%s/%s' % (self.bucket, where), self.settings.endpoint_url, self.bucket)
        return found

    def other_prefixes(self):
        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Delimiter='/', MaxKeys=50)
        except _S3_ERRORS:
            return []
        return [item['Prefix'] for item in page.get('CommonPrefixes', [])]

    def pending_uploads(self):
        uploads = []
        paginator = self.client.get_paginator('list_multipart_uploads')
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + '/'):
                for upload in page.get('Uploads', []):
                    uploads.append({'key': upload['Key'], 'upload_id': upload['UploadId'],
                                    'initiated': upload['Initiated'].isoformat()})
        except _S3_ERRORS as exc:
            raise s3_error(exc, 'listing unfinished multipart uploads', self.settings.endpoint_url, self.bucket)
        return uploads

    def object_lock_enabled(self):
        """True, False, or None when the credentials may not read the bucket's Object Lock configuration."""
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except _S3_ERRORS as exc:
            code = _error_code(exc) if isinstance(exc, botocore.exceptions.ClientError) else ''
            if code in ('ObjectLockConfigurationNotFoundError', 'ObjectLockConfigurationNotFound', 'NotImplemented'):
                return False
            if code in ('AccessDenied', '403'):
                return None
            raise s3_error(exc, 'reading the Object Lock configuration', self.settings.endpoint_url, self.bucket)
        return answer.get('ObjectLockConfiguration', {}).get('ObjectLockEnabled') == 'Enabled'

    def head(self, key):
        return self._call('reading s3://%s/%s' % (self.bucket, key), self.client.head_object, Bucket=self.bucket,
                          Key=key)

    def _extra_args(self, metadata):
        extra = {'Metadata': metadata, 'ChecksumAlgorithm': 'SHA256'}
        if self.storage_class:
            extra['StorageClass'] = self.storage_class
        if self.sse != 'none':
            extra['ServerSideEncryption'] = self.sse
            if self.sse == 'aws:kms' and self.sse_kms_key_id:
                extra['SSEKMSKeyId'] = self.sse_kms_key_id
        if self._lock_until is not None:
            extra['ObjectLockMode'] = self.lock_mode
            extra['ObjectLockRetainUntilDate'] = self._lock_until
        return extra

    _lock_until = None

    def _upload(self, key, source, expected_sha256, metadata):
        """Upload a path or bytes, then read it back: the stored bytes must hash to ``expected_sha256``."""
        handle = io.BytesIO(source) if isinstance(source, bytes) else None
        try:
            if handle is None:
                handle = open(source, 'rb')
            size = os.fstat(handle.fileno()).st_size if not isinstance(source, bytes) else len(source)
            self._call('uploading s3://%s/%s' % (self.bucket, key), self.client.upload_fileobj, handle, self.bucket,
                       key, ExtraArgs=self._extra_args(metadata), Config=self._config)
        except OSError as exc:
            raise BackupError('cannot read %s for upload: %s' % (source, exc.strerror or exc), path=source)
        finally:
            if handle is not None:
                handle.close()
        self.stats['objects_uploaded'] += 1
        self.stats['bytes_uploaded'] += size
        if self.verify_upload:
            sink = HashSink()
            self._call('reading back s3://%s/%s' % (self.bucket, key), self.client.download_fileobj, self.bucket,
                       key, sink, Config=self._config)
            if sink.hexdigest() != expected_sha256:
                raise BackupError('checksum mismatch: s3://%s/%s reads back with SHA-256 %s, expected %s; it was not '
                                  'committed (no marker) and the next push uploads it again'
                                  % (self.bucket, key, sink.hexdigest(), expected_sha256), reason='checksum_mismatch',
                                  key=key)
        return size

    def _get_bytes(self, key):
        """A small object's bytes, decrypted when it is an age file, and whether it was encrypted."""
        answer = self._call('downloading s3://%s/%s' % (self.bucket, key), self.client.get_object, Bucket=self.bucket,
                            Key=key)
        data = self._call('downloading s3://%s/%s' % (self.bucket, key), answer['Body'].read)
        self.stats['objects_downloaded'] += 1
        self.stats['bytes_downloaded'] += len(data)
        if data.startswith(AGE_MAGIC) or answer.get('Metadata', {}).get('encryption') == 'age':
            return decrypt_bytes(self.age, self.identity, data, key), True
        return data, False

    def _delete(self, key, versioned):
        """Delete every version of ``key`` (a plain delete only hides a version in a versioned bucket)."""
        if not versioned:
            self._call('deleting s3://%s/%s' % (self.bucket, key), self.client.delete_object, Bucket=self.bucket,
                       Key=key)
            return
        paginator = self.client.get_paginator('list_object_versions')
        pages = self._call('listing versions of %s' % key,
                           lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=key)))
        for page in pages:
            for version in page.get('Versions', []) + page.get('DeleteMarkers', []):
                if version['Key'] == key:
                    self._call('deleting s3://%s/%s' % (self.bucket, key), self.client.delete_object,
                               Bucket=self.bucket, Key=key, VersionId=version['VersionId'])

    @property
    def age(self):
        if self._age is None:
            self._age = find_age()
        return self._age

    # --- shared ----------------------------------------------------------------------------------

    def _remote(self):
        listing = self.list_keys()
        complete, incomplete, objects = catalogue_remote(self.prefix, listing)
        return listing, complete, incomplete, objects

    def _base_result(self, mode):
        result = dict(self.settings.describe(), mode=mode, changed=False, encrypted=bool(self.recipients))
        return result

    def _temp_dir(self):
        artifact_io.ensure_directory(self.backup_root)
        for name in os.listdir(self.backup_root):
            if name.startswith(layout.TEMP_MARK + 'offsite-'):
                pid = name.rsplit('-', 1)[-1]
                if not (pid.isdigit() and job_lock.pid_alive(int(pid))):
                    shutil.rmtree(os.path.join(self.backup_root, name), ignore_errors=True)
        path = os.path.join(self.backup_root, '%soffsite-%d' % (layout.TEMP_MARK, os.getpid()))
        artifact_io.ensure_directory(path)
        return path

    # --- push ------------------------------------------------------------------------------------

    def _local(self):
        """Finished local artifacts of the chosen kinds with the SHA-256 that identifies their content."""
        found = []
        for item in catalogue.list_artifacts(self.backup_root, self.kinds):
            if item.spec.is_dir:
                digest = (item.metadata or {}).get('manifest_sha256')
                if not digest or not os.path.exists(layout.manifest_path(item.path)):
                    continue
            else:
                digest = artifact_io.read_sha256_sidecar(item.path)
            found.append((item, digest))
        return found

    def _remote_digest(self, remote):
        head = self.head(remote.keys[ROLE_MARKER])
        return head.get('Metadata', {}).get('artifact-sha256')

    def plan_push(self, complete, objects):
        """(to upload: [(local item, digest, reason)], already offsite: [names])."""
        remote = dict(((a.kind, a.name), a) for a in complete)
        upload, offsite = [], []
        for item, digest in self._local():
            there = remote.get((item.kind, item.name))
            if there is None:
                upload.append((item, digest, 'not offsite'))
            elif self._remote_digest(there) != digest:
                upload.append((item, digest, 'offsite copy differs (the local artifact was replaced)'))
            else:
                offsite.append(item.name)
        return upload, offsite

    def push(self):
        started = time.monotonic()
        result = self._base_result('push')
        if self.check_mode:
            return self._push(result, started)
        with job_lock.JobLock(self.backup_root, LOCK_KIND, timeout=self.lock_timeout, job='offsite_push') as lock:
            result['lock_waited'] = round(lock.waited, 3)
            return self._push(result, started)

    def _push(self, result, started):
        _listing, complete, _incomplete, objects = self._remote()
        pending = self.pending_uploads()
        aborted = [u['key'] for u in pending]
        if self.recipients:
            self.age  # pylint: disable=pointless-statement
        upload, offsite = self.plan_push(complete, objects)
        result['object_lock'] = self._prepare_lock()
        planned = []
        new_objects = set()
        for item, digest, reason in upload:
            entry = {'kind': item.kind, 'name': item.name, 'reason': reason,
                     'key': marker_key(self.prefix, item.kind, item.name)}
            if item.spec.is_dir:
                manifest = snapshot_manifest.load_for(item.path)
                fresh = [e for e in manifest.files() if e.data not in objects and e.data not in new_objects]
                unique = dict((e.data, e) for e in fresh)
                new_objects.update(unique)
                entry.update(files=len(manifest.files()), objects_new=len(unique),
                             bytes=sum(e.size for e in unique.values()))
                entry['_manifest'] = manifest
            else:
                entry['bytes'] = item.size or 0
            entry['_item'], entry['_digest'] = item, digest
            planned.append(entry)
        result.update(already_offsite=offsite, aborted_uploads=aborted)
        if not self.check_mode:
            for upload_ in pending:
                self._call('aborting the abandoned upload of %s' % upload_['key'], self.client.abort_multipart_upload,
                           Bucket=self.bucket, Key=upload_['key'], UploadId=upload_['upload_id'])
                self.log('aborted abandoned multipart upload %s' % upload_['key'])
            temp = self._temp_dir() if self.recipients else None
            try:
                for entry in planned:
                    self._push_one(entry, objects, temp)
            finally:
                if temp:
                    shutil.rmtree(temp, ignore_errors=True)
        result['uploaded'] = [dict((k, v) for k, v in e.items() if not k.startswith('_')) for e in planned]
        pruned = self._prune(result) if self.policy is not None else []
        result.update(self.stats)
        result['changed'] = bool(planned or aborted or pruned)
        result['warnings'] = self.warnings
        result['duration'] = round(time.monotonic() - started, 3)
        return result

    def _prepare_lock(self):
        if self.lock_days <= 0:
            return {'enabled': None, 'mode': None, 'days': 0}
        enabled = self.object_lock_enabled()
        if enabled is False:
            self.warnings.append('bucket %s has no Object Lock: uploads are not protected from deletion; create the '
                                 'bucket with Object Lock (docs/OFFSITE.md) or set object_lock_days to 0'
                                 % self.bucket)
            return {'enabled': False, 'mode': None, 'days': 0}
        self._lock_until = self.now + datetime.timedelta(days=self.lock_days)
        return {'enabled': enabled, 'mode': self.lock_mode, 'days': self.lock_days,
                'retain_until': self._lock_until.isoformat()}

    def _metadata(self, plain_sha, cipher_sha=None, **extra):
        metadata = {'sha256': plain_sha, 'encryption': 'age' if cipher_sha else 'none'}
        if cipher_sha:
            metadata['ciphertext-sha256'] = cipher_sha
        metadata.update((k, str(v)) for k, v in extra.items())
        return metadata

    def _put_file(self, key, path, plain_sha, temp, what):
        """Upload a local file (encrypted when recipients are set) whose content must hash to ``plain_sha``."""
        if not self.recipients:
            return self._upload(key, path, plain_sha, self._metadata(plain_sha))
        encrypted = os.path.join(temp, 'object.age')
        actual, _size = encrypt_file(self.age, self.recipients, path, encrypted)
        if actual != plain_sha:
            raise BackupError('%s does not match its recorded SHA-256 (%s, found %s); it was not uploaded. Verify the '
                              'local backups (backup_info verify=true)' % (what, plain_sha, actual),
                              reason='checksum_mismatch', path=path)
        cipher_sha = artifact_io.sha256_file(encrypted)[0]
        try:
            return self._upload(key, encrypted, cipher_sha, self._metadata(plain_sha, cipher_sha))
        finally:
            os.unlink(encrypted)

    def _put_bytes(self, key, data, what, **extra):
        plain_sha = hashlib.sha256(data).hexdigest()
        if not self.recipients:
            return self._upload(key, data, plain_sha, self._metadata(plain_sha, **extra))
        cipher = encrypt_bytes(self.age, self.recipients, data, what)
        cipher_sha = hashlib.sha256(cipher).hexdigest()
        return self._upload(key, cipher, cipher_sha, self._metadata(plain_sha, cipher_sha, **extra))

    def _read(self, path):
        try:
            with open(path, 'rb') as handle:
                return handle.read()
        except OSError as exc:
            raise BackupError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)

    def _push_one(self, entry, objects, temp):
        item, digest = entry['_item'], entry['_digest']
        marker_extra = {'artifact-sha256': digest, 'kind': item.kind, 'created': item.created.isoformat()}
        self.log('pushing %s %s' % (item.kind, item.name))
        if item.spec.is_dir:
            manifest = entry['_manifest']
            for file_entry in manifest.files():
                if file_entry.data in objects:
                    continue
                self._put_file(media_object_key(self.prefix, file_entry.data),
                               os.path.join(item.path, file_entry.path), file_entry.data, temp,
                               'media file %s of snapshot %s' % (file_entry.path, item.name))
                objects[file_entry.data] = file_entry.size
            manifest_bytes = self._read(layout.manifest_path(item.path))
            if hashlib.sha256(manifest_bytes).hexdigest() != digest:
                raise BackupError('the manifest of %s does not match its metadata sidecar; not uploaded' % item.path,
                                  reason='checksum_mismatch', path=item.path)
            self._put_bytes(manifest_key(self.prefix, item.name), manifest_bytes, 'the manifest of %s' % item.name)
        else:
            self._put_file(data_key(self.prefix, item.kind, item.name), item.path, digest, temp,
                           'the local artifact %s' % item.path)
            self._put_bytes(sha256_key(self.prefix, item.kind, item.name),
                            self._read(item.path + layout.SHA256_SUFFIX), 'the sidecar of %s' % item.name)
        self._put_bytes(marker_key(self.prefix, item.kind, item.name), self._read(item.path + layout.META_SUFFIX),
                        'the metadata of %s' % item.name, **marker_extra)

    # --- prune -----------------------------------------------------------------------------------

    def _versioned(self):
        answer = self._call('reading the bucket versioning', self.client.get_bucket_versioning, Bucket=self.bucket)
        return answer.get('Status') in ('Enabled', 'Suspended')

    def _locked_keys(self, keys, versioned):
        """Those of ``keys`` with a version under an unexpired retention or a legal hold."""
        locked = []
        for key in keys:
            heads = []
            if versioned:
                paginator = self.client.get_paginator('list_object_versions')
                pages = self._call('listing versions of %s' % key,
                                   lambda k=key: list(paginator.paginate(Bucket=self.bucket, Prefix=k)))
                for page in pages:
                    for version in page.get('Versions', []):
                        if version['Key'] == key:
                            heads.append(self._call('reading %s' % key, self.client.head_object, Bucket=self.bucket,
                                                    Key=key, VersionId=version['VersionId']))
            else:
                heads.append(self.head(key))
            states = [lock_state(head, self.now) for head in heads]
            if any(state['locked'] for state in states):
                until = max(s['retain_until'] or '' for s in states)
                locked.append({'key': key, 'retain_until': until or None})
        return locked

    def _prune(self, result):
        _listing, complete, _incomplete, objects = self._remote()
        complete = [a for a in complete if a.kind in self.kinds]
        prune, keep = plan_prune(complete, self.policy, self.now)
        result['prune_kept_locked'] = []
        pruned = []
        if self.check_mode:
            result['pruned'] = ['%s/%s' % (a.kind, a.name) for a in prune]
            return result['pruned']
        versioned = self._versioned() if prune else False
        for remote in prune:
            keys = [key for _role, key in sorted(remote.keys.items())]
            locked = self._locked_keys(keys, versioned)
            if locked:
                result['prune_kept_locked'].append({'kind': remote.kind, 'name': remote.name, 'locked': locked})
                keep.append(remote)
                continue
            # Reverse commit order: the marker goes first, so a crash never leaves a complete-looking rest.
            for _role, key in reversed(commit_order(self.prefix, remote.kind, remote.name)):
                if key in remote.keys.values():
                    self._delete(key, versioned)
            pruned.append('%s/%s' % (remote.kind, remote.name))
        if any(name.startswith('media/') for name in pruned):
            manifests = []
            for remote in keep:
                if remote.kind == 'media':
                    data, _encrypted = self._get_bytes(remote.keys[ROLE_MANIFEST])
                    manifests.append(_parse_manifest(data, remote.keys[ROLE_MANIFEST]))
            for digest in unreferenced_objects(objects, manifests):
                self._delete(media_object_key(self.prefix, digest), versioned)
        result['pruned'] = pruned
        return pruned

    # --- list ------------------------------------------------------------------------------------

    def listing(self):
        """Every complete offsite artifact with its lock status; incomplete ones and unfinished uploads apart."""
        started = time.monotonic()
        result = self._base_result('list')
        _listing, complete, incomplete, objects = self._remote()
        result['object_lock'] = {'enabled': self.object_lock_enabled()}
        artifacts, summary = [], {}
        for remote in complete:
            if remote.kind not in self.kinds:
                continue
            marker = self.head(remote.keys[ROLE_MARKER])
            content = self.head(remote.content_key)
            entry = {'kind': remote.kind, 'name': remote.name, 'key': remote.content_key,
                     'created': remote.created.isoformat(), 'stored_size': content.get('ContentLength'),
                     'sha256': marker.get('Metadata', {}).get('artifact-sha256'),
                     'encrypted': content.get('Metadata', {}).get('encryption') == 'age',
                     'storage_class': content.get('StorageClass') or 'STANDARD',
                     'server_side_encryption': content.get('ServerSideEncryption'),
                     'lock': lock_state(content, self.now)}
            artifacts.append(entry)
            kind = summary.setdefault(remote.kind, {'count': 0})
            kind['count'] += 1
            kind['newest'] = remote.name
            kind['newest_age_hours'] = round((self.now - remote.created).total_seconds() / 3600.0, 2)
        result.update(artifacts=artifacts, summary=summary, media_objects=len(objects),
                      incomplete=['%s/%s' % (a.kind, a.name) for a in incomplete if a.kind in self.kinds],
                      pending_uploads=self.pending_uploads(), duration=round(time.monotonic() - started, 3))
        return result

    # --- pull ------------------------------------------------------------------------------------

    def pull(self):
        started = time.monotonic()
        result = self._base_result('pull')
        result['encrypted'] = None
        _listing, complete, _incomplete, _objects = self._remote()
        chosen = choose_for_pull(complete, self.kinds, self.names, self.at)
        if not chosen:
            others = [p for p in self.other_prefixes() if p != self.prefix + '/']
            raise BackupError('no complete offsite backup of %s%s under s3://%s/%s/%s' % (
                ', '.join(self.kinds), ' at or before %s' % self.at if self.at else '', self.bucket, self.prefix,
                '; prefixes in the bucket: %s' % ', '.join(others) if others else ''), reason='none_offsite')
        plan, present = [], []
        for remote in chosen:
            local = os.path.join(layout.KINDS[remote.kind].directory(self.backup_root), remote.name)
            if self._complete_locally(remote, local):
                present.append(local)
            else:
                plan.append((remote, local))
        result.update(already_local=present, downloaded=[{'kind': r.kind, 'name': r.name, 'path': p} for r, p in plan],
                      changed=bool(plan))
        if plan and not self.check_mode:
            artifact_io.ensure_directory(self.backup_root)
            with job_lock.JobLock(self.backup_root, LOCK_KIND, timeout=self.lock_timeout, job='offsite_pull') as lock:
                result['lock_waited'] = round(lock.waited, 3)
                for remote, local in plan:
                    self.log('pulling %s %s' % (remote.kind, remote.name))
                    if remote.kind == 'media':
                        self._pull_snapshot(remote, local)
                    else:
                        self._pull_file(remote, local)
        result.update(self.stats)
        result['warnings'] = self.warnings
        result['duration'] = round(time.monotonic() - started, 3)
        return result

    def _complete_locally(self, remote, local):
        if not os.path.exists(local + layout.META_SUFFIX):
            return False
        metadata = artifact_io.read_metadata(local) or {}
        digest = metadata.get('manifest_sha256') if remote.kind == 'media' else artifact_io.read_sha256_sidecar(local)
        return bool(digest) and digest == self._remote_digest(remote)

    def _pull_file(self, remote, local):
        directory = os.path.dirname(local)
        artifact_io.ensure_directory(directory)
        artifact_io.cleanup_directory(directory)
        sha_bytes, _enc = self._get_bytes(remote.keys[ROLE_SHA256])
        fields = sha_bytes.decode('utf-8', 'replace').split()
        if len(fields) != 2 or len(fields[0]) != 64 or fields[1] != remote.name:
            raise BackupError('the sidecar %s is malformed; %s cannot be verified and was not pulled'
                              % (remote.keys[ROLE_SHA256], remote.name), reason='checksum_mismatch',
                              key=remote.keys[ROLE_SHA256])
        expected = fields[0].lower()
        meta_bytes, _enc = self._get_bytes(remote.keys[ROLE_MARKER])
        metadata = _parse_json(meta_bytes, remote.keys[ROLE_MARKER])
        key = remote.keys[ROLE_DATA]
        encrypted = self.head(key).get('Metadata', {}).get('encryption') == 'age'
        if encrypted:
            _identity_required(self.identity, key)
        with artifact_io.ArtifactWriter(local) as writer:
            if encrypted:
                cipher = os.path.join(directory, '%s%s.age.%d' % (layout.TEMP_MARK, remote.name, os.getpid()))
                try:
                    with open(cipher, 'wb') as handle:
                        os.chmod(cipher, layout.FILE_MODE)
                        self._call('downloading s3://%s/%s' % (self.bucket, key), self.client.download_fileobj,
                                   self.bucket, key, handle, Config=self._config)
                    self.stats['bytes_downloaded'] += os.path.getsize(cipher)
                    decrypt_into(self.age, self.identity, cipher, writer, key)
                finally:
                    if os.path.exists(cipher):
                        os.unlink(cipher)
            else:
                self._call('downloading s3://%s/%s' % (self.bucket, key), self.client.download_fileobj, self.bucket,
                           key, writer, Config=self._config)
                self.stats['bytes_downloaded'] += writer.size
            self.stats['objects_downloaded'] += 1
            if writer.sha256 != expected:
                raise BackupError('checksum mismatch: s3://%s/%s has SHA-256 %s but its sidecar records %s; it was '
                                  'altered or damaged and was not used (nothing written to %s)'
                                  % (self.bucket, key, writer.sha256, expected, local), reason='checksum_mismatch',
                                  key=key)
            writer.commit(metadata)
        meta_path = local + layout.META_SUFFIX
        if self._read(meta_path) != meta_bytes:
            artifact_io.write_file_atomic(meta_path, meta_bytes)

    def _pull_snapshot(self, remote, final):
        media_dir = os.path.dirname(final)
        artifact_io.ensure_directory(media_dir)
        media_snapshot.cleanup(media_dir)
        meta_bytes, _enc = self._get_bytes(remote.keys[ROLE_MARKER])
        metadata = _parse_json(meta_bytes, remote.keys[ROLE_MARKER])
        manifest_bytes, _enc = self._get_bytes(remote.keys[ROLE_MANIFEST])
        if hashlib.sha256(manifest_bytes).hexdigest() != metadata.get('manifest_sha256'):
            raise BackupError('checksum mismatch: s3://%s/%s does not match the manifest SHA-256 in its metadata; '
                              'the snapshot %s was not pulled' % (self.bucket, remote.keys[ROLE_MANIFEST], remote.name),
                              reason='checksum_mismatch', key=remote.keys[ROLE_MANIFEST])
        manifest = _parse_manifest(manifest_bytes, remote.keys[ROLE_MANIFEST])
        temp = os.path.join(media_dir, '%s%s.%d' % (layout.TEMP_MARK, remote.name, os.getpid()))
        os.mkdir(temp, layout.DIR_MODE)
        try:
            self._fill_snapshot(temp, manifest)
            artifact_io.write_file_atomic(layout.manifest_path(final), manifest_bytes)
            artifact_io.write_file_atomic(final + layout.META_SUFFIX, meta_bytes)
            artifact_io.fsync_directory(temp)
            os.rename(temp, final)
            artifact_io.fsync_directory(media_dir)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        newest = catalogue.list_artifacts(self.backup_root, ['media'])
        if newest and newest[-1].path == final:
            media_snapshot.point_latest(media_dir, remote.name)

    def _fill_snapshot(self, temp, manifest):
        fetched = {}
        for entry in manifest.entries:
            path = os.path.join(temp, entry.path)
            if entry.type == 'd':
                os.makedirs(path, mode=layout.DIR_MODE, exist_ok=True)
            elif entry.type == 'l':
                os.symlink(entry.data, path)
            elif entry.type == 'f':
                if entry.data in fetched:
                    shutil.copyfile(fetched[entry.data], path)
                else:
                    self._fetch_object(entry, path)
                    fetched[entry.data] = path
            else:
                self.warnings.append('%s is a device, fifo or socket; not recreated' % entry.path)
                continue
            _apply_attributes(path, entry)
        for entry in reversed(manifest.entries):
            if entry.type == 'd':
                _apply_attributes(os.path.join(temp, entry.path), entry)

    def _fetch_object(self, entry, path):
        key = media_object_key(self.prefix, entry.data)
        sink = HashingFile(path)
        try:
            head = self.head(key)
            if head.get('Metadata', {}).get('encryption') == 'age':
                _identity_required(self.identity, key)
                cipher = path + '.age'
                with open(cipher, 'wb') as handle:
                    self._call('downloading s3://%s/%s' % (self.bucket, key), self.client.download_fileobj,
                               self.bucket, key, handle, Config=self._config)
                try:
                    decrypt_into(self.age, self.identity, cipher, sink, key)
                finally:
                    os.unlink(cipher)
            else:
                self._call('downloading s3://%s/%s' % (self.bucket, key), self.client.download_fileobj, self.bucket,
                           key, sink, Config=self._config)
        finally:
            sink.close()
        self.stats['objects_downloaded'] += 1
        self.stats['bytes_downloaded'] += sink.size
        if sink.hexdigest() != entry.data:
            raise BackupError('checksum mismatch: s3://%s/%s (the media file %s) has SHA-256 %s; it was altered or '
                              'damaged and was not used' % (self.bucket, key, entry.path, sink.hexdigest()),
                              reason='checksum_mismatch', key=key)


def _parse_json(data, key):
    try:
        return json.loads(data.decode('utf-8'))
    except ValueError as exc:
        raise BackupError('s3 object %s is not valid JSON (%s); it was altered or damaged' % (key, exc),
                          reason='checksum_mismatch', key=key)


def _parse_manifest(data, key):
    directory = tempfile.mkdtemp(prefix='cep-manifest-')
    try:
        path = os.path.join(directory, 'manifest.json')
        with open(path, 'wb') as handle:
            handle.write(data)
        try:
            return snapshot_manifest.load(path)
        except BackupError as exc:
            raise BackupError('s3 object %s is not a readable manifest (%s)' % (key, exc), reason='checksum_mismatch',
                              key=key)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _apply_attributes(path, entry):
    """Owner (when root), mode and mtime of a pulled media entry, as its manifest records them."""
    is_link = entry.type == 'l'
    if os.geteuid() == 0:
        os.lchown(path, entry.uid, entry.gid)
    if not is_link:
        os.chmod(path, stat.S_IMODE(entry.mode))
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=not is_link)
