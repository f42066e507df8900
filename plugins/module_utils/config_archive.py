# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration archives: ``config/config_YYYY-MM-DD_HH-MM-SS.tar.gz`` of a list of paths, and restores.

Why Python's :mod:`tarfile` rather than GNU tar: the archive streams straight
into an :class:`artifact.ArtifactWriter` (SHA-256 in the same pass, atomic
commit, sidecars) with no pipe to manage; each file is read once, and that one
read feeds the archive and the *content digest* (paths, types, modes, owners,
link targets and bytes; not mtimes) that lets an unchanged configuration be
skipped; and on restore every member is parsed and validated before a single
byte is written, with no dependence on a tar binary's flags or version.  The
archives are ordinary ustar/pax ``.tar.gz`` files: GNU tar lists and extracts
them (the tests prove it).

Member names are the absolute paths without the leading ``/``
(``etc/nginx/nginx.conf``).  A restore refuses, before writing anything, an
archive with a member that is absolute, contains ``..``, is a device or fifo,
would be written through a symlink (in the archive, or on disk resolving
outside the restore root), or is a hard link to anything but an earlier file
of the same archive.  Files are written under a temporary name and renamed,
so a symlink planted at a target is replaced, never followed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import platform
import stat
import tarfile
import time

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import retention
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import snapshot_manifest

KIND = 'config'
LOCK_KIND = 'config'
DEFAULT_PATHS = ('/opt/cepcomunicacion/.env', '/opt/cepcomunicacion/docker-compose.yml', '/etc/cepcomunicacion',
                 '/etc/nginx', '/var/spool/cron/crontabs')
DIFF_MAX_BYTES = 256 * 1024
_TYPES = {tarfile.REGTYPE: 'f', tarfile.AREGTYPE: 'f', tarfile.DIRTYPE: 'd', tarfile.SYMTYPE: 'l',
          tarfile.LNKTYPE: 'h'}


# --- collecting -------------------------------------------------------------------------------

def _excluded(path, patterns):
    name = os.path.basename(path)
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def collect(paths, exclude=None):
    """(entries, missing): every path to archive as (absolute path, lstat), sorted; missing inputs listed."""
    exclude = list(exclude or [])
    found = {}
    missing = []
    for path in paths:
        if not os.path.isabs(path):
            raise BackupError('path %r is not absolute; config archives restore to original paths, so give the '
                              'full path' % path)
        path = os.path.normpath(path)
        try:
            st = os.lstat(path)
        except OSError:
            missing.append(path)
            continue
        if _excluded(path, exclude):
            continue
        found[path] = st
        if stat.S_ISDIR(st.st_mode):
            for relative, child in snapshot_manifest.walk(path):
                full = os.path.join(path, relative)
                if _excluded(full, exclude) or any(
                        _excluded(parent, exclude) for parent in _parents_between(path, full)):
                    continue
                found[full] = child
    return sorted(found.items()), missing


def _parents_between(top, path):
    parent = os.path.dirname(path)
    while parent != top and parent.startswith(top + '/'):
        yield parent
        parent = os.path.dirname(parent)


def member_name(path):
    return path.lstrip('/')


class _Digest:
    """The content digest: what a restore would reproduce, independent of mtimes and compression."""

    def __init__(self):
        self._hash = hashlib.sha256()

    def record(self, name, kind, mode, uid, gid, extra):
        self._hash.update(('%s\0%s\0%o\0%d\0%d\0%s\n' % (name, kind, stat.S_IMODE(mode), uid, gid, extra))
                          .encode('utf-8', 'surrogateescape'))

    def hexdigest(self):
        return self._hash.hexdigest()


class _HashingReader:
    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size=-1):
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def _file_sha256(path):
    return artifact_io.sha256_file(path)[0]


def content_digest(entries):
    """The content digest of ``entries`` without writing an archive (check mode)."""
    digest = _Digest()
    for path, st in entries:
        kind = snapshot_manifest.entry_type(st)
        extra = ''
        if kind == 'f':
            extra = _file_sha256(path)
        elif kind == 'l':
            extra = os.readlink(path)
        digest.record(member_name(path), kind, st.st_mode, st.st_uid, st.st_gid, extra)
    return digest.hexdigest()


