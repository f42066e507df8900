# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Media snapshots: rsync ``--link-dest`` into ``media/YYYY-MM-DD_HH-MM-SS/``, and restores from them.

A snapshot is committed the way every artifact is (see :mod:`artifact`):

1. rsync copies the sources (``--relative``: ``/srv/app/uploads`` lands in
   ``srv/app/uploads``) into ``media/.tmp-<name>.<pid>/``; files unchanged
   since the previous complete snapshot become hard links to it.  Never
   ``--inplace``: rsync writes a new inode for a changed file, so older
   snapshots that share the old inode are never rewritten;
2. the manifest (:mod:`snapshot_manifest`) is built, reusing the previous
   hashes of hard-linked files, and written beside the snapshot, then the
   metadata sidecar (which records the manifest's SHA-256);
3. the directory is renamed to its final name (the commit point);
4. ``media/latest`` is swapped atomically (a new symlink renamed over it),
   so it always names a complete snapshot;
5. retention prunes older snapshots (the newest is never pruned; shared
   inodes keep their data for the snapshots that still link them).

A killed run leaves only ``.tmp-`` names and orphan sidecars, removed by the
next run under the lock.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import time

from ansible_collections.cepcomunicacion.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import artifact as artifact_io
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import catalogue
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import job_lock
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import layout
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import retention
from ansible_collections.cepcomunicacion.backup.plugins.module_utils import snapshot_manifest

LOCK_KIND = 'media'
KIND = 'media'
RSYNC_OK = (0, 24)  # 24: some source files vanished while copying (a live uploads directory)
_ITEM = re.compile(r'^(?P<op>[<>ch.*])(?P<type>[fdLDS])(?P<flags>\S{9,10}) (?P<path>.*)$')
_STAT = re.compile(r'^(?P<label>[A-Za-z ]+): (?P<value>\d+)')


def find_rsync():
    path = shutil.which('rsync')
    if not path:
        raise BackupError('rsync is required for media snapshots but was not found on PATH (apt install rsync)')
    return path


def rsync_version(rsync):
    proc = subprocess.run([rsync, '--version'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,  # noqa: S603 -- argv list, no shell
                          env=c_environment())
    return proc.stdout.decode('utf-8', 'replace').splitlines()[0].strip() if proc.stdout else 'rsync'


def c_environment():
    env = dict(os.environ)
    env['LC_ALL'] = 'C'
    return env


def filesystem_features(path):
    """(acls, xattrs) the filesystem holding ``path`` supports, probed on ``path`` itself."""
    def supported(attribute):
        try:
            os.getxattr(path, attribute, follow_symlinks=False)
        except OSError as exc:
            return exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP)
        return True
    return supported('system.posix_acl_access'), supported('user.cepcomunicacion-probe')


def parse_itemized(text):
    """Counts from rsync ``--itemize-changes --stats`` output (LC_ALL=C, ``--no-h``)."""
    result = {'files_total': 0, 'files_transferred': 0, 'bytes_transferred': 0, 'items': []}
    for line in text.splitlines():
        match = _ITEM.match(line)
        if match:
            if match.group('type') == 'f' and match.group('op') in '<>':
                result['files_transferred'] += 1
            result['items'].append(line)
            continue
        stat_match = _STAT.match(line)
        if stat_match:
            label, value = stat_match.group('label'), int(stat_match.group('value'))
            if label == 'Number of files':
                reg = re.search(r'reg: (\d+)', line)
                result['files_total'] = int(reg.group(1)) if reg else (0 if value == 0 else value)
            elif label == 'Total transferred file size':
                result['bytes_transferred'] = value
    return result


def _rsync_failure(code, stderr, what):
    tail = stderr.strip()[-1500:]
    if 'No space left on device' in stderr or 'Disk quota exceeded' in stderr:
        return BackupError('no space left on the backup filesystem while %s; free space there (or lower retention) '
                           'and run again. media/latest and earlier snapshots are untouched. rsync said: %s'
                           % (what, tail), reason='no_space')
    return BackupError('rsync failed (exit %d) while %s: %s' % (code, what, tail), reason='rsync', rc=code)


def _normalise_sources(sources):
    if not sources:
        raise BackupError('src is empty: name at least one directory to snapshot (the uploads directory, a Docker '
                          'volume\'s _data directory)')
    normalised = []
    for source in sources:
        if not os.path.isabs(source):
            raise BackupError('src %r is not an absolute path; snapshots record where files came from, so give '
                              'the full path' % source)
        source = os.path.normpath(source)
        if source == '/':
            raise BackupError('src / would snapshot the whole filesystem; name the media directories instead')
        if not os.path.isdir(source):
            raise BackupError('src %s does not exist or is not a directory' % source, path=source)
        normalised.append(source)
    for one in normalised:
        for other in normalised:
            if one != other and other.startswith(one + '/'):
                raise BackupError('src %s is inside src %s; list it once' % (other, one))
    return sorted(set(normalised))


def cleanup(media_dir):
    """cleanup_directory() plus the manifests whose snapshot never committed."""
    cleaned = artifact_io.cleanup_directory(media_dir)
    if not os.path.isdir(media_dir):
        return cleaned
    for name in sorted(os.listdir(media_dir)):
        if name.endswith(layout.MANIFEST_SUFFIX):
            data = os.path.join(media_dir, name[:-len(layout.MANIFEST_SUFFIX)])
            if not os.path.isdir(data):
                os.unlink(os.path.join(media_dir, name))
                cleaned.append(name)
    return cleaned


def point_latest(media_dir, name):
    """Swap ``media/latest`` to ``name`` atomically: a new symlink renamed over the old one."""
    link = os.path.join(media_dir, layout.LATEST_LINK)
    if os.path.islink(link) and os.readlink(link) == name:
        return False
    temp = os.path.join(media_dir, '%s%s.%d' % (layout.TEMP_MARK, layout.LATEST_LINK, os.getpid()))
    if os.path.lexists(temp):
        os.unlink(temp)
    os.symlink(name, temp)
    os.rename(temp, link)
    artifact_io.fsync_directory(media_dir)
    return True


def remove_snapshot(path):
    artifact_io.remove_artifact(path)
    manifest = layout.manifest_path(path)
    if os.path.exists(manifest):
        os.unlink(manifest)


def resolve_snapshot(backup_root, snapshot=None, at=None):
    """The complete snapshot to restore: by name or path, ``latest``, or the newest at or before ``at``."""
    media_dir = layout.KINDS[KIND].directory(backup_root)
    available = catalogue.list_artifacts(backup_root, [KIND])
    if snapshot and snapshot != 'latest':
        path = snapshot if os.path.isabs(snapshot) else os.path.join(media_dir, snapshot)
        path = os.path.normpath(path)
        for item in available:
            if os.path.realpath(item.path) == os.path.realpath(path):
                return item
        raise BackupError('snapshot %s is not a complete media snapshot under %s; backup_info lists the ones that '
                          'exist' % (snapshot, media_dir), path=path, reason='no_snapshot')
    return catalogue.choose(available, at=at, kinds_label='media snapshot')


class MediaSnapshot:
    """One run of a media backup; ``run()`` returns the result dict."""

    def __init__(self, sources, backup_root=layout.DEFAULT_BACKUP_ROOT, exclude=None, retention_days=30,
                 lock_timeout=300, bwlimit=None, check_mode=False, now=None, log=None, rsync_extra=None):
        self.sources = list(sources or [])
        self.backup_root = backup_root
        self.media_dir = layout.KINDS[KIND].directory(backup_root)
        self.exclude = list(exclude or [])
        self.policy = retention.Policy(daily_days=retention_days)
        self.lock_timeout = lock_timeout
        self.bwlimit = bwlimit
        self.check_mode = check_mode
        self.now = now
        self.log = log or (lambda message: None)
        self.rsync_extra = list(rsync_extra or [])
        self.executed_commands = []

    def _argv(self, rsync, destination, previous, dry_run, acls, xattrs):
        argv = [rsync, '--archive', '--relative', '--hard-links', '--numeric-ids', '--itemize-changes', '--stats',
                '--no-human-readable']
        if acls:
            argv.append('--acls')
        if xattrs:
            argv.append('--xattrs')
        if dry_run:
            argv.append('--dry-run')
        if self.bwlimit:
            argv.append('--bwlimit=%d' % self.bwlimit)
        if previous is not None:
            argv.append('--link-dest=%s' % previous.path)
        argv += ['--exclude=%s' % pattern for pattern in self.exclude]
        argv += self.rsync_extra
        argv += [source + '/' for source in self.sources]
        argv.append(destination + '/')
        return argv

    def _run_rsync(self, argv, what):
        self.executed_commands.append(shlex.join(argv))
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, env=c_environment(), check=False)  # noqa: S603 -- argv list, no shell
            err.seek(0)
            stderr = err.read().decode('utf-8', 'replace')
        if proc.returncode not in RSYNC_OK:
            raise _rsync_failure(proc.returncode, stderr, what)
        warnings = stderr.strip()[-1500:] if proc.returncode else ''
        return proc.stdout.decode('utf-8', 'replace'), warnings

    def _previous(self):
        return catalogue.newest(self.backup_root, KIND)

    def _plan_retention(self, extra=None):
        return catalogue.plan_retention(self.backup_root, KIND, self.policy, self.now, extra=extra)

    def run(self):
        started = time.monotonic()
        self.sources = _normalise_sources(self.sources)
        rsync = find_rsync()
        result = {'changed': False, 'sources': self.sources, 'pruned': [], 'cleaned': [],
                  'executed_commands': self.executed_commands, 'rsync_version': rsync_version(rsync)}
        if self.check_mode:
            return self._predict(result, rsync, started)
        artifact_io.ensure_directory(self.backup_root)
        for sub in layout.SUBDIRS:
            artifact_io.ensure_directory(os.path.join(self.backup_root, sub))
        with job_lock.JobLock(self.backup_root, LOCK_KIND, timeout=self.lock_timeout, job=KIND) as lock:
            result['lock_waited'] = round(lock.waited, 3)
            result['cleaned'] = cleanup(self.media_dir)
            previous = self._previous()
            now = self.now or layout.utcnow()
            name = layout.media_snapshot_name(now)
            while os.path.lexists(os.path.join(self.media_dir, name)):
                time.sleep(0.25)  # two runs in one second: take the next second's name
                now = layout.utcnow()
                name = layout.media_snapshot_name(now)
            final = os.path.join(self.media_dir, name)
            temp = os.path.join(self.media_dir, '%s%s.%d' % (layout.TEMP_MARK, name, os.getpid()))
            try:
                document, stats = self._snapshot(rsync, temp, final, name, now, previous, result)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                for sidecar in layout.sidecar_paths(final) + (layout.manifest_path(final),):
                    if os.path.exists(sidecar) and not os.path.isdir(final):
                        os.unlink(sidecar)
                raise
            point_latest(self.media_dir, name)
            result.update(changed=True, snapshot=final, created=document['created'], files_total=stats['files'],
                          files_transferred=stats['transferred'], files_linked=stats['linked'],
                          bytes_total=stats['bytes'], bytes_transferred=stats['bytes_transferred'],
                          new_space=document['new_space'], files_hashed=stats['hashed'],
                          previous=previous.path if previous is not None else None)
            plan = self._plan_retention()
            for victim in plan.prune:
                remove_snapshot(victim)
                result['pruned'].append(victim)
        result['duration'] = round(time.monotonic() - started, 3)
        return result

    def _snapshot(self, rsync, temp, final, name, now, previous, result):
        os.mkdir(temp, layout.DIR_MODE)
        acls, xattrs = filesystem_features(temp)
        argv = self._argv(rsync, temp, previous, False, acls, xattrs)
        self.log('snapshot of %s into %s' % (', '.join(self.sources), final))
        copy_started = time.monotonic()
        _output, warnings = self._run_rsync(argv, 'copying %s into %s' % (', '.join(self.sources), temp))
        copy_seconds = time.monotonic() - copy_started
        if warnings:
            result['warnings'] = [warnings]
        os.chmod(temp, layout.DIR_MODE)
        previous_manifest = None
        if previous is not None:
            try:
                previous_manifest = snapshot_manifest.load_for(previous.path)
            except BackupError as exc:
                self.log('previous manifest unusable (%s); hashing every file' % exc)
        manifest, stats = snapshot_manifest.build(temp, previous.path if previous is not None else None,
                                                  previous_manifest)
        manifest.snapshot = name
        manifest_sha, manifest_size = snapshot_manifest.write(layout.manifest_path(final), manifest)
        _sha_path, meta_path = layout.sidecar_paths(final)
        document = {
            'kind': KIND, 'name': name, 'created': now.isoformat(), 'host': platform.node(),
            'source': {'paths': self.sources, 'exclude': self.exclude}, 'sources': self.sources,
            'size': stats['bytes'], 'files': stats['files'], 'files_linked': stats['linked'],
            'files_transferred': stats['transferred'], 'bytes_transferred': stats['bytes_transferred'],
            'new_space': stats['new_space'] + manifest_size, 'manifest_sha256': manifest_sha,
            'manifest_entries': len(manifest.entries), 'previous': previous.name if previous is not None else None,
            'tool_versions': {'rsync': result['rsync_version']}, 'acls': acls, 'xattrs': xattrs,
            'duration': round(time.monotonic() - copy_started, 3), 'copy_seconds': round(copy_seconds, 3),
        }
        artifact_io.write_json_atomic(meta_path, document)
        artifact_io.fsync_directory(temp)
        os.rename(temp, final)
        artifact_io.fsync_directory(self.media_dir)
        return document, stats

    def _predict(self, result, rsync, started):
        previous = self._previous()
        now = self.now or layout.utcnow()
        final = os.path.join(self.media_dir, layout.media_snapshot_name(now))
        # Without --acls/--xattrs: rsync cannot read the attributes of a destination that does not exist, and
        # a dry run must not create one.  Content, mode, owner and time changes are still predicted.
        acls = xattrs = False
        destination = os.path.join(tempfile.gettempdir(), '%scheck-%d-does-not-exist' % (layout.TEMP_MARK, os.getpid()))
        argv = self._argv(rsync, destination, previous, True, acls, xattrs)
        output, _warnings = self._run_rsync(argv, 'predicting the snapshot (dry run)')
        counts = parse_itemized(output)
        plan = self._plan_retention(retention.Item(final, now, 'daily'))
        transferred = counts['files_transferred']
        result.update(changed=True, snapshot=final, files_total=counts['files_total'],
                      files_transferred=transferred,
                      files_linked=max(counts['files_total'] - transferred, 0) if previous is not None else 0,
                      bytes_transferred=counts['bytes_transferred'], pruned=plan.prune,
                      previous=previous.path if previous is not None else None,
                      duration=round(time.monotonic() - started, 3))
        return result


# --- restore ----------------------------------------------------------------------------------


def _same_attributes(entry, st):
    return (st.st_mode == entry.mode and st.st_uid == entry.uid and st.st_gid == entry.gid)


def _compare(entry, target):
    """'missing', 'different' or 'identical' for one manifest entry against the live path."""
    try:
        st = os.lstat(target)
    except OSError:
        return 'missing'
    if snapshot_manifest.entry_type(st) != entry.type:
        return 'different'
    if entry.type == 'd':
        return 'identical' if _same_attributes(entry, st) else 'different'
    if entry.type == 'l':
        return 'identical' if os.readlink(target) == entry.data and st.st_uid == entry.uid else 'different'
    if entry.type == 'f':
        if st.st_size != entry.size or not _same_attributes(entry, st) or st.st_mtime_ns != entry.mtime_ns:
            return 'different'
        return 'identical' if artifact_io.sha256_file(target)[0] == entry.data else 'different'
    return 'identical' if _same_attributes(entry, st) else 'different'


def _preserve(source, destination):
    """Put ``source`` at ``destination`` cheaply: a hard link, or a copy across filesystems."""
    os.makedirs(os.path.dirname(destination), mode=layout.DIR_MODE, exist_ok=True)
    if os.path.isdir(source) and not os.path.islink(source):
        shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy)
        return
    _link_or_copy(source, destination)