def write_archive(path, entries, metadata):
    """Stream ``entries`` into a .tar.gz artifact at ``path``; returns the committed metadata.

    Returns None (and writes nothing) when ``metadata['skip_if_digest']`` equals the new digest.
    """
    skip_if = metadata.pop('skip_if_digest', None)
    digest = _Digest()
    with artifact_io.ArtifactWriter(path) as writer:
        with tarfile.open(fileobj=writer, mode='w|gz', format=tarfile.PAX_FORMAT) as tar:
            for source, st in entries:
                name = member_name(source)
                kind = snapshot_manifest.entry_type(st)
                if kind == 'o':
                    continue  # devices, fifos and sockets are not configuration
                info = tar.gettarinfo(source, arcname=name)
                info.uname = info.gname = ''
                if kind == 'f' and info.type == tarfile.REGTYPE:
                    with open(source, 'rb') as handle:
                        reader = _HashingReader(handle)
                        tar.addfile(info, reader)
                    extra = reader.digest.hexdigest()
                else:
                    if info.type == tarfile.LNKTYPE:
                        kind = 'f'
                        extra = _file_sha256(source)
                    else:
                        extra = info.linkname if kind == 'l' else ''
                    tar.addfile(info)
                digest.record(name, kind, st.st_mode, st.st_uid, st.st_gid, extra)
        metadata['content_digest'] = digest.hexdigest()
        if skip_if and skip_if == metadata['content_digest']:
            return None
        return writer.commit(metadata)


# --- backup -------------------------------------------------------------------------------------

class ConfigBackup:
    """One run of a configuration backup; ``run()`` returns the result dict."""

    def __init__(self, paths=DEFAULT_PATHS, backup_root=layout.DEFAULT_BACKUP_ROOT, exclude=None, retention_days=30,
                 lock_timeout=300, skip_unchanged=False, check_mode=False, now=None, log=None):
        self.paths = list(paths)
        self.backup_root = backup_root
        self.directory = layout.KINDS[KIND].directory(backup_root)
        self.exclude = list(exclude or [])
        self.policy = retention.Policy(daily_days=retention_days)
        self.lock_timeout = lock_timeout
        self.skip_unchanged = skip_unchanged
        self.check_mode = check_mode
        self.now = now
        self.log = log or (lambda message: None)

    def _collect(self):
        if not self.paths:
            raise BackupError('paths is empty: list the configuration files and directories to archive')
        entries, missing = collect(self.paths, self.exclude)
        if not entries:
            raise BackupError('none of the paths to archive exist (%s); nothing was written' % ', '.join(missing),
                              reason='nothing_to_archive', missing=missing)
        return entries, missing

    def _latest(self):
        return catalogue.newest(self.backup_root, KIND)

    def _plan_retention(self, extra=None):
        return catalogue.plan_retention(self.backup_root, KIND, self.policy, self.now, extra=extra)

    def run(self):
        started = time.monotonic()
        entries, missing = self._collect()
        result = {'changed': False, 'missing': missing, 'pruned': [], 'cleaned': [],
                  'files': sum(1 for _p, st in entries if not stat.S_ISDIR(st.st_mode))}
        latest = self._latest()
        latest_digest = (latest.metadata or {}).get('content_digest') if latest is not None else None
        now = self.now or layout.utcnow()
        if self.check_mode:
            digest = content_digest(entries)
            unchanged = self.skip_unchanged and digest == latest_digest
            path = os.path.join(self.directory, layout.config_archive_name(now))
            result.update(changed=not unchanged, content_digest=digest, path=latest.path if unchanged else path,
                          pruned=[] if unchanged else self._plan_retention(retention.Item(path, now)).prune,
                          duration=round(time.monotonic() - started, 3))
            return result
        artifact_io.ensure_directory(self.backup_root)
        for sub in layout.SUBDIRS:
            artifact_io.ensure_directory(os.path.join(self.backup_root, sub))
        with job_lock.JobLock(self.backup_root, LOCK_KIND, timeout=self.lock_timeout, job=KIND) as lock:
            result['lock_waited'] = round(lock.waited, 3)
            result['cleaned'] = artifact_io.cleanup_directory(self.directory)
            latest = self._latest()
            latest_digest = (latest.metadata or {}).get('content_digest') if latest is not None else None
            now = self.now or layout.utcnow()
            path = os.path.join(self.directory, layout.config_archive_name(now))
            while os.path.exists(path):
                time.sleep(0.25)
                now = layout.utcnow()
                path = os.path.join(self.directory, layout.config_archive_name(now))
            metadata = {'kind': KIND, 'created': now.isoformat(), 'host': platform.node(),
                        'source': {'paths': self.paths, 'exclude': self.exclude, 'missing': missing},
                        'members': len(entries), 'format': 'tar.gz (pax)',
                        'tool_versions': {'python_tarfile': platform.python_version()}}
            if self.skip_unchanged and latest_digest:
                metadata['skip_if_digest'] = latest_digest
            copy_started = time.monotonic()
            document = write_archive(path, entries, metadata)
            if document is None:
                result.update(path=latest.path, sha256=latest.metadata.get('sha256'), size=latest.size,
                              content_digest=latest_digest, msg='configuration unchanged since %s' % latest.name)
            else:
                document['duration'] = round(time.monotonic() - copy_started, 3)
                result.update(changed=True, path=path, sha256=document['sha256'], size=document['size'],
                              content_digest=document['content_digest'], created=document['created'])
                for victim in self._plan_retention().prune:
                    artifact_io.remove_artifact(victim)
                    result['pruned'].append(victim)
        result['duration'] = round(time.monotonic() - started, 3)
        return result


# --- restore ------------------------------------------------------------------------------------

def _clean_name(name, what='member'):
    if not name or name.startswith('/'):
        raise BackupError('archive %s %r has an absolute path; config_backup never writes one, so the archive was '
                          'made elsewhere or tampered with. Nothing was restored.' % (what, name),
                          reason='unsafe_member', member=name)
    parts = name.rstrip('/').split('/')
    if any(part in ('..',) for part in parts):
        raise BackupError('archive %s %r contains "..", which could write outside the restore root; the archive '
                          'was tampered with. Nothing was restored.' % (what, name), reason='unsafe_member',
                          member=name)
    cleaned = '/'.join(part for part in parts if part not in ('', '.'))
    if not cleaned:
        raise BackupError('archive %s %r names the restore root itself; nothing was restored' % (what, name),
                          reason='unsafe_member', member=name)
    return cleaned


def _inside(path, root):
    root = os.path.realpath(root)
    real = os.path.realpath(path)
    return root == '/' or real == root or real.startswith(root + '/')


def validate_members(members, root):
    """Refuse the whole archive if any member could write outside ``root``; returns {name: TarInfo}."""
    accepted = {}
    symlinks = set()
    for info in members:
        if info.type not in _TYPES:
            raise BackupError('archive member %r is a %s, not a file, directory or link; refusing the archive'
                              % (info.name, 'device or fifo' if info.ischr() or info.isblk() or info.isfifo()
                                 else 'special member'), reason='unsafe_member', member=info.name)
        name = _clean_name(info.name)
        parent = os.path.dirname(name)
        while parent:
            if parent in symlinks:
                raise BackupError('archive member %r would be written through the symlink %r in the same archive; '
                                  'refusing the archive (symlink escape)' % (info.name, parent),
                                  reason='unsafe_member', member=info.name)
            on_disk = os.path.join(root, parent)
            if os.path.islink(on_disk) and not _inside(on_disk, root):
                raise BackupError('archive member %r would be written through %s, a symlink that leads outside %s; '
                                  'refusing the archive' % (info.name, on_disk, root), reason='unsafe_member',
                                  member=info.name)
            parent = os.path.dirname(parent)
        if info.issym():
            symlinks.add(name)
        if info.islnk():
            target = _clean_name(info.linkname, 'hard link target of %r:' % info.name)
            if target not in accepted or not accepted[target].isreg():
                raise BackupError('archive member %r is a hard link to %r, which is not an earlier file of the same '
                                  'archive; refusing the archive (hard-link escape)' % (info.name, info.linkname),
                                  reason='unsafe_member', member=info.name)
        accepted[name] = info
    return accepted


def _is_text(data):
    return b'\0' not in data[:8192]


def resolve_archive(backup_root, archive=None, at=None):
    directory = layout.KINDS[KIND].directory(backup_root)
    available = catalogue.list_artifacts(backup_root, [KIND], include_incomplete=True)
    if archive and archive != 'latest':
        path = os.path.normpath(archive if os.path.isabs(archive) else os.path.join(directory, archive))
        if not os.path.isabs(archive) and os.path.relpath(path, directory).split(os.sep)[0] == os.pardir:
            raise BackupError('archive %r leads out of %s: name an archive there (backup_info lists them), or give '
                              'the absolute path of one copied from elsewhere' % (archive, directory),
                              path=path, reason='no_archive')
        for item in available:
            if item.path == path:
                if not item.complete:
                    raise BackupError('archive %s has no metadata sidecar; an interrupted run left it, it cannot be '
                                      'trusted' % path, path=path, reason='incomplete')
                return item
        if os.path.isfile(path):
            parsed = layout.KINDS[KIND].parse(os.path.basename(path))
            created = parsed[1] if parsed else layout.utcnow()
            return catalogue.Artifact(KIND, path, None, created, artifact_io.read_metadata(path) or {},
                                      os.path.exists(path + layout.SHA256_SUFFIX))
        raise BackupError('archive %s does not exist; backup_info lists the configuration archives' % path,
                          path=path, reason='no_archive')
    return catalogue.choose([item for item in available if item.complete], at=at,
                            kinds_label='configuration archive')