def _link_or_copy(source, destination):
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        if os.path.islink(source):
            os.symlink(os.readlink(source), destination)
        else:
            shutil.copy2(source, destination, follow_symlinks=False)
            st = os.lstat(source)
            try:
                os.chown(destination, st.st_uid, st.st_gid)
            except OSError:
                pass
    return destination


class MediaRestore:
    """Restore a snapshot (all of it or the paths matching ``patterns``); ``run()`` returns the result dict."""

    def __init__(self, backup_root=layout.DEFAULT_BACKUP_ROOT, snapshot=None, at=None, dest=None, patterns=None,
                 delete=False, verify=True, lock_timeout=300, check_mode=False, log=None):
        self.backup_root = backup_root
        self.media_dir = layout.KINDS[KIND].directory(backup_root)
        self.snapshot = snapshot
        self.at = at
        self.dest = os.path.normpath(dest) if dest else None
        self.patterns = list(patterns or [])
        self.delete = delete
        self.verify = verify
        self.lock_timeout = lock_timeout
        self.check_mode = check_mode
        self.log = log or (lambda message: None)
        self.executed_commands = []

    def _target(self, relative):
        return os.path.join(self.dest or '/', relative)

    def _plan(self, item, manifest):
        selected = manifest.select(self.patterns)
        sources = (item.metadata or {}).get('sources') or []
        roots = [source.lstrip('/') for source in sources]
        if self.verify:
            problems = snapshot_manifest.verify(item.path, manifest, selected)
            if problems:
                shown = ', '.join('%s (%s)' % (p['path'], p['problem']) for p in problems[:20])
                raise BackupError('snapshot %s does not match its manifest: %s%s. Nothing was restored; choose an '
                                  'earlier snapshot (backup_info verify=true lists the intact ones)' % (
                                      item.path, shown, ' and %d more' % (len(problems) - 20) if len(problems) > 20
                                      else ''), reason='verify_failed', bad_paths=[p['path'] for p in problems])
        plan = {'restore': [], 'missing': [], 'identical': [], 'remove': [], 'dirs': []}
        for entry in selected:
            if not any(entry.path == root or entry.path.startswith(root + '/') for root in roots):
                continue  # a parent of a source (srv/, srv/app/): never touched on the live system
            state = _compare(entry, self._target(entry.path))
            if entry.type == 'd':
                plan['dirs'].append(entry)
                if state != 'identical':
                    plan['restore'].append(entry)
                    if state == 'missing':
                        plan['missing'].append(entry)
                continue
            if state == 'identical':
                plan['identical'].append(entry)
            else:
                plan['restore'].append(entry)
                if state == 'missing':
                    plan['missing'].append(entry)
        if self.delete:
            for root in roots:
                base = self._target(root)
                if not os.path.isdir(base) or os.path.islink(base):
                    continue
                for relative, _st in snapshot_manifest.walk(base):
                    full = os.path.join(root, relative)
                    if full in manifest.by_path:
                        continue
                    if self.patterns and not snapshot_manifest.matches(full, self.patterns):
                        continue
                    parent = os.path.dirname(full)
                    if any(p == parent or parent.startswith(p + '/') for p in plan['remove']):
                        continue  # inside a directory that is removed as a whole
                    plan['remove'].append(full)
        return plan

    def run(self):
        started = time.monotonic()
        if self.dest and not os.path.isabs(self.dest):
            raise BackupError('dest %r must be an absolute path' % self.dest)
        item = resolve_snapshot(self.backup_root, self.snapshot, self.at)
        manifest = snapshot_manifest.load_for(item.path)
        plan = self._plan(item, manifest)
        restored_files = [e for e in plan['restore'] if e.type != 'd']
        result = {
            'changed': bool(plan['restore'] or plan['remove']), 'snapshot': item.path,
            'snapshot_created': item.created.isoformat(), 'dest': self.dest or '/',
            'files_restored': len(restored_files), 'files_identical': len(plan['identical']),
            'files_removed': len(plan['remove']), 'restored': [e.path for e in restored_files][:1000],
            'removed': plan['remove'][:1000], 'verified': bool(self.verify), 'pre_restore': None,
            'executed_commands': self.executed_commands,
        }
        if self.check_mode or not result['changed']:
            result['duration'] = round(time.monotonic() - started, 3)
            return result
        with job_lock.JobLock(self.backup_root, LOCK_KIND, timeout=self.lock_timeout, job='media_restore') as lock:
            result['lock_waited'] = round(lock.waited, 3)
            pre_restore = self._pre_restore(item, plan)
            result['pre_restore'] = pre_restore
            try:
                self._apply(item, plan)
            except BaseException:
                self._roll_back(plan, pre_restore)
                raise
        result['duration'] = round(time.monotonic() - started, 3)
        return result

    def _pre_restore(self, item, plan):
        """Hard-link (or copy) what the restore will overwrite or remove into media/pre-restore/<time>/."""
        existing = [e.path for e in plan['restore'] if e.type != 'd' and e not in plan['missing']]
        existing = [p for p in existing if os.path.lexists(self._target(p))]
        keep = existing + plan['remove']
        if not keep:
            return None
        directory = os.path.join(self.media_dir, layout.PRE_RESTORE_DIR)
        artifact_io.ensure_directory(directory)
        artifact_io.cleanup_directory(directory)
        now = layout.utcnow()
        name = layout.media_snapshot_name(now)
        while os.path.lexists(os.path.join(directory, name)):
            time.sleep(0.25)
            name = layout.media_snapshot_name(layout.utcnow())
        final = os.path.join(directory, name)
        temp = os.path.join(directory, '%s%s.%d' % (layout.TEMP_MARK, name, os.getpid()))
        os.mkdir(temp, layout.DIR_MODE)
        try:
            for relative in keep:
                _preserve(self._target(relative), os.path.join(temp, relative))
            artifact_io.write_json_atomic(final + layout.META_SUFFIX, {
                'kind': 'media_pre_restore', 'created': now.isoformat(), 'dest': self.dest or '/',
                'restoring': item.path, 'overwritten': existing, 'removed': plan['remove']})
            os.rename(temp, final)
            artifact_io.fsync_directory(directory)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return final

    def _apply(self, item, plan):
        rsync = find_rsync()
        target_root = self.dest or '/'
        if self.dest:
            artifact_io.ensure_directory(self.dest, mode=0o755) if not os.path.isdir(self.dest) else None
        acls, xattrs = filesystem_features(target_root)
        meta = item.metadata or {}
        argv = [rsync, '--archive', '--relative', '--no-implied-dirs', '--hard-links', '--numeric-ids',
                '--ignore-times', '--itemize-changes', '--from0']
        if acls and meta.get('acls'):
            argv.append('--acls')
        if xattrs and meta.get('xattrs'):
            argv.append('--xattrs')
        with tempfile.NamedTemporaryFile(prefix='cep-restore-', suffix='.list') as listing:
            for entry in plan['restore']:
                listing.write(os.fsencode(entry.path) + b'\0')
            listing.flush()
            argv += ['--files-from=%s' % listing.name, item.path + '/', target_root.rstrip('/') + '/']
            self.executed_commands.append(shlex.join(argv))
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=c_environment(),  # noqa: S603 -- argv list, no shell
                                  check=False)
        if proc.returncode != 0:
            raise _rsync_failure(proc.returncode, proc.stderr.decode('utf-8', 'replace'),
                                 'restoring %s into %s' % (item.path, target_root))
        for relative in sorted(plan['remove'], reverse=True):
            target = self._target(relative)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.unlink(target)
        # rsync sets a directory's mtime before its later entries land; put the snapshot's back.
        for entry in reversed(plan['dirs']):
            target = self._target(entry.path)
            if os.path.isdir(target):
                os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    def _roll_back(self, plan, pre_restore):
        """A failed restore leaves the live tree as it was: put back what was kept, remove what was new."""
        for entry in plan['missing']:
            target = self._target(entry.path)
            if entry.type != 'd' and os.path.lexists(target):
                try:
                    os.unlink(target)
                except OSError:
                    pass
        if not pre_restore:
            return
        for relative, st in snapshot_manifest.walk(pre_restore):
            if snapshot_manifest.entry_type(st) == 'd':
                continue
            target = self._target(relative)
            temp = '%s.%s%d' % (target, layout.TEMP_MARK, os.getpid())
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _link_or_copy(os.path.join(pre_restore, relative), temp)
                os.rename(temp, target)
            except OSError as exc:
                self.log('roll back of %s failed: %s' % (target, exc))