class ConfigRestore:
    """Restore all or selected members of a config archive; ``run()`` returns the result dict."""

    def __init__(self, backup_root=layout.DEFAULT_BACKUP_ROOT, archive=None, at=None, dest=None, patterns=None,
                 lock_timeout=300, check_mode=False, diff=False, log=None):
        self.backup_root = backup_root
        self.archive = archive
        self.at = at
        self.dest = os.path.normpath(dest) if dest else None
        self.root = self.dest or '/'
        self.patterns = list(patterns or [])
        self.lock_timeout = lock_timeout
        self.check_mode = check_mode
        self.diff = diff
        self.log = log or (lambda message: None)

    def _verify(self, item):
        status, actual = catalogue.verify(item)
        if status != catalogue.STATUS_OK:
            raise BackupError(
                'archive %s failed verification (%s%s): it does not match its .sha256 sidecar. Nothing was restored; '
                'choose another archive.' % (item.path, status, ', actual sha256 %s' % actual if actual else ''),
                path=item.path, reason='checksum_%s' % status)

    def _target(self, name):
        return os.path.join(self.root, name)

    def _compare(self, tar, name, info):
        target = self._target(name)
        try:
            st = os.lstat(target)
        except OSError:
            return 'missing', None
        same_owner = os.geteuid() != 0 or (st.st_uid == info.uid and st.st_gid == info.gid)
        if info.isdir():
            return ('identical' if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == info.mode and same_owner
                    else 'different'), None
        if info.issym():
            return ('identical' if stat.S_ISLNK(st.st_mode) and os.readlink(target) == info.linkname
                    else 'different'), None
        if not stat.S_ISREG(st.st_mode):
            return 'different', None
        data = tar.extractfile(info).read() if (info.isreg() or info.islnk()) else None
        if data is None:
            return 'different', None
        with open(target, 'rb') as handle:
            current = handle.read(len(data) + 1)
        if current == data and stat.S_IMODE(st.st_mode) == info.mode and same_owner:
            return 'identical', None
        return 'different', (current, data)

    def run(self):
        started = time.monotonic()
        if self.dest and not os.path.isabs(self.dest):
            raise BackupError('dest %r must be an absolute path' % self.dest)
        item = resolve_archive(self.backup_root, self.archive, self.at)
        self._verify(item)
        result = {'changed': False, 'archive': item.path, 'archive_created': item.created.isoformat(),
                  'dest': self.root, 'restored': [], 'identical': [], 'pre_restore': None}
        diffs = []
        try:
            tar = tarfile.open(item.path, 'r:*')
        except (tarfile.TarError, OSError) as exc:
            raise BackupError('archive %s cannot be read: %s' % (item.path, exc), path=item.path, reason='bad_archive')
        with tar:
            try:
                members = tar.getmembers()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BackupError('archive %s is damaged: %s' % (item.path, exc), path=item.path, reason='bad_archive')
            accepted = validate_members(members, self.root)
            selected = [(name, info) for name, info in accepted.items()
                        if not self.patterns or snapshot_manifest.matches(name, self.patterns)]
            if self.patterns and not selected:
                raise BackupError('no member of %s matches %s' % (item.path, ', '.join(self.patterns)),
                                  reason='no_match')
            plan = []
            for name, info in selected:
                state, contents = self._compare(tar, name, info)
                if state == 'identical':
                    result['identical'].append('/' + name)
                    continue
                plan.append((name, info, state))
                if self.diff and contents and info.isreg():
                    before, after = contents
                    if len(before) <= DIFF_MAX_BYTES and len(after) <= DIFF_MAX_BYTES and _is_text(before) \
                            and _is_text(after) and before != after:
                        diffs.append({'before_header': self._target(name), 'after_header': '%s:%s' % (item.name, name),
                                      'before': before.decode('utf-8', 'replace'),
                                      'after': after.decode('utf-8', 'replace')})
            result['restored'] = ['/' + name for name, info, _s in plan if not info.isdir()]
            result['changed'] = bool(plan)
            if diffs:
                result['diff'] = diffs
            if self.check_mode or not plan:
                result['duration'] = round(time.monotonic() - started, 3)
                return result
            with job_lock.JobLock(self.backup_root, LOCK_KIND, timeout=self.lock_timeout, job='config_restore') as lock:
                result['lock_waited'] = round(lock.waited, 3)
                result['pre_restore'] = self._pre_restore(plan, item)
                created = []
                try:
                    extract(tar, plan, self.root, created)
                except BaseException:
                    self._roll_back(result['pre_restore'], created)
                    raise
        result['duration'] = round(time.monotonic() - started, 3)
        return result

    def _pre_restore(self, plan, item):
        existing = [self._target(name) for name, info, state in plan if state != 'missing' and not info.isdir()]
        if not existing:
            return None
        directory = os.path.join(layout.KINDS[KIND].directory(self.backup_root), layout.PRE_RESTORE_DIR)
        artifact_io.ensure_directory(directory)
        artifact_io.cleanup_directory(directory)
        now = layout.utcnow()
        path = os.path.join(directory, layout.config_archive_name(now))
        while os.path.exists(path):
            time.sleep(0.25)
            path = os.path.join(directory, layout.config_archive_name(layout.utcnow()))
        entries = [(target, os.lstat(target)) for target in existing if os.path.lexists(target)]
        if self.dest:
            # Names in a pre-restore archive are relative to the restore root, so it restores with dest too.
            entries = [(('/' + os.path.relpath(target, self.root)), st, target) for target, st in entries]
            document = _write_rebased(path, entries, item, self.root)
        else:
            document = write_archive(path, entries, {'kind': 'config_pre_restore', 'created': now.isoformat(),
                                                     'restoring': item.path, 'root': self.root})
        return document and path

    def _roll_back(self, pre_restore, created):
        for target in reversed(created):
            try:
                if os.path.isdir(target) and not os.path.islink(target):
                    os.rmdir(target)
                else:
                    os.unlink(target)
            except OSError:
                pass
        if pre_restore:
            with tarfile.open(pre_restore, 'r:gz') as tar:
                members = validate_members(tar.getmembers(), self.root)
                extract(tar, [(name, info, 'different') for name, info in members.items()], self.root, [])


def _write_rebased(path, entries, item, root):
    """A pre-restore archive of files under a ``dest`` root, named relative to that root."""
    metadata = {'kind': 'config_pre_restore', 'created': layout.utcnow().isoformat(), 'restoring': item.path,
                'root': root}
    with artifact_io.ArtifactWriter(path) as writer:
        with tarfile.open(fileobj=writer, mode='w|gz', format=tarfile.PAX_FORMAT) as tar:
            for name, st, source in entries:
                info = tar.gettarinfo(source, arcname=name.lstrip('/'))
                if stat.S_ISREG(st.st_mode) and info.type == tarfile.REGTYPE:
                    with open(source, 'rb') as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
        return writer.commit(metadata)


def _apply_attributes(path, info, is_link=False):
    if os.geteuid() == 0:
        os.chown(path, info.uid, info.gid, follow_symlinks=False)
    if not is_link:
        os.chmod(path, info.mode)
        os.utime(path, (info.mtime, info.mtime))


def extract(tar, plan, root, created):
    """Write the planned members under ``root``: temporary name + rename per file; directories last for attributes."""
    directories = []
    for name, info, state in plan:
        target = os.path.join(root, name)
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755)
            created.append(parent)
        if info.isdir():
            if not os.path.isdir(target) or os.path.islink(target):
                if os.path.lexists(target):
                    os.unlink(target)
                os.mkdir(target, 0o700)
                created.append(target)
            directories.append((target, info))
            continue
        temp = os.path.join(parent, '%s%s.%d' % (layout.TEMP_MARK, os.path.basename(target), os.getpid()))
        if os.path.lexists(temp):
            os.unlink(temp)
        if info.issym():
            os.symlink(info.linkname, temp)
            _apply_attributes(temp, info, is_link=True)
        elif info.islnk():
            os.link(os.path.join(root, _clean_name(info.linkname)), temp)
        else:
            source = tar.extractfile(info)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                while True:
                    chunk = source.read(artifact_io.CHUNK_SIZE)
                    if not chunk:
                        break
                    artifact_io.write_all(fd, chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
            _apply_attributes(temp, info)
        if state == 'missing':
            created.append(target)
        os.rename(temp, target)
    for target, info in reversed(directories):
        _apply_attributes(target, info)
    return created
